//! Following a log that other nodes append to (several nodes on one Postgres database).
//!
//! The core knows up to which position of the document's log its copy holds everything
//! (`applied`). Its own rows come back from the writer with their positions; a position past a
//! gap waits in `ahead` until the rows before it are read. The log watch tells the document how
//! far the log has grown (`head`); while it is behind, the document asks to read the rest
//! ([`Effect::ReadLog`]) and applies what other nodes wrote. Those rows are durable already, so
//! they are relayed to the subscribers at once. Rows this node wrote are skipped: their relay
//! comes with their commit. A compaction covers `applied` and no more, so that it never drops a
//! row its snapshot lacks.

use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use tokio::sync::oneshot;

use yrs::updates::decoder::Decode;
use yrs::{ReadTxn, Transact, Update};

use super::durability::LogMark;
use super::integrate::Work;
use super::{DocCore, Effect};
use crate::store::{LogCover, LogTail};
use crate::sync::protocol::encode_update;

/// Where this copy of the document stands in the shared log.
#[derive(Debug, Default)]
pub(super) struct SharedLog {
    /// Every position up to this one is in the document.
    applied: i64,
    /// Positions past `applied` that are in the document already: this node's rows,
    /// committed after rows of other nodes not read yet.
    ahead: BTreeSet<i64>,
    /// The last position known to be committed.
    head: i64,
    /// A read of the log is under way.
    reading: bool,
    /// A look at the log found it shorter than this copy; a second look is under way.
    verifying: bool,
    /// How many times other nodes' changes were applied (rows or a snapshot).
    taken: u64,
    /// API calls waiting until the document holds the log up to a position.
    waiting: Vec<(i64, oneshot::Sender<()>)>,
}

impl SharedLog {
    /// A copy loaded with everything up to `applied`.
    pub(super) fn new(applied: i64) -> Self {
        Self {
            applied,
            head: applied,
            ..Self::default()
        }
    }

    /// Up to where the document holds the whole log: what a compaction may cover.
    pub(super) fn applied(&self) -> i64 {
        self.applied
    }

    /// Position `position` is in the document now.
    fn have(&mut self, position: i64) {
        self.head = self.head.max(position);
        if position <= self.applied {
            return;
        }
        self.ahead.insert(position);
        while self.ahead.remove(&(self.applied + 1)) {
            self.applied += 1;
        }
        self.answer_waiting();
    }

    /// Answers the calls waiting for positions the document now holds.
    fn answer_waiting(&mut self) {
        let applied = self.applied;
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|(position, _)| *position <= applied);
        self.waiting = waiting;
        for (_, reply) in done {
            let _ = reply.send(());
        }
    }

    /// Everything up to `position` is in the document now (a snapshot that covers it).
    fn have_through(&mut self, position: i64) {
        self.head = self.head.max(position);
        if position > self.applied {
            self.applied = position;
            self.ahead.retain(|&p| p > position);
            while self.ahead.remove(&(self.applied + 1)) {
                self.applied += 1;
            }
            self.answer_waiting();
        }
    }

    /// Whether rows committed by other nodes are missing.
    fn behind(&self) -> bool {
        self.head > self.applied
    }
}

impl DocCore {
    /// The log watch found the document's log at `head` (0: the document is not in the store):
    /// reads what is missing. A log shorter than what this copy holds may have been looked at
    /// before this node's latest commits, or deleted (and perhaps begun again) on another node:
    /// the log is looked at again ([`Effect::VerifyLog`]), now that those commits are in it.
    pub(crate) fn log_head(&mut self, head: i64, now: Instant) {
        self.at(now);
        if self.closing {
            return;
        }
        let Some(log) = &mut self.shared else {
            return;
        };
        if head < log.applied {
            if !log.verifying {
                log.verifying = true;
                let applied = log.applied;
                self.effects.push(Effect::VerifyLog { applied });
            }
            return;
        }
        log.head = log.head.max(head);
        self.read_if_behind();
    }

