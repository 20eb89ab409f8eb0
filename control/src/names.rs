//! The rule for the names of objects the APIs put in URL paths and the
//! daemons in file names: datastores, volumes, switches, port groups,
//! ports, exports, VMs' devices. One rule, checked by mgmtd before it asks
//! a daemon and by the daemon itself.
//!
//! A name is 1 to 64 letters, digits, `-`, `_` or `.`, and starts with
//! neither `.` (hidden files, `..`) nor `-` (it would read as an option to
//! the command-line tools). A volume is `NAME` or `FOLDER/NAME`, and no
//! part ends with a suffix the datastore keeps for its own files.

/// The longest name.
pub const MAX_LEN: usize = 64;

/// Suffixes of a datastore's own files, refused at the end of a volume's
/// name or folder.
pub const RESERVED_SUFFIXES: [&str; 2] = [".img", ".volume.json"];

/// The rule, as a regular expression (for OpenAPI documents and forms).
pub const NAME_PATTERN: &str = "^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$";

/// A volume name, as a regular expression (the reserved suffixes are not
/// expressed).
pub const VOLUME_PATTERN: &str =
    "^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}(/[A-Za-z0-9_][A-Za-z0-9._-]{0,63})?$";

/// A name that breaks the rule, and which part of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} name {name:?} {why}")]
pub struct NameError {
    pub what: String,
    pub name: String,
    pub why: &'static str,
}

/// What is wrong with `part` (one name, or one part of a volume name), if
/// anything.
pub fn problem(part: &str) -> Option<&'static str> {
    if part.is_empty() || part.len() > MAX_LEN {
        Some("must be 1 to 64 characters")
    } else if part.starts_with(['.', '-']) {
        Some("must not start with '.' or '-'")
    } else if !part
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        Some("may only hold letters, digits, '.', '_' and '-'")
    } else {
        None
    }
}

/// Whether `name` follows the rule.
pub fn is_valid(name: &str) -> bool {
    problem(name).is_none()
}

/// Checks the name of an object; `what` names its kind in the error
/// ("datastore", "port group").
pub fn check(what: &str, name: &str) -> Result<(), NameError> {
    match problem(name) {
        None => Ok(()),
        Some(why) => Err(NameError {
            what: what.to_owned(),
            name: name.to_owned(),
            why,
        }),
    }
}

/// Checks a volume name: `NAME` or `FOLDER/NAME`, no part ending with a
/// reserved suffix.
pub fn check_volume(what: &str, name: &str) -> Result<(), NameError> {
    let err = |why| {
        Err(NameError {
            what: what.to_owned(),
            name: name.to_owned(),
            why,
        })
    };
    let parts: Vec<&str> = name.split('/').collect();
    if parts.len() > 2 {
        return err("may have at most one folder: NAME or FOLDER/NAME");
    }
    for part in parts {
        if let Some(why) = problem(part) {
            return err(why);
        }
        if RESERVED_SUFFIXES.iter().any(|s| part.ends_with(s)) {
            return err("must not end in .img or .volume.json");
        }
    }
    Ok(())
}

impl From<NameError> for crate::ApiError {
    fn from(e: NameError) -> Self {
        crate::ApiError::invalid(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "local", "vm-1_disk.0", "_x", &"a".repeat(64)] {
            assert!(check("datastore", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "-rf",
            "a/b",
            "a b",
            "é",
            &"a".repeat(65),
        ] {
            let e = check("datastore", bad).unwrap_err();
            assert!(e.to_string().starts_with("datastore name"), "{e}");
            assert_eq!(e.why, problem(bad).unwrap_or_default());
        }
    }

    #[test]
    fn volumes() {
        for ok in ["disk0", "vm1/disk0", "a.b/c-d"] {
            assert!(check_volume("volume", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a/b/c",
            "/a",
            "a/",
            "-a",
            "a/.b",
            "d.img",
            "f/d.volume.json",
            "x.img/d",
        ] {
            assert!(check_volume("volume", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_patterns_say_the_same() {
        // A crude check that the patterns' first character class and length
        // match the rule: they are hand-written next to it.
        assert!(NAME_PATTERN.contains("{0,63}") && NAME_PATTERN.starts_with("^[A-Za-z0-9_]"));
        assert!(VOLUME_PATTERN.starts_with(NAME_PATTERN.trim_end_matches('$')));
    }
}
