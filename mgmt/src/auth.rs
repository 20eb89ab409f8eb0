//! Who may call the API: users with argon2 password hashes, login
//! sessions (a cookie) and API tokens (a bearer header). Session and token
//! secrets are 256 random bits; only their SHA-256 is stored.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Everything.
    Administrator,
    /// Reads only.
    ReadOnly,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Administrator => "administrator",
            Role::ReadOnly => "read-only",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "administrator" => Some(Role::Administrator),
            "read-only" => Some(Role::ReadOnly),
            _ => None,
        }
    }
}

/// The caller of a request, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user: String,
    pub role: Role,
    /// The session's secret hash when the caller logged in with a cookie.
    pub session: Option<String>,
}

/// Errors of the password machinery.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("Cannot hash the password: {0}")]
    Hash(String),
    #[error("The system's random source failed")]
    Random,
    #[error("Not an argon2 password hash: {0}")]
    NotArgon2(String),
}

/// How long a login session lasts.
pub const SESSION_SECONDS: i64 = 12 * 3600;
/// The session cookie's name.
pub const SESSION_COOKIE: &str = "sfera_session";

fn random_bytes<const N: usize>() -> Result<[u8; N], AuthError> {
    let mut buf = [0u8; N];
    SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| AuthError::Random)?;
    Ok(buf)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new secret for a session or a token: 256 bits, hex.
pub fn new_secret() -> Result<String, AuthError> {
    Ok(hex(&random_bytes::<32>()?))
}

/// A new API token's id: random, so hosts need not agree on a counter,
/// and under 2^53, so a browser's JSON numbers hold it exactly.
pub fn new_token_id() -> Result<i64, AuthError> {
    let n = u64::from_le_bytes(random_bytes::<8>()?) >> 11;
    Ok(i64::try_from(n.max(1)).unwrap_or(1))
}

/// What the database stores for a secret.
pub fn secret_hash(secret: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, secret.as_bytes()).as_ref())
}

/// A password a person can type: 20 letters and digits (~119 bits).
pub fn new_password() -> Result<String, AuthError> {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let bytes = random_bytes::<40>()?;
    // Rejection sampling keeps every letter equally likely.
    let limit = 256 - 256 % ALPHABET.len();
    let out: String = bytes
        .iter()
        .filter(|b| usize::from(**b) < limit)
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .take(20)
        .collect();
    if out.len() < 20 {
        // Vanishingly unlikely (needs more than 20 of 40 bytes rejected).
        return new_password();
    }
    Ok(out)
}

/// Hashes a password with argon2id and a random salt (PHC string).
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let salt = SaltString::encode_b64(&random_bytes::<16>()?)
        .map_err(|e| AuthError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

/// Checks that `hash` is an argon2 hash in PHC form (`$argon2id$v=19$...`)
/// that [`verify_password`] can check passwords against.
pub fn check_password_hash(hash: &str) -> Result<(), AuthError> {
    let parsed = PasswordHash::new(hash).map_err(|e| AuthError::NotArgon2(e.to_string()))?;
    if !parsed.algorithm.as_str().starts_with("argon2") {
        return Err(AuthError::NotArgon2(format!(
            "the algorithm is {}",
            parsed.algorithm
        )));
    }
    argon2::Params::try_from(&parsed).map_err(|e| AuthError::NotArgon2(e.to_string()))?;
    if parsed.hash.is_none() {
        return Err(AuthError::NotArgon2("it has no hash value".into()));
    }
    Ok(())
}

/// Checks a password against a stored hash.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Checks a user name: what goes into the database and the event log.
pub fn check_user_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "user name {name:?} must be 1 to 64 letters, digits, '-', '_', '.' or '@'"
        ))
    }
}

/// Checks a new password's length.
pub fn check_password(password: &str) -> Result<(), String> {
    if (12..=256).contains(&password.chars().count()) {
        Ok(())
    } else {
        Err("passwords must be 12 to 256 characters long".to_owned())
    }
}

/// The value of the session cookie in a `Cookie` header.
pub fn session_from_cookie_header(header: &str) -> Option<&str> {
    header.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == SESSION_COOKIE && !v.is_empty()).then_some(v)
    })
}

/// The token of an `Authorization: Bearer` header.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify() {
        let hash = hash_password("correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password("correct horse battery", &hash));
        assert!(!verify_password("correct horse batterz", &hash));
        assert!(!verify_password("x", "not a hash"));
        // Salted: the same password hashes differently.
        assert_ne!(hash, hash_password("correct horse battery").unwrap());
    }

    #[test]
    fn password_hashes_are_checked() {
        let hash = hash_password("correct horse battery").unwrap();
        assert!(check_password_hash(&hash).is_ok());
        for bad in [
            "",
            "correct horse battery",
            "$6$salt$abcdefghijklmnop",
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ",
            "$argon2id$v=19$m=1,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
        ] {
            assert!(check_password_hash(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn generated_secrets() {
        let p = new_password().unwrap();
        assert_eq!(p.len(), 20);
        assert!(p.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert!(check_password(&p).is_ok());
        let s = new_secret().unwrap();
        assert_eq!(s.len(), 64);
        assert_ne!(s, new_secret().unwrap());
        assert_eq!(secret_hash("abc").len(), 64);
        assert_ne!(secret_hash("abc"), secret_hash("abd"));
    }

    #[test]
    fn headers() {
        assert_eq!(
            session_from_cookie_header("a=b; sfera_session=xyz; c=d"),
            Some("xyz")
        );
        assert_eq!(session_from_cookie_header("sfera_session="), None);
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
    }

    #[test]
    fn names_and_roles() {
        assert!(check_user_name("admin").is_ok());
        assert!(check_user_name("a b").is_err());
        assert!(check_user_name("").is_err());
        assert!(check_password("short").is_err());
        assert_eq!(Role::parse("read-only"), Some(Role::ReadOnly));
        assert_eq!(Role::parse("root"), None);
    }
}
