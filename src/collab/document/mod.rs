//! The document actor: owns one `yrs::Doc` and its presence, and serves its subscribers.
//!
//! Messages are handled in arrival order. An update is applied, handed to the persistence writer
//! and queued; it is relayed to every subscriber (sender included, as the reference server does)
//! only once the writer reports it durable, so nobody ever sees an edit that a crash could lose.
//! Every frame is encoded once and the same bytes go to all recipients.
//!
//! `api.rs` holds what the HTTP API asks of a document; `history.rs` the automatic versions and
//! the debounced change webhook.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_http::ws::CloseCode;
use bytes::Bytes;
use tokio::sync::oneshot;
use tracing::Instrument;
use yrs::updates::decoder::Decode;
use yrs::{Doc, OffsetKind, Options, ReadTxn, StateVector, Transact, Update};

mod api;
mod cost;
mod history;
mod integrate;

pub use crate::wire::{Refused, changes_anything, screen};

use self::history::save_auto_version;
use super::messages::{
    Disconnect, DocPresence, Durable, Evict, GetPresence, Gone, Inbound, SessionId, Shutdown,
    Subscribe, Unloaded, Unsubscribe,
};
use super::outbound::binary_frame;
use super::persist::PersistHandle;
use super::registry::Registry;
use super::subscribers::{Subscriber, Subscribers};
use crate::domain::DocId;
use crate::store::{Compaction, Store, StoredDoc};
use crate::sync::merge_updates;
use crate::sync::presence::Presence;
use crate::sync::protocol::{ClientMessage, encode_sync_step1, encode_sync_step2, encode_update};
use crate::webhooks::Webhooks;

/// The root read as text when the caller names none: the editor's `Y.Text`.
pub const DEFAULT_TEXT_KEY: &str = "content";
/// Longest wait between two looks for expired presence states.
const AWARENESS_SWEEP: Duration = Duration::from_secs(5);
/// Close code telling clients that their document was deleted (4000–4999 are for applications).
pub const DELETED_CLOSE_CODE: u16 = 4404;
/// Close code telling clients that their access to the document was revoked.
pub const REVOKED_CLOSE_CODE: u16 = 4403;
/// How often the server pings its clients.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(15);
/// A client not heard from (any frame, a pong included) for this long is disconnected.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a document with relays held back for durability looks whether the store has
/// failed (then it stops holding them, so editing goes on in memory while writes are retried).
const OUTAGE_CHECK: Duration = Duration::from_millis(250);
/// A v1 update with no structs and no deletions: clients send it when they have nothing new.
const EMPTY_UPDATE: &[u8] = &[0, 0];
/// Most update bytes merged into one relayed frame.
const MAX_MERGED_BYTES: usize = 256 * 1024;
/// Most presence bytes in one frame of a newcomer's greeting or an awareness answer: each is
/// offered to the client's queue on its own.
const PRESENCE_FRAME_BYTES: usize = 64 * 1024;

/// Settings a document actor needs.
#[derive(Debug, Clone)]
pub struct DocSettings {
    pub idle_unload_delay: Duration,
    pub compact_after_updates: u64,
    pub compact_after_bytes: usize,
    /// A presence state not renewed for this long is removed.
    pub awareness_timeout: Duration,
    /// Quiet time after changes before an automatic version; zero turns them off.
    pub auto_version_after: Duration,
    /// Automatic versions kept per document.
    pub auto_version_retention: u32,
    /// Largest stored size (snapshot plus log) an update may grow the document to.
    pub max_document_size: usize,
    /// Live presence states one connection may hold.
    pub max_presence_states: usize,
    /// Time one update may take to apply, and one connection's updates per ten seconds.
    pub update_cost_budget: Duration,
}

/// Something to send once the updates before it are durable.
enum Delivery {
    /// An update to every subscriber: its v1 payload and the frame carrying it.
    Broadcast { update: Bytes, frame: Bytes },
    /// To one subscriber.
    To(SessionId, Bytes),
    /// To an API caller waiting for an answer.
    Reply(oneshot::Sender<Vec<u8>>, Vec<u8>),
}

