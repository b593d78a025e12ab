//! Applying updates: every change to the document, from a subscriber or from the API, goes
//! through [`DocCore::integrate`].
//!
//! An update that may be expensive (see `cost.rs`) is applied on another thread while the
//! document waits for it ([`Effect::ApplyOffThread`]): other documents on the document's thread
//! go on meanwhile. Until it is done nothing else is handled, and what was already taken (the rest
//! of a subscriber's frame, API updates) waits in the backlog, so everything is still handled in
//! the order it came.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;
use yrs::{Doc, ReadTxn, StateVector, Transact};

use super::cost::{OFFLOADED_PART_STRUCTS, Placement};
use super::{DocCore, EMPTY_UPDATE, Effect, IntegrateError, SubscriberId, close};
use crate::sync::protocol::{ClientMessage, IncomingUpdate, encode_update};
use crate::sync::{Applied, ApplyError};
use crate::wire::Index;

/// Answers an API caller once its update is applied: with a receiver that fires once it is
/// durable, or why it was not applied.
pub(super) type ApiReply = oneshot::Sender<Result<oneshot::Receiver<Vec<u8>>, IntegrateError>>;

/// Something the document has yet to handle.
pub(super) enum Work {
    /// A message from a subscriber's frame.
    Client(SubscriberId, ClientMessage),
    /// An update from the API.
    Api(IncomingUpdate, ApiReply),
    /// What other nodes appended to the log (see `shared_log.rs`).
    Log(crate::store::LogTail),
}

/// Who sent an update, to be told how it went.
pub(super) enum Origin {
    Client(SubscriberId),
    Api(ApiReply),
}

/// What is applied off the document's thread, with what the core needs when it is done.
pub(super) enum InFlight {
    Update {
        raw: Bytes,
        relay: Bytes,
        index: Arc<Index>,
        before: StateVector,
        origin: Origin,
    },
    /// A server-side edit (see `edit.rs`).
    Edit,
}

/// An update to apply off the document's thread: [`OffThread::run`] blocks until it is applied
/// or its deadline passes.
pub struct OffThread {
    doc: Doc,
    update: yrs::Update,
    bytes: Bytes,
    index: Arc<Index>,
    budget: Duration,
    #[cfg(feature = "fault-injection")]
    id: crate::domain::DocId,
}

/// What applying an update off the thread came to: the outcome (or its panic), and the time.
pub struct OffThreadOutcome {
    pub(super) outcome: std::thread::Result<Result<Applied, ApplyError>>,
    pub(super) took: Duration,
}

impl OffThreadOutcome {
    /// The outcome of a job whose thread failed without an answer (a panic it did not catch).
    pub fn lost(why: String) -> Self {
        Self {
            outcome: Err(Box::new(why)),
            took: Duration::ZERO,
        }
    }
}

impl OffThread {
    /// Applies the update in parts, stopping between two parts once the budget is spent.
    pub fn run(self) -> OffThreadOutcome {
        let started = Instant::now();
        // No budget: a deadline a year away.
        let deadline = started
            .checked_add(self.budget)
            .unwrap_or_else(|| started + Duration::from_secs(365 * 86_400));
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            #[cfg(feature = "fault-injection")]
            crate::faults::before_apply(self.id.as_str());
            crate::sync::apply_update_within(
                &self.doc,
                self.update,
                &self.bytes,
                &self.index,
                OFFLOADED_PART_STRUCTS,
                deadline,
            )
        }));
        OffThreadOutcome {
            outcome,
            took: started.elapsed(),
        }
    }
}

impl DocCore {
    /// An update from the API, handled behind whatever came before it.
    pub fn api_update(&mut self, update: IncomingUpdate, reply: ApiReply, now: Instant) {
        self.at(now);
        self.touch(now);
        self.backlog.push_back(Work::Api(update, reply));
        self.drain();
    }

    /// Handles the backlog in order, until it is empty or an update is applied off the
    /// document's thread (which drains again once it is done).
    pub(super) fn drain(&mut self) {
        while self.applying.is_none() && !self.closing {
            let Some(work) = self.backlog.pop_front() else {
                return;
            };
            match work {
                Work::Client(id, message) => {
                    if self.members.contains_key(&id) && self.handle_message(id, message).is_err() {
                        self.forget_backlog_of(id);
                    }
                }
                Work::Api(update, reply) => self.integrate(update, Origin::Api(reply)),
                Work::Log(tail) => self.take_log(tail),
            }
        }
    }

