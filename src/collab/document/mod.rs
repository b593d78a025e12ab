//! The document actor: the mailboxes and timers around one [`DocCore`].
//!
//! Every message is handed to the core as an event, in arrival order, and the effects the core
//! returns are carried out here: messages for subscribers go through the [`Relay`], appends and
//! compactions to the persistence writer, costly updates to a blocking thread (the mailbox
//! waits meanwhile), versions and webhook events to tasks of their own. One timer, armed for
//! the core's next deadline, drives its clock; one heartbeat keeps every subscriber alive.
//!
//! `api.rs` holds what the HTTP API asks of a document; `history.rs` writes automatic versions.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;
use tracing::Instrument;

mod api;
mod history;
mod rich;

use self::history::save_auto_version;
use super::core::{self, DocCore, Effect, OffThreadOutcome, Unload};
use super::messages::{
    Committed, Disconnect, Evict, GetPresence, Inbound, LogHead, LogRowHeard, PresenceHeard,
    Shutdown, Subscribe, Unsubscribe,
};
use super::relay::Relay;
use crate::domain::DocId;
use crate::persist::{Durable, DurableSink, PersistHandle};
use crate::store::Store;
use crate::webhooks::Webhooks;

pub use super::core::build_doc;
pub(crate) use super::core::{DEFAULT_TEXT_KEY, DocSettings, Gone, IntegrateError};

/// Close code telling clients that their access to the document was revoked.
pub(crate) const REVOKED_CLOSE_CODE: u16 = core::close::REVOKED;
/// How often the server pings its subscribers.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(15);
/// A subscriber not heard from (any frame, a pong included) for this long is disconnected.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// Document → Registry: I am unloading (idle, or stopped after a failure); forget me.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Unloaded {
    pub doc: DocId,
    pub addr: Addr<DocumentActor>,
}

/// How the writer tells a document actor what became durable: each notice becomes a
/// [`Committed`] message in its mailbox, so it is handled in order with everything else.
struct NotifyDocument(Addr<DocumentActor>);

impl DurableSink for NotifyDocument {
    fn durable(&self, notice: Durable) {
        self.0.do_send(Committed(notice));
    }
}

/// What every document actor shares with the rest of the server.
#[derive(Clone)]
pub(crate) struct DocServices {
    pub persist: PersistHandle,
    pub store: Arc<dyn Store>,
    pub webhooks: Webhooks,
    pub settings: Arc<DocSettings>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The other nodes, with `--redis-url`.
    pub bus: Option<crate::bus::Bus>,
}

/// One loaded document.
pub(crate) struct DocumentActor {
    core: DocCore,
    relay: Relay,
    persist: PersistHandle,
    store: Arc<dyn Store>,
    webhooks: Webhooks,
    bus: Option<crate::bus::Bus>,
    /// Told when this document goes away.
    unloaded: Recipient<Unloaded>,
    /// The deadline the clock's timer is armed for.
    armed: Option<Instant>,
    /// Handed to the writer with every append (set once the actor has started).
    notify: Option<Arc<dyn DurableSink>>,
}

impl DocumentActor {
    pub(crate) fn new(
        core: DocCore,
        unloaded: Recipient<Unloaded>,
        services: &DocServices,
    ) -> Self {
        Self {
            core,
            relay: Relay::default(),
            persist: services.persist.clone(),
            store: services.store.clone(),
            webhooks: services.webhooks.clone(),
            bus: services.bus.clone(),
            unloaded,
            armed: None,
            notify: None,
        }
    }

    /// Hands one event to the core, with the store's health as the writer found it, and
    /// carries out what it asks.
    fn step<R>(
        &mut self,
        ctx: &mut Context<Self>,
        event: impl FnOnce(&mut DocCore, Instant) -> R,
    ) -> R {
        let now = Instant::now();
        self.core
            .store_failing(self.persist.health().is_failing(), now);
        let result = event(&mut self.core, now);
        self.run_effects(ctx);
        result
    }

    /// Carries out the core's effects, and those they lead to (a subscriber dropped by the
    /// relay is reported back), then arms the clock for the core's next deadline.
    fn run_effects(&mut self, ctx: &mut Context<Self>) {
        loop {
            let effects = self.core.take_effects();
            if effects.is_empty() {
                break;
            }
            for effect in effects {
                self.execute(effect, ctx);
            }
        }
        self.arm(ctx);
    }