/// Why an update was not integrated.
#[derive(Debug, thiserror::Error)]
pub enum IntegrateError {
    /// yrs refused it; the document is unchanged.
    #[error("update does not apply: {0}")]
    DoesNotApply(String),
    /// It would grow the document beyond its size limit; the document is unchanged.
    #[error("the document would exceed its size limit of {0} bytes")]
    TooLarge(usize),
    /// The document failed and is being reloaded.
    #[error("the document failed while applying the update")]
    Failed,
    /// Applying it took longer than the budget allows (`--update-cost-budget`): it was stopped,
    /// and the part applied by then is kept. From a connection, its budget is spent.
    #[error("applying the update cost more than the budget of {0:?}")]
    TooCostly(Duration),
}

/// Why a server-side edit was not made.
pub(crate) enum LocalEditError<E> {
    /// The edit refused itself; the document is unchanged.
    Refused(E),
    /// The edit panicked; the document is being reloaded from the store.
    Failed,
}

/// Builds the in-memory document from what the store holds.
pub fn build_doc(stored: &StoredDoc) -> Result<Doc, yrs::encoding::read::Error> {
    // Positions in the server's own edits (the HTTP text API) count UTF-16 units, like Yjs.
    let doc = Doc::with_options(Options {
        offset_kind: OffsetKind::Utf16,
        ..Options::default()
    });
    // A transaction per stored update, and a large one in parts: yrs joins adjacent items when
    // a transaction commits, copying the joined text at every step, which is quadratic in the
    // items one commit joins.
    for bytes in stored.snapshot.iter().chain(stored.updates.iter()) {
        let update = Update::decode_v1(bytes)?;
        if let Err(error) = crate::sync::apply_update(&doc, update, bytes) {
            // Stored updates were valid when accepted; keep going rather than lose the rest.
            tracing::error!(%error, "a stored update failed to apply");
        }
    }
    Ok(doc)
}

/// Whether state vector `sv` has every clock of `answered`: a peer at `sv` lacks nothing that a
/// peer at `answered` has.
fn covers(sv: &StateVector, answered: &StateVector) -> bool {
    answered
        .iter()
        .all(|(client, clock)| sv.get(client) >= *clock)
}

/// Whether a log of `log_rows` rows and `log_bytes` bytes should be folded into a snapshot of
/// `snapshot_bytes`: once the log is as large as the snapshot, and holds `compact_after_updates`
/// rows (what a load replays: the updates of one commit are one row, so a document edited at a
/// human pace logs a row per update) or `compact_after_bytes` bytes. Compaction so writes at most
/// about twice what the updates themselves took, however large the document, and a load after
/// a crash replays at most about the snapshot's size again. Sixteen times
/// `compact_after_updates` rows are compacted in any case.
fn compaction_due(
    settings: &DocSettings,
    log_rows: u64,
    log_bytes: usize,
    snapshot_bytes: usize,
) -> bool {
    let rows = settings.compact_after_updates;
    log_rows >= rows.saturating_mul(16)
        || (log_bytes >= snapshot_bytes
            && (log_rows >= rows || log_bytes >= settings.compact_after_bytes))
}

/// One loaded document.
pub struct DocumentActor {
    id: DocId,
    /// Every log line about this document is emitted in this span (field `doc`).
    span: tracing::Span,
    doc: Doc,
    presence: Presence,
    subscribers: Subscribers,
    persist: PersistHandle,
    registry: Addr<Registry>,
    store: Arc<dyn Store>,
    webhooks: Webhooks,
    settings: Arc<DocSettings>,
    metrics: Arc<crate::metrics::Metrics>,
    /// The first change not yet announced to webhooks, and whether a timer will announce it.
    unannounced_since: Option<Instant>,
    webhook_timer: bool,
    /// Changes since the last automatic version, and when the last one came.
    unversioned: bool,
    last_edit: Instant,
    /// An automatic-version timer is running.
    auto_version_timer: bool,
    /// Sequence number of the last update handed to the writer.
    last_seq: u64,
    /// Sequence number up to which the writer has committed.
    durable_seq: u64,
    /// Deliveries waiting for durability, in the order they were made.
    waiting: VecDeque<(u64, Instant, Delivery)>,
    /// Highest log row id known committed for this document.
    max_log_id: i64,
    /// Log growth since the last compaction: rows committed, and bytes of the updates recorded
    /// (committed or not).
    log_rows: u64,
    log_bytes: usize,
    /// Size of the last snapshot; with `log_bytes`, the stored size the size limit applies to.
    snapshot_bytes: usize,
    /// Bumped whenever the subscriber set changes, so a stale idle timer does nothing.
    idle_generation: u64,
    /// Set once unloading has begun: new subscribers are turned away.
    closing: bool,
    /// A timer looks out for a store outage while relays wait for durability.
    outage_watch: bool,
    /// What is yet to be handled, in the order it came, while an update is being applied off
    /// the document's thread (see `integrate.rs`).
    backlog: VecDeque<integrate::Work>,
    /// An update is being applied off the document's thread: the mailbox waits for it.
    applying: bool,
}

