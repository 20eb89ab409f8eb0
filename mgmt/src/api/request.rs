//! A request as the handlers take it: routed and authenticated by the
//! server, with the helpers that read its parts (path parameters, the
//! caller, a JSON body).

use std::collections::HashMap;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::ApiError;
use super::routes::{Op, Params};
use crate::auth::Principal;
use crate::service::Mgmt;

/// A request, routed and authenticated.
#[derive(Debug)]
pub struct ApiRequest {
    pub op: Op,
    pub params: Params,
    pub query: HashMap<String, String>,
    pub body: Bytes,
    /// `None` only on public routes.
    pub principal: Option<Principal>,
    /// Over HTTPS (the session cookie is then `Secure`).
    pub tls: bool,
    /// The client's address (for login throttling).
    pub peer: Option<std::net::IpAddr>,
}

impl ApiRequest {
    /// A path parameter (empty if the route has none of that name).
    pub fn param(&self, name: &str) -> &str {
        self.params
            .get(name)
            .map(String::as_str)
            .unwrap_or_default()
    }

    /// The caller; 401 on a public route, where there may be none.
    pub fn principal(&self) -> Result<&Principal, ApiError> {
        self.principal.as_ref().ok_or_else(ApiError::unauthorized)
    }

    /// The caller's user name.
    pub fn user(&self) -> Result<String, ApiError> {
        Ok(self.principal()?.user.clone())
    }

    /// The JSON body, as `T`.
    pub fn body<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        parse(&self.body)
    }

    /// Records an `info` event of a change the caller made.
    pub fn event(&self, mgmt: &Mgmt, kind: &str, target: &str, message: &str) {
        let by = self.principal.as_ref().map(|p| p.user.as_str());
        mgmt.db.event("info", kind, target, message, by);
    }
}

/// Reads a JSON body. Numbers with a zero fraction (`2.0`) count as the
/// integers they are, as JSON Schema has it, so a client that writes every
/// number as a float is not refused where an integer is due.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let invalid = |e: serde_json::Error| ApiError::invalid(format!("Invalid JSON body: {e}"));
    let mut v: Value = serde_json::from_slice(body).map_err(invalid)?;
    integral_floats_to_integers(&mut v);
    serde_json::from_value(v).map_err(invalid)
}

fn integral_floats_to_integers(v: &mut Value) {
    match v {
        Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64()
                && f.fract() == 0.0
                && f.abs() < 9.0e15
            {
                // Exact: |f| < 2^53.
                #[allow(clippy::cast_possible_truncation)]
                let i = f as i64;
                *v = Value::from(i);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(integral_floats_to_integers),
        Value::Object(o) => o.values_mut().for_each(integral_floats_to_integers),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[test]
    fn integral_floats_are_integers() {
        #[derive(Deserialize, Debug)]
        struct B {
            n: u16,
            v: Vec<u32>,
        }
        let b: B = parse(br#"{"n": 154.0, "v": [1, 2.0]}"#).unwrap();
        assert_eq!((b.n, b.v), (154, vec![1, 2]));
        assert!(parse::<B>(br#"{"n": 1.5, "v": []}"#).is_err());
        assert!(parse::<B>(br#"{"n": 1e300, "v": []}"#).is_err());
    }
}
