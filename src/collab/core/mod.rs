//! The document core: one document and every decision about it, with no transport.
//!
//! [`DocCore`] owns the yrs document, its presence, what each subscriber may do and was already
//! answered, the queue of frames and answers waiting for durability, and the compaction,
//! version, webhook and unload policy. It takes events (messages from a subscriber, "these
//! appends are durable", "the store is failing", a tick of the clock, calls of the HTTP API)
//! and returns [`Effect`]s (messages for subscribers, closes with a code and a reason, appends
//! and compactions for the writer, work for another thread), taken with
//! [`DocCore::take_effects`]. Bytes in, bytes out: the actor around it (`document/`) owns only
//! mailboxes and timers, and runs the effects through the relay and the writer. Time comes in
//! with each event, so the policy is tested without waiting.
//!
//! `integrate.rs` applies updates; `durability.rs` holds back what must wait for the store;
//! `members.rs` serves subscribers (sync answers, presence); `policy.rs` decides compactions,
//! versions, announcements and unloads; `edit.rs` makes the server's own edits;
//! `shared_log.rs` follows a log that other nodes append to.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;
use yrs::updates::decoder::Decode;
use yrs::{Doc, OffsetKind, Options, Update};

use crate::domain::DocId;
use crate::metrics::Metrics;
use crate::store::{Compaction, StoredDoc};
use crate::sync::presence::Presence;

mod cost;
mod durability;
mod edit;
mod integrate;
mod members;
mod policy;
mod shared_log;
#[cfg(test)]
mod tests;

pub(crate) use self::cost::is_heavy;
pub use self::durability::{CommittedRow, Durable};
pub use self::edit::LocalEditError;
pub use self::integrate::{OffThread, OffThreadOutcome};
pub use self::members::MemberInfo;
#[cfg(test)]
use self::policy::compaction_due;
pub(crate) use self::policy::{AutoVersion, Unload};

/// Identifies one subscription of one document: a connection holding several documents has
/// one per document, and a relay to another node has one of its own.
pub(crate) type SubscriberId = u64;

/// The root read as text when the caller names none: the editor's `Y.Text`.
pub(crate) const DEFAULT_TEXT_KEY: &str = "content";
/// A v1 update with no structs and no deletions: clients send it when they have nothing new.
pub(crate) const EMPTY_UPDATE: &[u8] = &[0, 0];

/// Close codes the core closes subscribers with (WebSocket numbering, which every wire
/// protocol Tandem speaks uses).
pub(crate) mod close {
    /// The server is going away (shutdown, or no answer to pings).
    pub(crate) const AWAY: u16 = 1001;
    /// An update that does not apply.
    pub(crate) const INVALID: u16 = 1007;
    /// A rule was broken (presence states, update cost).
    pub(crate) const POLICY: u16 = 1008;
    /// Something too large (the document's size limit).
    pub(crate) const TOO_LARGE: u16 = 1009;
    /// The document failed in memory; reconnecting reloads it.
    pub(crate) const ERROR: u16 = 1011;
    /// The subscriber could not keep up.
    pub(crate) const AGAIN: u16 = 1013;
    /// Access to the document was revoked (4000–4999 are for applications).
    pub(crate) const REVOKED: u16 = 4403;
    /// The document was deleted.
    pub(crate) const DELETED: u16 = 4404;
}

/// Settings a document needs.
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
    /// Live presence states one subscriber may hold.
    pub max_presence_states: usize,
    /// Time one update may take to apply, and one subscriber's updates per ten seconds.
    pub update_cost_budget: Duration,
    /// Whether `document.changed` webhooks are announced.
    pub webhooks: bool,
    /// Whether other nodes append to the document's log (see `shared_log.rs`).
    pub shared_log: bool,
}

/// What the core asks of the world around it, in the order it asks.
pub enum Effect {
    /// A message every subscriber must get (a durable update): one that cannot take it is
    /// closed and reported back with [`DocCore::unsubscribe`].
    Broadcast(Bytes),
    /// Presence for every subscriber, left out for one whose queue is half full.
    BroadcastPresence(Bytes),
    /// Presence this node's subscribers changed, for the other nodes (in a shared log).
    PublishPresence(Bytes),
    /// A message one subscriber must get.
    Send(SubscriberId, Bytes),
    /// Presence messages offered to one subscriber.
    Offer(SubscriberId, Vec<Bytes>),
    /// Close one subscriber with a code and a reason; the core has forgotten it already.
    Close(SubscriberId, u16, String),
    /// Close every subscriber; the core has forgotten them all.
    CloseAll(u16, String),
    /// Hand an update to the writer under sequence number `seq`, with its index when it has
    /// one (so the writer's merge does not parse it again); [`DocCore::durable`] follows.
    Append {
        seq: u64,
        data: Bytes,
        index: Option<Arc<crate::wire::Index>>,
    },
    /// Hand a compaction to the writer; `done` fires once it is committed.
    Compact(Compaction, Option<oneshot::Sender<()>>),
    /// Apply an update off the document's thread, reading nothing meanwhile, then hand the
    /// outcome to [`DocCore::applied_off_thread`].
    ApplyOffThread(OffThread),
    /// Read the document's log past position `after` and hand what it holds to
    /// [`DocCore::log_read`]: other nodes appended to it.
    ReadLog { after: i64 },
    /// Look at where the document's log ends once more, and hand it to
    /// [`DocCore::log_verified`] with `applied`: a look found it shorter than this copy.
    VerifyLog { applied: i64 },
    /// Save an automatic version of the state `durable` yields, once it is durable.
    SaveVersion(oneshot::Receiver<AutoVersion>),
    /// Announce `document.changed` with the state vector `durable` yields and `text`.
    Announce {
        durable: oneshot::Receiver<Vec<u8>>,
        text: String,
    },
    /// Nobody used the document for the idle delay: unload it ([`DocCore::begin_unload`]).
    Unload,
    /// The in-memory copy cannot be trusted: every subscriber was closed; stop without writing,
    /// so the next use reloads it from the store.
    Failed,
}