/// What every document actor shares with the rest of the server.
#[derive(Clone)]
pub struct DocServices {
    pub persist: PersistHandle,
    pub store: Arc<dyn Store>,
    pub webhooks: Webhooks,
    pub settings: Arc<DocSettings>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl DocumentActor {
    pub fn new(
        id: DocId,
        doc: Doc,
        stored: &StoredDoc,
        registry: Addr<Registry>,
        services: DocServices,
    ) -> Self {
        let DocServices {
            persist,
            store,
            webhooks,
            settings,
            metrics,
        } = services;
        Self {
            span: tracing::info_span!(parent: None, "document", doc = %id),
            id,
            doc,
            metrics,
            presence: Presence::default(),
            subscribers: Subscribers::default(),
            persist,
            registry,
            store,
            webhooks,
            settings,
            unversioned: false,
            unannounced_since: None,
            webhook_timer: false,
            last_edit: Instant::now(),
            auto_version_timer: false,
            last_seq: 0,
            durable_seq: 0,
            waiting: VecDeque::new(),
            max_log_id: stored.max_log_id,
            log_rows: stored.updates.len() as u64,
            log_bytes: stored.log_bytes(),
            snapshot_bytes: stored.snapshot.as_ref().map_or(0, Vec::len),
            idle_generation: 0,
            closing: false,
            outage_watch: false,
            backlog: VecDeque::new(),
            applying: false,
        }
    }

    /// Sends one message to one subscriber.
    fn send_to(&mut self, session: SessionId, message: Bytes) {
        if let Some(dropped) = self.subscribers.send_to(session, &message) {
            self.forget(dropped);
        }
    }

    /// Sends one message to every subscriber.
    fn broadcast(&mut self, message: &Bytes) {
        for dropped in self.subscribers.broadcast(message) {
            self.forget(dropped);
        }
    }

    /// Removes a subscriber, and clears (for everybody else) the presence states it set.
    fn remove_subscriber(&mut self, session: SessionId) {
        if self.subscribers.remove(session) {
            self.forget(session);
        }
    }

    /// Clears the presence of a subscriber that is already gone.
    fn forget(&mut self, session: SessionId) {
        self.idle_generation += 1;
        let cleared = self.presence.remove_owner(session);
        if let Some(frame) = self.presence.encode(&cleared) {
            self.broadcast_presence(&frame);
        }
    }

    /// Offers a presence message to every subscriber (see [`Subscribers::broadcast_lossy`]).
    fn broadcast_presence(&mut self, message: &Bytes) {
        for closed in self.subscribers.broadcast_lossy(message) {
            self.forget(closed);
        }
    }

    /// The answer to a subscriber's SyncStep1. The first is what its state vector lacks. From
    /// then on the subscriber is sent every update, so a later request whose state vector
    /// covers the one answered is answered with an empty update, at no cost; one that claims
    /// less than that (no stock client does) gets the whole document once, and every later
    /// request is then covered. So however many requests a client sends, at most two answers
    /// encode the document, and answers waiting for durability hold at most that per connection.
    fn answer_sync_step1(&mut self, session: SessionId, sv: StateVector) -> Option<Bytes> {
        let sub = self.subscribers.get_mut(session)?;
        let against = match &sub.synced {
            None => sv,
            Some(answered) if covers(&sv, answered) => {
                return Some(encode_sync_step2(EMPTY_UPDATE));
            }
            Some(_) => StateVector::default(),
        };
        let diff = self.doc.transact().encode_state_as_update_v1(&against);
        sub.synced = Some(against);
        Some(encode_sync_step2(&diff))
    }

    /// Sends now if everything before is durable, or queues behind the pending updates. While
    /// the store fails, frames for clients go out at once (editing goes on in memory); answers
    /// to API callers still wait for durability.
    fn deliver(&mut self, delivery: Delivery) {
        let ready = self.waiting.is_empty() && self.durable_seq >= self.last_seq;
        let outage = !matches!(delivery, Delivery::Reply(..)) && self.persist.health().is_failing();
        if ready || outage {
            self.run_delivery(delivery);
        } else {
            self.waiting
                .push_back((self.last_seq, Instant::now(), delivery));
        }
    }

    /// Keeps an eye on the store while anything waits for durability: if it fails, the frames
    /// held back for clients are sent (in order) instead of waiting for it to return.
    fn watch_for_outage(&mut self, ctx: &mut Context<Self>) {
        if self.outage_watch {
            return;
        }
        self.outage_watch = true;
        ctx.run_later(OUTAGE_CHECK, |act, ctx| {
            act.outage_watch = false;
            if act.persist.health().is_failing() {
                act.release_held_frames();
            }
            if act
                .waiting
                .iter()
                .any(|(_, _, d)| !matches!(d, Delivery::Reply(..)))
            {
                act.watch_for_outage(ctx);
            }
        });
    }

    /// Sends every frame held back for durability; API answers keep waiting for it.
    fn release_held_frames(&mut self) {
        let held = std::mem::take(&mut self.waiting);
        let mut released = 0usize;
        for (seq, queued, delivery) in held {
            match delivery {
                Delivery::Reply(..) => self.waiting.push_back((seq, queued, delivery)),
                other => {
                    released += 1;
                    self.run_delivery(other);
                }
            }
        }
        if released > 0 {
            tracing::warn!(parent: &self.span, released, "store failing: relaying updates before they are stored");
        }
    }

    /// Makes an edit on the server's side (for the HTTP API): `edit` changes the document and
    /// returns the v1 updates it made, which are stored and relayed like any client's. The
    /// receiver fires once they are durable. A panic means the in-memory copy cannot be trusted:
    /// it is dropped, unstored, and reloaded from the store on next use.
    fn edit_locally<E>(
        &mut self,
        ctx: &mut Context<Self>,
        edit: impl FnOnce(&Doc) -> Result<Vec<Vec<u8>>, E>,
    ) -> Result<oneshot::Receiver<Vec<u8>>, LocalEditError<E>> {
        let doc = &self.doc;
        let outcome = catch_unwind(AssertUnwindSafe(|| edit(doc)));
        self.record_edit(outcome, ctx)
    }

    /// Stores and relays what a server-side edit made (see [`DocumentActor::edit_locally`]).
    fn record_edit<E>(
        &mut self,
        outcome: std::thread::Result<Result<Vec<Vec<u8>>, E>>,
        ctx: &mut Context<Self>,
    ) -> Result<oneshot::Receiver<Vec<u8>>, LocalEditError<E>> {
        let updates = match outcome {
            Ok(Ok(updates)) => updates,
            Ok(Err(error)) => return Err(LocalEditError::Refused(error)),
            Err(_) => {
                tracing::error!(parent: &self.span, "a server-side edit panicked; reloading the document");
                self.fail(ctx);
                return Err(LocalEditError::Failed);
            }
        };
        for update in updates {
            if update.as_slice() != EMPTY_UPDATE {
                let relay = encode_update(&update);
                self.record(Bytes::from(update), relay, ctx);
            }
        }
        Ok(self.when_durable(Vec::new()))
    }

    /// Hands `answer` back once everything applied so far is durable.
    fn when_durable(&mut self, answer: Vec<u8>) -> oneshot::Receiver<Vec<u8>> {
        let (reply, wait) = oneshot::channel();
        self.deliver(Delivery::Reply(reply, answer));
        wait
    }

    fn run_delivery(&mut self, delivery: Delivery) {
        match delivery {
            Delivery::Broadcast { frame, .. } => self.broadcast(&frame),
            Delivery::To(session, frame) => self.send_to(session, frame),
            // The caller may have gone away; the work is done regardless.
            Delivery::Reply(reply, bytes) => {
                let _ = reply.send(bytes);
            }
        }
    }

    /// Relays consecutive durable updates, in order, as few frames as possible: each run of up
    /// to `MAX_MERGED_BYTES` is merged into one update (Yjs applies a merged update exactly as
    /// the updates it merges). A single update goes out as it came; if merging fails, each does.
    fn relay_merged(&mut self, updates: Vec<(Bytes, Bytes)>) {
        let mut start = 0;
        while start < updates.len() {
            let mut end = start + 1;
            let mut bytes = updates[start].0.len();
            while end < updates.len() && bytes + updates[end].0.len() <= MAX_MERGED_BYTES {
                bytes += updates[end].0.len();
                end += 1;
            }
            let run = &updates[start..end];
            let merged = (run.len() > 1)
                .then(|| merge_updates(run.iter().map(|(update, _)| update.as_ref())))
                .flatten();
            match merged {
                Some(merged) => self.broadcast(&encode_update(&merged)),
                None => {
                    for (_, frame) in run {
                        self.broadcast(frame);
                    }
                }
            }
            start = end;
        }
    }

    fn handle_client_message(
        &mut self,
        session: SessionId,
        message: ClientMessage,
        ctx: &mut Context<Self>,
    ) -> Result<(), ()> {
        match message {
            ClientMessage::SyncStep1(sv) => {
                if let Some(answer) = self.answer_sync_step1(session, sv) {
                    self.deliver(Delivery::To(session, answer));
                }
            }
            ClientMessage::Update(update) => self.apply_update(session, update, ctx),
            ClientMessage::Awareness(entries) => {
                let cap = self.settings.max_presence_states;
                match self.presence.apply(session, entries, Instant::now(), cap) {
                    Ok(changed) => {
                        if let Some(frame) = self.presence.encode(&changed) {
                            self.broadcast_presence(&frame);
                        }
                    }
                    Err(refused) => {
                        if let Some(sub) = self.subscribers.get(session) {
                            let client_ip = sub.client_ip.map(tracing::field::display);
                            tracing::info!(parent: &self.span, session, client_ip, %refused, "refused presence");
                            sub.outbound.close(CloseCode::Policy, refused.to_string());
                        }
                        self.remove_subscriber(session);
                        return Err(());
                    }
                }
            }
            ClientMessage::AwarenessQuery => {
                let frames = self.presence.encode_all_chunked(PRESENCE_FRAME_BYTES);
                self.subscribers.offer_to(session, &frames);
            }
            ClientMessage::Auth => {}
        }
        Ok(())
    }

    /// Hands an update already applied to the document to the writer, and queues its relay
    /// behind durability.
    fn record(&mut self, raw: Bytes, relay: Bytes, ctx: &mut Context<Self>) {
        self.note_change(ctx);
        self.last_seq += 1;
        self.log_bytes += raw.len();
        if self
            .persist
            .append(
                self.id.clone(),
                raw.clone(),
                self.last_seq,
                ctx.address().recipient(),
            )
            .is_err()
        {
            tracing::error!(parent: &self.span, "persistence writer stopped; update not stored");
        }
        self.deliver(Delivery::Broadcast {
            update: raw,
            frame: relay,
        });
        self.watch_for_outage(ctx);
        if self.compaction_due() {
            self.compact(None);
        }
    }

    /// Takes in the content a new document was created with, committed already as log row
    /// `log_id` (see `CreateWith`): applies it, counts the row, and relays it to whoever is
    /// connected.
    fn adopt_created(&mut self, raw: Vec<u8>, log_id: i64, ctx: &mut Context<Self>) {
        let doc = &self.doc;
        let applied = catch_unwind(AssertUnwindSafe(|| {
            let update = Update::decode_v1(&raw).map_err(|e| e.to_string())?;
            crate::sync::apply_update(doc, update, &raw).map_err(|e| e.to_string())
        }));
        if !matches!(applied, Ok(Ok(()))) {
            // It is stored: a reload reads it back.
            tracing::error!(parent: &self.span, "the content of a new document did not apply; reloading it");
            self.fail(ctx);
            return;
        }
        self.max_log_id = self.max_log_id.max(log_id);
        self.log_rows += 1;
        self.log_bytes += raw.len();
        self.note_change(ctx);
        // Durable already, and nothing is waiting before it: relayed at once.
        self.broadcast(&encode_update(&raw));
        if self.compaction_due() {
            self.compact(None);
        }
    }

    /// Counts a change to the document, for the metrics, the next automatic version and the
    /// `document.changed` webhook.
    fn note_change(&mut self, ctx: &mut Context<Self>) {
        self.metrics.updates_applied.inc();
        self.unversioned = true;
        self.last_edit = Instant::now();
        self.schedule_auto_version(ctx);
        if self.webhooks.enabled() {
            self.unannounced_since.get_or_insert(self.last_edit);
            self.schedule_change_event(ctx);
        }
    }

    /// Whether nothing of this document was ever stored or handed to the writer: no snapshot,
    /// no log row, no update since it was loaded.
    fn pristine(&self) -> bool {
        self.last_seq == 0
            && self.max_log_id == 0
            && self.snapshot_bytes == 0
            && self.log_bytes == 0
            && self.log_rows == 0
    }

    /// The document's stored size as the size limit counts it.
    fn stored_size(&self) -> usize {
        self.snapshot_bytes + self.log_bytes
    }

    /// Whether a server-side edit adding about `adds` bytes stays within the size limit; the
    /// check comes before the edit, which cannot be taken back once made.
    fn has_room_for(&self, adds: usize) -> Result<(), usize> {
        let limit = self.settings.max_document_size;
        if self.stored_size().saturating_add(adds) > limit {
            Err(limit)
        } else {
            Ok(())
        }
    }

    fn compaction_due(&self) -> bool {
        compaction_due(
            &self.settings,
            self.log_rows,
            self.log_bytes,
            self.snapshot_bytes,
        )
    }

    /// Writes a snapshot of the whole document and drops the log rows it covers.
    fn compact(&mut self, done: Option<oneshot::Sender<()>>) {
        let snapshot = self
            .doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        self.snapshot_bytes = snapshot.len();
        tracing::debug!(parent: &self.span, bytes = snapshot.len(), covers = self.max_log_id, log_rows = self.log_rows, log_bytes = self.log_bytes, "compacting");
        let compaction = Compaction {
            doc: self.id.clone(),
            snapshot,
            covers_log_id: self.max_log_id,
        };
        if self.persist.compact(compaction, done).is_err() {
            tracing::error!(parent: &self.span, "persistence writer stopped; compaction skipped");
        }
        self.log_rows = 0;
        self.log_bytes = 0;
    }

    /// The in-memory document is suspect: close everyone with 1011 and stop without writing.
    fn fail(&mut self, ctx: &mut Context<Self>) {
        self.closing = true;
        self.subscribers.close_all(
            CloseCode::Error,
            "internal error; reconnect to reload the document",
        );
        self.waiting.clear();
        self.registry.do_send(Unloaded {
            doc: self.id.clone(),
            addr: ctx.address(),
        });
        ctx.stop();
    }

    /// Compacts if the log is not empty, then stops once the writer has committed it all.
    fn unload(&mut self) -> ResponseActFuture<Self, ()> {
        if self.unannounced_since.is_some() {
            self.announce_change();
        }
        self.closing = true;
        // Unsaved changes get their automatic version now, once the flush below has made them
        // durable.
        let version =
            (self.unversioned && !self.settings.auto_version_after.is_zero()).then(|| {
                self.unversioned = false;
                let full = self
                    .doc
                    .transact()
                    .encode_state_as_update_v1(&StateVector::default());
                (
                    self.store.clone(),
                    self.id.clone(),
                    full,
                    self.settings.auto_version_retention,
                )
            });
        let (done, wait) = oneshot::channel();
        if self.log_bytes > 0 || self.log_rows > 0 {
            self.compact(Some(done));
        } else {
            let persist = self.persist.clone();
            actix_web::rt::spawn(async move {
                let _ = persist.barrier().await;
                let _ = done.send(());
            });
        }
        Box::pin(
            async move {
                let _ = wait.await;
                if let Some((store, doc, full, keep)) = version {
                    save_auto_version(store.as_ref(), &doc, &full, keep).await;
                }
            }
            .instrument(self.span.clone())
            .into_actor(self)
            .map(|(), act, ctx| {
                tracing::debug!(parent: &act.span, "document unloaded");
                ctx.stop();
            }),
        )
    }

    /// Use without a subscriber (the HTTP API) keeps the document loaded for another idle delay.
    fn touch(&mut self, ctx: &mut Context<Self>) {
        if self.subscribers.is_empty() {
            self.idle_generation += 1;
            self.schedule_idle_check(ctx);
        }
    }

    fn schedule_idle_check(&mut self, ctx: &mut Context<Self>) {
        let generation = self.idle_generation;
        ctx.run_later(self.settings.idle_unload_delay, move |act, ctx| {
            if act.closing || act.idle_generation != generation || !act.subscribers.is_empty() {
                return;
            }
            act.registry.do_send(Unloaded {
                doc: act.id.clone(),
                addr: ctx.address(),
            });
            let unload = act.unload();
            ctx.wait(unload);
        });
    }
}

impl Actor for DocumentActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        tracing::debug!(parent: &self.span, "document loaded");
        let timeout = self.settings.awareness_timeout;
        // Look often enough that a state is gone within a third of the timeout after it expires.
        let sweep = AWARENESS_SWEEP
            .min(timeout / 3)
            .max(Duration::from_millis(10));
        ctx.run_interval(sweep, move |act, _| {
            let expired = act.presence.expire(Instant::now(), timeout);
            if let Some(frame) = act.presence.encode(&expired) {
                act.broadcast_presence(&frame);
            }
        });
        // One timer per document keeps every connection to it alive, not one per connection.
        ctx.run_interval(HEARTBEAT_INTERVAL, |act, _| {
            for silent in act.subscribers.heartbeat(CLIENT_TIMEOUT) {
                act.forget(silent);
            }
        });
        if self.compaction_due() {
            self.compact(None);
        }
        // A document loaded for a client that left before it was ready must still unload.
        self.schedule_idle_check(ctx);
    }
}

