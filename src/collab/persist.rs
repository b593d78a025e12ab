//! The persistence writer: one task that commits the pending writes of every document together.
//!
//! Documents hand it appends and compactions without waiting. It takes every append queued,
//! writes them in one transaction (group commit), and then tells each document how far its
//! updates are durable, so the document can relay them. Requests are handled strictly in order,
//! which is what lets a compaction, a barrier or a later load reason about "everything sent
//! before". If the store fails, the batch is retried with backoff and nothing queued is dropped.
//!
//! Compactions are written by a second task, the compactor, so that rewriting a large snapshot
//! never holds up the appends (and the relays) behind it. The writer hands a compaction on once
//! the appends it covers are committed, and a barrier once everything before it is: the
//! compactor handles both in that order, so a barrier still resolves after every compaction
//! queued before it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix::Recipient;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::messages::Durable;
use crate::backoff::{Backoff, Policy};
use crate::domain::DocId;
use crate::metrics::Metrics;
use crate::store::{Append, Compaction, Store, StoreError};
use crate::sync::merge_updates;
use crate::webhooks::Webhooks;

/// Most requests in one transaction: bounds commit latency when a backlog has built up.
const MAX_BATCH_REQUESTS: usize = 4096;
/// Most update bytes in one transaction, for the same reason.
const MAX_BATCH_BYTES: usize = 32 * 1024 * 1024;
/// Waits between attempts at a failed commit (or compaction): 50 ms, doubling up to a second.
const RETRY: Policy = Policy::new(Duration::from_millis(50), Duration::from_secs(1));
/// While the store is down, requests that arrive are folded into the batch being retried, up to
/// this many, so that the first commit after the store returns writes the whole backlog.
const MAX_OUTAGE_BATCH_REQUESTS: usize = 16 * MAX_BATCH_REQUESTS;
/// A commit that has not finished after this long counts as failed (its outcome is unknown, so
/// it is retried; stored updates are idempotent).
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Most update bytes merged into one log row.
const MAX_ROW_BYTES: usize = 64 * 1024;
/// Most snapshot bytes in one compaction transaction.
const MAX_COMPACTION_BYTES: usize = 32 * 1024 * 1024;
/// A store still busy with one commit after this long counts as stalled: documents stop holding
/// relays back for it (see `DocumentActor`), and `/readyz` reports not ready.
const STALL_AFTER: Duration = Duration::from_secs(2);

enum Request {
    Append {
        doc: DocId,
        data: Bytes,
        seq: u64,
        notify: Recipient<Durable>,
    },
    Compact {
        compaction: Compaction,
        done: Option<oneshot::Sender<()>>,
    },
    Barrier(oneshot::Sender<()>),
}

/// Whether the store is taking writes, as the writer last found it.
#[derive(Debug)]
pub struct StoreHealth {
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
    pub fn is_failing(&self) -> bool {
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

    fn commit_running(&self, running: bool) {
        let value = if running { self.millis_now() } else { 0 };
        self.commit_started.store(value, Ordering::Relaxed);
    }

    fn set_failing(&self, failing: bool) {
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

/// Sends work to the writer; cheap to clone.
#[derive(Clone)]
pub struct PersistHandle {
    tx: mpsc::UnboundedSender<Request>,
    health: Arc<StoreHealth>,
}

/// The writer has stopped (only during shutdown).
#[derive(Debug, thiserror::Error)]
#[error("the persistence writer has stopped")]
pub struct WriterStopped;

impl PersistHandle {
    /// Starts the writer and the compactor on the current runtime. They end once every handle
    /// is dropped and the queues are drained; the returned join handle resolves then.
    pub fn start(
        store: Arc<dyn Store>,
        webhooks: Webhooks,
        metrics: Arc<Metrics>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let health = Arc::new(StoreHealth::default());
        let task = actix_web::rt::spawn(run(store, webhooks, rx, health.clone(), metrics));
        (Self { tx, health }, task)
    }

    /// Whether the store is taking writes.
    pub fn health(&self) -> &Arc<StoreHealth> {
        &self.health
    }

    /// Queues an update of `doc`; `notify` hears `Durable { up_to_seq: seq, .. }` once committed.
    pub fn append(
        &self,
        doc: DocId,
        data: Bytes,
        seq: u64,
        notify: Recipient<Durable>,
    ) -> Result<(), WriterStopped> {
        self.tx
            .send(Request::Append {
                doc,
                data,
                seq,
                notify,
            })
            .map_err(|_| WriterStopped)
    }

    /// Queues a compaction; `done` fires once it is committed (or found superseded by a later
    /// compaction of the same document, committed instead).
    pub fn compact(
        &self,
        compaction: Compaction,
        done: Option<oneshot::Sender<()>>,
    ) -> Result<(), WriterStopped> {
        self.tx
            .send(Request::Compact { compaction, done })
            .map_err(|_| WriterStopped)
    }

    /// Resolves once everything queued before this call is committed.
    pub async fn barrier(&self) -> Result<(), WriterStopped> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Request::Barrier(done))
            .map_err(|_| WriterStopped)?;
        wait.await.map_err(|_| WriterStopped)
    }
}

async fn run(
    store: Arc<dyn Store>,
    webhooks: Webhooks,
    mut rx: mpsc::UnboundedReceiver<Request>,
    health: Arc<StoreHealth>,
    metrics: Arc<Metrics>,
) {
    let (compactor, compactor_rx) = mpsc::unbounded_channel();
    let compacting =
        actix_web::rt::spawn(compact_all(store.clone(), compactor_rx, metrics.clone()));
    let mut pending = Vec::new();
    // Highest log id committed per document since its last compaction: a compaction covers
    // these rows even if its document had not heard about them yet when it asked.
    let mut committed_ids: HashMap<DocId, i64> = HashMap::new();
    let mut backoff = RETRY.start();
    while let Some(first) = rx.recv().await {
        pending.push(first);
        let mut bytes = 0;
        while pending.len() < MAX_BATCH_REQUESTS && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(request) => {
                    bytes += request_bytes(&request);
                    pending.push(request);
                }
                Err(_) => break,
            }
        }
        let created = commit(
            store.as_ref(),
            std::mem::take(&mut pending),
            &mut rx,
            &mut committed_ids,
            &compactor,
            &health,
            &metrics,
            &mut backoff,
        )
        .await;
        // A document first written over a socket comes into existence here.
        for doc in created {
            webhooks.emit(&doc, "document.created", &[], "").await;
        }
    }
    drop(compactor);
    let _ = compacting.await;
    tracing::debug!("persistence writer drained and stopped");
}

