//! Polling with a deadline, the only way tests wait.

use std::time::{Duration, Instant};

use crate::{Error, Result};

/// Polls `probe` until it returns `Some`, backing off from 10 ms to 200 ms
/// between tries, and fails with [`Error::Timeout`] after `timeout`.
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(10);
    loop {
        if let Some(value) = probe()? {
            return Ok(value);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(Error::Timeout {
                what: what.to_owned(),
                timeout,
                context: String::new(),
            });
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_first_value() {
        let mut n = 0;
        let got = wait_until("n to reach 3", Duration::from_secs(5), || {
            n += 1;
            Ok((n >= 3).then_some(n))
        })
        .unwrap();
        assert_eq!(got, 3);
    }

    #[test]
    fn times_out_with_what_it_waited_for() {
        let err = wait_until::<()>("never", Duration::from_millis(30), || Ok(None)).unwrap_err();
        assert!(err.to_string().contains("never"), "{err}");
    }

    #[test]
    fn probe_errors_stop_the_wait() {
        let err = wait_until::<()>("x", Duration::from_secs(5), || {
            Err(Error::Parse {
                what: "x".into(),
                text: "y".into(),
            })
        })
        .unwrap_err();
        assert!(matches!(err, Error::Parse { .. }));
    }
}
