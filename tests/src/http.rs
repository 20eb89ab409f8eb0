//! Every HTTP call the tests make, through `curl`, an HTTP client no one
//! here wrote: to a daemon's API on its Unix socket ([`call`], or
//! [`Request::unix`]) and to mgmtd or the appliance on a TCP port
//! ([`Request::url`]), with headers, a cookie jar, a time limit or a
//! self-signed certificate as a test needs. Answers carry the status, the
//! headers and the body, and check themselves ([`Answer::expect`],
//! [`Answer::expect_error`], [`Answer::success`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::process::run;
use crate::{Error, Result, tools};

/// An answer: the status, the header lines and the body (JSON when there
/// is one).
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

impl Answer {
    /// The body as JSON (`null` when empty).
    pub fn json(&self) -> Result<serde_json::Value> {
        if self.body.trim().is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_str(&self.body).map_err(|_| Error::Parse {
            what: "JSON answer".to_owned(),
            text: self.body.clone(),
        })
    }

    /// The body as JSON, or as a JSON string when it is text (`null` when
    /// empty).
    pub fn value(&self) -> serde_json::Value {
        self.json()
            .unwrap_or_else(|_| serde_json::Value::String(self.body.clone()))
    }

    /// The value of header `name` (any case), if the answer has it.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// Checks the status is `status`; the body as JSON.
    pub fn expect(&self, status: u16, what: &str) -> Result<serde_json::Value> {
        if self.status != status {
            return Err(self.unexpected(what, &status.to_string()));
        }
        self.json()
    }

    /// Checks the status is `status` and the body Sfera's error body
    /// `{"error":{"code":code,"message":"..."}}` with a message.
    pub fn expect_error(&self, status: u16, code: &str, what: &str) -> Result<()> {
        let body = self.expect(status, what)?;
        let message = body["error"]["message"].as_str().unwrap_or_default();
        if body["error"]["code"] != code || message.is_empty() {
            return Err(self.unexpected(what, &format!("{status} with error code {code:?}")));
        }
        Ok(())
    }

    /// Checks the call succeeded (a status under 400, what curl's
    /// `--fail-with-body` asks for).
    pub fn success(&self, what: &str) -> Result<&Self> {
        if self.status >= 400 {
            return Err(self.unexpected(what, "under 400"));
        }
        Ok(self)
    }

    fn unexpected(&self, what: &str, wanted: &str) -> Error {
        Error::Http {
            what: what.to_owned(),
            status: self.status,
            wanted: wanted.to_owned(),
            body: self.body.clone(),
        }
    }
}

/// One HTTP request, built up and then sent with [`Request::send`] (or
/// [`Request::try_send`] when no answer is an answer too).
#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    url: String,
    socket: Option<PathBuf>,
    body: Option<String>,
    headers: Vec<String>,
    cookies: Option<PathBuf>,
    insecure: bool,
    max_time: Option<u32>,
}

impl Request {
    /// `method path` to the API on the Unix socket `socket`.
    pub fn unix(socket: &Path, method: &str, path: &str) -> Self {
        let mut request = Self::url("http://localhost", method, path);
        request.socket = Some(socket.to_owned());
        request
    }

    /// `method path` to the server at `base` (`http://127.0.0.1:8080`).
    pub fn url(base: &str, method: &str, path: &str) -> Self {
        Request {
            method: method.to_owned(),
            url: format!("{base}{path}"),
            socket: None,
            body: None,
            headers: Vec::new(),
            cookies: None,
            insecure: false,
            max_time: None,
        }
    }

    /// A JSON body (`Content-Type: application/json`).
    pub fn json(mut self, body: &str) -> Self {
        self.body = Some(body.to_owned());
        self
    }

    /// A JSON body, if there is one.
    pub fn json_opt(self, body: Option<&str>) -> Self {
        match body {
            Some(body) => self.json(body),
            None => self,
        }
    }

    /// One more header line (`Name: value`).
    pub fn header(mut self, line: &str) -> Self {
        self.headers.push(line.to_owned());
        self
    }

    /// Sends the cookies of `jar` and keeps the ones the server sets in it.
    pub fn cookies(mut self, jar: &Path) -> Self {
        self.cookies = Some(jar.to_owned());
        self
    }

