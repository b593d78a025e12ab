//! What the coordinator and the client tasks share during a run: counters, the writers' send
//! logs, the run's phases and its measured window, and what each task hands back.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

/// The sends of one writer: (end clock after the insert, send time), in clock order.
pub(crate) type WriterLog = RwLock<Vec<(u32, Instant)>>;

#[derive(Default)]
pub(crate) struct Shared {
    pub(crate) errors: Mutex<BTreeMap<String, u64>>,
    /// Deliveries to readers of updates sent after that reader was set up.
    pub(crate) delivered: AtomicU64,
    /// Clients whose set-up finished (successfully or not).
    pub(crate) settled: AtomicUsize,
    /// Clients set up successfully.
    pub(crate) connected: AtomicUsize,
    /// Writers that stopped sending.
    pub(crate) writers_done: AtomicUsize,
    /// (doc index, set-up instant) of every reader that was set up.
    pub(crate) reader_setups: Mutex<Vec<(usize, Instant)>>,
}

impl Shared {
    pub(crate) fn error(&self, kind: impl Into<String>) {
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        *errors.entry(kind.into()).or_default() += 1;
    }
}

/// The run's phases, as watched by the client tasks.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Phase {
    /// Writers start sending at this instant (None: not yet).
    pub(crate) start: Option<Instant>,
    /// Clients close their connections.
    pub(crate) stop: bool,
}

#[derive(Clone, Copy)]
pub(crate) struct Window {
    pub(crate) start: Instant,
    pub(crate) end: Instant,
}

impl Window {
    pub(crate) fn contains(&self, t: Instant) -> bool {
        t >= self.start && t < self.end
    }
}

pub(crate) struct ReaderResult {
    pub(crate) latencies_us: Vec<u32>,
    pub(crate) setup: Option<Duration>,
}

pub(crate) struct WriterResult {
    pub(crate) setup: Option<Duration>,
}
