//! Who may call a daemon's control API: root (sfera-mgmtd) and the
//! daemon's own user, checked on each connection from the peer's
//! credentials (SO_PEERCRED). The socket's mode (0600) already keeps
//! others out; this check still holds if the mode is loosened by mistake.
//! The vhost-user sockets VMs connect to are not checked this way: their
//! owner and mode, set by mgmtd per VM, are their access control.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::net::UnixStream;

/// At most one log line about refused peers this often.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The API's peer check, with its rate-limited log.
#[derive(Debug)]
pub struct ApiPeers {
    own_uid: u32,
    log: Mutex<RefusalLog>,
}

#[derive(Debug, Default)]
struct RefusalLog {
    last: Option<Instant>,
    /// Refusals not logged since the last line.
    unlogged: u64,
}

/// A refused connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub uid: u32,
    /// Whether to log this one, and how many refusals went unlogged
    /// before it.
    pub log: Option<u64>,
}

impl ApiPeers {
    /// Allows root and the process's effective uid (read now: call it
    /// after the daemon has become its user).
    pub fn new() -> Self {
        // SAFETY: geteuid(2) reads this process's effective uid.
        let own_uid = unsafe { libc::geteuid() };
        Self::for_uid(own_uid)
    }

    fn for_uid(own_uid: u32) -> Self {
        ApiPeers {
            own_uid,
            log: Mutex::new(RefusalLog::default()),
        }
    }

    /// Checks a peer's uid.
    pub fn check(&self, peer_uid: u32) -> Result<(), Refusal> {
        self.check_at(peer_uid, Instant::now())
    }

    fn check_at(&self, peer_uid: u32, now: Instant) -> Result<(), Refusal> {
        if peer_uid == 0 || peer_uid == self.own_uid {
            return Ok(());
        }
        let mut log = self
            .log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let due = log
            .last
            .is_none_or(|t| now.saturating_duration_since(t) >= LOG_EVERY);
        let logged = if due {
            log.last = Some(now);
            Some(std::mem::take(&mut log.unlogged))
        } else {
            log.unlogged += 1;
            None
        };
        Err(Refusal {
            uid: peer_uid,
            log: logged,
        })
    }
}

/// `stream` if its peer may use the API; otherwise the peer is answered
/// 403 (best effort: a fresh connection's buffer takes the short answer
/// without blocking), the refusal logged at most once per [`LOG_EVERY`],
/// and the connection closed.
pub fn admit(stream: UnixStream, peers: &ApiPeers) -> Option<UnixStream> {
    let uid = match stream.peer_cred() {
        Ok(cred) => cred.uid(),
        Err(e) => {
            tracing::warn!("API connection refused: cannot read its peer's credentials: {e}");
            return None;
        }
    };
    match peers.check(uid) {
        Ok(()) => Some(stream),
        Err(refusal) => {
            let _ = stream.try_write(&refusal.http_response());
            if let Some(unlogged) = refusal.log {
                tracing::warn!(
                    uid,
                    unlogged,
                    "API connection refused: {}",
                    refusal.message()
                );
            }
            None
        }
    }
}

impl Default for ApiPeers {
    fn default() -> Self {
        Self::new()
    }
}

impl Refusal {
    /// What the log and the caller are told.
    pub fn message(&self) -> String {
        format!(
            "uid {} may not use this API: only root and the daemon's own user may",
            self.uid
        )
    }

    /// The HTTP answer sent before the connection is closed, in the
    /// daemons' JSON error shape.
    pub fn http_response(&self) -> Vec<u8> {
        let body = format!(
            "{{\"error\":{{\"code\":\"peer_not_allowed\",\"message\":\"{}\"}}}}",
            self.message()
        );
        format!(
            "HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_the_own_user_pass_others_are_refused() {
        let peers = ApiPeers::for_uid(999);
        assert!(peers.check(0).is_ok());
        assert!(peers.check(999).is_ok());
        let refused = peers.check(65534).unwrap_err();
        assert_eq!(refused.uid, 65534);
        let answer = String::from_utf8(refused.http_response()).unwrap();
        assert!(answer.starts_with("HTTP/1.1 403 "), "{answer}");
        let body = answer.split("\r\n\r\n").nth(1).unwrap();
        let head_len: usize = answer
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(head_len, body.len());
        assert!(body.contains("\"peer_not_allowed\"") && body.contains("uid 65534"));
    }

    #[test]
    fn refusals_are_logged_once_per_interval_with_the_count_of_the_rest() {
        let peers = ApiPeers::for_uid(999);
        let t0 = Instant::now();
        assert_eq!(peers.check_at(1000, t0).unwrap_err().log, Some(0));
        for i in 1..=5 {
            let at = t0 + Duration::from_secs(i);
            assert_eq!(peers.check_at(1000, at).unwrap_err().log, None);
        }
        let later = t0 + LOG_EVERY;
        assert_eq!(peers.check_at(1001, later).unwrap_err().log, Some(5));
        assert_eq!(
            peers
                .check_at(1001, later + Duration::from_secs(1))
                .unwrap_err()
                .log,
            None
        );
    }
}
