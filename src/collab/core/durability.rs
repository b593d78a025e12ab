//! Holding back what must wait for the store: nobody sees an update, and no API caller gets an
//! answer, before everything it shows is durable.
//!
//! Each update handed to the writer takes the next sequence number; what is delivered after it
//! waits in a queue until the writer reports that sequence number committed. The writer reports
//! the log rows it wrote, each holding a run of updates merged: those rows are relayed as they
//! are, so a commit's updates are merged once, by the writer. While the store fails, messages for
//! subscribers go out at once (editing goes on in memory while the writer retries); answers to
//! API callers keep waiting for it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

use super::{AutoVersion, DocCore, Effect, SubscriberId};
pub use crate::persist::{CommittedRow, Durable};
use crate::sync::protocol::encode_update;

/// While anything waits for durability, the store's health is looked at this often.
pub(super) const OUTAGE_CHECK: Duration = Duration::from_millis(250);

/// Something to deliver once the updates before it are durable.
pub(super) enum Delivery {
    /// An update message for every subscriber.
    Broadcast(Bytes),
    /// A message for one subscriber.
    To(SubscriberId, Bytes),
    /// A subscriber's acknowledgement that its update is stored: unlike other messages for
    /// subscribers, an outage of the store does not release it.
    Ack(SubscriberId, Bytes),
    /// An answer for an API caller.
    Reply(oneshot::Sender<Vec<u8>>, Vec<u8>),
    /// An automatic version to save.
    Version(oneshot::Sender<AutoVersion>, PendingVersion),
}

impl Delivery {
    /// A message for subscribers (which an outage of the store releases), not an answer.
    fn for_subscribers(&self) -> bool {
        matches!(self, Delivery::Broadcast(_) | Delivery::To(..))
    }
}

/// Where a copy stood when a state was taken from it: in a shared log, and in handing updates to
/// the writer (see [`DocCore::log_cover_since`]).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct LogMark {
    pub(super) through: i64,
    pub(super) last_seq: u64,
    pub(super) taken: u64,
}

/// A state taken for an automatic version, with where the document stood when it was taken.
pub(super) struct PendingVersion {
    state: Vec<u8>,
    taken: LogMark,
}

/// The durability queue of one document.
#[derive(Default)]
pub(super) struct Held {
    /// Sequence number of the last update handed to the writer.
    pub(super) last_seq: u64,
    /// Sequence number up to which the writer has committed.
    durable_seq: u64,
    /// Deliveries waiting, in the order they were made, each behind the sequence number that
    /// was last when it was made.
    waiting: VecDeque<(u64, Instant, Delivery)>,
    /// The store failed its last commit, or has been busy with one for too long.
    store_failing: bool,
    /// When the store's health was last looked at for held messages.
    pub(super) outage_checked: Option<Instant>,
}

impl Held {
    pub(super) fn clear(&mut self) {
        self.waiting.clear();
    }

    /// Whether the writer has committed everything handed to it.
    pub(super) fn settled(&self) -> bool {
        self.durable_seq >= self.last_seq
    }

    /// Whether a message for subscribers is held back (then the store's health is watched).
    pub(super) fn holds_messages(&self) -> bool {
        self.waiting.iter().any(|(_, _, d)| d.for_subscribers())
    }
}

impl DocCore {
    /// The store's health, as the writer last found it: while it fails, messages held for
    /// subscribers are sent at once, in order, rather than wait for it to return.
    pub(crate) fn store_failing(&mut self, failing: bool, now: Instant) {
        self.at(now);
        self.held.store_failing = failing;
        self.held.outage_checked = Some(self.now);
        if failing {
            self.release_held_messages();
        }
    }

    /// The writer committed appends of this document.
    pub fn durable(&mut self, notice: Durable, now: Instant) {
        self.at(now);
        self.held.durable_seq = self.held.durable_seq.max(notice.up_to_seq);
        self.policy.committed(notice.max_log_id, notice.rows);
        self.own_rows_committed(notice.merged.iter().map(|row| row.log_id));
        if let Some((seq, queued, _)) = self.held.waiting.front()
            && *seq <= self.held.durable_seq
        {
            let held_for = self.now.saturating_duration_since(*queued);
            self.metrics
                .relay_hold_seconds
                .observe(held_for.as_secs_f64());
        }
        // Consecutive updates go out as the rows the writer merged them into.
        let mut run: Vec<(u64, Bytes)> = Vec::new();
        while let Some((seq, _, _)) = self.held.waiting.front() {
            if *seq > self.held.durable_seq {
                break;
            }
            let Some((seq, _, delivery)) = self.held.waiting.pop_front() else {
                break;
            };
            match delivery {
                Delivery::Broadcast(message) => run.push((seq, message)),
                other => {
                    self.relay_run(std::mem::take(&mut run), &notice.merged);
                    self.run_delivery(other);
                }
            }
        }
        self.relay_run(run, &notice.merged);
    }