    fn execute(&mut self, effect: Effect, ctx: &mut Context<Self>) {
        let now = Instant::now();
        match effect {
            Effect::Broadcast(message) => {
                for gone in self.relay.broadcast(message) {
                    self.core.unsubscribe(gone, now);
                }
            }
            Effect::BroadcastPresence(message) => {
                for gone in self.relay.broadcast_lossy(message) {
                    self.core.unsubscribe(gone, now);
                }
            }
            Effect::PublishPresence(frame) => {
                if let Some(bus) = &self.bus {
                    bus.publish_presence(self.core.id(), frame);
                }
            }
            Effect::Send(id, message) => {
                if let Some(gone) = self.relay.send(id, message) {
                    self.core.unsubscribe(gone, now);
                }
            }
            Effect::Offer(id, messages) => self.relay.offer(id, messages),
            Effect::Close(id, code, reason) => self.relay.close(id, code, &reason),
            Effect::CloseAll(code, reason) => self.relay.close_all(code, &reason),
            Effect::Append { seq, data, index } => {
                let doc = self.core.id().clone();
                let notify = self
                    .notify
                    .get_or_insert_with(|| Arc::new(NotifyDocument(ctx.address())))
                    .clone();
                if self.persist.append(doc, data, index, seq, notify).is_err() {
                    tracing::error!(parent: self.core.span(), "persistence writer stopped; update not stored");
                }
            }
            Effect::Compact(compaction, done) => {
                if self.persist.compact(compaction, done).is_err() {
                    tracing::error!(parent: self.core.span(), "persistence writer stopped; compaction skipped");
                }
            }
            Effect::ApplyOffThread(job) => {
                let job = tokio::task::spawn_blocking(move || job.run());
                ctx.wait(job.into_actor(self).map(|joined, act, ctx| {
                    // The blocking task cannot be cancelled; a join error is its panic.
                    let done = joined.unwrap_or_else(|e| OffThreadOutcome::lost(e.to_string()));
                    act.step(ctx, |core, now| core.applied_off_thread(done, now));
                }));
            }
            Effect::ReadLog { after } => {
                self.core.metrics().log_reads.inc();
                let (store, doc) = (self.store.clone(), self.core.id().clone());
                let read = async move { store.read_log(&doc, after).await };
                ctx.spawn(read.into_actor(self).map(|read, act, ctx| {
                    let tail = read
                        .map_err(|error| {
                            tracing::warn!(parent: act.core.span(), %error, "reading the log failed; trying again");
                        })
                        .ok();
                    act.step(ctx, |core, now| core.log_read(tail, now));
                }));
            }
            Effect::VerifyLog { applied } => {
                let (store, doc) = (self.store.clone(), self.core.id().clone());
                let look = async move { store.log_head(&doc).await };
                ctx.spawn(look.into_actor(self).map(move |head, act, ctx| {
                    let head = head
                        .map_err(|error| {
                            tracing::warn!(parent: act.core.span(), %error, "looking at the log failed");
                        })
                        .ok();
                    act.step(ctx, |core, now| core.log_verified(head, applied, now));
                }));
            }
            Effect::SaveVersion(durable) => {
                let (store, doc) = (self.store.clone(), self.core.id().clone());
                let metrics = self.core.metrics_handle();
                let keep = self.core.settings().auto_version_retention;
                actix_web::rt::spawn(
                    async move {
                        if let Ok(version) = durable.await {
                            save_auto_version(store.as_ref(), &metrics, &doc, version, keep).await;
                        }
                    }
                    .instrument(self.core.span().clone()),
                );
            }
            Effect::Announce { durable, text } => {
                let (webhooks, doc) = (self.webhooks.clone(), self.core.id().clone());
                actix_web::rt::spawn(async move {
                    if let Ok(sv) = durable.await {
                        webhooks.emit(&doc, "document.changed", &sv, &text).await;
                    }
                });
            }
            Effect::Unload => {
                self.tell_registry(ctx);
                let plan = self.core.begin_unload(now);
                let unload = self.unload(plan);
                ctx.wait(unload);
            }
            Effect::Failed => {
                self.tell_registry(ctx);
                ctx.stop();
            }
        }
    }

    fn tell_registry(&self, ctx: &mut Context<Self>) {
        self.unloaded.do_send(Unloaded {
            doc: self.core.id().clone(),
            addr: ctx.address(),
        });
    }

    /// Arms the clock's timer for the core's next deadline, unless one is armed sooner.
    fn arm(&mut self, ctx: &mut Context<Self>) {
        let Some(at) = self.core.next_wake() else {
            return;
        };
        if self.armed.is_some_and(|armed| armed <= at) {
            return;
        }
        self.armed = Some(at);
        ctx.run_later(
            at.saturating_duration_since(Instant::now()),
            move |act, ctx| {
                if act.armed == Some(at) {
                    act.armed = None;
                }
                let failing = act.persist.health().is_failing();
                act.step(ctx, |core, now| core.tick(failing, now));
            },
        );
    }