fn request_bytes(request: &Request) -> usize {
    match request {
        Request::Append { data, .. } => data.len(),
        Request::Compact { compaction, .. } => compaction.snapshot.len(),
        Request::Barrier(_) => 0,
    }
}

/// What the compactor is asked, in the writer's order.
enum Follow {
    /// A compaction whose `covers_log_id` is final: every row it covers is committed.
    Compact {
        compaction: Compaction,
        done: Option<oneshot::Sender<()>>,
    },
    /// Resolves once every compaction handed on before it is committed.
    Barrier(oneshot::Sender<()>),
}

/// A compaction or barrier waiting for the appends of its batch to be committed.
enum Waiting {
    Compact {
        compaction: Compaction,
        done: Option<oneshot::Sender<()>>,
        /// How many of the batch's appends were requested before it: those of its document
        /// are in its snapshot, later ones are not.
        after_appends: usize,
    },
    Barrier(oneshot::Sender<()>),
}

/// One transaction being assembled: the appends, whom to tell once they are committed, and
/// what to hand the compactor then.
#[derive(Default)]
struct Pending {
    appends: Vec<Append>,
    /// The appends grouped into log rows, by index into `appends`, in the order of each row's
    /// first append: one row per document, unless a compaction of the document or the byte
    /// bound starts another.
    groups: Vec<RowGroup>,
    /// Per document, the row its next append may join.
    open_row: HashMap<DocId, usize>,
    /// Per document: the last sequence number in this batch and whom to tell.
    notify: HashMap<DocId, (u64, Recipient<Durable>)>,
    then: Vec<Waiting>,
    requests: usize,
}

#[derive(Default)]
struct RowGroup {
    appends: Vec<usize>,
    bytes: usize,
}

impl Pending {
    fn add(&mut self, request: Request, committed_ids: &HashMap<DocId, i64>) {
        self.requests += 1;
        match request {
            Request::Append {
                doc,
                data,
                seq,
                notify: recipient,
            } => {
                self.notify.insert(doc.clone(), (seq, recipient));
                let row = match self.open_row.get(&doc) {
                    Some(&row) if self.groups[row].bytes + data.len() <= MAX_ROW_BYTES => row,
                    _ => {
                        self.groups.push(RowGroup::default());
                        self.open_row.insert(doc.clone(), self.groups.len() - 1);
                        self.groups.len() - 1
                    }
                };
                self.groups[row].appends.push(self.appends.len());
                self.groups[row].bytes += data.len();
                self.appends.push(Append { doc, data });
            }
            Request::Compact {
                mut compaction,
                done,
            } => {
                if let Some(id) = committed_ids.get(&compaction.doc) {
                    compaction.covers_log_id = compaction.covers_log_id.max(*id);
                }
                // Appends after the compaction go to rows of their own: a row it covers must
                // hold nothing the snapshot lacks.
                self.open_row.remove(&compaction.doc);
                self.then.push(Waiting::Compact {
                    compaction,
                    done,
                    after_appends: self.appends.len(),
                });
            }
            Request::Barrier(ack) => self.then.push(Waiting::Barrier(ack)),
        }
    }

