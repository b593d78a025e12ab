//! Applying updates: every change to the document, from a socket or from the API, goes through
//! [`DocumentActor::integrate`].
//!
//! An update that may be expensive (see `cost.rs`) is applied on a blocking thread while the
//! document waits for it: other documents on the document's thread go on meanwhile. Until it is
//! done the mailbox is not read, and what was already taken (the rest of a client's frame) waits
//! in the backlog, so everything is still handled in the order it came.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_http::ws::CloseCode;
use bytes::Bytes;
use tokio::sync::oneshot;
use yrs::{ReadTxn, StateVector, Transact};

use super::cost::{OFFLOADED_PART_STRUCTS, is_heavy};
use super::{
    DocumentActor, EMPTY_UPDATE, IntegrateError, LocalEditError, changes_anything, screen,
};
use crate::collab::messages::SessionId;
use crate::sync::protocol::{
    ClientMessage, IncomingUpdate, encode_permission_denied, encode_update,
};
use crate::sync::{Applied, ApplyError};

/// Answers an API caller once its update is applied: with a receiver that fires once it is
/// durable, or why it was not applied.
pub(crate) type ApiReply = oneshot::Sender<Result<oneshot::Receiver<Vec<u8>>, IntegrateError>>;

/// Something the document has yet to handle.
pub(crate) enum Work {
    /// A message from a client's frame.
    Client(SessionId, ClientMessage),
    /// An update from the API.
    Api(IncomingUpdate, ApiReply),
}

/// Who sent an update, to be told how it went.
pub(crate) enum Origin {
    Client(SessionId),
    Api(ApiReply),
}

/// What a blocking apply came back with: the outcome (or its panic) and the time it took.
type Job = (std::thread::Result<Result<Applied, ApplyError>>, Duration);

impl DocumentActor {
    /// Handles the backlog in order, until it is empty or an update is being applied off the
    /// document's thread (which drains again once it is done).
    pub(super) fn drain(&mut self, ctx: &mut Context<Self>) {
        while !self.applying && !self.closing {
            let Some(work) = self.backlog.pop_front() else {
                return;
            };
            match work {
                Work::Client(session, message) => {
                    if self.subscribers.get(session).is_none() {
                        continue;
                    }
                    if self.handle_client_message(session, message, ctx).is_err() {
                        self.forget_backlog_of(session);
                    }
                }
                Work::Api(update, reply) => self.integrate(update, Origin::Api(reply), ctx),
            }
        }
    }

    /// A client was refused: what it sent after the refused message is dropped unhandled.
    fn forget_backlog_of(&mut self, session: SessionId) {
        self.backlog
            .retain(|work| !matches!(work, Work::Client(s, _) if *s == session));
    }

    /// An update from a subscriber: applied if it may write; dropped (and the client told once)
    /// if it may not.
    pub(super) fn apply_update(
        &mut self,
        session: SessionId,
        incoming: IncomingUpdate,
        ctx: &mut Context<Self>,
    ) {
        let Some(sub) = self.subscribers.get_mut(session) else {
            return;
        };
        if !sub.can_write {
            // Dropped, and the client told once (y-websocket's permission-denied message), if it
            // tried to change anything: a stock client also sends harmless catch-up messages.
            if !sub.told_read_only && changes_anything(&self.doc, &incoming.update) {
                sub.told_read_only = true;
                let _ = sub.outbound.send_message(&encode_permission_denied(
                    "read-only access: your changes are not saved",
                ));
            }
            return;
        }
        self.integrate(incoming, Origin::Client(session), ctx);
    }

