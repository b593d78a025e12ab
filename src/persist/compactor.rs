//! The compactor: the task that writes compactions, apart from the writer so that rewriting a
//! large snapshot never holds up the appends (and the relays) behind it.
//!
//! The writer hands it a compaction once the appends it covers are committed, and a barrier
//! once everything before it is. It handles both in that order, so a barrier still resolves
//! after every compaction queued before it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::{COMMIT_TIMEOUT, RETRY};
use crate::metrics::Metrics;
use crate::store::{Compaction, Store, StoreError};

/// Most snapshot bytes in one compaction transaction.
const MAX_COMPACTION_BYTES: usize = 32 * 1024 * 1024;

/// What the compactor is asked, in the writer's order.
pub(crate) enum Follow {
    /// A compaction whose `covers_log_id` is final: every row it covers is committed.
    Compact {
        compaction: Compaction,
        done: Option<oneshot::Sender<()>>,
    },
    /// Resolves once every compaction handed on before it is committed.
    Barrier(oneshot::Sender<()>),
}

/// Writes compactions in the order the writer hands them on, all those queued in one
/// transaction. Of several queued for one document only the last is written, since it covers
/// everything the earlier ones do. A failed transaction is retried with backoff. Ends once the
/// writer drops its sender and the queue is drained.
pub(crate) async fn run(
    store: Arc<dyn Store>,
    mut rx: mpsc::UnboundedReceiver<Follow>,
    metrics: Arc<Metrics>,
) {
    let mut queue = VecDeque::new();
    while let Some(first) = rx.recv().await {
        queue.push_back(first);
        while let Ok(follow) = rx.try_recv() {
            queue.push_back(follow);
        }
        while !queue.is_empty() {
            let (latest, acks) = take_transaction(&mut queue);
            if !latest.is_empty() {
                write(store.as_ref(), &latest, &metrics).await;
            }
            for ack in acks {
                // The requester may have given up waiting; the work is committed regardless.
                let _ = ack.send(());
            }
        }
    }
    tracing::debug!("compactor drained and stopped");
}

/// Takes from the front of `queue` the compactions of one transaction (up to the byte bound,
/// the latest per document) and everyone to answer once it is committed.
fn take_transaction(queue: &mut VecDeque<Follow>) -> (Vec<Compaction>, Vec<oneshot::Sender<()>>) {
    let mut latest: Vec<Compaction> = Vec::new();
    let mut acks = Vec::new();
    let mut bytes = 0;
    while let Some(follow) = queue.pop_front() {
        match follow {
            Follow::Compact { compaction, done } => {
                if !latest.is_empty() && bytes + compaction.snapshot.len() > MAX_COMPACTION_BYTES {
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
    (latest, acks)
}

/// Writes one transaction of compactions, retrying until the store takes it.
async fn write(store: &dyn Store, compactions: &[Compaction], metrics: &Metrics) {
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
