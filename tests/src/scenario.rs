//! Named cases of one heavy scenario: a test that boots a guest (or
//! starts a daemon stack) once runs its checks as a sequence of named
//! cases on that one set-up, and a failure says which case failed.

use std::time::Instant;

/// Runs the case `name`: prints its start and its time, and names it in
/// its error.
pub fn case<T>(name: &str, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    eprintln!("case {name}");
    let started = Instant::now();
    let result = f().map_err(|e| e.context(format!("case {name} failed")));
    if result.is_ok() {
        eprintln!(
            "case {name}: ok in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_names_its_case() {
        let e = case::<()>("the_answer_is_42", || anyhow::bail!("it was 41")).unwrap_err();
        let text = format!("{e:#}");
        assert!(
            text.contains("case the_answer_is_42 failed") && text.contains("it was 41"),
            "{text}"
        );
    }

    #[test]
    fn a_success_returns_the_value() {
        assert_eq!(case("seven", || Ok(7)).unwrap(), 7);
    }
}