    /// Accepts a self-signed certificate.
    pub fn insecure(mut self) -> Self {
        self.insecure = true;
        self
    }

    /// Gives up after `seconds`.
    pub fn max_time(mut self, seconds: u32) -> Self {
        self.max_time = Some(seconds);
        self
    }

    /// Sends the request; an error when no answer came.
    pub fn send(&self) -> Result<Answer> {
        parse(&run(self.command()?)?)
    }

    /// Sends the request; `None` when no answer came (refused, timed out).
    pub fn try_send(&self) -> Result<Option<Answer>> {
        let mut command = self.command()?;
        let out = command
            .stdin(Stdio::null())
            .output()
            .map_err(|source| Error::Spawn {
                name: "curl".to_owned(),
                source,
            })?;
        if !out.status.success() {
            return Ok(None);
        }
        parse(&String::from_utf8_lossy(&out.stdout)).map(Some)
    }

    fn command(&self) -> Result<Command> {
        let mut command = Command::new(tools::require("curl", "curl")?);
        command.args(["--silent", "--show-error", "--include"]);
        command.args(["-X", &self.method, "-w", "\n%{http_code}"]);
        if let Some(socket) = &self.socket {
            command.arg("--unix-socket").arg(socket);
        }
        if let Some(jar) = &self.cookies {
            command.arg("-b").arg(jar).arg("-c").arg(jar);
        }
        if self.insecure {
            command.arg("--insecure");
        }
        if let Some(seconds) = self.max_time {
            command.args(["--max-time", &seconds.to_string()]);
        }
        for line in &self.headers {
            command.arg("-H").arg(line);
        }
        if let Some(body) = &self.body {
            command.args([
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                body,
            ]);
        }
        command.arg(&self.url);
        Ok(command)
    }
}

/// Splits curl's output (`--include` and `-w '\n%{http_code}'`) into an
/// [`Answer`]; interim `100 Continue` heads are skipped.
fn parse(out: &str) -> Result<Answer> {
    let (rest, status) = out.rsplit_once('\n').unwrap_or(("", out));
    let status = status.trim().parse().map_err(|_| Error::Parse {
        what: "curl status".to_owned(),
        text: out.to_owned(),
    })?;
    let mut rest = rest;
    let (headers, body) = loop {
        let (head, body) = rest.split_once("\r\n\r\n").unwrap_or((rest, ""));
        if head.starts_with("HTTP/") && head.contains(" 100 ") && !body.is_empty() {
            rest = body;
        } else {
            break (head, body);
        }
    };
    Ok(Answer {
        status,
        headers: headers.to_owned(),
        body: body.to_owned(),
    })
}

/// The value of header `name` (any case) in the header lines `headers`.
pub fn header<'a>(headers: &'a str, name: &str) -> Option<&'a str> {
    headers.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Sends `method path` with an optional JSON body over `socket`.
pub fn call(socket: &Path, method: &str, path: &str, body: Option<&str>) -> Result<Answer> {
    Request::unix(socket, method, path).json_opt(body).send()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_headers_and_body() {
        let a = parse("HTTP/1.1 201 Created\r\nX-A: b\r\n\r\n{\"id\":1}\n201").unwrap();
        assert_eq!(a.status, 201);
        assert_eq!(a.header("x-a"), Some("b"));
        assert_eq!(a.json().unwrap()["id"], 1);
    }

    #[test]
    fn skips_an_interim_continue() {
        let a = parse("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n\n204").unwrap();
        assert_eq!(a.status, 204);
        assert!(a.headers.starts_with("HTTP/1.1 204"), "{}", a.headers);
        assert_eq!(a.json().unwrap(), serde_json::Value::Null);
    }

    #[test]
    fn a_wrong_status_names_what_and_the_body() {
        let a = parse("HTTP/1.1 404 Not Found\r\n\r\n{\"error\":{}}\n404").unwrap();
        let e = a.expect(200, "GET /x").unwrap_err().to_string();
        assert!(e.contains("GET /x") && e.contains("404"), "{e}");
        assert!(a.success("GET /x").is_err());
        assert!(a.expect_error(404, "not_found", "GET /x").is_err());
    }
}