impl Handler<Subscribe> for DocumentActor {
    type Result = Result<(), Gone>;

    /// Adds a subscriber and greets it with our state vector and the current presence.
    fn handle(&mut self, msg: Subscribe, _: &mut Context<Self>) -> Self::Result {
        if self.closing {
            return Err(Gone);
        }
        let step1 = encode_sync_step1(&self.doc.transact().state_vector());
        // A fresh queue has room for this frame, so the send cannot fail for space.
        let _ = msg.outbound.send_message(&step1);
        for presence in self.presence.encode_all_chunked(PRESENCE_FRAME_BYTES) {
            let _ = msg.outbound.offer_frame(binary_frame(&presence));
        }
        self.subscribers.insert(
            msg.session,
            Subscriber {
                outbound: msg.outbound,
                can_write: msg.can_write,
                user: msg.user,
                client_ip: msg.client_ip,
                told_read_only: false,
                synced: None,
                cost: super::limits::CostBudget::new(self.settings.update_cost_budget),
            },
        );
        self.idle_generation += 1;
        Ok(())
    }
}

impl Handler<Inbound> for DocumentActor {
    type Result = ();

    /// Handles the messages of one client frame in order; stops at the first refused one.
    fn handle(&mut self, msg: Inbound, ctx: &mut Context<Self>) {
        if self.subscribers.get(msg.session).is_none() {
            return;
        }
        let session = msg.session;
        self.backlog.extend(
            msg.messages
                .into_iter()
                .map(|message| integrate::Work::Client(session, message)),
        );
        self.drain(ctx);
    }
}