/// The document is unloading; ask the registry again.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the document is unloading")]
pub struct Gone;

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
    /// and the part applied by then is kept. From a subscriber, its budget is spent.
    #[error("applying the update cost more than the budget of {0:?}")]
    TooCostly(Duration),
}

/// Who connected, and who the people behind them are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DocPresence {
    pub clients: usize,
    pub people: Vec<String>,
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

/// One loaded document, without transport.
pub struct DocCore {
    id: DocId,
    /// Every log line about this document is emitted in this span (field `doc`).
    span: tracing::Span,
    doc: Doc,
    presence: Presence,
    members: HashMap<SubscriberId, members::Member>,
    settings: Arc<DocSettings>,
    metrics: Arc<Metrics>,
    /// The time of the event being handled.
    now: Instant,
    effects: Vec<Effect>,
    /// What must wait for the store: sequence numbers, the queue, the store's health.
    held: durability::Held,
    /// Log and snapshot sizes, and the history and unload clocks.
    policy: policy::Policy,
    /// What is yet to be handled, in the order it came, while an update is applied off the
    /// document's thread.
    backlog: VecDeque<integrate::Work>,
    /// The update (or edit) being applied off the document's thread: nothing is handled meanwhile.
    applying: Option<integrate::InFlight>,
    /// Whether small updates of a large document are still applied on its thread.
    inline_trust: cost::InlineTrust,
    /// Where the document stands in a log other nodes append to too.
    shared: Option<shared_log::SharedLog>,
    /// Set once unloading (or failing) has begun: new subscribers are turned away.
    closing: bool,
}

impl DocCore {
    /// A document loaded from `stored` (built into `doc`), as of `now`.
    pub fn new(
        id: DocId,
        doc: Doc,
        stored: &StoredDoc,
        settings: Arc<DocSettings>,
        metrics: Arc<Metrics>,
        now: Instant,
    ) -> Self {
        let mut core = Self {
            span: tracing::info_span!(parent: None, "document", doc = %id),
            id,
            doc,
            presence: Presence::default(),
            members: HashMap::new(),
            metrics,
            now,
            effects: Vec::new(),
            held: durability::Held::default(),
            policy: policy::Policy::new(stored, now),
            backlog: VecDeque::new(),
            applying: None,
            inline_trust: cost::InlineTrust::default(),
            shared: settings
                .shared_log
                .then(|| shared_log::SharedLog::new(stored.max_log_id)),
            closing: false,
            settings,
        };
        tracing::debug!(parent: &core.span, "document loaded");
        if core.shared.is_some() {
            // The other nodes holding it answer with the presence they know.
            core.effects.push(Effect::PublishPresence(
                crate::sync::protocol::encode_awareness_query(),
            ));
        }
        if core.compaction_due() {
            core.compact(None);
        }
        core
    }

    /// What the events handled since the last call ask for, in order.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    pub(crate) fn id(&self) -> &DocId {
        &self.id
    }

    pub(crate) fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// The document itself, for reading.
    pub fn doc(&self) -> &Doc {
        &self.doc
    }

    pub(crate) fn settings(&self) -> &DocSettings {
        &self.settings
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The metrics, for work that outlives this call.
    pub(crate) fn metrics_handle(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Whether unloading or failing has begun.
    pub(crate) fn is_closing(&self) -> bool {
        self.closing
    }

    /// Whether an update or edit is being applied off the document's thread.
    pub(crate) fn is_applying(&self) -> bool {
        self.applying.is_some()
    }

    /// Who is subscribed, and the names they go by.
    pub(crate) fn presence_summary(&self) -> DocPresence {
        DocPresence {
            clients: self.members.len(),
            people: self.presence.names(),
        }
    }

    /// Starts handling an event that happens at `now`.
    fn at(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    /// The in-memory document is suspect: close everyone with 1011 and stop without writing.
    pub(crate) fn fail(&mut self) {
        self.closing = true;
        self.members.clear();
        self.backlog.clear();
        self.held.clear();
        self.effects.push(Effect::CloseAll(
            close::ERROR,
            "internal error; reconnect to reload the document".into(),
        ));
        self.effects.push(Effect::Failed);
    }

    /// The document is being deleted: close everyone with 4404; nothing more is written.
    pub(crate) fn evict(&mut self, now: Instant) {
        self.at(now);
        self.closing = true;
        self.members.clear();
        self.backlog.clear();
        self.held.clear();
        self.effects
            .push(Effect::CloseAll(close::DELETED, "document deleted".into()));
    }

    /// The server is shutting down: close everyone with 1001, then unload.
    pub(crate) fn shutdown(&mut self, now: Instant) -> Unload {
        self.at(now);
        self.members.clear();
        self.effects
            .push(Effect::CloseAll(close::AWAY, "server shutting down".into()));
        self.begin_unload(now)
    }
}
