//! Retry timing: exponential backoff with ±20 % jitter between `initial` and `max`, honouring `Retry-After`.

use std::time::Duration;

use rand::Rng;

use crate::config::Retry;

/// The pause before attempt `attempt + 1`, after `attempt` (1-based) failed.
/// A peer's `Retry-After` is honoured when longer than the backoff, but never beyond `max`.
pub fn delay(policy: &Retry, attempt: u32, retry_after: Option<Duration>) -> Duration {
    let exp = attempt.saturating_sub(1).min(32);
    let base = policy.initial.saturating_mul(1u32 << exp.min(31)).min(policy.max);
    let jitter = rand::rng().random_range(0.8..=1.2);
    let jittered = base.mul_f64(jitter).min(policy.max);
    match retry_after {
        Some(ra) if ra > jittered => ra.min(policy.max),
        _ => jittered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Retry {
        Retry { max_attempts: 5, initial: Duration::from_secs(1), max: Duration::from_secs(60) }
    }

    #[test]
    fn delays_grow_exponentially_within_jitter() {
        for (attempt, base) in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0)] {
            for _ in 0..50 {
                let d = delay(&policy(), attempt, None).as_secs_f64();
                assert!(d >= base * 0.8 - 1e-9 && d <= base * 1.2 + 1e-9, "attempt {attempt}: {d}");
            }
        }
    }

    #[test]
    fn delays_never_exceed_max() {
        for attempt in 1..100 {
            assert!(delay(&policy(), attempt, None) <= Duration::from_secs(60));
        }
    }

    #[test]
    fn a_longer_retry_after_is_honoured_but_clamped() {
        assert_eq!(delay(&policy(), 1, Some(Duration::from_secs(30))), Duration::from_secs(30));
        assert_eq!(delay(&policy(), 1, Some(Duration::from_secs(3600))), Duration::from_secs(60));
    }
}
