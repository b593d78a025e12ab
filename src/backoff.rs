//! Exponential backoff, the one rule every retry in Tandem follows: wait `first` after the first
//! failure, twice as long after each further one, never longer than `max`.
//!
//! Pure arithmetic, no clock: a retry loop keeps a [`Backoff`] and sleeps for what
//! [`Backoff::next_delay`] says; code that stores the number of failed attempts instead (a
//! webhook delivery keeps it in the database) asks [`Policy::after`] directly.

use std::time::Duration;

/// The delays of one kind of retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Policy {
    first: Duration,
    max: Duration,
}

impl Policy {
    /// Waits `first` after one failure, doubling up to `max`.
    pub(crate) const fn new(first: Duration, max: Duration) -> Self {
        Self { first, max }
    }

    /// The wait after `failures` failed attempts in a row: none after none, `first` after
    /// one, then doubling, at most `max`.
    pub(crate) fn after(&self, failures: u32) -> Duration {
        let Some(doublings) = failures.checked_sub(1) else {
            return Duration::ZERO;
        };
        // Past 2^31 the product saturates anyway; the cap keeps the shift defined.
        let factor = 1u32 << doublings.min(31);
        self.first.saturating_mul(factor).min(self.max)
    }

    /// A retry loop's state, with no failure yet.
    pub(crate) fn start(self) -> Backoff {
        Backoff {
            policy: self,
            failures: 0,
        }
    }
}

/// The failures of one retry loop so far, and so its next wait.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    policy: Policy,
    failures: u32,
}

impl Backoff {
    /// Counts one more failure and returns how long to wait before the next attempt.
    pub(crate) fn next_delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.policy.after(self.failures)
    }

    /// Forgets the failures: after a success, the next failure waits `first` again.
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }

    /// Failed attempts since the start or the last reset.
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Policy;

    const MS: Duration = Duration::from_millis(1);
    const POLICY: Policy = Policy::new(Duration::from_millis(50), Duration::from_secs(1));

    #[test]
    fn the_first_wait_is_the_first_delay() {
        assert_eq!(POLICY.start().next_delay(), 50 * MS);
        assert_eq!(POLICY.after(1), 50 * MS);
    }

    #[test]
    fn each_further_failure_doubles_the_wait_up_to_the_cap() {
        let mut backoff = POLICY.start();
        let waits: Vec<Duration> = (0..8).map(|_| backoff.next_delay()).collect();
        let expected = [50, 100, 200, 400, 800, 1000, 1000, 1000].map(|ms| ms * MS);
        assert_eq!(waits, expected);
        assert_eq!(backoff.failures(), 8);
    }

    #[test]
    fn a_reset_starts_again_from_the_first_delay() {
        let mut backoff = POLICY.start();
        backoff.next_delay();
        backoff.next_delay();
        backoff.reset();
        assert_eq!(backoff.failures(), 0);
        assert_eq!(backoff.next_delay(), 50 * MS);
    }

    #[test]
    fn the_wait_after_n_failures_matches_the_loop() {
        let webhooks = Policy::new(Duration::from_secs(1), Duration::from_secs(3600));
        assert_eq!(webhooks.after(0), Duration::ZERO, "nothing failed yet");
        assert_eq!(webhooks.after(1), Duration::from_secs(1));
        assert_eq!(webhooks.after(2), Duration::from_secs(2));
        assert_eq!(webhooks.after(12), Duration::from_secs(2048));
        assert_eq!(webhooks.after(13), Duration::from_secs(3600), "capped");
        assert_eq!(
            webhooks.after(u32::MAX),
            Duration::from_secs(3600),
            "no overflow"
        );
        let mut backoff = webhooks.start();
        for n in 1..40 {
            assert_eq!(backoff.next_delay(), webhooks.after(n));
        }
    }
}
