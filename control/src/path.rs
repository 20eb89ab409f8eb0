//! Paths of the APIs: each segment percent-encoded by clients and decoded
//! by servers, so a name that holds a `/` (a volume `FOLDER/NAME`) or any
//! other byte stays one segment.

use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Percent-encodes `name` as one path segment: everything but letters,
/// digits and `-._~` (RFC 3986's unreserved characters) becomes `%XX`.
pub fn encode_segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes the `%XX` escapes of one path segment; a bad escape or bytes
/// that are not UTF-8 are a 400.
pub fn percent_decode(segment: &str) -> Result<String, ApiError> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let byte = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    ApiError::invalid(format!("Bad escape in path segment {segment:?}"))
                })?;
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| ApiError::invalid(format!("Path segment {segment:?} is not UTF-8")))
}

/// The decoded segments of `path` (`/v1/a%2Fb` is `["v1", "a/b"]`).
pub fn segments(path: &str) -> Result<Vec<String>, ApiError> {
    path.trim_matches('/')
        .split('/')
        .map(percent_decode)
        .collect()
}

/// A JSON request body as `T`; malformed JSON, a wrong type or an unknown
/// field (with `deny_unknown_fields`) is a 400 with serde's message.
pub fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("Invalid JSON body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_round_trip() {
        for name in ["vm1/disk0", "a b", "ü", "%", "plain-name_1.x~"] {
            let encoded = encode_segment(name);
            assert!(!encoded.contains('/'), "{encoded}");
            assert_eq!(percent_decode(&encoded).as_deref(), Ok(name));
        }
        assert_eq!(encode_segment("vm1/disk0"), "vm1%2Fdisk0");
        assert_eq!(
            segments("/v1/datastores/local/volumes/vm1%2Fdisk0").unwrap(),
            ["v1", "datastores", "local", "volumes", "vm1/disk0"]
        );
    }

    #[test]
    fn bad_escapes_are_400() {
        for bad in ["a%zz", "a%2", "%ff%fe"] {
            assert_eq!(percent_decode(bad).unwrap_err().status, 400, "{bad}");
        }
    }

    #[test]
    fn bodies() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        struct B {
            #[allow(dead_code)]
            a: u32,
        }
        assert!(parse_body::<B>(br#"{"a":1}"#).is_ok());
        let e = parse_body::<B>(br#"{"a":1,"b":2}"#).unwrap_err();
        assert_eq!((e.status, e.code), (400, "invalid_request"));
        assert!(parse_body::<B>(b"{not json").is_err());
    }
}