    /// The second look at the log, asked for once this copy held up to `applied`, found it at
    /// `head` (`None`: the look failed, and the next one asks again). Shorter than `applied`
    /// it was deleted on another node: everyone is closed with 4404, as on the node that
    /// deleted it, and the document stops without writing, so that the next use loads what the
    /// store holds now.
    pub(crate) fn log_verified(&mut self, head: Option<i64>, applied: i64, now: Instant) {
        self.at(now);
        let Some(log) = &mut self.shared else {
            return;
        };
        log.verifying = false;
        let Some(head) = head else {
            return;
        };
        if head < applied {
            tracing::info!(parent: &self.span, head, applied, "deleted on another node");
            self.evict(now);
            self.effects.push(Effect::Failed);
            return;
        }
        log.head = log.head.max(head);
        self.read_if_behind();
    }

    /// An API call waits until the document holds the log up to `head`, where the store found
    /// it when the call came: `reply` fires then (at once on one node). Dropped, if the document
    /// fails or finds itself deleted meanwhile.
    pub(crate) fn catch_up(&mut self, head: i64, reply: oneshot::Sender<()>, now: Instant) {
        self.log_head(head, now);
        match &mut self.shared {
            Some(log) if !self.closing && head > log.applied => log.waiting.push((head, reply)),
            _ if self.closing => {}
            _ => {
                let _ = reply.send(());
            }
        }
    }

    /// Another node committed row `position` (heard on the bus): the next one is applied and
    /// relayed; past a gap, the log is read instead; one held already is dropped.
    pub(crate) fn peer_row(&mut self, position: i64, data: bytes::Bytes, now: Instant) {
        self.at(now);
        let Some(log) = &mut self.shared else {
            return;
        };
        if position <= log.applied {
            return;
        }
        if position > log.applied + 1 {
            log.head = log.head.max(position);
            self.read_if_behind();
            return;
        }
        let row = crate::store::LogRow {
            position,
            data: data.to_vec(),
            own: false,
        };
        self.log_read_rows(LogTail {
            snapshot: None,
            rows: vec![row],
        });
    }

    /// This node's rows at `positions` are committed (from the writer's notice).
    pub(super) fn own_rows_committed(&mut self, positions: impl Iterator<Item = i64>) {
        let Some(log) = &mut self.shared else {
            return;
        };
        for position in positions.filter(|&p| p > 0) {
            log.have(position);
        }
        self.read_if_behind();
    }

    /// Where the document stands now, for a state taken now and used once it is durable.
    pub(super) fn log_mark(&self) -> LogMark {
        LogMark {
            through: self.shared.as_ref().map_or(0, SharedLog::applied),
            last_seq: self.held.last_seq,
            taken: self.shared.as_ref().map_or(0, |log| log.taken),
        }
    }

    /// How much of the log a state taken at `mark` holds, now that everything in it is
    /// durable: exactly the log up to `applied` if nothing changed here since and every row of
    /// this node's is placed; otherwise at least the log up to where it stood then.
    pub(super) fn log_cover_since(&self, mark: LogMark) -> LogCover {
        let Some(log) = &self.shared else {
            return LogCover::default();
        };
        let unchanged = self.held.last_seq == mark.last_seq && log.taken == mark.taken;
        if unchanged && self.held.settled() && log.ahead.is_empty() {
            LogCover {
                through: log.applied,
                exact: true,
            }
        } else {
            LogCover {
                through: mark.through,
                exact: false,
            }
        }
    }

    /// How much of the log the document holds now.
    pub(super) fn log_cover_now(&self) -> LogCover {
        self.log_cover_since(self.log_mark())
    }

    /// Asks to read the log past what the document holds, unless a read is under way.
    pub(super) fn read_if_behind(&mut self) {
        if self.closing {
            return;
        }
        let Some(log) = &mut self.shared else {
            return;
        };
        if log.behind() && !log.reading {
            log.reading = true;
            self.effects.push(Effect::ReadLog { after: log.applied });
        }
    }

