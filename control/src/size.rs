//! Sizes as the command-line tools take them: `4096`, `512K`, `10G`
//! (powers of 1024, case-insensitive).

/// A size that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("invalid size {0:?}: a number of bytes, or with K, M, G or T")]
    Invalid(String),
    #[error("size {0:?} is too large")]
    TooLarge(String),
}

/// Parses `4096`, `512K`, `10G`...
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let t = text.trim();
    let (digits, shift) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 10),
        Some('M') => (&t[..t.len() - 1], 20),
        Some('G') => (&t[..t.len() - 1], 30),
        Some('T') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| SizeError::Invalid(text.to_owned()))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| SizeError::TooLarge(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size(" 10G "), Ok(10 << 30));
        assert_eq!(parse_size("2T"), Ok(2 << 40));
        assert!(matches!(parse_size("x"), Err(SizeError::Invalid(_))));
        assert!(matches!(parse_size("1.5G"), Err(SizeError::Invalid(_))));
        assert!(matches!(parse_size("-1"), Err(SizeError::Invalid(_))));
        assert!(matches!(
            parse_size("99999999999T"),
            Err(SizeError::TooLarge(_))
        ));
    }
}
