//! sfera-mgmtd resists login guessing, CSRF and connection floods (curl).
//!
//! sfera-mgmtd's defences against abuse of its API, end to end against a
//! running mgmtd: login throttling, the origin check on changes made with
//! the session cookie (CSRF), and the limits on connections. No guest is
//! booted.

mod mgmt_client;

use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use harness::http;
use harness::mgmtd::Site;
use mgmt_client::{Answer, Cred, Mgmtd};
use serde_json::json;

/// `GET /api/v1/health` with curl, given `seconds`: its status, or `None`
/// when no answer came in time.
fn health_within(m: &Mgmtd, seconds: u32) -> Result<Option<u16>> {
    let request = http::Request::url(&m.base, "GET", "/api/v1/health").max_time(seconds);
    Ok(request.try_send()?.map(|a| a.status))
}

/// A refusal with `status` and JSON error `code`.
fn refused(a: &Answer, status: u16, code: &str, what: &str) -> Result<()> {
    ensure!(
        a.status == status && a.body["error"]["code"] == code,
        "{what}: wanted {status} {code}, got HTTP {} {}",
        a.status,
        a.body
    );
    ensure!(
        a.body["error"]["message"].is_string(),
        "{what}: no message: {}",
        a.body
    );
    Ok(())
}

#[test]
fn mgmt_security_failed_logins_lock_out_even_the_right_password() -> Result<()> {
    let site = Site::new("mgmt-throttle")?;
    let m = Mgmtd::start(&site, true, 1)?;
    let wrong = json!({ "username": "admin", "password": "not-the-password" });
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let a = m.call(Cred::None, "POST", "/api/v1/session", Some(&wrong))?;
        statuses.push(a.status);
        if a.status == 429 {
            refused(&a, 429, "too_many_requests", "a locked login")?;
            let wait: u64 = a
                .header("retry-after")
                .context("a 429 without Retry-After")?
                .parse()?;
            ensure!((1..=30).contains(&wait), "Retry-After: {wait}");
            break;
        }
    }
    ensure!(
        statuses == [401, 401, 401, 401, 401, 429],
        "five failures, then locked: {statuses:?}"
    );
    let jar = site.dir.join("cookies");
    let right = m.login_admin(&jar)?;
    refused(
        &right,
        429,
        "too_many_requests",
        "the right password while locked",
    )?;
    Ok(())
}

#[test]
fn mgmt_security_cookie_changes_need_our_origin() -> Result<()> {
    let site = Site::new("mgmt-csrf")?;
    let m = Mgmtd::start(&site, true, 1)?;
    let jar = site.dir.join("cookies");
    ensure!(m.login_admin(&jar)?.status == 200, "login");
    let token = json!({ "name": "t" });
    let ours = format!("Referer: {}/tokens", m.base);
    let cases: [(Cred<'_>, u16, &str); 6] = [
        (Cred::CookiesFrom(&jar, None), 403, "no Origin or Referer"),
        (
            Cred::CookiesFrom(&jar, Some("Origin: https://evil.example")),
            403,
            "another site's Origin",
        ),
        (
            Cred::CookiesFrom(&jar, Some("Origin: null")),
            403,
            "an opaque Origin",
        ),
        (
            Cred::CookiesFrom(&jar, Some("Referer: https://evil.example/")),
            403,
            "another site's Referer",
        ),
        (Cred::CookiesFrom(&jar, Some(&ours)), 201, "our Referer"),
        (Cred::Cookies(&jar), 201, "our Origin"),
    ];
    let mut bearer = String::new();
    for (cred, status, what) in cases {
        let a = m.call(cred, "POST", "/api/v1/tokens", Some(&token))?;
        if status == 403 {
            refused(&a, 403, "cross_origin", what)?;
        } else {
            ensure!(a.status == status, "{what}: HTTP {} {}", a.status, a.body);
            bearer = a.body["token"].as_str().context("no token")?.to_owned();
        }
    }
    // Reads need no Origin; neither does a bearer token (the CLI).
    let none = Cred::CookiesFrom(&jar, None);
    m.expect(none, "GET", "/api/v1/tokens", None, 200)?;
    m.expect(
        Cred::Bearer(&bearer),
        "POST",
        "/api/v1/tokens",
        Some(&token),
        201,
    )?;
    // Logging out is a change too.
    let a = m.call(none, "DELETE", "/api/v1/session", None)?;
    refused(&a, 403, "cross_origin", "logging out from nowhere")?;
    m.expect(Cred::Cookies(&jar), "DELETE", "/api/v1/session", None, 204)?;
    // A page elsewhere cannot log the browser in (login CSRF).
    let password = std::fs::read_to_string(m.data.join("admin-password"))?;
    let login = json!({ "username": "admin", "password": password.trim() });
    let fresh = site.dir.join("fresh-cookies");
    let a = m.call(
        Cred::CookiesFrom(&fresh, Some("Origin: https://evil.example")),
        "POST",
        "/api/v1/session",
        Some(&login),
    )?;
    refused(&a, 403, "cross_origin", "a login from another site")?;
    let a = m.call(Cred::None, "POST", "/api/v1/session", Some(&login))?;
    ensure!(
        a.status == 200,
        "a login from curl: {} {}",
        a.status,
        a.body
    );
    ensure!(a.body["user"] == "admin", "{}", a.body);
    Ok(())
}

#[test]
fn mgmt_security_silent_connections_are_closed_and_capped() -> Result<()> {
    let site = Site::new("mgmt-conns")?;
    let m = Mgmtd::start_with(&site, true, 1, &["--max-connections", "2"])?;
    ensure!(health_within(&m, 10)? == Some(200), "health");
    let address = m.base.trim_start_matches("http://");
    // Two connections that never send a request take both slots.
    let mut silent: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(address))
        .collect::<Result<_, _>>()?;
    ensure!(
        health_within(&m, 2)?.is_none(),
        "a third connection was served past --max-connections 2"
    );
    // mgmtd closes them (10 s for the headers); the deadline is generous.
    for s in &mut silent {
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut buf = [0u8; 512];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => anyhow::bail!("a silent connection was not closed: {e}"),
            }
        }
    }
    ensure!(
        health_within(&m, 10)? == Some(200),
        "health after the silent connections closed"
    );
    Ok(())
}
