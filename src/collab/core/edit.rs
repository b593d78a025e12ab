//! The server's own changes and reads (for the HTTP API): edits made here are stored and
//! relayed like any subscriber's update, and every answer waits until what it shows is durable.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::oneshot;
use yrs::updates::decoder::Decode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

use super::integrate::InFlight;
use super::{DocCore, EMPTY_UPDATE, Effect};
use crate::sync::protocol::encode_update;

/// Why a server-side edit was not made.
pub enum LocalEditError<E> {
    /// The edit refused itself; the document is unchanged.
    Refused(E),
    /// The edit panicked; the document is being reloaded from the store.
    Failed,
}

/// What an edit made: its updates, or why it made none (its panic, or its own refusal).
pub(crate) type EditOutcome<E> = std::thread::Result<Result<Vec<Vec<u8>>, E>>;

impl DocCore {
    /// `answer`, handed back once everything applied so far is durable; counts as use.
    pub(crate) fn answer_when_durable(
        &mut self,
        answer: Vec<u8>,
        now: Instant,
    ) -> oneshot::Receiver<Vec<u8>> {
        self.touch(now);
        self.when_durable(answer)
    }

    /// What a peer at `sv` lacks, handed back once it is durable.
    pub(crate) fn encode_state(
        &mut self,
        sv: &StateVector,
        now: Instant,
    ) -> oneshot::Receiver<Vec<u8>> {
        let diff = self.doc.transact().encode_state_as_update_v1(sv);
        self.answer_when_durable(diff, now)
    }

    /// The whole state, handed back once it is durable: what a version holds.
    pub(crate) fn full_state_when_durable(&mut self, now: Instant) -> oneshot::Receiver<Vec<u8>> {
        self.encode_state(&StateVector::default(), now)
    }

    /// Makes an edit here: `edit` changes the document and returns the v1 updates it made,
    /// which are stored and relayed like any subscriber's. The receiver fires once they are
    /// durable. A panic means the in-memory copy cannot be trusted: it is dropped, unstored,
    /// and reloaded from the store on next use.
    pub fn edit<E>(
        &mut self,
        edit: impl FnOnce(&Doc) -> Result<Vec<Vec<u8>>, E>,
        now: Instant,
    ) -> Result<oneshot::Receiver<Vec<u8>>, LocalEditError<E>> {
        self.touch(now);
        let doc = &self.doc;
        let outcome = catch_unwind(AssertUnwindSafe(|| edit(doc)));
        self.record_edit(outcome)
    }

    /// Begins an edit made off the document's thread, for one that may be costly: nothing else
    /// is handled until [`DocCore::finish_edit`]. The edit is not stopped part way (a batch
    /// applies whole or not at all); what it may cost is bounded by what it may hold instead.
    pub(crate) fn begin_edit(&mut self, now: Instant) -> Doc {
        self.touch(now);
        self.applying = Some(InFlight::Edit);
        self.metrics.updates_applying.inc();
        self.doc.clone()
    }

    /// Takes what an edit begun with [`DocCore::begin_edit`] made, and goes on with what
    /// waited meanwhile.
    pub(crate) fn finish_edit<E>(
        &mut self,
        outcome: EditOutcome<E>,
        now: Instant,
    ) -> Result<oneshot::Receiver<Vec<u8>>, LocalEditError<E>> {
        self.at(now);
        self.metrics.updates_applying.dec();
        if matches!(self.applying, Some(InFlight::Edit)) {
            self.applying = None;
        }
        let answer = self.record_edit(outcome);
        self.drain();
        answer
    }

    fn record_edit<E>(
        &mut self,
        outcome: EditOutcome<E>,
    ) -> Result<oneshot::Receiver<Vec<u8>>, LocalEditError<E>> {
        let updates = match outcome {
            Ok(Ok(updates)) => updates,
            Ok(Err(error)) => return Err(LocalEditError::Refused(error)),
            Err(_) => {
                tracing::error!(parent: &self.span, "a server-side edit panicked; reloading the document");
                self.fail();
                return Err(LocalEditError::Failed);
            }
        };
        for update in updates {
            if update.as_slice() != EMPTY_UPDATE {
                let relay = encode_update(&update);
                self.record(Bytes::from(update), relay, None);
            }
        }
        Ok(self.when_durable(Vec::new()))
    }

    /// Takes in the content a new document was created with, committed already (beside the
    /// writer) as log row `log_id`: applies it, counts the row, and relays it to whoever is
    /// subscribed.
    pub(crate) fn adopt_created(&mut self, raw: Vec<u8>, log_id: i64, now: Instant) {
        self.at(now);
        let doc = &self.doc;
        let applied = catch_unwind(AssertUnwindSafe(|| {
            let update = Update::decode_v1(&raw).map_err(|e| e.to_string())?;
            crate::sync::apply_update(doc, update, &raw).map_err(|e| e.to_string())
        }));
        if !matches!(applied, Ok(Ok(()))) {
            // It is stored: a reload reads it back.
            tracing::error!(parent: &self.span, "the content of a new document did not apply; reloading it");
            self.fail();
            return;
        }
        self.logged_row(log_id, raw.len());
        self.note_change();
        // Durable already, and nothing is waiting before it: relayed at once.
        self.effects.push(Effect::Broadcast(encode_update(&raw)));
        if self.compaction_due() {
            self.compact(None);
        }
    }
}