    /// Applies an update, hands it to the writer and queues its relay behind durability, and
    /// tells `origin` how it went (at once, or once an update applied off the thread is done).
    pub(super) fn integrate(
        &mut self,
        incoming: IncomingUpdate,
        origin: Origin,
        ctx: &mut Context<Self>,
    ) {
        if incoming.raw.as_ref() == EMPTY_UPDATE {
            return self.settle(origin, Ok(()), ctx);
        }
        let limit = self.settings.max_document_size;
        if self.stored_size() + incoming.raw.len() > limit {
            return self.settle(origin, Err(IntegrateError::TooLarge(limit)), ctx);
        }
        let before = self.doc.transact().state_vector();
        #[cfg(feature = "fault-injection")]
        let unscreened = crate::faults::skip_screen(self.id.as_str());
        #[cfg(not(feature = "fault-injection"))]
        let unscreened = false;
        let incoming = if unscreened {
            incoming
        } else {
            match screen(&self.doc, &before, incoming) {
                Ok(incoming) => incoming,
                Err(refused) => {
                    let error = IntegrateError::DoesNotApply(refused.to_string());
                    return self.settle(origin, Err(error), ctx);
                }
            }
        };
        if incoming.raw.as_ref() == EMPTY_UPDATE {
            return self.settle(origin, Ok(()), ctx);
        }
        if is_heavy(incoming.structs, self.stored_size()) {
            return self.apply_off_thread(incoming, before, origin, ctx);
        }
        let IncomingUpdate {
            update, raw, relay, ..
        } = incoming;
        let doc = &self.doc;
        // yrs was not built for hostile input: if applying panics, this in-memory copy can no
        // longer be trusted. The update was not stored, so reloading from the store is safe.
        #[cfg(feature = "fault-injection")]
        let id = self.id.as_str();
        let started = Instant::now();
        let applied = catch_unwind(AssertUnwindSafe(|| {
            #[cfg(feature = "fault-injection")]
            crate::faults::before_apply(id);
            crate::sync::apply_update(doc, update, raw.as_ref())
        }))
        .map(|result| result.map(|()| Applied::Whole));
        self.applied(
            (applied, started.elapsed()),
            raw,
            relay,
            before,
            origin,
            ctx,
        );
    }

