//! REST calls to a daemon's Unix-socket API with `curl`, an HTTP client no
//! one here wrote.

use std::path::Path;
use std::process::Command;

use crate::process::run;
use crate::{Error, Result, tools};

/// An answer: the status and the body (JSON when there is one).
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: u16,
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
}

/// Sends `method path` with an optional JSON body over `socket`.
pub fn call(socket: &Path, method: &str, path: &str, body: Option<&str>) -> Result<Answer> {
    let mut command = Command::new(tools::require("curl", "curl")?);
    command
        .arg("--silent")
        .arg("--show-error")
        .arg("--unix-socket")
        .arg(socket)
        .args(["-X", method, "-w", "\n%{http_code}"]);
    if let Some(body) = body {
        command.args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
        ]);
    }
    command.arg(format!("http://localhost{path}"));
    let out = run(command)?;
    let (body, status) = out.rsplit_once('\n').unwrap_or(("", out.as_str()));
    let status = status.trim().parse().map_err(|_| Error::Parse {
        what: "curl status".to_owned(),
        text: out.clone(),
    })?;
    Ok(Answer {
        status,
        body: body.to_owned(),
    })
}
