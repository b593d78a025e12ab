//! The document driver every target shares: the base document, a core holding it with the
//! server's default settings, and the actor's part for the core's effects (messages checked,
//! appends committed as the writer commits them, updates for another thread applied inline).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tandem::collab::core::{CommittedRow, DocCore, DocSettings, Durable, Effect, build_doc};
use tandem::domain::DocId;
use tandem::metrics::Metrics;
use tandem::store::StoredDoc;
use tandem::sync::protocol::decode_frame;
use yrs::Doc;

/// The document every input starts from (a v1 update made by `gen_seeds.mjs`): text with
/// emoji, CJK and combining marks written by three clients, plus a map and an array root, so
/// that deletes, inserts and formatting in the inputs hit existing items.
pub(crate) const BASE_DOC: &[u8] = include_bytes!("../base/base_doc.bin");

/// The text root the editor uses (`DEFAULT_TEXT_KEY` in the document actor).
pub(crate) const TEXT_KEY: &str = "content";
/// The subscriber the frame comes from, and a read-only one beside it.
pub(crate) const OWNER: u64 = 1;
pub(crate) const READER: u64 = 2;

/// The base document loaded the way the server loads a stored document.
pub(crate) fn base_doc() -> Doc {
    build_doc(&stored(Vec::new())).expect("the base document decodes")
}

pub(crate) fn stored(updates: Vec<Vec<u8>>) -> StoredDoc {
    StoredDoc {
        snapshot: Some(BASE_DOC.to_vec()),
        updates,
        max_log_id: 0,
    }
}

/// The server's defaults (`--help`), with compaction left to the harness.
fn settings() -> DocSettings {
    DocSettings {
        idle_unload_delay: Duration::from_secs(30),
        compact_after_updates: u64::MAX / 32,
        compact_after_bytes: usize::MAX,
        awareness_timeout: Duration::from_secs(30),
        auto_version_after: Duration::ZERO,
        auto_version_retention: 1,
        max_document_size: 64 << 20,
        max_presence_states: 4,
        update_cost_budget: Duration::from_secs(2),
        webhooks: false,
        shared_log: false,
    }
}

/// A core holding `doc`, loaded from the base document, as the registry makes one.
pub(crate) fn core_of(doc: Doc, now: Instant) -> DocCore {
    let id = DocId::parse("fuzz").expect("a valid name");
    DocCore::new(
        id,
        doc,
        &stored(Vec::new()),
        Arc::new(settings()),
        Arc::new(Metrics::new()),
        now,
    )
}

/// Every message the server sends must be valid for every client.
fn check_sent(message: &Bytes) {
    decode_frame(message).expect("what the server sends is valid");
}

/// Plays the actor's part for the core's effects until it asks for nothing more: messages are
/// checked, appends are committed by the writer (each commit one merged row, relayed as it is),
/// an update for another thread is applied inline. Returns what was appended, in order, and
/// whether the core failed (the actor then stops, and the next use reloads from the store).
pub(crate) fn run(
    core: &mut DocCore,
    now: Instant,
    outcome: &mut SyncOutcome,
) -> (Vec<Vec<u8>>, bool) {
    let mut log = Vec::new();
    let mut failed = false;
    loop {
        let effects = core.take_effects();
        if effects.is_empty() {
            return (log, failed);
        }
        let mut commit: Vec<(u64, Bytes)> = Vec::new();
        for effect in effects {
            match effect {
                Effect::Broadcast(m) | Effect::BroadcastPresence(m) | Effect::Send(_, m) => {
                    check_sent(&m)
                }
                Effect::Offer(_, messages) => messages.iter().for_each(check_sent),
                Effect::Close(OWNER, _, _) => outcome.refused = true,
                Effect::Append { seq, data, .. } => {
                    outcome.applied += 1;
                    log.push(data.to_vec());
                    commit.push((seq, data));
                }
                Effect::ApplyOffThread(job) => core.applied_off_thread(job.run(), now),
                Effect::Failed => {
                    failed = true;
                    outcome.refused = true;
                }
                _ => {}
            }
        }
        if let (Some(&(first_seq, _)), Some(&(last_seq, _))) = (commit.first(), commit.last()) {
            let merged = tandem::sync::merge_updates(commit.iter().map(|(_, d)| d.as_ref()));
            let merged = match merged {
                Some(data) => vec![CommittedRow {
                    first_seq,
                    last_seq,
                    data: data.into(),
                    log_id: last_seq as i64,
                }],
                None => Vec::new(),
            };
            let rows = merged.len().max(commit.len().min(1)) as u64;
            let notice = Durable {
                up_to_seq: last_seq,
                max_log_id: last_seq as i64,
                rows,
                merged,
            };
            core.durable(notice, now);
        }
    }
}

/// What the fuzzer learned about one input (used by the replay tests).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncOutcome {
    /// `decode_frame` accepted the frame.
    pub accepted: bool,
    /// Updates applied to the document (empty ones are skipped, like the actor does).
    pub applied: usize,
    /// An update was refused by yrs; the server closes the connection at that point.
    pub refused: bool,
    /// yrs refused an update after integrating part of it, so the document was reloaded from
    /// the store, as the actor does.
    pub reloaded: bool,
}
