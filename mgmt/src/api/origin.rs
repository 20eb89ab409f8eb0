//! Where a browser request comes from: its `Origin` (or, failing that, its
//! `Referer`) against the server it was sent to (`Host`). The session
//! cookie is `SameSite=Strict`; this is the second fence against cross-site
//! request forgery, for browsers or setups where SameSite does not hold
//! (a sibling subdomain counts as the same site, an old browser ignores it).

use warp::http::header::{HOST, ORIGIN, REFERER};
use warp::http::{HeaderMap, Method};

/// Where a request says it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A page of this server.
    Same,
    /// A page elsewhere, or one that will not say (`Origin: null`).
    Other,
    /// Neither `Origin` nor `Referer`: not a browser, or one that hides it.
    Unknown,
}

/// `host[:port]` of `scheme://host[:port]/...`, lower case, without the
/// scheme's default port.
fn authority_of_url(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let default = match scheme.to_ascii_lowercase().as_str() {
        "https" => ":443",
        "http" => ":80",
        _ => return None,
    };
    Some(normalize(authority, default))
}

fn normalize(authority: &str, default_port: &str) -> String {
    let a = authority.to_ascii_lowercase();
    match a.strip_suffix(default_port) {
        Some(bare) => bare.to_owned(),
        None => a,
    }
}

/// Where the request comes from, against the `Host` it was sent to (over
/// HTTPS when `tls`).
pub fn source(headers: &HeaderMap, tls: bool) -> Source {
    let get = |h| headers.get(h).and_then(|v| v.to_str().ok());
    let claimed = match (get(ORIGIN), get(REFERER)) {
        (Some(origin), _) => origin,
        (None, Some(referer)) => referer,
        (None, None) => return Source::Unknown,
    };
    let host = get(HOST).map(|h| normalize(h, if tls { ":443" } else { ":80" }));
    match (authority_of_url(claimed), host) {
        (Some(a), Some(h)) if a == h => Source::Same,
        _ => Source::Other,
    }
}

/// What a request was authenticated by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    None,
    /// The session cookie, which a browser attaches to any page's request.
    Cookie,
    /// A bearer token, which no page can make a browser attach.
    Token,
}

/// Whether a request may go on: a change (anything but GET, HEAD,
/// OPTIONS) made with the session cookie must come from a page of this
/// server; with a bearer token anything goes; and without credentials a
/// page elsewhere may not log the browser in (login CSRF).
pub fn allowed(method: &Method, headers: &HeaderMap, tls: bool, by: Credential) -> bool {
    if by == Credential::Token || matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return true;
    }
    match (source(headers, tls), by) {
        (Source::Same, _) => true,
        // The CLI or curl logging in.
        (Source::Unknown, Credential::None) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn the_origin_must_name_the_host() {
        let h = |origin| headers(&[("host", "127.0.0.1:8443"), ("origin", origin)]);
        assert_eq!(source(&h("https://127.0.0.1:8443"), true), Source::Same);
        assert_eq!(source(&h("https://127.0.0.1:8444"), true), Source::Other);
        assert_eq!(source(&h("https://evil.example"), true), Source::Other);
        assert_eq!(source(&h("null"), true), Source::Other);
        assert_eq!(
            source(&h("https://127.0.0.1:8443@evil.example"), true),
            Source::Other
        );
        assert_eq!(
            source(&headers(&[("origin", "https://127.0.0.1:8443")]), true),
            Source::Other
        );
        assert_eq!(
            source(&headers(&[("host", "127.0.0.1:8443")]), true),
            Source::Unknown
        );
    }

    #[test]
    fn default_ports_and_case_do_not_matter() {
        let h = headers(&[
            ("host", "Sfera.Example:443"),
            ("origin", "https://sfera.example"),
        ]);
        assert_eq!(source(&h, true), Source::Same);
        let h = headers(&[
            ("host", "sfera.example"),
            ("origin", "http://sfera.example:80"),
        ]);
        assert_eq!(source(&h, false), Source::Same);
    }

    #[test]
    fn the_referer_stands_in_for_a_missing_origin() {
        let h = headers(&[
            ("host", "10.0.0.5:8443"),
            ("referer", "https://10.0.0.5:8443/vms/web?tab=1"),
        ]);
        assert_eq!(source(&h, true), Source::Same);
        let h = headers(&[("host", "10.0.0.5:8443"), ("referer", "https://evil/")]);
        assert_eq!(source(&h, true), Source::Other);
    }

    #[test]
    fn cookie_changes_need_our_origin_and_tokens_do_not() {
        let ours = headers(&[("host", "h:8443"), ("origin", "https://h:8443")]);
        let theirs = headers(&[("host", "h:8443"), ("origin", "https://evil")]);
        let none = headers(&[("host", "h:8443")]);
        let (cookie, token, nothing) = (Credential::Cookie, Credential::Token, Credential::None);
        for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert!(allowed(&method, &ours, true, cookie));
            assert!(!allowed(&method, &theirs, true, cookie), "{method}");
            assert!(!allowed(&method, &none, true, cookie), "{method}");
            assert!(allowed(&method, &none, true, token));
            assert!(allowed(&method, &theirs, true, token));
            // Logging in from the CLI, and from another site.
            assert!(allowed(&method, &none, true, nothing));
            assert!(!allowed(&method, &theirs, true, nothing));
        }
        assert!(allowed(&Method::GET, &theirs, true, cookie));
        assert!(allowed(&Method::GET, &none, true, cookie));
    }
}
