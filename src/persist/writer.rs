//! The writer's commit loop: takes everything queued, commits the appends in one transaction
//! (retrying with backoff until the store takes it), tells each document what became durable,
//! and hands compactions and barriers on to the compactor in request order.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::compactor::{self, Follow};
use super::rows::{CommittedRows, Mark, Rows};
use super::{
    COMMIT_TIMEOUT, CommitTap, CommittedRow, Durable, DurableSink, RETRY, Request, StoreHealth,
};
use crate::backoff::Backoff;
use crate::domain::DocId;
use crate::metrics::Metrics;
use crate::store::{Committed, Compaction, Store, StoreError};
use crate::webhooks::Webhooks;

/// Most requests in one transaction: bounds commit latency when a backlog has built up.
const MAX_BATCH_REQUESTS: usize = 4096;
/// Most update bytes in one transaction, for the same reason.
const MAX_BATCH_BYTES: usize = 32 * 1024 * 1024;
/// While the store is down, requests that arrive are folded into the batch being retried, up to
/// this many, so that the first commit after the store returns writes the whole backlog.
const MAX_OUTAGE_BATCH_REQUESTS: usize = 16 * MAX_BATCH_REQUESTS;

/// The writer task: runs until every handle is dropped and the queue is drained, then waits
/// for the compactor to drain too.
pub(super) async fn run(
    store: Arc<dyn Store>,
    webhooks: Webhooks,
    mut rx: mpsc::UnboundedReceiver<Request>,
    health: Arc<StoreHealth>,
    metrics: Arc<Metrics>,
    tap: Option<Arc<dyn CommitTap>>,
) {
    let (follow, follow_rx) = mpsc::unbounded_channel();
    let compacting = tokio::spawn(compactor::run(store.clone(), follow_rx, metrics.clone()));
    let mut writer = Writer {
        shared: store.shares_log(),
        store,
        webhooks,
        health,
        metrics,
        follow,
        committed_ids: HashMap::new(),
        own_positions: HashMap::new(),
        backoff: RETRY.start(),
        tap,
    };
    while let Some(first) = rx.recv().await {
        let mut batch = Batch::default();
        let mut bytes = first.bytes();
        batch.add(first, &writer.committed_ids);
        while batch.requests < MAX_BATCH_REQUESTS && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(request) => {
                    bytes += request.bytes();
                    batch.add(request, &writer.committed_ids);
                }
                Err(_) => break,
            }
        }
        writer.commit(batch, &mut rx).await;
    }
    drop(writer);
    let _ = compacting.await;
    tracing::debug!("persistence writer drained and stopped");
}

/// What the commit loop keeps from one batch to the next.
struct Writer {
    store: Arc<dyn Store>,
    /// Other nodes append to the same logs. A compaction then covers what its document says it
    /// holds, extended only through this node's rows that follow it without a gap (see
    /// `own_positions`): a row of this node past a row of another that the snapshot lacks must
    /// not be counted in, or that row would be dropped.
    shared: bool,
    /// In a shared log: the positions of this node's rows committed since their document's last
    /// compaction.
    own_positions: HashMap<DocId, std::collections::BTreeSet<i64>>,
    /// Whose `document.created` events the store queues with the appends that create the
    /// documents, and whose lanes are woken after.
    webhooks: Webhooks,
    health: Arc<StoreHealth>,
    metrics: Arc<Metrics>,
    follow: mpsc::UnboundedSender<Follow>,
    /// Highest log id committed per document since its last compaction: a compaction covers
    /// these rows even if its document had not heard about them yet when it asked.
    committed_ids: HashMap<DocId, i64>,
    backoff: Backoff,
    /// Hears of every row once it is committed (the bus).
    tap: Option<Arc<dyn CommitTap>>,
}

/// A compaction or barrier waiting for the appends of its batch to be committed.
enum Waiting {
    Compact {
        compaction: Compaction,
        done: Option<oneshot::Sender<()>>,
        /// Where it was queued: the document's appends before it are in its snapshot.
        at: Mark,
    },
    Barrier(oneshot::Sender<()>),
}

/// One transaction being assembled: the appends, whom to tell once they are committed, and
/// what to hand the compactor then.
#[derive(Default)]
struct Batch {
    rows: Rows,
    /// Per document: the last sequence number in this batch and whom to tell.
    notify: HashMap<DocId, (u64, Arc<dyn DurableSink>)>,
    then: Vec<Waiting>,
    requests: usize,
}

impl Batch {
    fn add(&mut self, request: Request, committed_ids: &HashMap<DocId, i64>) {
        self.requests += 1;
        match request {
            Request::Append {
                doc,
                data,
                index,
                seq,
                notify,
            } => {
                self.notify.insert(doc.clone(), (seq, notify));
                self.rows.push(doc, data, index, seq);
            }
            Request::Compact {
                mut compaction,
                done,
            } => {
                if let Some(id) = committed_ids.get(&compaction.doc) {
                    compaction.covers_log_id = compaction.covers_log_id.max(*id);
                }
                let at = self.rows.cut(&compaction.doc);
                self.then.push(Waiting::Compact {
                    compaction,
                    done,
                    at,
                });
            }
            Request::Barrier(ack) => self.then.push(Waiting::Barrier(ack)),
        }
    }
}

