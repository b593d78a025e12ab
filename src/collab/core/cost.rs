//! What applying updates may cost: which updates are applied off the document's thread, and
//! how much applying time one connection may spend.
//!
//! yrs integrates an item by comparing it with every item between its two origins, so an update
//! can cost far more than its size: a few hundred bytes of items placed between origins that
//! thousands of items separate kept a thread busy for seconds, and 2 MB for minutes. Documents
//! share threads, so such an update is applied on a thread of its own while the document waits
//! for it, in parts, and stopped between two parts at the connection's budget
//! ([`CostBudget`]). Small updates of a large document stay on its thread until one of them is
//! slow ([`InlineTrust`]): keystrokes are the common case, and one at a time off the thread they
//! would cap a large document's writers at a fraction of their rate.

use std::time::{Duration, Instant};

/// Work (structs times the document's stored bytes) that is always done on the document's
/// thread. Each struct may be compared with every item the document holds, and a document holds
/// fewer items than bytes, so this costs at most about this many comparisons (a few
/// milliseconds): a keystroke in a document of up to 256 KiB, or a paste of a few dozen structs
/// into a small one.
const INLINE_WORK: u128 = 256 * 1024;

/// Work done on the document's thread while the document trusts it ([`InlineTrust`]), for
/// updates of at most [`TRUSTED_STRUCTS`]: a keystroke (one struct) into a document of up to
/// 64 MiB, the largest allowed by default, or a few structs into one of a few MiB. In the worst case (every item of the document between one
/// struct's origins, about 9 bytes an item) this takes about half a second; an honest keystroke
/// takes microseconds, because its origins are neighbours.
const TRUSTED_INLINE_WORK: u128 = 64 * 1024 * 1024;

/// Most structs in an update applied on the document's thread because it trusts it: keystrokes
/// and small edits. A first sync or an upload is large, and slow in proportion, which says
/// nothing about the document.
const TRUSTED_STRUCTS: usize = 16;

/// An apply on the document's thread that takes longer than this ends the document's trust.
/// Honest keystrokes take microseconds; this is far above what waiting for a core adds.
const SLOW_INLINE: Duration = Duration::from_millis(50);

/// How long the first slow apply ends the document's trust; each further one doubles it, up to
/// [`MAX_DISTRUST`].
const FIRST_DISTRUST: Duration = Duration::from_secs(60);
const MAX_DISTRUST: Duration = Duration::from_secs(3_600);

/// Structs per part when an update is applied off the thread: its overshoot past the deadline
/// is what one part costs.
pub(crate) const OFFLOADED_PART_STRUCTS: usize = 32;

/// Whether an update of `structs` structs into a document of `stored_bytes` is applied off the
/// document's thread in any case.
pub(crate) fn is_heavy(structs: usize, stored_bytes: usize) -> bool {
    work(structs, stored_bytes) > INLINE_WORK
}

fn work(structs: usize, stored_bytes: usize) -> u128 {
    (structs as u128) * (stored_bytes.max(1) as u128)
}

/// Whether a document applies small updates on its own thread once it is larger than
/// [`is_heavy`] allows: yes, until one of them is slow. Applying each keystroke of a large
/// document off the thread, one at a time, would cap its writers at a fraction of their rate;
/// trusting them costs at most one slow apply (about half a second, see
/// [`TRUSTED_INLINE_WORK`]) per distrust period, however many connections send them.
#[derive(Debug, Clone, Default)]
pub(crate) struct InlineTrust {
    /// Until when the document applies heavy updates off the thread.
    distrusted_until: Option<Instant>,
    /// How long the next slow apply ends trust for.
    next_distrust: Duration,
}

/// Where an update is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placement {
    /// On the document's thread: cheap in any case.
    Inline,
    /// On the document's thread, because the document trusts small updates: its time is
    /// reported back with [`InlineTrust::took`].
    Trusted,
    /// Off the document's thread, in parts, within the sender's budget.
    OffThread,
}

impl InlineTrust {
    /// Where an update of `structs` structs into a document of `stored_bytes` is applied at `now`.
    pub(crate) fn place(&self, structs: usize, stored_bytes: usize, now: Instant) -> Placement {
        let work = work(structs, stored_bytes);
        if work <= INLINE_WORK {
            Placement::Inline
        } else if structs <= TRUSTED_STRUCTS
            && work <= TRUSTED_INLINE_WORK
            && self.distrusted_until.is_none_or(|t| now >= t)
        {
            Placement::Trusted
        } else {
            Placement::OffThread
        }
    }

    /// A trusted apply took `took`; past [`SLOW_INLINE`] the document stops trusting for a while.
    /// Returns whether it did.
    pub(crate) fn took(&mut self, took: Duration, now: Instant) -> bool {
        if took <= SLOW_INLINE {
            return false;
        }
        let period = self.next_distrust.max(FIRST_DISTRUST);
        self.distrusted_until = Some(now + period);
        self.next_distrust = (period * 2).min(MAX_DISTRUST);
        true
    }
}

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
    fn a_large_document_trusts_keystrokes_until_one_is_slow_and_then_for_longer_each_time() {
        let start = Instant::now();
        let mut trust = InlineTrust::default();
        let mib = 1024 * 1024;
        assert_eq!(trust.place(1, 100 * 1024, start), Placement::Inline);
        assert_eq!(trust.place(1, 10 * mib, start), Placement::Trusted);
        assert_eq!(trust.place(4, 16 * mib, start), Placement::Trusted);
        assert_eq!(trust.place(5, 16 * mib, start), Placement::OffThread);
        assert_eq!(trust.place(2_000, mib, start), Placement::OffThread);
        assert_eq!(trust.place(300_000, 1, start), Placement::OffThread);

        assert!(!trust.took(Duration::from_millis(2), start));
        assert_eq!(trust.place(1, 10 * mib, start), Placement::Trusted);
        assert!(trust.took(Duration::from_millis(400), start));
        // Distrusted, large documents' keystrokes go off the thread; small ones stay.
        assert_eq!(trust.place(1, 10 * mib, start), Placement::OffThread);
        assert_eq!(trust.place(1, 100 * 1024, start), Placement::Inline);
        let minute = start + FIRST_DISTRUST;
        assert_eq!(trust.place(1, 10 * mib, minute), Placement::Trusted);
        // A second slow apply: two minutes this time.
        assert!(trust.took(Duration::from_millis(400), minute));
        let later = minute + FIRST_DISTRUST;
        assert_eq!(trust.place(1, 10 * mib, later), Placement::OffThread);
        assert_eq!(
            trust.place(1, 10 * mib, minute + FIRST_DISTRUST * 2),
            Placement::Trusted
        );
        for _ in 0..20 {
            trust.took(Duration::from_secs(1), later);
        }
        assert_eq!(trust.next_distrust, MAX_DISTRUST);
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
