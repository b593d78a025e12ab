//! What a document decides by its own clock and sizes: when to compact its log, when to save an
//! automatic version, when to announce changes to webhooks, and when to unload.

use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use yrs::updates::encoder::Encode;
use yrs::{ReadTxn, StateVector, Transact};

use super::{DEFAULT_TEXT_KEY, DocCore, DocSettings, Effect};
use crate::store::{Compaction, LogCover, StoredDoc};
use crate::sync::content;
use crate::webhooks;

/// Longest wait between two looks for expired presence states.
const AWARENESS_SWEEP: Duration = Duration::from_secs(5);

/// Whether a log of `log_rows` rows and `log_bytes` bytes should be folded into a snapshot of
/// `snapshot_bytes`: once the log is as large as the snapshot, and holds `compact_after_updates`
/// rows (what a load replays: the updates of one commit are one row, so a document edited at a
/// human pace logs a row per update) or `compact_after_bytes` bytes. Compaction so writes at most
/// about twice what the updates themselves took, however large the document, and a load after
/// a crash replays at most about the snapshot's size again. Sixteen times
/// `compact_after_updates` rows are compacted in any case.
pub(crate) fn compaction_due(
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

/// A document's sizes in the store and its clocks.
pub(super) struct Policy {
    /// Highest log row id known committed for this document.
    max_log_id: i64,
    /// Log growth since the last compaction: rows committed, and bytes of the updates recorded
    /// (committed or not).
    log_rows: u64,
    log_bytes: usize,
    /// Size of the last snapshot; with `log_bytes`, the stored size the size limit applies to.
    snapshot_bytes: usize,
    /// Changes since the last automatic version (from anywhere, and from this node's clients
    /// and API), and when the last change came.
    unversioned: bool,
    own_unversioned: bool,
    last_edit: Instant,
    /// The first change not yet announced to webhooks.
    unannounced_since: Option<Instant>,
    /// Since when nobody has used the document (no subscriber, no API call).
    idle_since: Option<Instant>,
    /// When presence was last swept for expired states.
    swept: Instant,
}

/// What unloading has yet to write: a compaction of the log (or, when the log is empty,
/// nothing but a wait for the writer), then an automatic version of the final state.
pub(crate) struct Unload {
    pub compaction: Option<Compaction>,
    pub version: Option<AutoVersion>,
}

/// An automatic version to save: the document's whole state, and how much of a shared log it
/// holds (so that several nodes save one version of one pause: see `Store::save_auto_version`).
#[derive(Debug)]
pub struct AutoVersion {
    pub state: Vec<u8>,
    pub cover: LogCover,
}

impl Policy {
    pub(super) fn new(stored: &StoredDoc, now: Instant) -> Self {
        Self {
            max_log_id: stored.max_log_id,
            log_rows: stored.updates.len() as u64,
            log_bytes: stored.log_bytes(),
            snapshot_bytes: stored.snapshot.as_ref().map_or(0, Vec::len),
            unversioned: false,
            own_unversioned: false,
            last_edit: now,
            unannounced_since: None,
            // A document loaded for a client that left before it was ready must still unload.
            idle_since: Some(now),
            swept: now,
        }
    }

    pub(super) fn committed(&mut self, max_log_id: i64, rows: u64) {
        self.max_log_id = self.max_log_id.max(max_log_id);
        self.log_rows += rows;
    }

    /// Another node's compaction folded the log into a snapshot of `bytes`.
    pub(super) fn snapshot_taken(&mut self, bytes: usize) {
        self.snapshot_bytes = bytes;
        self.log_rows = 0;
        self.log_bytes = 0;
    }

    /// Another node appended a row of `bytes` to the log.
    pub(super) fn peer_row(&mut self, bytes: usize) {
        self.log_rows += 1;
        self.log_bytes += bytes;
    }

    /// Another node's changes arrived: the pause before the next automatic version counts from
    /// the last change to the document, wherever it was made. The node that made a change
    /// announces it, and versions it when it unloads.
    pub(super) fn peer_changed(&mut self, now: Instant) {
        self.unversioned = true;
        self.last_edit = now;
    }

    pub(super) fn in_use(&mut self) {
        self.idle_since = None;
    }

    pub(super) fn unused(&mut self, now: Instant) {
        self.idle_since = Some(now);
    }
}

impl DocCore {
    /// The document's stored size as the size limit counts it.
    pub(crate) fn stored_size(&self) -> usize {
        self.policy.snapshot_bytes + self.policy.log_bytes
    }

    /// Whether a server-side edit adding about `adds` bytes stays within the size limit; the
    /// check comes before the edit, which cannot be taken back once made.
    pub(crate) fn has_room_for(&self, adds: usize) -> Result<(), usize> {
        let limit = self.settings.max_document_size;
        if self.stored_size().saturating_add(adds) > limit {
            Err(limit)
        } else {
            Ok(())
        }
    }

    /// Whether nothing of this document was ever stored or handed to the writer.
    pub(crate) fn pristine(&self) -> bool {
        let p = &self.policy;
        self.held.last_seq == 0
            && p.max_log_id == 0
            && p.snapshot_bytes == 0
            && p.log_bytes == 0
            && p.log_rows == 0
    }

    /// Use without a subscriber (the HTTP API) keeps the document loaded for another idle delay.
    pub(crate) fn touch(&mut self, now: Instant) {
        self.at(now);
        if self.members.is_empty() {
            self.policy.unused(self.now);
        }
    }

    pub(super) fn compaction_due(&self) -> bool {
        let p = &self.policy;
        compaction_due(&self.settings, p.log_rows, p.log_bytes, p.snapshot_bytes)
    }

    /// Counts bytes recorded into the log, committed or not.
    pub(super) fn logged(&mut self, bytes: usize) {
        self.policy.log_bytes += bytes;
    }

    /// Counts a row written beside the writer (a created document's content), committed already.
    pub(super) fn logged_row(&mut self, log_id: i64, bytes: usize) {
        self.policy.committed(log_id, 1);
        self.policy.log_bytes += bytes;
    }

    /// Asks for a snapshot of the whole document that drops the log rows it covers.
    pub(super) fn compact(&mut self, done: Option<oneshot::Sender<()>>) {
        let compaction = self.compaction();
        self.effects.push(Effect::Compact(compaction, done));
    }

    fn compaction(&mut self) -> Compaction {
        // In a shared log, only what this copy holds without a gap (see `shared_log.rs`).
        let covers = self
            .shared
            .as_ref()
            .map_or(self.policy.max_log_id, |log| log.applied());
        let snapshot = self
            .doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        let span = &self.span;
        let p = &mut self.policy;
        p.snapshot_bytes = snapshot.len();
        tracing::debug!(parent: span, bytes = snapshot.len(), covers, log_rows = p.log_rows, log_bytes = p.log_bytes, "compacting");
        let compaction = Compaction {
            doc: self.id.clone(),
            snapshot,
            covers_log_id: covers,
        };
        p.log_rows = 0;
        p.log_bytes = 0;
        compaction
    }

    /// Counts a change, for the metrics, the next automatic version and the webhook.
    pub(super) fn note_change(&mut self) {
        self.metrics.updates_applied.inc();
        let p = &mut self.policy;
        p.unversioned = true;
        p.own_unversioned = true;
        p.last_edit = self.now;
        if self.settings.webhooks {
            p.unannounced_since.get_or_insert(self.now);
        }
    }

    fn version_due(&self) -> Option<Instant> {
        let gap = self.settings.auto_version_after;
        (self.policy.unversioned && !gap.is_zero()).then(|| self.policy.last_edit + gap)
    }

    /// Changes are announced `DEBOUNCE` after the last one, and at least every `MAX_INTERVAL`
    /// while they keep coming.
    fn announcement_due(&self) -> Option<Instant> {
        let since = self.policy.unannounced_since?;
        Some((self.policy.last_edit + webhooks::DEBOUNCE).min(since + webhooks::MAX_INTERVAL))
    }

    fn sweep_due(&self) -> Option<Instant> {
        let timeout = self.settings.awareness_timeout;
        // Often enough that a state is gone within a third of the timeout after it expires.
        let every = AWARENESS_SWEEP
            .min(timeout / 3)
            .max(Duration::from_millis(10));
        self.has_presence().then(|| self.policy.swept + every)
    }

    fn unload_due(&self) -> Option<Instant> {
        let since = self.policy.idle_since?;
        (self.members.is_empty() && !self.closing).then(|| since + self.settings.idle_unload_delay)
    }

    /// When the next [`DocCore::tick`] has something to do, if ever.
    pub(crate) fn next_wake(&self) -> Option<Instant> {
        if self.closing {
            return None;
        }
        [
            self.version_due(),
            self.announcement_due(),
            self.sweep_due(),
            self.unload_due(),
            self.next_outage_check(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Does what the clock has made due: sweeps presence, saves a version, announces changes,
    /// rechecks held messages against the store, and asks to unload an idle document.
    pub fn tick(&mut self, store_failing: bool, now: Instant) {
        if self.closing {
            return;
        }
        self.store_failing(store_failing, now);
        // A read of the log that failed is tried again.
        self.read_if_behind();
        let due = |at: Option<Instant>| at.is_some_and(|at| at <= now);
        if due(self.sweep_due()) {
            self.policy.swept = self.now;
            self.expire_presence();
        }
        if due(self.version_due()) {
            self.take_auto_version();
        }
        if due(self.announcement_due()) {
            self.announce_change();
        }
        if due(self.unload_due()) && !self.is_applying() {
            self.effects.push(Effect::Unload);
        }
    }

    /// Asks for an automatic version of the current state, once it is durable.
    fn take_auto_version(&mut self) {
        self.policy.unversioned = false;
        self.policy.own_unversioned = false;
        let state = self
            .doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        let wait = self.version_when_durable(state);
        self.effects.push(Effect::SaveVersion(wait));
    }

    /// Asks for a `document.changed` event once everything it describes is durable.
    fn announce_change(&mut self) {
        self.policy.unannounced_since = None;
        let sv = self.doc.transact().state_vector().encode_v1();
        let text = content::to_text(&self.doc, DEFAULT_TEXT_KEY).unwrap_or_default();
        let durable = self.when_durable(sv);
        self.effects.push(Effect::Announce { durable, text });
    }

    /// Begins unloading: new subscribers are turned away; changes not yet announced are; and
    /// what is left to write is returned (the compaction's `done` is the caller's to attach).
    pub(crate) fn begin_unload(&mut self, now: Instant) -> Unload {
        self.at(now);
        if self.policy.unannounced_since.is_some() {
            self.announce_change();
        }
        self.closing = true;
        // Unsaved changes made here get their automatic version now, once the flush has made
        // them durable. Other nodes' changes are versioned where they were made.
        let version = (self.policy.own_unversioned && !self.settings.auto_version_after.is_zero())
            .then(|| {
                self.policy.unversioned = false;
                self.policy.own_unversioned = false;
                let state = self
                    .doc
                    .transact()
                    .encode_state_as_update_v1(&StateVector::default());
                AutoVersion {
                    state,
                    cover: self.log_cover_now(),
                }
            });
        let compaction =
            (self.policy.log_bytes > 0 || self.policy.log_rows > 0).then(|| self.compaction());
        Unload {
            compaction,
            version,
        }
    }
}