    /// The log rows to write: each group of appends merged into one update (a document's many
    /// small updates in a commit cost one row, and a later load one update to apply). A group
    /// that yrs cannot merge is written one row per append. Also returns, for each append, the
    /// index of the row that holds it.
    fn rows(&self) -> (Vec<Append>, Vec<usize>) {
        let mut rows = Vec::with_capacity(self.groups.len());
        let mut row_of = vec![0; self.appends.len()];
        for group in &self.groups {
            let merged = (group.appends.len() > 1)
                .then(|| merge_updates(group.appends.iter().map(|&i| &self.appends[i].data[..])))
                .flatten();
            match merged {
                Some(data) => {
                    for &i in &group.appends {
                        row_of[i] = rows.len();
                    }
                    rows.push(Append {
                        doc: self.appends[group.appends[0]].doc.clone(),
                        data: data.into(),
                    });
                }
                None => {
                    for &i in &group.appends {
                        row_of[i] = rows.len();
                        rows.push(self.appends[i].clone());
                    }
                }
            }
        }
        (rows, row_of)
    }
}

/// Commits one batch of appends, retrying until the store takes it, then notifies everyone
/// waiting on it and hands its compactions and barriers to the compactor. While it retries, what
/// arrives meanwhile joins the batch. Returns the documents it created.
async fn commit(
    store: &dyn Store,
    requests: Vec<Request>,
    rx: &mut mpsc::UnboundedReceiver<Request>,
    committed_ids: &mut HashMap<DocId, i64>,
    compactor: &mpsc::UnboundedSender<Follow>,
    health: &StoreHealth,
    metrics: &Metrics,
    backoff: &mut Backoff,
) -> Vec<DocId> {
    let mut pending = Pending::default();
    for request in requests {
        pending.add(request, committed_ids);
    }

    let committed = if pending.appends.is_empty() {
        Default::default()
    } else {
        loop {
            let started = std::time::Instant::now();
            let (rows, row_of) = pending.rows();
            health.commit_running(true);
            let result = tokio::time::timeout(COMMIT_TIMEOUT, store.append(&rows))
                .await
                .unwrap_or_else(|_| {
                    Err(StoreError::Other(anyhow::anyhow!("the commit timed out")))
                });
            health.commit_running(false);
            match result {
                Ok(mut committed) => {
                    // From here on, each append's id is that of the row holding it.
                    committed.ids = row_of
                        .iter()
                        .map(|&row| committed.ids.get(row).copied().unwrap_or(0))
                        .collect();
                    health.set_failing(false);
                    backoff.reset();
                    metrics
                        .commit_seconds
                        .observe(started.elapsed().as_secs_f64());
                    metrics
                        .commit_batch_updates
                        .observe(pending.appends.len() as f64);
                    tracing::trace!(
                        appends = pending.appends.len(),
                        rows = rows.len(),
                        elapsed_us = started.elapsed().as_micros() as u64,
                        "batch committed"
                    );
                    break committed;
                }
                Err(error) => {
                    health.set_failing(true);
                    metrics.commit_failures.inc();
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        %error,
                        appends = pending.appends.len(),
                        failures = backoff.failures(),
                        retry_in_ms = delay.as_millis() as u64,
                        "commit failed; retrying"
                    );
                    tokio::time::sleep(delay).await;
                    while pending.requests < MAX_OUTAGE_BATCH_REQUESTS {
                        match rx.try_recv() {
                            Ok(request) => pending.add(request, committed_ids),
                            Err(_) => break,
                        }
                    }
                }
            }
        }
    };

    let Pending {
        appends,
        notify,
        then,
        ..
    } = pending;
    for (doc, id) in &committed.log_ids {
        committed_ids.insert(doc.clone(), *id);
    }
    // Each append's id is its row's, and a document's rows come in increasing ids.
    let mut rows_of: HashMap<&DocId, (i64, u64)> = HashMap::new();
    for (append, &id) in appends.iter().zip(&committed.ids) {
        let (last, rows) = rows_of.entry(&append.doc).or_default();
        if *last != id {
            (*last, *rows) = (id, *rows + 1);
        }
    }
    for (doc, (seq, recipient)) in &notify {
        recipient.do_send(Durable {
            up_to_seq: *seq,
            max_log_id: committed.log_ids.get(doc).copied().unwrap_or(0),
            rows: rows_of.get(doc).map_or(0, |&(_, rows)| rows),
        });
    }
    for waiting in then {
        let follow = match waiting {
            Waiting::Compact {
                mut compaction,
                done,
                after_appends,
            } => {
                // Rows of the document appended before the compaction in this batch are in
                // its snapshot.
                compaction.covers_log_id = appends
                    .iter()
                    .zip(&committed.ids)
                    .take(after_appends)
                    .filter(|(append, _)| append.doc == compaction.doc)
                    .map(|(_, id)| *id)
                    .fold(compaction.covers_log_id, i64::max);
                // Rows appended after it are still in the log: keep tracking them, but forget
                // documents whose log will be empty.
                let later_append = appends
                    .iter()
                    .skip(after_appends)
                    .any(|a| a.doc == compaction.doc);
                if !later_append {
                    committed_ids.remove(&compaction.doc);
                }
                Follow::Compact { compaction, done }
            }
            Waiting::Barrier(ack) => Follow::Barrier(ack),
        };
        if let Err(mpsc::error::SendError(follow)) = compactor.send(follow) {
            // The compactor only stops after the writer; answer rather than leave anyone hanging.
            tracing::error!("compactor stopped; compaction skipped");
            if let Follow::Compact {
                done: Some(ack), ..
            }
            | Follow::Barrier(ack) = follow
            {
                let _ = ack.send(());
            }
        }
    }
    committed.created
}

