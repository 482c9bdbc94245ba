//! wake: how the worker learns there is work — at once for jobs due now, and at their time for jobs stored to
//! run later (a coalesce window, a delay), instead of a claim per stored webhook that finds nothing due.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;

use crate::store::Millis;

/// Due times are kept rounded up to this step: a storm of webhooks for one key, each pushing its job's time
/// a little later, wakes the worker once per step at most, not once per webhook.
const STEP_MS: Millis = 50;

/// The most due times remembered; past it the latest are forgotten and found by the worker's regular poll.
const MAX_TIMES: usize = 4096;

#[derive(Default)]
pub struct Wake {
    /// Claim now: jobs due now were committed, capacity was freed, or the configuration changed.
    now: Notify,
    /// A due time sooner than every one the worker knew of was noted: it should set its timer again.
    sooner: Notify,
    due: Mutex<BTreeSet<Millis>>,
}

impl Wake {
    pub fn new() -> Self {
        Self::default()
    }

    /// Wake the worker to claim now.
    pub fn notify_one(&self) {
        self.now.notify_one();
    }

    /// Jobs were committed that come due at `run_at`: claim now if they are due, else when they are.
    pub fn jobs_due_at(&self, run_at: Millis, now: Millis) {
        if run_at <= now {
            return self.now.notify_one();
        }
        let at = run_at.div_euclid(STEP_MS).saturating_add(1).saturating_mul(STEP_MS);
        let mut due = self.due.lock().unwrap_or_else(|p| p.into_inner());
        let sooner = due.first().is_none_or(|&first| at < first);
        due.insert(at);
        if due.len() > MAX_TIMES {
            due.pop_last();
        }
        drop(due);
        if sooner {
            self.sooner.notify_one();
        }
    }

    /// How long the worker may sleep: until the earliest noted due time, at most `poll`.
    pub fn sleep_for(&self, poll: Duration, now: Millis) -> Duration {
        let first = self.due.lock().unwrap_or_else(|p| p.into_inner()).first().copied();
        match first {
            Some(at) => poll.min(Duration::from_millis(at.saturating_sub(now).max(0) as u64)),
            None => poll,
        }
    }

    /// The worker's timer fired: forget the due times that have passed (the claim that follows takes them).
    pub fn passed(&self, now: Millis) {
        let mut due = self.due.lock().unwrap_or_else(|p| p.into_inner());
        let later = due.split_off(&(now + 1));
        *due = later;
    }

    /// Resolves when the worker should claim now.
    pub async fn claim_now(&self) {
        self.now.notified().await
    }

    /// Resolves when a sooner due time was noted.
    pub async fn sooner(&self) {
        self.sooner.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_job_due_later_sets_the_timer_and_is_forgotten_once_it_passed() {
        let wake = Wake::new();
        let poll = Duration::from_secs(1);
        assert_eq!(wake.sleep_for(poll, 10_000), poll);
        wake.jobs_due_at(10_420, 10_000);
        // Rounded up to the step: the worker wakes at or after the due time, never before.
        assert_eq!(wake.sleep_for(poll, 10_000), Duration::from_millis(450));
        tokio::time::timeout(Duration::from_millis(100), wake.sooner()).await.expect("the timer is set again");
        // A later time is remembered but does not disturb the worker.
        wake.jobs_due_at(10_700, 10_000);
        assert!(tokio::time::timeout(Duration::from_millis(50), wake.sooner()).await.is_err());
        wake.passed(10_450);
        assert_eq!(wake.sleep_for(poll, 10_450), Duration::from_millis(300));
        wake.passed(10_750);
        assert_eq!(wake.sleep_for(poll, 10_750), poll);
    }

    #[tokio::test]
    async fn a_job_due_now_wakes_the_worker_to_claim_and_sets_no_timer() {
        let wake = Wake::new();
        wake.jobs_due_at(5_000, 5_000);
        tokio::time::timeout(Duration::from_millis(100), wake.claim_now()).await.expect("claim now");
        assert_eq!(wake.sleep_for(Duration::from_secs(1), 5_000), Duration::from_secs(1));
    }

    #[test]
    fn a_storm_for_one_key_keeps_one_time_per_step_and_at_most_the_bound() {
        let wake = Wake::new();
        for i in 0..1000 {
            wake.jobs_due_at(20_000 + i, 19_000);
        }
        assert_eq!(wake.due.lock().unwrap().len(), 20, "1,000 ms of due times in 50 ms steps");
        for i in 0..(MAX_TIMES as i64 + 10) {
            wake.jobs_due_at(100_000 + i * STEP_MS, 0);
        }
        assert_eq!(wake.due.lock().unwrap().len(), MAX_TIMES);
    }
}