    /// Relays consecutive durable updates `run` (each with its sequence number): a stretch that
    /// one committed row holds whole goes out as that row, anything else as it came.
    fn relay_run(&mut self, run: Vec<(u64, Bytes)>, rows: &[CommittedRow]) {
        let mut i = 0;
        while i < run.len() {
            let seq = run[i].0;
            let row = rows
                .iter()
                .find(|row| row.first_seq == seq && row.last_seq > seq);
            if let Some(row) = row {
                let len = (row.last_seq - row.first_seq) as usize + 1;
                if run
                    .get(i + len - 1)
                    .is_some_and(|(s, _)| *s == row.last_seq)
                {
                    self.effects
                        .push(Effect::Broadcast(encode_update(&row.data)));
                    i += len;
                    continue;
                }
            }
            let (_, message) = &run[i];
            self.effects.push(Effect::Broadcast(message.clone()));
            i += 1;
        }
    }

    /// Sends now if everything before is durable, or queues it behind the pending updates.
    pub(super) fn deliver(&mut self, delivery: Delivery) {
        let ready = self.held.waiting.is_empty() && self.held.durable_seq >= self.held.last_seq;
        let outage = delivery.for_subscribers() && self.held.store_failing;
        if ready || outage {
            self.run_delivery(delivery);
        } else {
            if self.held.outage_checked.is_none() {
                self.held.outage_checked = Some(self.now);
            }
            let seq = self.held.last_seq;
            self.held.waiting.push_back((seq, self.now, delivery));
        }
    }

    /// Hands `answer` back once everything applied so far is durable.
    pub(crate) fn when_durable(&mut self, answer: Vec<u8>) -> oneshot::Receiver<Vec<u8>> {
        let (reply, wait) = oneshot::channel();
        self.deliver(Delivery::Reply(reply, answer));
        wait
    }

    /// Yields `state` for an automatic version once everything in it is durable, with how much
    /// of a shared log it holds.
    pub(super) fn version_when_durable(
        &mut self,
        state: Vec<u8>,
    ) -> oneshot::Receiver<AutoVersion> {
        let (reply, wait) = oneshot::channel();
        let taken = self.log_mark();
        self.deliver(Delivery::Version(reply, PendingVersion { state, taken }));
        wait
    }

    /// Sends every message held back for durability; API answers keep waiting for it.
    fn release_held_messages(&mut self) {
        if !self.held.holds_messages() {
            return;
        }
        let held = std::mem::take(&mut self.held.waiting);
        let mut released = 0usize;
        for (seq, queued, delivery) in held {
            match delivery {
                answer if !answer.for_subscribers() => {
                    self.held.waiting.push_back((seq, queued, answer));
                }
                other => {
                    released += 1;
                    self.run_delivery(other);
                }
            }
        }
        tracing::warn!(parent: &self.span, released, "store failing: relaying updates before they are stored");
    }

    fn run_delivery(&mut self, delivery: Delivery) {
        match delivery {
            Delivery::Broadcast(message) => self.effects.push(Effect::Broadcast(message)),
            Delivery::To(id, message) | Delivery::Ack(id, message) => {
                self.effects.push(Effect::Send(id, message))
            }
            // The caller may have gone away; the work is done regardless.
            Delivery::Reply(reply, bytes) => {
                let _ = reply.send(bytes);
            }
            Delivery::Version(reply, PendingVersion { state, taken }) => {
                let cover = self.log_cover_since(taken);
                let _ = reply.send(AutoVersion { state, cover });
            }
        }
    }

    /// When the store's health should next be looked at, while messages are held back.
    pub(super) fn next_outage_check(&self) -> Option<Instant> {
        if !self.held.holds_messages() {
            return None;
        }
        Some(self.held.outage_checked.unwrap_or(self.now) + OUTAGE_CHECK)
    }
}
