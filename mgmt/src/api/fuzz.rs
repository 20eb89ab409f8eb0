//! The body of the `api_request` fuzz target (mgmt/fuzz), also run by a
//! unit test so that `make test` exercises it: one API request as mgmtd's
//! HTTP layer and handlers take it apart before any daemon is asked
//! anything. The request target's path segments are percent-decoded and
//! routed ([`routes::find`]), its query parsed and read as a page, and
//! the body deserialised as a typed request body and checked the way its
//! handler checks it (VM creation and edits, disk imports, datastores,
//! users).
//!
//! Input: one byte choosing the body type ([`BODIES`], modulo), then
//! `METHOD /path?query` up to the first newline, then the body.

use std::path::Path;
use std::sync::OnceLock;

use super::error::ApiError;
use super::page::Page;
use super::request::parse;
use super::routes;
use super::rules::check_object_name;
use super::server::parse_query;
use crate::host_paths::Roots;
use crate::import::ImportDisk;
use crate::vm::edit::EditVm;
use crate::vm::request::CreateVm;

/// The body types, in the order the first byte picks them.
pub const BODIES: [&str; 5] = ["vm", "vm-edit", "import", "datastore", "user"];

/// Host memory the VM checks compare against, in MiB.
const HOST_MEMORY_MIB: u64 = 16 * 1024;

/// How far a request got: `Ok` where every check passed.
#[derive(Debug)]
pub struct Outcome {
    pub route: Result<&'static str, ApiError>,
    pub body: Result<(), ApiError>,
}

/// A directory that exists, as ISO, import and datastore roots; the guest
/// directory (templates) is one that has none.
fn roots() -> &'static Roots {
    static ROOTS: OnceLock<Roots> = OnceLock::new();
    ROOTS.get_or_init(|| Roots::new(&[std::env::temp_dir()]).unwrap_or_default())
}

/// Takes one request apart; must never panic or hang.
pub fn api_request(data: &[u8]) -> Outcome {
    let Some((&kind, rest)) = data.split_first() else {
        return Outcome {
            route: Err(ApiError::invalid("empty")),
            body: Err(ApiError::invalid("empty")),
        };
    };
    let (line, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &[][..]),
    };
    let line = String::from_utf8_lossy(line);
    Outcome {
        route: route(&line),
        body: check_body(kind, body),
    }
}

fn route(line: &str) -> Result<&'static str, ApiError> {
    let (method, target) = line.split_once(' ').unwrap_or((line, ""));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let segments = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(routes::percent_decode)
        .collect::<Result<Vec<_>, _>>()?;
    // What an anonymous caller is told decides on it.
    let _ = routes::is_public_path(&segments);
    let (route, params) = routes::find(method, &segments)?;
    for value in params.values() {
        // What the handlers check of a datastore or port group name.
        let _ = check_object_name("name", value);
    }
    Page::from_query(&parse_query(query)?)?;
    Ok(route.path)
}

fn check_body(kind: u8, body: &[u8]) -> Result<(), ApiError> {
    match usize::from(kind) % BODIES.len() {
        0 => {
            let vm: CreateVm = parse(body)?;
            vm.plan(Path::new("/nonexistent"), roots(), HOST_MEMORY_MIB)?;
        }
        1 => {
            let edit: EditVm = parse(body)?;
            edit.check(HOST_MEMORY_MIB)?;
        }
        2 => {
            let import: ImportDisk = parse(body)?;
            import.check(roots())?;
        }
        3 => {
            let ds: serde_json::Value = parse(body)?;
            let name = ds["name"].as_str().unwrap_or_default();
            check_object_name("datastore", name)?;
            roots().datastore("path", ds["path"].as_str().unwrap_or_default())?;
        }
        _ => {
            let user: serde_json::Value = parse(body)?;
            crate::auth::check_user_name(user["name"].as_str().unwrap_or_default())
                .map_err(ApiError::invalid)?;
            crate::auth::check_password(user["password"].as_str().unwrap_or_default())
                .map_err(ApiError::invalid)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seeds written to mgmt/fuzz/corpus/api_request.
    fn seeds() -> Vec<(&'static str, Vec<u8>)> {
        let seed = |kind: u8, line: &str, body: &str| {
            let mut v = vec![kind];
            v.extend_from_slice(line.as_bytes());
            v.push(b'\n');
            v.extend_from_slice(body.as_bytes());
            v
        };
        vec![
            (
                "create_vm",
                seed(
                    0,
                    "POST /api/v1/vms",
                    r#"{"name":"web-1","vcpus":2,"memory_mib":1024.0,"disks":[{"datastore":"local","size_bytes":1073741824}],"nics":[{"port_group":"lan","mac":"52:54:00:12:34:56"}]}"#,
                ),
            ),
            (
                "edit_vm",
                seed(
                    1,
                    "PATCH /api/v1/vms/web-1",
                    r#"{"vcpus":4,"memory_mib":2048}"#,
                ),
            ),
            (
                "import",
                seed(
                    2,
                    "POST /api/v1/datastores/local/import",
                    r#"{"volume":"disk0","source":"/tmp/a.qcow2","format":"qcow2"}"#,
                ),
            ),
            (
                "datastore",
                seed(
                    3,
                    "POST /api/v1/datastores?limit=10&offset=0",
                    r#"{"name":"local","path":"/tmp"}"#,
                ),
            ),
            (
                "user",
                seed(
                    4,
                    "POST /api/v1/users",
                    r#"{"name":"ops","password":"correct horse battery","role":"operator"}"#,
                ),
            ),
            (
                "list_paged",
                seed(0, "GET /api/v1/vms?limit=500&offset=2", ""),
            ),
        ]
    }

    #[test]
    fn seeds_and_their_mutations_run() {
        for (name, seed) in seeds() {
            let out = api_request(&seed);
            assert!(out.route.is_ok(), "{name}: {:?}", out.route);
        }
        let mut x: u64 = 0x5851_f42d_4c95_7f2d;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let seeds = seeds();
        for i in 0..3000 {
            let mut input = seeds[i % seeds.len()].1.clone();
            for _ in 0..(next() % 4 + 1) {
                let at = usize::try_from(next()).expect("64-bit") % input.len();
                input[at] = next() as u8;
            }
            let _ = api_request(&input);
        }
    }

    /// The committed seed corpus of api_request is the one this code
    /// makes (`make fuzz-seeds` writes it).
    #[test]
    fn committed_seeds_are_current() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/api_request");
        datapath::seed_corpus::check(&dir, seeds());
    }
}
