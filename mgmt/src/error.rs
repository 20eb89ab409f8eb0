//! What goes wrong in mgmtd's work (VMs, imports, host paths, tasks), said
//! in the work's own terms. The API turns each kind into its HTTP answer
//! in one place (`impl From<Error> for ApiError` in [`crate::api::error`]).
//!
//! An error's text is the message of that answer, and what a failed task
//! or its event records: the two always read the same.

use control::client::CallError;
use control::names::NameError;

use crate::db::DbError;
use crate::vswitchd::SwitchError;

/// An operation of mgmtd that did not happen, and why.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field of the request breaks a rule; the text names the field.
    #[error("{0}")]
    Invalid(String),
    /// A host path the request names is outside the directories a client
    /// may name, or not the kind of file asked for.
    #[error("{0}")]
    PathNotAllowed(String),
    /// An image to import names another host file, or is not in the
    /// format it was said to be in.
    #[error("{0}")]
    ImageNotAllowed(String),
    /// No object of this kind has this name (or id).
    #[error("No {kind} {name:?}")]
    NotFound { kind: &'static str, name: String },
    /// The name is another object's.
    #[error("A {kind} named {name:?} exists")]
    NameTaken { kind: &'static str, name: String },
    /// The object's state, or another object's use of it, does not allow
    /// the operation (a running VM's hardware, a volume that is a disk).
    #[error("{0}")]
    Conflict(String),
    /// The caller may not do this (a join token that is unknown, used
    /// or expired).
    #[error("{0}")]
    Forbidden(String),
    /// A daemon or program the operation needs is not there.
    #[error("{0}")]
    Unavailable(String),
    /// A daemon refused the request, or could not be asked. The text is
    /// what the answer says ([`CallError::answer_message`]: a refusal's own
    /// message, else the whole failure), so the call error is not also a
    /// source.
    #[error("{}", .0.answer_message())]
    Daemon(CallError),
    /// The inventory failed. Its detail goes to mgmtd's log, not to the
    /// client.
    #[error("Database error (see mgmtd's log)")]
    Db(#[source] DbError),
    /// The cluster's store: unavailable (no quorum, no answer), a record
    /// changed by someone else since it was read, or one that is missing.
    #[error("{0}")]
    Store(#[from] cluster::StoreError),
    /// mgmtd's own failure: a file it cannot write, a hypervisor that did
    /// not start, a record it cannot serialize.
    #[error("{0}")]
    Internal(String),
}

impl From<CallError> for Error {
    fn from(e: CallError) -> Self {
        Error::Daemon(e)
    }
}

impl From<DbError> for Error {
    fn from(e: DbError) -> Self {
        Error::Db(e)
    }
}

/// sfera-vswitchd's answer, or a MAC address it would not take.
impl From<SwitchError> for Error {
    fn from(e: SwitchError) -> Self {
        match e {
            SwitchError::Call(c) => Error::Daemon(c),
            SwitchError::Mac(_) => Error::Invalid(e.to_string()),
        }
    }
}

/// A name that breaks the daemons' rule for names.
impl From<NameError> for Error {
    fn from(e: NameError) -> Self {
        Error::Invalid(e.to_string())
    }
}

/// mgmtd's own records as JSON: they always serialize, so a failure is
/// mgmtd's.
impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Internal(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use hyper::Method;

    use super::*;

    fn refused(status: u16) -> CallError {
        CallError::Refused {
            daemon: "sfera-blockd",
            method: Method::POST,
            path: "/v1/datastores/l/volumes".into(),
            status,
            code: Some("conflict".into()),
            message: "Volume v exists".into(),
        }
    }

    #[test]
    fn a_daemon_error_reads_as_the_answer_gives_it() {
        assert_eq!(Error::from(refused(409)).to_string(), "Volume v exists");
        let failed = Error::from(refused(500)).to_string();
        assert!(failed.starts_with("sfera-blockd refused POST"), "{failed}");
    }

    #[test]
    fn kinds_name_what_is_missing_or_taken() {
        let e = Error::NotFound {
            kind: "VM",
            name: "a".into(),
        };
        assert_eq!(e.to_string(), "No VM \"a\"");
        let e = Error::NameTaken {
            kind: "VM",
            name: "a".into(),
        };
        assert_eq!(e.to_string(), "A VM named \"a\" exists");
    }
}
