//! [`StoreHealth`]: whether the store takes writes, as the writer last found it. The writer
//! sets it; documents (to stop holding relays back) and `/readyz` read it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A store still busy with one commit after this long counts as stalled: documents stop holding
/// relays back for it (see `DocumentActor`), and `/readyz` reports not ready.
const STALL_AFTER: Duration = Duration::from_secs(2);

/// Whether the store is taking writes, as the writer last found it.
#[derive(Debug)]
pub(crate) struct StoreHealth {
    failing: AtomicBool,
    /// Milliseconds after `epoch` at which the commit now running began; 0 when none runs.
    commit_started: AtomicU64,
    epoch: Instant,
}

impl Default for StoreHealth {
    fn default() -> Self {
        Self {
            failing: AtomicBool::new(false),
            commit_started: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }
}

impl StoreHealth {
    /// True from a failed commit until the next one succeeds, and while a commit has been
    /// running for longer than `STALL_AFTER`.
    pub(crate) fn is_failing(&self) -> bool {
        if self.failing.load(Ordering::Relaxed) {
            return true;
        }
        let started = self.commit_started.load(Ordering::Relaxed);
        started != 0 && self.millis_now().saturating_sub(started) > STALL_AFTER.as_millis() as u64
    }

    fn millis_now(&self) -> u64 {
        // Never 0, which means "no commit running".
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// Called by the writer as a commit starts (`true`) and ends (`false`).
    pub(crate) fn commit_running(&self, running: bool) {
        let value = if running { self.millis_now() } else { 0 };
        self.commit_started.store(value, Ordering::Relaxed);
    }

    /// Called by the writer after each commit: whether it failed.
    pub(crate) fn set_failing(&self, failing: bool) {
        let was = self.failing.swap(failing, Ordering::Relaxed);
        match (was, failing) {
            (false, true) => tracing::error!(
                "the store is failing writes: updates are kept in memory, relayed, and retried"
            ),
            (true, false) => tracing::info!("the store takes writes again"),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::StoreHealth;

    #[test]
    fn a_failed_commit_marks_the_store_failing_until_one_succeeds() {
        let health = StoreHealth::default();
        assert!(!health.is_failing());
        health.set_failing(true);
        assert!(health.is_failing());
        health.commit_running(true);
        health.commit_running(false);
        health.set_failing(false);
        assert!(!health.is_failing());
    }

    #[test]
    fn a_commit_running_briefly_is_not_a_stall() {
        let health = StoreHealth::default();
        health.commit_running(true);
        assert!(!health.is_failing(), "just started");
        health.commit_running(false);
        assert!(!health.is_failing());
    }
}