impl Handler<Unsubscribe> for DocumentActor {
    type Result = ();

    /// Forgets a closed connection and clears the presence states it set.
    fn handle(&mut self, msg: Unsubscribe, ctx: &mut Context<Self>) {
        self.remove_subscriber(msg.session);
        if self.subscribers.is_empty() && !self.closing {
            self.schedule_idle_check(ctx);
        }
    }
}

impl Handler<Durable> for DocumentActor {
    type Result = ();

    /// Relays everything that was waiting for the updates now committed.
    fn handle(&mut self, msg: Durable, _: &mut Context<Self>) {
        self.durable_seq = self.durable_seq.max(msg.up_to_seq);
        self.max_log_id = self.max_log_id.max(msg.max_log_id);
        self.log_rows += msg.rows;
        // One commit often makes many updates durable at once: consecutive ones are relayed
        // merged into one update, so each subscriber gets one frame rather than one per update.
        let mut updates: Vec<(Bytes, Bytes)> = Vec::new();
        if let Some((seq, queued, _)) = self.waiting.front()
            && *seq <= self.durable_seq
        {
            self.metrics
                .relay_hold_seconds
                .observe(queued.elapsed().as_secs_f64());
        }
        while self
            .waiting
            .front()
            .is_some_and(|(seq, _, _)| *seq <= self.durable_seq)
        {
            match self.waiting.pop_front() {
                Some((_, _, Delivery::Broadcast { update, frame })) => {
                    updates.push((update, frame))
                }
                Some((_, _, other)) => {
                    self.relay_merged(std::mem::take(&mut updates));
                    self.run_delivery(other);
                }
                None => break,
            }
        }
        self.relay_merged(updates);
    }
}

