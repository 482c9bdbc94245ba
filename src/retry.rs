//! retry: a route's retry policy and the pause before each next attempt — exponential backoff with ±20 %
//! jitter between `initial` and `max`, a peer's `Retry-After` honoured, and a floor after throttling.
//!
//! Pure and shared: the worker times failed attempts with it and the store times attempts whose runner
//! died, so it depends on neither.

use std::time::Duration;

use rand::Rng;

/// How a route retries (`[routes.retry]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    pub max_attempts: u32,
    pub initial: Duration,
    pub max: Duration,
    /// After the peer throttled us (429) or did not answer in time, the next attempt waits at least this
    /// long: an overloaded peer gets room to recover instead of the backoff's first quick retries.
    pub throttle_floor: Duration,
}

impl Retry {
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
    pub const DEFAULT_INITIAL: Duration = Duration::from_secs(1);
    pub const DEFAULT_MAX: Duration = Duration::from_secs(600);
    pub const DEFAULT_THROTTLE_FLOOR: Duration = Duration::from_secs(30);
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            max_attempts: Self::DEFAULT_MAX_ATTEMPTS,
            initial: Self::DEFAULT_INITIAL,
            max: Self::DEFAULT_MAX,
            throttle_floor: Self::DEFAULT_THROTTLE_FLOOR,
        }
    }
}

/// What a failed attempt says about the peer, beyond that it failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hint {
    /// The peer's `Retry-After`, if it sent one.
    pub retry_after: Option<Duration>,
    /// The peer answered 429 or the attempt timed out.
    pub throttled: bool,
}

/// The pause before attempt `attempt + 1`, after `attempt` (1-based) failed. A peer's `Retry-After` is
/// honoured when longer than the backoff, and a throttled attempt waits at least `throttle_floor`; neither
/// beyond `max`.
pub fn delay(policy: &Retry, attempt: u32, hint: Hint) -> Duration {
    let exp = attempt.saturating_sub(1).min(32);
    let base = policy.initial.saturating_mul(1u32 << exp.min(31)).min(policy.max);
    let jitter = rand::rng().random_range(0.8..=1.2);
    let mut pause = base.mul_f64(jitter);
    if let Some(retry_after) = hint.retry_after {
        pause = pause.max(retry_after);
    }
    if hint.throttled {
        pause = pause.max(policy.throttle_floor);
    }
    pause.min(policy.max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Retry {
        Retry { max_attempts: 5, initial: Duration::from_secs(1), max: Duration::from_secs(60), ..Retry::default() }
    }

    #[test]
    fn delays_grow_exponentially_within_jitter() {
        for (attempt, base) in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0)] {
            for _ in 0..50 {
                let d = delay(&policy(), attempt, Hint::default()).as_secs_f64();
                assert!(d >= base * 0.8 - 1e-9 && d <= base * 1.2 + 1e-9, "attempt {attempt}: {d}");
            }
        }
    }

    #[test]
    fn delays_never_exceed_max() {
        for attempt in 1..100 {
            assert!(delay(&policy(), attempt, Hint::default()) <= Duration::from_secs(60));
            let throttled = Hint { throttled: true, retry_after: Some(Duration::from_secs(86_400)) };
            assert!(delay(&policy(), attempt, throttled) <= Duration::from_secs(60));
        }
    }

    #[test]
    fn a_longer_retry_after_is_honoured_but_clamped() {
        let after = |s| Hint { retry_after: Some(Duration::from_secs(s)), throttled: false };
        assert_eq!(delay(&policy(), 1, after(30)), Duration::from_secs(30));
        assert_eq!(delay(&policy(), 1, after(3600)), Duration::from_secs(60));
    }

    #[test]
    fn a_throttled_attempt_waits_at_least_the_floor() {
        let throttled = Hint { throttled: true, retry_after: None };
        // The first retry would come after about a second; throttled, it waits the 30 s floor.
        assert_eq!(delay(&policy(), 1, throttled), Duration::from_secs(30));
        // A backoff already past the floor is kept (attempt 7: 60 s ± 20 %, within max).
        let late = delay(&policy(), 7, throttled);
        assert!(late >= Duration::from_secs(48) && late <= Duration::from_secs(60), "{late:?}");
        // A shorter Retry-After does not undercut the floor; a longer one wins.
        let short = Hint { throttled: true, retry_after: Some(Duration::from_secs(2)) };
        assert_eq!(delay(&policy(), 1, short), Duration::from_secs(30));
        let long = Hint { throttled: true, retry_after: Some(Duration::from_secs(45)) };
        assert_eq!(delay(&policy(), 1, long), Duration::from_secs(45));
        // An unthrottled failure keeps the quick first retry.
        assert!(delay(&policy(), 1, Hint::default()) <= Duration::from_millis(1200));
    }

    #[test]
    fn a_zero_floor_changes_nothing() {
        let policy = Retry { throttle_floor: Duration::ZERO, ..policy() };
        assert!(delay(&policy, 1, Hint { throttled: true, retry_after: None }) <= Duration::from_millis(1200));
    }
}