    /// Writes what unloading left to write (a compaction, or a wait for the writer), then the
    /// last automatic version, then stops.
    fn unload(&mut self, plan: Unload) -> ResponseActFuture<Self, ()> {
        let (done, wait) = oneshot::channel();
        match plan.compaction {
            Some(compaction) => {
                if self.persist.compact(compaction, Some(done)).is_err() {
                    tracing::error!(parent: self.core.span(), "persistence writer stopped; compaction skipped");
                }
            }
            None => {
                let persist = self.persist.clone();
                actix_web::rt::spawn(async move {
                    let _ = persist.barrier().await;
                    let _ = done.send(());
                });
            }
        }
        let (store, doc) = (self.store.clone(), self.core.id().clone());
        let metrics = self.core.metrics_handle();
        let keep = self.core.settings().auto_version_retention;
        Box::pin(
            async move {
                let _ = wait.await;
                if let Some(version) = plan.version {
                    save_auto_version(store.as_ref(), &metrics, &doc, version, keep).await;
                }
            }
            .instrument(self.core.span().clone())
            .into_actor(self)
            .map(|(), act, ctx| {
                tracing::debug!(parent: act.core.span(), "document unloaded");
                ctx.stop();
            }),
        )
    }
}

impl Actor for DocumentActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // One timer per document keeps every subscriber alive, not one per connection.
        ctx.run_interval(HEARTBEAT_INTERVAL, |act, ctx| {
            let silent = act.relay.heartbeat(CLIENT_TIMEOUT);
            act.step(ctx, |core, now| {
                for id in silent {
                    core.unsubscribe(id, now);
                }
            });
        });
        // What the core asked for when it was made (a compaction that was due).
        self.run_effects(ctx);
    }
}

impl Handler<Subscribe> for DocumentActor {
    type Result = Result<(), Gone>;

    /// Adds a subscriber; the core greets it with the state vector and the current presence.
    fn handle(&mut self, msg: Subscribe, ctx: &mut Context<Self>) -> Self::Result {
        if self.core.is_closing() {
            return Err(Gone);
        }
        self.relay.insert(msg.subscriber, msg.peer);
        let joined = self.step(ctx, |core, now| {
            core.subscribe(msg.subscriber, msg.info, now)
        });
        if joined.is_err() {
            self.relay.remove(msg.subscriber);
        }
        joined
    }
}

impl Handler<Inbound> for DocumentActor {
    type Result = ();

    /// Handles the messages of one subscriber's frame, in order.
    fn handle(&mut self, msg: Inbound, ctx: &mut Context<Self>) {
        self.step(ctx, |core, now| {
            core.receive(msg.subscriber, msg.messages, now)
        });
    }
}

impl Handler<Unsubscribe> for DocumentActor {
    type Result = ();

    /// Forgets a closed subscriber and clears the presence states it set.
    fn handle(&mut self, msg: Unsubscribe, ctx: &mut Context<Self>) {
        self.relay.remove(msg.subscriber);
        self.step(ctx, |core, now| core.unsubscribe(msg.subscriber, now));
    }
}

impl Handler<Committed> for DocumentActor {
    type Result = ();

    /// Relays everything that was waiting for the updates now committed.
    fn handle(&mut self, Committed(notice): Committed, ctx: &mut Context<Self>) {
        self.step(ctx, |core, now| core.durable(notice, now));
    }
}

impl Handler<LogHead> for DocumentActor {
    type Result = ();

    /// Reads what other nodes appended, if anything.
    fn handle(&mut self, LogHead(head): LogHead, ctx: &mut Context<Self>) {
        self.step(ctx, |core, now| core.log_head(head, now));
    }
}

impl Handler<LogRowHeard> for DocumentActor {
    type Result = ();

    /// Applies and relays a row another node committed, if it is the next one.
    fn handle(&mut self, row: LogRowHeard, ctx: &mut Context<Self>) {
        self.step(ctx, |core, now| core.peer_row(row.position, row.data, now));
    }
}

impl Handler<PresenceHeard> for DocumentActor {
    type Result = ();

    /// Relays presence another node's subscribers set.
    fn handle(&mut self, PresenceHeard(frame): PresenceHeard, ctx: &mut Context<Self>) {
        self.step(ctx, |core, now| core.peer_presence(frame, now));
    }
}

impl Handler<Shutdown> for DocumentActor {
    type Result = ResponseActFuture<Self, ()>;

    /// Closes every subscriber with 1001, then flushes and compacts.
    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) -> Self::Result {
        let plan = self.step(ctx, |core, now| core.shutdown(now));
        self.unload(plan)
    }
}

impl Handler<GetPresence> for DocumentActor {
    type Result = MessageResult<GetPresence>;

    /// Counts the subscribers and names the people behind them.
    fn handle(&mut self, _: GetPresence, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.core.presence_summary())
    }
}

impl Handler<Disconnect> for DocumentActor {
    type Result = usize;

    /// Access was revoked: closes the matching subscribers with 4403.
    fn handle(&mut self, msg: Disconnect, ctx: &mut Context<Self>) -> usize {
        self.step(ctx, |core, now| {
            core.revoke(msg.user.as_deref(), msg.issued_before, now)
        })
    }
}

impl Handler<Evict> for DocumentActor {
    type Result = ();

    /// The document is being deleted: close everyone with 4404 and stop, writing nothing.
    fn handle(&mut self, _: Evict, ctx: &mut Context<Self>) {
        self.step(ctx, |core, now| core.evict(now));
        ctx.stop();
    }
}