impl Handler<Shutdown> for DocumentActor {
    type Result = ResponseActFuture<Self, ()>;

    /// Closes every session with 1001, then flushes and compacts.
    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) -> Self::Result {
        self.subscribers
            .close_all(CloseCode::Away, "server shutting down");
        self.unload()
    }
}

impl Handler<GetPresence> for DocumentActor {
    type Result = MessageResult<GetPresence>;

    /// Counts the connections and names the people behind them.
    fn handle(&mut self, _: GetPresence, _: &mut Context<Self>) -> Self::Result {
        MessageResult(DocPresence {
            clients: self.subscribers.len(),
            people: self.presence.names(),
        })
    }
}

impl Handler<Disconnect> for DocumentActor {
    type Result = usize;

    /// Access was revoked: closes the matching sessions with 4403.
    fn handle(&mut self, msg: Disconnect, ctx: &mut Context<Self>) -> usize {
        let closed = self.subscribers.close_matching(
            msg.user.as_deref(),
            CloseCode::Other(REVOKED_CLOSE_CODE),
            "access revoked",
        );
        for &session in &closed {
            self.forget(session);
        }
        if self.subscribers.is_empty() && !self.closing {
            self.schedule_idle_check(ctx);
        }
        closed.len()
    }
}

impl Handler<Evict> for DocumentActor {
    type Result = ();