    /// A subscriber was refused or is gone: what it sent after that is dropped unhandled.
    pub(super) fn forget_backlog_of(&mut self, id: SubscriberId) {
        self.backlog
            .retain(|work| !matches!(work, Work::Client(s, _) if *s == id));
    }

    /// Applies an update, hands it to the writer and queues its relay behind durability, and
    /// tells `origin` how it went (at once, or once an update applied off the thread is done).
    pub(super) fn integrate(&mut self, incoming: IncomingUpdate, origin: Origin) {
        if incoming.raw.as_ref() == EMPTY_UPDATE {
            return self.settle(origin, Ok(()));
        }
        let limit = self.settings.max_document_size;
        if self.stored_size() + incoming.raw.len() > limit {
            return self.settle(origin, Err(IntegrateError::TooLarge(limit)));
        }
        let before = self.doc.transact().state_vector();
        #[cfg(feature = "fault-injection")]
        let unscreened = crate::faults::skip_screen(self.id.as_str());
        #[cfg(not(feature = "fault-injection"))]
        let unscreened = false;
        let incoming = if unscreened {
            incoming
        } else {
            match crate::wire::screen(&self.doc, &before, incoming) {
                Ok(incoming) => incoming,
                Err(refused) => {
                    let error = IntegrateError::DoesNotApply(refused.to_string());
                    return self.settle(origin, Err(error));
                }
            }
        };
        if incoming.raw.as_ref() == EMPTY_UPDATE {
            return self.settle(origin, Ok(()));
        }
        let IncomingUpdate {
            update,
            raw,
            relay,
            structs,
            index,
        } = incoming;
        let placement = self
            .inline_trust
            .place(structs, self.stored_size(), self.now);
        if placement == Placement::OffThread {
            let budget = match &origin {
                Origin::Client(id) => self
                    .members
                    .get_mut(id)
                    .map_or(Duration::ZERO, |m| m.cost.left(self.now)),
                Origin::Api(_) if self.settings.update_cost_budget.is_zero() => Duration::MAX,
                Origin::Api(_) => self.settings.update_cost_budget,
            };
            let job = OffThread {
                doc: self.doc.clone(),
                update,
                bytes: raw.clone(),
                index: index.clone(),
                budget,
                #[cfg(feature = "fault-injection")]
                id: self.id.clone(),
            };
            self.applying = Some(InFlight::Update {
                raw,
                relay,
                index,
                before,
                origin,
            });
            self.metrics.updates_applying.inc();
            self.metrics.updates_off_thread.inc();
            self.effects.push(Effect::ApplyOffThread(job));
            return;
        }
        // yrs was not built for hostile input: if applying panics, this in-memory copy can no
        // longer be trusted. The update was not stored, so reloading from the store is safe.
        #[cfg(feature = "fault-injection")]
        let id = self.id.as_str();
        let doc = &self.doc;
        let started = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            #[cfg(feature = "fault-injection")]
            crate::faults::before_apply(id);
            crate::sync::apply_indexed(doc, update, raw.as_ref(), &index)
        }))
        .map(|result| result.map(|()| Applied::Whole));
        let took = started.elapsed();
        if placement == Placement::Trusted && self.inline_trust.took(took, self.now) {
            tracing::warn!(parent: &self.span, structs, took_ms = took.as_millis() as u64, "an update was slow to apply; applying large updates off the document's thread for a while");
        }
        self.applied(
            OffThreadOutcome { outcome, took },
            raw,
            relay,
            index,
            before,
            origin,
        );
    }

    /// An update applied off the thread is done: takes what it came to and goes on with what
    /// waited meanwhile.
    pub fn applied_off_thread(&mut self, done: OffThreadOutcome, now: Instant) {
        self.at(now);
        self.metrics.updates_applying.dec();
        match self.applying.take() {
            Some(InFlight::Update {
                raw,
                relay,
                index,
                before,
                origin,
            }) => self.applied(done, raw, relay, index, before, origin),
            other => self.applying = other,
        }
        self.drain();
    }

    /// Takes what applying an update came to: records what was applied, charges the time to
    /// the sender, and tells it.
    fn applied(
        &mut self,
        OffThreadOutcome { outcome, took }: OffThreadOutcome,
        raw: Bytes,
        relay: Bytes,
        index: Arc<Index>,
        before: StateVector,
        origin: Origin,
    ) {
        let result = match outcome {
            Ok(Ok(Applied::Whole)) => {
                self.record(raw, relay, Some(index));
                self.charge(&origin, took)
            }
            Ok(Ok(Applied::Stopped(parts))) => {
                tracing::info!(parent: &self.span, parts = parts.len(), took_ms = took.as_millis() as u64, "stopped an update past its cost budget; keeping the part applied");
                for part in parts {
                    let relay = encode_update(&part);
                    self.record(Bytes::from(part), relay, None);
                }
                Err(IntegrateError::TooCostly(self.settings.update_cost_budget))
            }
            // yrs stops at the struct it refuses, keeping those it integrated before it. Unless
            // there were none, the document now holds what is neither stored nor relayed:
            // reloading from the store takes it back.
            Ok(Err(error)) if self.doc.transact().state_vector() == before => {
                Err(IntegrateError::DoesNotApply(error.to_string()))
            }
            Ok(Err(error)) => {
                tracing::warn!(parent: &self.span, %error, "an update failed part way through; reloading the document");
                self.fail();
                Err(IntegrateError::Failed)
            }
            Err(_) => {
                tracing::error!(parent: &self.span, "applying an update panicked; reloading the document");
                self.fail();
                Err(IntegrateError::Failed)
            }
        };
        self.settle(origin, result);
    }

    /// Hands an update already applied to the document to the writer, with its index if it has
    /// one, and queues its relay behind durability.
    pub(super) fn record(&mut self, raw: Bytes, relay: Bytes, index: Option<Arc<Index>>) {
        self.note_change();
        self.held.last_seq += 1;
        self.logged(raw.len());
        let seq = self.held.last_seq;
        self.effects.push(Effect::Append {
            seq,
            data: raw,
            index,
        });
        self.deliver(super::durability::Delivery::Broadcast(relay));
        if self.compaction_due() {
            self.compact(None);
        }
    }

    /// Charges a subscriber the time its update took; its budget spent, it is refused.
    fn charge(&mut self, origin: &Origin, took: Duration) -> Result<(), IntegrateError> {
        let Origin::Client(id) = origin else {
            return Ok(());
        };
        let now = self.now;
        let spent = self
            .members
            .get_mut(id)
            .is_some_and(|m| !m.cost.spend(now, took));
        if spent {
            Err(IntegrateError::TooCostly(self.settings.update_cost_budget))
        } else {
            Ok(())
        }
    }

    /// Tells the sender how its update went: an API caller gets the answer; a subscriber whose
    /// update was refused is closed with the reason, and what it sent after it is dropped.
    fn settle(&mut self, origin: Origin, result: Result<(), IntegrateError>) {
        let id = match origin {
            Origin::Api(reply) => {
                let _ = reply.send(result.map(|()| self.when_durable(Vec::new())));
                return;
            }
            Origin::Client(id) => id,
        };
        let (code, reason, what) = match result {
            Ok(()) => {
                if self.members.get(&id).is_some_and(|m| m.info.acks) {
                    // Once everything applied so far, this update included, is stored.
                    let ack = crate::sync::hocuspocus::sync_status(true);
                    self.deliver(super::durability::Delivery::Ack(id, ack));
                }
                return;
            }
            Err(IntegrateError::Failed) => return,
            Err(IntegrateError::TooLarge(limit)) => (
                close::TOO_LARGE,
                format!("document too large: its limit is {limit} bytes"),
                "refused an update beyond the size limit",
            ),
            Err(IntegrateError::DoesNotApply(error)) => (
                close::INVALID,
                format!("update does not apply: {error}"),
                "refused an update that does not apply",
            ),
            Err(IntegrateError::TooCostly(budget)) => (
                close::POLICY,
                format!("updates too costly to apply: over the budget of {budget:?} per 10 s"),
                "refused updates past their cost budget",
            ),
        };
        self.refuse(id, code, reason, what);
    }
}
