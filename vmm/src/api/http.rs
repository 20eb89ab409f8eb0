//! REST/JSON over HTTP/1.1 on a Unix socket. This layer parses and answers;
//! [`super::service`] does the work.
//!
//! ```text
//! PUT /v1/vm            create from a JSON VmConfig (validated first)
//! GET /v1/vm            {"state", "config", "end"}
//! PUT /v1/vm/boot       build and start
//! PUT /v1/vm/pause
//! PUT /v1/vm/resume
//! PUT /v1/vm/shutdown   stop; the process exits with status 0
//! GET /v1/vm/counters   {"exits": {...}, "devices": [...]}
//! ```

use hyper::Method;

use control::ApiError;
use control::server::{Api, Reply, ServeOptions};

use super::request::VmmAction;
use super::service::{SharedVmm, handle};

/// Largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;

/// The API served on [`control::server::serve`]. Whoever reaches the
/// socket may call it: its directory, the VM's jail, is the access
/// control, so [`VmmApi::options`] sets no peer check.
#[derive(Debug)]
pub struct VmmApi {
    vmm: SharedVmm,
}

impl VmmApi {
    pub fn new(vmm: SharedVmm) -> Self {
        VmmApi { vmm }
    }

    pub fn options() -> ServeOptions {
        ServeOptions::new(MAX_BODY)
    }
}

impl Api for VmmApi {
    type Request = VmmAction;

    fn route(&self, method: &Method, path: &str, body: &[u8]) -> Result<VmmAction, ApiError> {
        route(method, path, body)
    }

    fn handle(&self, action: VmmAction) -> Result<Reply, ApiError> {
        handle(&self.vmm, action)
    }
}

/// Turns a method, path and body into a typed request.
pub fn route(method: &Method, path: &str, body: &[u8]) -> Result<VmmAction, ApiError> {
    let not_allowed = |allow: &[&str]| {
        ApiError::method_not_allowed(format!("{method} is not allowed on {path}"), allow)
    };
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (segments.as_slice(), method) {
        (["v1", "vm"], &Method::PUT) => {
            let config = serde_json::from_slice(body)
                .map_err(|e| ApiError::invalid(format!("Invalid VM configuration: {e}")))?;
            Ok(VmmAction::CreateVm(Box::new(config)))
        }
        (["v1", "vm"], &Method::GET) => Ok(VmmAction::GetVmInfo),
        (["v1", "vm"], _) => Err(not_allowed(&["GET", "PUT"])),
        (["v1", "vm", "counters"], &Method::GET) => Ok(VmmAction::GetCounters),
        (["v1", "vm", "counters"], _) => Err(not_allowed(&["GET"])),
        (["v1", "vm", "boot"], &Method::PUT) => Ok(VmmAction::BootVm),
        (["v1", "vm", "pause"], &Method::PUT) => Ok(VmmAction::PauseVm),
        (["v1", "vm", "resume"], &Method::PUT) => Ok(VmmAction::ResumeVm),
        (["v1", "vm", "shutdown"], &Method::PUT) => Ok(VmmAction::ShutdownVm),
        (["v1", "vm", "boot" | "pause" | "resume" | "shutdown"], _) => Err(not_allowed(&["PUT"])),
        _ => Err(ApiError::no_route(path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route(&Method::GET, "/v1/vm", b""), Ok(VmmAction::GetVmInfo));
        assert_eq!(
            route(&Method::PUT, "/v1/vm/boot", b""),
            Ok(VmmAction::BootVm)
        );
        assert_eq!(
            route(&Method::GET, "/v1/vm/counters", b""),
            Ok(VmmAction::GetCounters)
        );
        let body = br#"{"memory_mib": 64, "kernel": "/k"}"#;
        assert!(matches!(
            route(&Method::PUT, "/v1/vm", body),
            Ok(VmmAction::CreateVm(c)) if c.memory_mib == 64 && c.vcpus == 1
        ));
    }

    #[test]
    fn bad_requests_get_the_right_status() {
        assert_eq!(route(&Method::GET, "/v2/vm", b"").unwrap_err().status, 404);
        let e = route(&Method::POST, "/v1/vm/boot", b"").unwrap_err();
        assert_eq!((e.status, e.allow.as_deref()), (405, Some("PUT")));
        assert_eq!(
            route(&Method::DELETE, "/v1/vm", b"").unwrap_err().status,
            405
        );
        let e = route(&Method::PUT, "/v1/vm", b"{not json").unwrap_err();
        assert_eq!((e.status, e.code), (400, "invalid_request"));
        let e = route(
            &Method::PUT,
            "/v1/vm",
            br#"{"memory_mib":1,"kernel":"/k","x":1}"#,
        )
        .unwrap_err();
        assert_eq!(e.status, 400);
    }
}
