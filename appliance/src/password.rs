//! The administrator's password: strength rules, argon2 hashes as
//! sfera-mgmtd stores and checks them.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};

/// The shortest password accepted.
pub const MIN_LEN: usize = 8;

/// A password the installer accepts: 8 characters at least, no control
/// characters (they cannot be typed at a login prompt).
pub fn check_strength(password: &str) -> Result<(), String> {
    if password.chars().count() < MIN_LEN {
        return Err(format!("is too short: {MIN_LEN} characters at least"));
    }
    if password.chars().any(char::is_control) {
        return Err("holds control characters".into());
    }
    Ok(())
}

/// Checks that `hash` is an argon2 hash in PHC form that sfera-mgmtd can
/// check passwords against.
pub fn check_hash(hash: &str) -> Result<(), String> {
    let parsed = PasswordHash::new(hash)
        .map_err(|e| format!("is not an argon2 hash ($argon2id$...): {e}"))?;
    if !parsed.algorithm.as_str().starts_with("argon2") {
        return Err(format!("is a {} hash, not argon2", parsed.algorithm));
    }
    argon2::Params::try_from(&parsed).map_err(|e| format!("has bad argon2 parameters: {e}"))?;
    if parsed.hash.is_none() {
        return Err("has no hash value".into());
    }
    Ok(())
}

/// Hashes a password with argon2id and a random salt, as sfera-mgmtd does.
pub fn hash(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    random(&mut salt)?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("Cannot hash the password: {e}"))
}

fn random(buf: &mut [u8]) -> Result<(), String> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .map_err(|e| format!("Cannot read /dev/urandom: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::PasswordVerifier;

    #[test]
    fn hashes_verify_and_check() {
        let h = hash("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(check_hash(&h).is_ok());
        let parsed = PasswordHash::new(&h).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"correct horse battery", &parsed)
                .is_ok()
        );
        assert_ne!(h, hash("correct horse battery").unwrap());
        assert!(check_hash("$6$salt$abcdefghijklmnop").is_err());
        assert!(check_hash("secret").is_err());
    }

    #[test]
    fn strength() {
        assert!(check_strength("12345678").is_ok());
        assert!(check_strength("1234567").is_err());
        assert!(check_strength("12345678\n").is_err());
    }
}