    /// Applies an update on a blocking thread, in parts, and stops it at the sender's budget;
    /// the document waits for it, reading nothing meanwhile.
    fn apply_off_thread(
        &mut self,
        incoming: IncomingUpdate,
        before: StateVector,
        origin: Origin,
        ctx: &mut Context<Self>,
    ) {
        let budget = match &origin {
            Origin::Client(session) => self
                .subscribers
                .get_mut(*session)
                .map_or(Duration::ZERO, |sub| sub.cost.left(Instant::now())),
            Origin::Api(_) if self.settings.update_cost_budget.is_zero() => Duration::MAX,
            Origin::Api(_) => self.settings.update_cost_budget,
        };
        let IncomingUpdate {
            update, raw, relay, ..
        } = incoming;
        let doc = self.doc.clone();
        let bytes = raw.clone();
        #[cfg(feature = "fault-injection")]
        let id = self.id.clone();
        let job = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            // No budget: a deadline a year away.
            let deadline = started
                .checked_add(budget)
                .unwrap_or_else(|| started + Duration::from_secs(365 * 86_400));
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                #[cfg(feature = "fault-injection")]
                crate::faults::before_apply(id.as_str());
                crate::sync::apply_update_within(
                    &doc,
                    update,
                    &bytes,
                    OFFLOADED_PART_STRUCTS,
                    deadline,
                )
            }));
            (outcome, started.elapsed())
        });
        self.applying = true;
        self.metrics.updates_applying.inc();
        ctx.wait(job.into_actor(self).map(move |joined, act, ctx| {
            act.applying = false;
            act.metrics.updates_applying.dec();
            // The blocking task cannot be cancelled; a join error is its panic.
            let job: Job =
                joined.unwrap_or_else(|error| (Err(Box::new(error.to_string())), Duration::ZERO));
            act.applied(job, raw, relay, before, origin, ctx);
            act.drain(ctx);
        }));
    }

    /// Takes what applying an update came to: records what was applied, charges the time to
    /// the sender, and tells it.
    fn applied(
        &mut self,
        (outcome, took): Job,
        raw: Bytes,
        relay: Bytes,
        before: StateVector,
        origin: Origin,
        ctx: &mut Context<Self>,
    ) {
        let result = match outcome {
            Ok(Ok(Applied::Whole)) => {
                self.record(raw, relay, ctx);
                self.charge(&origin, took)
            }
            Ok(Ok(Applied::Stopped(parts))) => {
                tracing::info!(parent: &self.span, parts = parts.len(), took_ms = took.as_millis() as u64, "stopped an update past its cost budget; keeping the part applied");
                for part in parts {
                    let relay = encode_update(&part);
                    self.record(Bytes::from(part), relay, ctx);
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
                self.fail(ctx);
                Err(IntegrateError::Failed)
            }
            Err(_) => {
                tracing::error!(parent: &self.span, "applying an update panicked; reloading the document");
                self.fail(ctx);
                Err(IntegrateError::Failed)
            }
        };
        self.settle(origin, result, ctx);
    }

    /// Charges a subscriber the time its update took; its budget spent, it is refused.
    fn charge(&mut self, origin: &Origin, took: Duration) -> Result<(), IntegrateError> {
        let Origin::Client(session) = origin else {
            return Ok(());
        };
        let spent = self
            .subscribers
            .get_mut(*session)
            .is_some_and(|sub| !sub.cost.spend(Instant::now(), took));
        if spent {
            Err(IntegrateError::TooCostly(self.settings.update_cost_budget))
        } else {
            Ok(())
        }
    }

    /// Tells the sender how its update went: an API caller gets the answer; a client whose
    /// update was refused is closed with the reason, and what it sent after it is dropped.
    fn settle(
        &mut self,
        origin: Origin,
        result: Result<(), IntegrateError>,
        _: &mut Context<Self>,
    ) {
        let session = match origin {
            Origin::Api(reply) => {
                let _ = reply.send(result.map(|()| self.when_durable(Vec::new())));
                return;
            }
            Origin::Client(session) => session,
        };
        let (code, reason, what) = match result {
            Ok(()) | Err(IntegrateError::Failed) => return,
            Err(IntegrateError::TooLarge(limit)) => (
                CloseCode::Size,
                format!("document too large: its limit is {limit} bytes"),
                "refused an update beyond the size limit",
            ),
            Err(IntegrateError::DoesNotApply(error)) => (
                CloseCode::Invalid,
                format!("update does not apply: {error}"),
                "refused an update that does not apply",
            ),
            Err(IntegrateError::TooCostly(budget)) => (
                CloseCode::Policy,
                format!("updates too costly to apply: over the budget of {budget:?} per 10 s"),
                "refused updates past their cost budget",
            ),
        };
        if let Some(sub) = self.subscribers.get(session) {
            let client_ip = sub.client_ip.map(tracing::field::display);
            tracing::info!(parent: &self.span, session, client_ip, %reason, "{what}");
            sub.outbound.close(code, reason);
        }
        self.remove_subscriber(session);
        self.forget_backlog_of(session);
    }

    /// [`DocumentActor::edit_locally`] on a blocking thread, for an edit that may be costly: the
    /// document waits for it, reading nothing meanwhile, and other documents go on. The edit is
    /// not stopped part way (a batch applies whole or not at all); what it may cost is bounded
    /// by what it may hold instead.
    pub(super) fn edit_off_thread<E: Send + 'static>(
        &mut self,
        ctx: &mut Context<Self>,
        edit: impl FnOnce(&yrs::Doc) -> Result<Vec<Vec<u8>>, E> + Send + 'static,
    ) -> oneshot::Receiver<Result<oneshot::Receiver<Vec<u8>>, LocalEditError<E>>> {
        let (reply, answer) = oneshot::channel();
        let doc = self.doc.clone();
        let job =
            tokio::task::spawn_blocking(move || catch_unwind(AssertUnwindSafe(|| edit(&doc))));
        self.applying = true;
        self.metrics.updates_applying.inc();
        ctx.wait(job.into_actor(self).map(move |joined, act, ctx| {
            act.applying = false;
            act.metrics.updates_applying.dec();
            // The blocking task cannot be cancelled; a join error is its panic.
            let outcome = joined.unwrap_or_else(|error| Err(Box::new(error.to_string())));
            let _ = reply.send(act.record_edit(outcome, ctx));
            act.drain(ctx);
        }));
        answer
    }
}
