//! Circuit breaker per route: after `max_failures` within `window` it opens for `open_for`, then lets one
//! probe through (half-open); the probe's result closes it or opens it again.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::Breaker as BreakerConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { probing: bool },
}

impl State {
    /// The value of `hookgate_circuit_state`: 0 closed, 1 half-open, 2 open.
    pub fn gauge(self) -> f64 {
        match self {
            State::Closed => 0.0,
            State::HalfOpen { .. } => 1.0,
            State::Open { .. } => 2.0,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::HalfOpen { .. } => "half-open",
            State::Open { .. } => "open",
        }
    }
}

/// How many jobs of the route may start now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowance {
    Any,
    /// Half-open: exactly one probe.
    One,
    /// Open (or a probe is under way): none until this instant.
    None {
        until: Instant,
    },
}

#[derive(Debug)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    failures: VecDeque<Instant>,
    state: State,
    /// Failures in the window when the circuit last opened (the window itself starts over then).
    opened_after: usize,
}

impl CircuitBreaker {
    pub fn new(config: BreakerConfig) -> Self {
        CircuitBreaker { config, failures: VecDeque::new(), state: State::Closed, opened_after: 0 }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// Failures counted in the window: while open, those that opened it (a failed probe counts as one).
    pub fn failures(&self) -> usize {
        match self.state {
            State::Open { .. } => self.opened_after,
            _ => self.failures.len(),
        }
    }

    /// What may run now; moves an expired open circuit to half-open.
    pub fn allowance(&mut self, now: Instant) -> Allowance {
        match self.state {
            State::Closed => Allowance::Any,
            State::Open { until } if now >= until => {
                self.state = State::HalfOpen { probing: false };
                Allowance::One
            }
            State::Open { until } => Allowance::None { until },
            State::HalfOpen { probing: false } => Allowance::One,
            State::HalfOpen { probing: true } => Allowance::None { until: now + Duration::from_secs(1) },
        }
    }

    /// A job was claimed under `allowance`; a half-open circuit now has its probe in flight.
    pub fn started(&mut self) {
        if let State::HalfOpen { .. } = self.state {
            self.state = State::HalfOpen { probing: true };
        }
    }

    /// Record the result of an attempt. Only failures that say the peer is unwell count (timeouts,
    /// connection errors, 5xx): a 4xx is the request's fault, not the destination's.
    pub fn record(&mut self, healthy: bool, now: Instant) {
        match (self.state, healthy) {
            (State::HalfOpen { .. }, true) => {
                self.state = State::Closed;
                self.failures.clear();
            }
            (State::HalfOpen { .. }, false) => self.open(now),
            (State::Closed, true) => {}
            (State::Closed, false) => {
                self.failures.push_back(now);
                while self.failures.front().is_some_and(|t| now.duration_since(*t) > self.config.window) {
                    self.failures.pop_front();
                }
                if self.failures.len() >= self.config.max_failures as usize {
                    self.open(now);
                }
            }
            // Results of attempts that started before the circuit opened change nothing.
            (State::Open { .. }, _) => {}
        }
    }

    fn open(&mut self, now: Instant) {
        self.opened_after = self.failures.len().max(1);
        self.state = State::Open { until: now + self.config.open_for };
        self.failures.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(BreakerConfig {
            window: Duration::from_secs(120),
            max_failures: 5,
            open_for: Duration::from_secs(60),
        })
    }

    #[test]
    fn five_failures_within_the_window_open_the_circuit() {
        let mut b = breaker();
        let t = Instant::now();
        for i in 0..4 {
            b.record(false, t + Duration::from_secs(i));
        }
        assert_eq!(b.allowance(t + Duration::from_secs(5)), Allowance::Any);
        b.record(false, t + Duration::from_secs(5));
        assert_eq!(b.state().name(), "open");
        assert_eq!(b.allowance(t + Duration::from_secs(6)), Allowance::None { until: t + Duration::from_secs(65) });
    }

    #[test]
    fn failures_spread_beyond_the_window_do_not_open_it() {
        let mut b = breaker();
        let t = Instant::now();
        for i in 0..10 {
            b.record(false, t + Duration::from_secs(i * 31));
        }
        assert_eq!(b.state(), State::Closed);
    }

    #[test]
    fn after_open_for_one_probe_goes_through_and_its_success_closes() {
        let mut b = breaker();
        let t = Instant::now();
        for _ in 0..5 {
            b.record(false, t);
        }
        let later = t + Duration::from_secs(60);
        assert_eq!(b.allowance(later), Allowance::One);
        b.started();
        assert!(matches!(b.allowance(later), Allowance::None { .. }), "only one probe at a time");
        b.record(true, later);
        assert_eq!(b.state(), State::Closed);
        assert_eq!(b.allowance(later), Allowance::Any);
    }

    #[test]
    fn a_failed_probe_opens_it_again() {
        let mut b = breaker();
        let t = Instant::now();
        for _ in 0..5 {
            b.record(false, t);
        }
        let later = t + Duration::from_secs(61);
        assert_eq!(b.allowance(later), Allowance::One);
        b.started();
        b.record(false, later);
        assert_eq!(b.state(), State::Open { until: later + Duration::from_secs(60) });
        assert_eq!(b.state().gauge(), 2.0);
    }

    #[test]
    fn failures_are_counted_in_the_window_and_kept_while_open() {
        let mut b = breaker();
        let t0 = Instant::now();
        for i in 0..4 {
            b.record(false, t0 + Duration::from_secs(i));
        }
        assert_eq!(b.failures(), 4);
        b.record(false, t0 + Duration::from_secs(5));
        assert_eq!(b.state().name(), "open");
        assert_eq!(b.failures(), 5, "the failures that opened it");
        assert_eq!(b.allowance(t0 + Duration::from_secs(70)), Allowance::One);
        b.started();
        b.record(false, t0 + Duration::from_secs(71));
        assert_eq!(b.failures(), 1, "a failed probe opens it again");
    }
}