/// The compactor: writes compactions in the order the writer hands them on, all those queued in
/// one transaction. Of several queued for one document only the last is written, since it
/// covers everything the earlier ones do. A failed transaction is retried with backoff.
async fn compact_all(
    store: Arc<dyn Store>,
    mut rx: mpsc::UnboundedReceiver<Follow>,
    metrics: Arc<Metrics>,
) {
    let mut queue = std::collections::VecDeque::new();
    while let Some(first) = rx.recv().await {
        queue.push_back(first);
        while let Ok(follow) = rx.try_recv() {
            queue.push_back(follow);
        }
        while !queue.is_empty() {
            // Take compactions up to a byte bound, and the barriers among them.
            let mut latest: Vec<Compaction> = Vec::new();
            let mut acks = Vec::new();
            let mut bytes = 0;
            while let Some(follow) = queue.pop_front() {
                match follow {
                    Follow::Compact { compaction, done } => {
                        if !latest.is_empty()
                            && bytes + compaction.snapshot.len() > MAX_COMPACTION_BYTES
                        {
                            queue.push_front(Follow::Compact { compaction, done });
                            break;
                        }
                        bytes += compaction.snapshot.len();
                        match latest.iter_mut().find(|c| c.doc == compaction.doc) {
                            Some(earlier) => {
                                // Within one document the later covers at least as much.
                                if compaction.covers_log_id >= earlier.covers_log_id {
                                    bytes -= earlier.snapshot.len();
                                    *earlier = compaction;
                                } else {
                                    bytes -= compaction.snapshot.len();
                                }
                            }
                            None => latest.push(compaction),
                        }
                        acks.extend(done);
                    }
                    Follow::Barrier(ack) => acks.push(ack),
                }
            }
            if !latest.is_empty() {
                write_compactions(store.as_ref(), &latest, &metrics).await;
            }
            for ack in acks {
                // The requester may have given up waiting; the work is committed regardless.
                let _ = ack.send(());
            }
        }
    }
    tracing::debug!("compactor drained and stopped");
}

/// Writes one transaction of compactions, retrying until the store takes it.
async fn write_compactions(store: &dyn Store, compactions: &[Compaction], metrics: &Metrics) {
    let mut backoff = RETRY.start();
    loop {
        let started = Instant::now();
        let result = tokio::time::timeout(COMMIT_TIMEOUT, store.compact(compactions))
            .await
            .unwrap_or_else(|_| Err(StoreError::Other(anyhow::anyhow!("the commit timed out"))));
        match result {
            Ok(()) => {
                metrics
                    .compaction_seconds
                    .observe(started.elapsed().as_secs_f64());
                metrics.compactions.inc_by(compactions.len() as u64);
                tracing::trace!(
                    compactions = compactions.len(),
                    elapsed_us = started.elapsed().as_micros() as u64,
                    "compactions committed"
                );
                return;
            }
            Err(error) => {
                metrics.commit_failures.inc();
                let delay = backoff.next_delay();
                tracing::warn!(
                    %error,
                    compactions = compactions.len(),
                    retry_in_ms = delay.as_millis() as u64,
                    "compaction failed; retrying"
                );
                tokio::time::sleep(delay).await;
            }
        }
    }
}