    /// The document is being deleted: close everyone with 4404 and stop, writing nothing.
    fn handle(&mut self, _: Evict, ctx: &mut Context<Self>) {
        self.closing = true;
        self.subscribers
            .close_all(CloseCode::Other(DELETED_CLOSE_CODE), "document deleted");
        self.waiting.clear();
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::{DocSettings, compaction_due};
    use std::time::Duration;

    fn settings() -> DocSettings {
        DocSettings {
            idle_unload_delay: Duration::from_secs(30),
            compact_after_updates: 1000,
            compact_after_bytes: 4 << 20,
            awareness_timeout: Duration::from_secs(30),
            auto_version_after: Duration::ZERO,
            auto_version_retention: 1,
            max_document_size: usize::MAX,
            max_presence_states: 4,
            update_cost_budget: Duration::from_secs(2),
        }
    }

    #[test]
    fn a_small_document_compacts_every_thousand_rows() {
        let s = settings();
        assert!(!compaction_due(&s, 999, 30_000, 20_000));
        assert!(compaction_due(&s, 1000, 30_000, 20_000));
        // A document never compacted has no snapshot to weigh the log against.
        assert!(compaction_due(&s, 1000, 1_000, 0));
    }

    #[test]
    fn a_large_document_waits_until_its_log_is_as_large_as_its_snapshot() {
        let s = settings();
        let snapshot = 10 << 20;
        // Neither a thousand rows nor the byte bound is enough while the log is smaller.
        assert!(!compaction_due(&s, 5000, 6 << 20, snapshot));
        assert!(compaction_due(&s, 5000, snapshot, snapshot));
        // A few large rows: the byte bound counts, the log outweighing the snapshot.
        assert!(compaction_due(&s, 3, 5 << 20, 512 << 10));
        assert!(!compaction_due(&s, 3, 3 << 20, 512 << 10));
    }

    #[test]
    fn sixteen_times_the_rows_compact_whatever_the_sizes() {
        let s = settings();
        assert!(!compaction_due(&s, 15_999, 500_000, 50 << 20));
        assert!(compaction_due(&s, 16_000, 500_000, 50 << 20));
    }
}