impl Writer {
    /// Commits one batch of appends, retrying until the store takes it, then notifies everyone
    /// waiting on it and hands its compactions and barriers to the compactor. While it retries,
    /// what arrives meanwhile joins the batch.
    async fn commit(&mut self, mut batch: Batch, rx: &mut mpsc::UnboundedReceiver<Request>) {
        let (rows, committed) = if batch.rows.is_empty() {
            (CommittedRows::new(Vec::new(), &[]), Committed::default())
        } else {
            loop {
                match self.try_commit(&batch.rows).await {
                    Ok(done) => break done,
                    Err(error) => {
                        self.health.set_failing(true);
                        self.metrics.commit_failures.inc();
                        let delay = self.backoff.next_delay();
                        tracing::warn!(
                            %error,
                            appends = batch.rows.len(),
                            failures = self.backoff.failures(),
                            retry_in_ms = delay.as_millis() as u64,
                            "commit failed; retrying"
                        );
                        tokio::time::sleep(delay).await;
                        while batch.requests < MAX_OUTAGE_BATCH_REQUESTS {
                            match rx.try_recv() {
                                Ok(request) => batch.add(request, &self.committed_ids),
                                Err(_) => break,
                            }
                        }
                    }
                }
            }
        };
        if !self.shared {
            for (doc, id) in &committed.log_ids {
                self.committed_ids.insert(doc.clone(), *id);
            }
        }
        let mut by_doc = rows.by_doc();
        if let Some(tap) = &self.tap {
            for (doc, rows) in &by_doc {
                for (row, position) in rows {
                    tap.committed(doc, *position, &row.data);
                }
            }
        }
        for (doc, (seq, sink)) in batch.notify {
            let merged: Vec<CommittedRow> = by_doc
                .remove(&doc)
                .unwrap_or_default()
                .into_iter()
                .map(|(row, log_id)| CommittedRow {
                    first_seq: row.first_seq,
                    last_seq: row.last_seq,
                    data: row.data,
                    log_id,
                })
                .collect();
            sink.durable(Durable {
                up_to_seq: seq,
                max_log_id: committed.log_ids.get(&doc).copied().unwrap_or(0),
                rows: merged.len() as u64,
                merged,
            });
        }
        self.hand_on(batch.then, &rows);
        if self.shared {
            for (doc, position) in rows.positions() {
                self.own_positions.entry(doc).or_default().insert(position);
            }
        }
        // Documents first written over a socket came into existence in this commit, and their
        // `document.created` events with them.
        if !committed.created.is_empty() {
            self.webhooks.outbox_written();
        }
    }

    /// One attempt at writing the batch's rows.
    async fn try_commit(&mut self, batch: &Rows) -> Result<(CommittedRows, Committed), StoreError> {
        let started = Instant::now();
        let rows = batch.rows();
        let appends: Vec<_> = rows.iter().map(|row| row.to_append()).collect();
        let created = self.webhooks.created_events();
        self.health.commit_running(true);
        let result = tokio::time::timeout(COMMIT_TIMEOUT, self.store.append(&appends, &created))
            .await
            .unwrap_or_else(|_| Err(StoreError::Other(anyhow::anyhow!("the commit timed out"))));
        self.health.commit_running(false);
        let committed = result?;
        self.health.set_failing(false);
        self.backoff.reset();
        let elapsed = started.elapsed();
        self.metrics.commit_seconds.observe(elapsed.as_secs_f64());
        self.metrics
            .commit_batch_updates
            .observe(batch.len() as f64);
        tracing::trace!(
            appends = batch.len(),
            rows = rows.len(),
            elapsed_us = elapsed.as_micros() as u64,
            "batch committed"
        );
        Ok((CommittedRows::new(rows, &committed.ids), committed))
    }

    /// Hands the batch's compactions, now covering exactly the committed rows queued before
    /// them, and its barriers to the compactor, in request order.
    fn hand_on(&mut self, then: Vec<Waiting>, rows: &CommittedRows) {
        for waiting in then {
            let follow = match waiting {
                Waiting::Compact {
                    mut compaction,
                    done,
                    at,
                } => {
                    if self.shared {
                        let own = self
                            .own_positions
                            .entry(compaction.doc.clone())
                            .or_default();
                        let mut covers = compaction.covers_log_id;
                        let before: std::collections::BTreeSet<i64> =
                            rows.positions_before(&compaction.doc, at).collect();
                        while own.contains(&(covers + 1)) || before.contains(&(covers + 1)) {
                            covers += 1;
                        }
                        compaction.covers_log_id = covers;
                        // What it covers leaves the log.
                        own.retain(|&position| position > covers);
                        if own.is_empty() {
                            self.own_positions.remove(&compaction.doc);
                        }
                    } else {
                        compaction.covers_log_id =
                            rows.covered(&compaction.doc, at, compaction.covers_log_id);
                    }
                    // Rows appended after it are still in the log: keep tracking them, but
                    // forget documents whose log will be empty.
                    if !rows.any_after(&compaction.doc, at) {
                        self.committed_ids.remove(&compaction.doc);
                    }
                    Follow::Compact { compaction, done }
                }
                Waiting::Barrier(ack) => Follow::Barrier(ack),
            };
            if let Err(mpsc::error::SendError(follow)) = self.follow.send(follow) {
                // The compactor only stops after the writer; answer rather than leave anyone
                // hanging.
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
    }
}
