//! Persistence: the writer that commits the pending writes of every document together, and the
//! compactor beside it.
//!
//! Documents hand the writer appends and compactions through a [`PersistHandle`] without
//! waiting. The writer takes every append queued, writes them in one transaction (group
//! commit), and then tells each document how far its updates are durable, so the document can
//! relay them. Requests are handled strictly in order, which is what lets a compaction, a
//! barrier or a later load reason about "everything sent before". If the store fails, the batch
//! is retried with backoff and nothing queued is dropped; [`StoreHealth`] tells the rest of the
//! server meanwhile.
//!
//! - `writer` — the commit loop: batching, retries, notices, handing compactions on.
//! - `rows` — which log rows a batch becomes and what each compaction covers (pure).
//! - `compactor` — the task that writes compactions, so snapshots never hold up appends.
//! - `health` — [`StoreHealth`].

mod compactor;
mod health;
mod rows;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::backoff::Policy;
use crate::domain::DocId;
use crate::metrics::Metrics;
use crate::store::{Compaction, Store};
use crate::webhooks::Webhooks;
use crate::wire::Index;

pub(crate) use health::StoreHealth;

/// Waits between attempts at a failed commit (or compaction): 50 ms, doubling up to a second.
const RETRY: Policy = Policy::new(Duration::from_millis(50), Duration::from_secs(1));
/// A commit that has not finished after this long counts as failed (its outcome is unknown, so
/// it is retried; stored updates are idempotent).
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the writer tells a document once a commit holds its appends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Durable {
    /// Every append of the document up to this sequence number is committed.
    pub up_to_seq: u64,
    /// Highest log row id among them (0 when unknown).
    pub max_log_id: i64,
    /// New log rows they took.
    pub rows: u64,
    /// The rows of this commit for the document, in sequence order, with the bytes exactly as
    /// stored in the log: a document relays these instead of merging the updates again.
    pub merged: Vec<CommittedRow>,
}

/// One committed log row: the appends with sequence numbers `first_seq..=last_seq`, merged (or
/// the one append as it came, when the two are equal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedRow {
    pub first_seq: u64,
    pub last_seq: u64,
    pub data: Bytes,
    /// The row's position in the document's log (0 when the store did not say).
    pub log_id: i64,
}

/// Who hears about durability.
///
/// Called on the writer's task right after each commit: an implementation hands the notice on
/// (to a mailbox, a channel) rather than doing work there, which would hold up every document.
pub(crate) trait DurableSink: Send + Sync {
    fn durable(&self, notice: Durable);
}

/// Who hears of every log row right after its commit: the bus, which tells the other nodes.
/// Called on the writer's task, so it must only hand the row on.
pub(crate) trait CommitTap: Send + Sync {
    fn committed(&self, doc: &DocId, position: i64, data: &Bytes);
}

/// What a [`PersistHandle`] asks of the writer.
enum Request {
    Append {
        doc: DocId,
        data: Bytes,
        index: Option<Arc<Index>>,
        seq: u64,
        notify: Arc<dyn DurableSink>,
    },
    Compact {
        compaction: Compaction,
        done: Option<oneshot::Sender<()>>,
    },
    Barrier(oneshot::Sender<()>),
}

impl Request {
    /// Update or snapshot bytes it brings into a transaction.
    fn bytes(&self) -> usize {
        match self {
            Request::Append { data, .. } => data.len(),
            Request::Compact { compaction, .. } => compaction.snapshot.len(),
            Request::Barrier(_) => 0,
        }
    }
}

/// Sends work to the writer; cheap to clone.
#[derive(Clone)]
pub(crate) struct PersistHandle {
    tx: mpsc::UnboundedSender<Request>,
    health: Arc<StoreHealth>,
}

/// The writer has stopped (only during shutdown).
#[derive(Debug, thiserror::Error)]
#[error("the persistence writer has stopped")]
pub(crate) struct WriterStopped;

impl PersistHandle {
    /// Starts the writer and the compactor on the current runtime. They end once every handle
    /// is dropped and the queues are drained; the returned join handle resolves then.
    pub(crate) fn start(
        store: Arc<dyn Store>,
        webhooks: Webhooks,
        metrics: Arc<Metrics>,
        tap: Option<Arc<dyn CommitTap>>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let health = Arc::new(StoreHealth::default());
        let task = tokio::spawn(writer::run(
            store,
            webhooks,
            rx,
            health.clone(),
            metrics,
            tap,
        ));
        (Self { tx, health }, task)
    }

    /// Whether the store is taking writes.
    pub(crate) fn health(&self) -> &Arc<StoreHealth> {
        &self.health
    }

    /// Queues update number `seq` of `doc` (a document numbers its updates 1, 2, 3 …), with its
    /// index if it has one (the writer parses those without when it merges them);
    /// `notify` hears a [`Durable`] with `up_to_seq >= seq` once it is committed. A document
    /// hears one notice per commit that holds any of its appends, through the `notify` of the
    /// latest of them.
    pub(crate) fn append(
        &self,
        doc: DocId,
        data: Bytes,
        index: Option<Arc<Index>>,
        seq: u64,
        notify: Arc<dyn DurableSink>,
    ) -> Result<(), WriterStopped> {
        self.tx
            .send(Request::Append {
                doc,
                data,
                index,
                seq,
                notify,
            })
            .map_err(|_| WriterStopped)
    }

    /// Queues a compaction; `done` fires once it is committed (or found superseded by a later
    /// compaction of the same document, committed instead).
    pub(crate) fn compact(
        &self,
        compaction: Compaction,
        done: Option<oneshot::Sender<()>>,
    ) -> Result<(), WriterStopped> {
        self.tx
            .send(Request::Compact { compaction, done })
            .map_err(|_| WriterStopped)
    }

    /// Resolves once everything queued before this call is committed.
    pub(crate) async fn barrier(&self) -> Result<(), WriterStopped> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Request::Barrier(done))
            .map_err(|_| WriterStopped)?;
        wait.await.map_err(|_| WriterStopped)
    }
}

#[cfg(test)]
mod tests;
