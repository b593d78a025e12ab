//! What applying updates may cost: which updates are applied off the document's thread, and
//! how much applying time one connection may spend.
//!
//! yrs integrates an item by comparing it with every item between its two origins, so an update
//! can cost far more than its size: a few hundred bytes of items placed between origins that
//! thousands of items separate kept a thread busy for seconds, and 2 MB for minutes. Documents
//! share threads, so such an update is applied on a thread of its own while the document waits
//! for it, in parts, and stopped between two parts at the connection's budget
//! ([`CostBudget`]).

/// An update whose structs times the document's stored bytes reach this is applied off the
/// document's thread. Each struct may be compared with every item the document holds, and a
/// document holds fewer items than bytes, so what stays on the thread costs at most about this
/// many comparisons (a few milliseconds): a keystroke in a document of up to 256 KiB, or a
/// paste of a few dozen structs into a small one.
const INLINE_WORK: u128 = 256 * 1024;

/// Structs per part when an update is applied off the thread: its overshoot past the deadline
/// is what one part costs.
pub(crate) const OFFLOADED_PART_STRUCTS: usize = 32;

/// Whether an update of `structs` structs into a document of `stored_bytes` is applied off the
/// document's thread.
pub(crate) fn is_heavy(structs: usize, stored_bytes: usize) -> bool {
    (structs as u128) * (stored_bytes.max(1) as u128) > INLINE_WORK
}

use std::time::{Duration, Instant};

/// One subscriber's budget of time spent applying its updates: `budget` at once, refilled at a
/// tenth of it per second (a budget of zero is none). An honest client spends it on a large first sync at most; one
/// whose updates cost more than it may is disconnected.
#[derive(Debug, Clone)]
pub(crate) struct CostBudget {
    budget: Duration,
    left: Duration,
    last: Instant,
}

impl CostBudget {
    pub(crate) fn new(budget: Duration, now: Instant) -> Self {
        Self {
            budget,
            left: budget,
            last: now,
        }
    }

    /// The time left to spend at `now`; without a budget (zero), no end.
    pub(crate) fn left(&mut self, now: Instant) -> Duration {
        if self.budget.is_zero() {
            return Duration::MAX;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        let refill = self.budget.mul_f64((elapsed / 10.0).min(1.0));
        self.left = (self.left + refill).min(self.budget);
        self.left
    }

    /// Spends `spent` at `now`; false once nothing is left.
    pub(crate) fn spend(&mut self, now: Instant, spent: Duration) -> bool {
        if self.budget.is_zero() {
            return true;
        }
        let left = self.left(now);
        self.left = left.saturating_sub(spent);
        !self.left.is_zero()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keystrokes_in_ordinary_documents_stay_on_the_thread() {
        assert!(!is_heavy(1, 100 * 1024));
        assert!(!is_heavy(20, 10 * 1024));
        assert!(is_heavy(1, 1024 * 1024));
        assert!(is_heavy(2_000, 300 * 1024));
        assert!(!is_heavy(1, 0));
    }

    #[test]
    fn the_budget_is_spent_and_refills_at_a_tenth_a_second() {
        let start = Instant::now();
        let mut budget = CostBudget::new(Duration::from_secs(2), start);
        assert!(budget.spend(start, Duration::from_millis(1500)));
        assert_eq!(budget.left(start), Duration::from_millis(500));
        assert!(!budget.spend(start, Duration::from_millis(600)));
        // Ten seconds refill the whole budget, and never more.
        let later = start + Duration::from_secs(10);
        assert_eq!(budget.left(later), Duration::from_secs(2));
        assert_eq!(
            budget.left(later + Duration::from_secs(100)),
            Duration::from_secs(2)
        );
        let mut none = CostBudget::new(Duration::ZERO, start);
        assert!(none.spend(start, Duration::from_secs(3600)));
        assert_eq!(none.left(start), Duration::MAX);
    }
}