    /// What a read of the log found (or `None`, if it failed: the next look at the log asks
    /// again). Waits behind an update being applied off the thread, which holds the document.
    pub(crate) fn log_read(&mut self, tail: Option<LogTail>, now: Instant) {
        self.at(now);
        if let Some(log) = &mut self.shared {
            log.reading = false;
        }
        if let Some(tail) = tail {
            self.log_read_rows(tail);
        }
    }

    /// Takes rows of the log now, or behind what waits for an update applied off the thread.
    fn log_read_rows(&mut self, tail: LogTail) {
        if self.applying.is_some() || !self.backlog.is_empty() {
            self.backlog.push_back(Work::Log(tail));
            self.drain();
        } else {
            self.take_log(tail);
        }
    }

    /// Applies what other nodes appended and relays it; then reads on if the log grew meanwhile.
    pub(super) fn take_log(&mut self, tail: LogTail) {
        if self.closing || self.shared.is_none() {
            return;
        }
        let before = self.doc.transact().state_vector();
        let mut from_snapshot = false;
        if let Some((state, covers)) = tail.snapshot {
            let applied = self.shared.as_ref().map_or(0, SharedLog::applied);
            if covers > applied {
                if !self.apply_stored(&state) {
                    return;
                }
                from_snapshot = true;
                self.policy.snapshot_taken(state.len());
                if let Some(log) = &mut self.shared {
                    log.have_through(covers);
                }
            }
        }
        let mut relayed = Vec::new();
        let mut changed = from_snapshot;
        for row in tail.rows {
            if self.closing {
                return;
            }
            let applied = self.shared.as_ref().map_or(0, SharedLog::applied);
            if row.position <= applied {
                continue;
            }
            if !row.own {
                if !self.apply_stored(&row.data) {
                    continue;
                }
                self.policy.peer_row(row.data.len());
                changed = true;
                if !from_snapshot {
                    relayed.push(row.data);
                }
            }
            if let Some(log) = &mut self.shared {
                log.have(row.position);
            }
        }
        if changed {
            self.policy.peer_changed(self.now);
            if let Some(log) = &mut self.shared {
                log.taken += 1;
            }
        }
        if from_snapshot {
            // What the snapshot brought is one diff; the rows after it are in it too.
            let diff = self.doc.transact().encode_state_as_update_v1(&before);
            self.effects.push(Effect::Broadcast(encode_update(&diff)));
        } else {
            for data in relayed {
                self.effects.push(Effect::Broadcast(encode_update(&data)));
            }
        }
        self.read_if_behind();
    }

    /// Applies an update another node stored; false (and logged) if it does not apply.
    fn apply_stored(&mut self, data: &[u8]) -> bool {
        let doc = &self.doc;
        let applied = catch_unwind(AssertUnwindSafe(|| {
            let update = Update::decode_v1(data).map_err(|e| e.to_string())?;
            doc.transact_mut()
                .apply_update(update)
                .map_err(|e| e.to_string())
        }));
        match applied {
            Ok(Ok(())) => true,
            Ok(Err(error)) => {
                tracing::error!(parent: &self.span, %error, "a row another node stored does not apply");
                false
            }
            Err(_) => {
                tracing::error!(parent: &self.span, "applying a row another node stored panicked; reloading the document");
                self.fail();
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SharedLog;

    #[test]
    fn own_rows_past_a_gap_wait_until_the_gap_is_read() {
        let mut log = SharedLog::new(3);
        log.have(5);
        assert_eq!(log.applied(), 3);
        assert!(log.behind(), "position 4 is another node's and missing");
        log.have(4);
        assert_eq!(log.applied(), 5);
        assert!(!log.behind());
        log.have(2);
        assert_eq!(log.applied(), 5);
        log.head = 9;
        assert!(log.behind());
        log.have(8);
        log.have_through(7);
        assert_eq!(log.applied(), 8);
        assert!(log.behind());
        log.have(9);
        assert_eq!(log.applied(), 9);
        assert!(!log.behind());
    }
}
