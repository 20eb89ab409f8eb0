//! The rules requests are checked against before anything is asked of a
//! daemon: names of datastores, switches, port groups, volumes, uplinks,
//! users and tokens, and the limits of numbers in bodies. Each rule is a
//! function of the value alone, so a bad request is refused the same way
//! wherever it comes in. (A VM's own fields are checked in
//! [`crate::vm::request`].)

use serde_json::{Map, Value};

use super::error::ApiError;
use crate::vm::request::{MAX_DISK_BYTES, MIN_DISK_BYTES};

/// Names of datastores, port groups and switches, as the daemons take
/// them in paths (the OpenAPI document's form of [`check_object_name`]).
pub const OBJECT_NAME: &str = control::names::NAME_PATTERN;

/// Volume names: NAME or FOLDER/NAME (the OpenAPI document's form of
/// [`check_volume_name`]).
pub const VOLUME_NAME: &str = control::names::VOLUME_PATTERN;

/// Host interface names (the OpenAPI document's form of
/// [`check_interface`]).
pub const INTERFACE_NAME: &str = "^[A-Za-z0-9_.-]{1,15}$";

/// The most uplinks a switch has.
pub const MAX_UPLINKS: usize = 8;
/// The longest a switch remembers a MAC address, in seconds.
pub const MAX_MAC_AGEING_S: u32 = 1_000_000;
/// How long a switch remembers a MAC address when not told.
pub const DEFAULT_MAC_AGEING_S: u32 = 300;
/// The most characters of an API token's name.
pub const MAX_TOKEN_NAME: usize = 128;

/// A name of a datastore, switch, port group or uplink (`what`): the
/// daemons' own rule ([`control::names`]).
pub fn check_object_name(what: &str, name: &str) -> Result<(), ApiError> {
    Ok(control::names::check(what, name)?)
}

/// A volume name as sfera-blockd takes it (`NAME` or `FOLDER/NAME`), so a
/// bad one is refused before anything is made.
pub fn check_volume_name(name: &str) -> Result<(), ApiError> {
    Ok(control::names::check_volume("volume", name)?)
}

/// A host interface name (`what`, e.g. `uplinks[0].interface`): what
/// Linux takes (IFNAMSIZ).
pub fn check_interface(what: &str, name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "{what} {name:?} must be 1 to 15 letters, digits, '-', '_' or '.'"
        )))
    }
}

/// A volume's size: a multiple of 512 from 1 MiB to 64 TiB.
pub fn check_size(size: u64) -> Result<(), ApiError> {
    if (MIN_DISK_BYTES..=MAX_DISK_BYTES).contains(&size) && size.is_multiple_of(512) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "size_bytes must be a multiple of 512 from 1 MiB to 64 TiB",
        ))
    }
}

/// How long a switch remembers a MAC address.
pub fn check_mac_ageing(seconds: u32) -> Result<(), ApiError> {
    if (1..=MAX_MAC_AGEING_S).contains(&seconds) {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "mac_ageing_s must be 1 to {MAX_MAC_AGEING_S}"
        )))
    }
}

/// How many uplinks a switch is given.
pub fn check_uplink_count(count: usize) -> Result<(), ApiError> {
    if count <= MAX_UPLINKS {
        Ok(())
    } else {
        Err(ApiError::invalid(format!("at most {MAX_UPLINKS} uplinks")))
    }
}

/// A part of a port group (`what`, e.g. `security`) that holds only
/// `keys`, each a boolean.
pub fn check_flags(what: &str, m: &Map<String, Value>, keys: &[&str]) -> Result<(), ApiError> {
    for (k, v) in m {
        if !keys.contains(&k.as_str()) {
            return Err(ApiError::invalid(format!(
                "{what}.{k} is not a field (fields: {})",
                keys.join(", ")
            )));
        }
        if !v.is_boolean() {
            return Err(ApiError::invalid(format!(
                "{what}.{k} must be true or false"
            )));
        }
    }
    Ok(())
}

/// A port group's VLAN as a change gives it: an object (sfera-vswitchd
/// checks its fields).
pub fn check_vlan(vlan: &Value) -> Result<(), ApiError> {
    if vlan.is_object() {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "vlan must be an object: {\"mode\":\"none\"}, {\"mode\":\"access\",\"id\":N} or {\"mode\":\"trunk\",\"allowed\":[...]}",
        ))
    }
}

/// An API token's name: 1 to 128 characters.
pub fn check_token_name(name: &str) -> Result<(), ApiError> {
    if (1..=MAX_TOKEN_NAME).contains(&name.chars().count()) {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "name must be 1 to {MAX_TOKEN_NAME} characters"
        )))
    }
}

/// A user name: what goes into the database and the event log.
pub fn check_user_name(name: &str) -> Result<(), ApiError> {
    crate::auth::check_user_name(name).map_err(ApiError::invalid)
}

/// A new password's length.
pub fn check_password(password: &str) -> Result<(), ApiError> {
    crate::auth::check_password(password).map_err(ApiError::invalid)
}

/// A datastore's path as given: not the host's root (where it must be is
/// checked against the datastore roots once resolved).
pub fn check_datastore_path(path: &str) -> Result<(), ApiError> {
    if path == "/" {
        Err(ApiError::new(
            400,
            super::error::PATH_NOT_ALLOWED,
            "path / is the host's root: give a directory or block device for the datastore",
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names() {
        assert!(check_object_name("datastore", "local").is_ok());
        assert!(check_object_name("datastore", "../x").is_err());
        assert!(check_object_name("datastore", "").is_err());
        assert!(check_object_name("datastore", &"a".repeat(65)).is_err());
        // As sfera-blockd refuses it: it would read as an option.
        assert!(check_object_name("datastore", "-rf").is_err());
    }

    #[test]
    fn volume_names() {
        assert!(check_volume_name("imports/disk-1").is_ok());
        for bad in ["", "a/b/c", ".hidden", "x.img", "sp ace", "a/x.volume.json"] {
            assert!(check_volume_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn numbers_and_short_names() {
        assert!(check_size(1 << 20).is_ok());
        assert!(check_size((1 << 20) + 1).is_err());
        assert!(check_size(512).is_err());
        assert!(check_mac_ageing(0).is_err());
        assert!(check_mac_ageing(MAX_MAC_AGEING_S).is_ok());
        assert!(check_uplink_count(MAX_UPLINKS + 1).is_err());
        assert!(check_token_name("").is_err());
        assert!(check_token_name(&"é".repeat(MAX_TOKEN_NAME)).is_ok());
        assert!(check_interface("uplinks[0].interface", "eth0").is_ok());
        assert!(check_interface("uplinks[0].interface", "a-very-long-name0").is_err());
        assert_eq!(
            check_datastore_path("/").unwrap_err().code,
            "path_not_allowed"
        );
    }

    #[test]
    fn flags_and_vlans() {
        let m = |v: Value| v.as_object().cloned().unwrap();
        let keys = ["promiscuous"];
        assert!(
            check_flags(
                "security",
                &m(serde_json::json!({"promiscuous": true})),
                &keys
            )
            .is_ok()
        );
        assert!(check_flags("security", &m(serde_json::json!({"promiscuous": 1})), &keys).is_err());
        assert!(check_flags("security", &m(serde_json::json!({"other": true})), &keys).is_err());
        assert!(check_vlan(&serde_json::json!({"mode": "none"})).is_ok());
        assert!(check_vlan(&serde_json::json!("none")).is_err());
    }
}
