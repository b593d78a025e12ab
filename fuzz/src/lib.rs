//! The bodies of the fuzz targets, shared with `tests/replay.rs` so that every seed and
//! regression input can be replayed under `cargo test` without libFuzzer.
//!
//! Each harness hands its input to the server's own code: the frame decoder and the document
//! core (`tandem::collab::core::DocCore`, the same struct the document actor drives), playing
//! the actor's part for the effects it returns (the writer commits every append, an update
//! applied off the thread is run inline). Then it checks invariants that hold for any input
//! the server accepts. A panic anywhere, in tandem or in yrs, is a finding.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Deserialize;
use tandem::collab::core::{
    CommittedRow, DocCore, DocSettings, Durable, Effect, LocalEditError, MemberInfo, build_doc,
};
use tandem::domain::DocId;
use tandem::metrics::Metrics;
use tandem::store::StoredDoc;
use tandem::sync::content::{self, RootKind};
use tandem::sync::protocol::{ClientMessage, decode_frame, decode_state_vector, decode_update};
use tandem::sync::text_ops::{self, TextOp};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, OffsetKind, Options, ReadTxn, StateVector, Transact, Update};

/// The document every input starts from (a v1 update made by `gen_seeds.mjs`): text with
/// emoji, CJK and combining marks written by three clients, plus a map and an array root, so
/// that deletes, inserts and formatting in the inputs hit existing items.
pub const BASE_DOC: &[u8] = include_bytes!("../base/base_doc.bin");

/// A v1 update with no structs and no deletions; the document actor skips it.
const EMPTY_UPDATE: &[u8] = &[0, 0];
/// The text root the editor uses (`DEFAULT_TEXT_KEY` in the document actor).
const TEXT_KEY: &str = "content";
/// The subscriber the frame comes from, and a read-only one beside it.
const OWNER: u64 = 1;
const READER: u64 = 2;

/// The base document loaded the way the server loads a stored document.
fn base_doc() -> Doc {
    build_doc(&stored(Vec::new())).expect("the base document decodes")
}

fn stored(updates: Vec<Vec<u8>>) -> StoredDoc {
    StoredDoc {
        snapshot: Some(BASE_DOC.to_vec()),
        updates,
        max_log_id: 0,
    }
}

/// What a document shows to readers, for comparing two copies. XML roots are left out: their
/// attributes render in hash-map order, which differs between two `Doc`s.
#[derive(Debug, PartialEq)]
struct View {
    text: Result<String, content::ContentError>,
    roots: Vec<(
        String,
        RootKind,
        Option<Result<serde_json::Value, content::ContentError>>,
    )>,
}

/// Whether reloads are compared without the order of list items and of characters
/// (`TANDEM_FUZZ_ORDER=loose`): items whose origins were never neighbours land in a different
/// order on a reload, which the server cannot detect (see `regressions/README.md`); this lets a
/// run go past them to look for everything else.
fn loose_order() -> bool {
    static LOOSE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *LOOSE.get_or_init(|| std::env::var("TANDEM_FUZZ_ORDER").is_ok_and(|v| v == "loose"))
}

/// `value` with every list sorted and every string's characters sorted, recursively.
fn unordered(value: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(s) => {
            let mut chars: Vec<char> = s.chars().collect();
            chars.sort_unstable();
            Value::String(chars.into_iter().collect())
        }
        Value::Array(items) => {
            let mut items: Vec<Value> = items.iter().map(unordered).collect();
            items.sort_by_cached_key(Value::to_string);
            Value::Array(items)
        }
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), unordered(v))).collect())
        }
        other => other.clone(),
    }
}

/// Two views as [`loose_order`] compares them.
fn comparable(view: View) -> View {
    if !loose_order() {
        return view;
    }
    View {
        text: view.text.map(|t| {
            let mut chars: Vec<char> = t.chars().collect();
            chars.sort_unstable();
            chars.into_iter().collect()
        }),
        roots: view
            .roots
            .into_iter()
            .map(|(name, kind, value)| (name, kind, value.map(|v| v.map(|v| unordered(&v)))))
            .collect(),
    }
}

fn view(doc: &Doc) -> View {
    let mut kinds = content::root_kinds(doc);
    kinds.sort_by(|a, b| a.0.cmp(&b.0));
    let roots = kinds
        .into_iter()
        .map(|(name, kind)| {
            // A listed root exists; it may still be unreadable (409 over HTTP).
            let value = (kind != RootKind::Xml).then(|| content::to_json(doc, Some(&name)));
            assert_ne!(
                value,
                Some(Err(content::ContentError::NoSuchKey(name.clone()))),
                "a listed root exists"
            );
            (name, kind, value)
        })
        // An empty root reads as a missing one (a client's `getText(name)` is empty either
        // way); whether yrs keeps one that only ever held deleted content differs on a reload.
        .filter(|(_, _, value)| !matches!(value, Some(Ok(v)) if is_empty(v)))
        .collect();
    comparable(View {
        text: content::to_text(doc, TEXT_KEY),
        roots,
    })
}

fn is_empty(value: &serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::String(s) => s.is_empty(),
        Value::Array(items) => items.is_empty(),
        Value::Object(map) => map.is_empty(),
        _ => false,
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
    }
}

/// A core holding `doc`, loaded from the base document, as the registry makes one.
fn core_of(doc: Doc, now: Instant) -> DocCore {
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
fn run(core: &mut DocCore, now: Instant, outcome: &mut SyncOutcome) -> (Vec<Vec<u8>>, bool) {
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

/// One WebSocket binary frame, handled as the document actor handles an `Inbound` message:
/// `decode_frame` (ws/session.rs), then the core's `receive` for a subscriber that may write
/// (updates screened, applied, off the thread and in parts when costly; presence; sync
/// answers), with a read-only subscriber's view of each update checked too. Then the later
/// stages a document goes through: reads by the HTTP API (`content::to_text` / `to_json`),
/// compaction (`encode_state_as_update_v1`) and a reload from the store (`build_doc`), both of
/// the log of accepted updates and of the compacted snapshot.
pub fn sync_message(data: &[u8]) -> SyncOutcome {
    let mut outcome = SyncOutcome::default();
    let frame = Bytes::copy_from_slice(data);
    let Ok(messages) = decode_frame(&frame) else {
        return outcome;
    };
    outcome.accepted = true;
    let now = Instant::now();
    for message in &messages {
        if let ClientMessage::Update(incoming) = message {
            // The relayed frame is what every other client receives.
            let relayed = decode_frame(&incoming.relay).expect("a relayed update is valid");
            assert!(matches!(relayed.as_slice(), [ClientMessage::Update(_)]));
        }
    }
    let mut core = core_of(base_doc(), now);
    let member = |can_write| MemberInfo {
        can_write,
        user: None,
        client_ip: None,
    };
    core.subscribe(OWNER, member(true), now)
        .expect("a fresh document takes subscribers");
    core.subscribe(READER, member(false), now)
        .expect("a fresh document takes subscribers");
    // A read-only subscriber's updates are only looked at, never applied.
    let read_only: Vec<ClientMessage> = messages
        .iter()
        .filter_map(|m| match m {
            ClientMessage::Update(update) => decode_update(update.raw.clone())
                .ok()
                .map(ClientMessage::Update),
            _ => None,
        })
        .collect();
    core.receive(READER, read_only, now);
    core.receive(OWNER, messages, now);
    let (log, failed) = run(&mut core, now, &mut outcome);
    let doc = if failed {
        // The actor stops; the next use loads what the writer committed.
        outcome.reloaded = true;
        build_doc(&stored(log.clone())).expect("stored updates decode")
    } else {
        // Presence after a closed connection and after expiry.
        core.unsubscribe(OWNER, now);
        core.tick(false, now + Duration::from_secs(120));
        run(&mut core, now, &mut outcome);
        core.doc().clone()
    };

    // Reads, as the HTTP API and webhooks make them.
    let live = view(&doc);
    let _ = content::to_json(&doc, None);
    let sv = doc.transact().state_vector();
    decode_state_vector(&sv.encode_v1()).expect("the server's state vector is valid");

    // Compaction: the whole state as one update, which is also what GET /update serves.
    let snapshot = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    decode_update(Bytes::from(snapshot.clone())).expect("the server's snapshot is valid");
    let has_pending = doc.transact().has_missing_updates();

    // The accepted updates merged, as the writer stores a commit's updates in one row and the
    // document relays them in one frame: valid for clients, and the same document on a reload.
    if log.len() > 1 && !has_pending {
        if let Some(merged) = tandem::sync::merge_updates(log.iter().map(Vec::as_slice)) {
            decode_update(Bytes::from(merged.clone())).expect("a merged update is valid");
            let reloaded = build_doc(&stored(vec![merged])).expect("a merged update decodes");
            assert_eq!(view(&reloaded), live, "reload from the merged log differs");
        }
    }
    // Reload from the log, as `build_doc` does after an unload or a crash.
    if !log.is_empty() {
        let reloaded = build_doc(&stored(log)).expect("stored updates decode");
        assert_eq!(view(&reloaded), live, "reload from the log differs");
    }
    // Reload from the compacted snapshot.
    let compacted = build_doc(&StoredDoc {
        snapshot: Some(snapshot),
        updates: Vec::new(),
        max_log_id: 0,
    })
    .expect("the snapshot decodes");
    if !has_pending {
        assert_eq!(view(&compacted), live, "reload from the snapshot differs");
    }
    outcome
}

/// The body of `POST /api/docs/{id}/text`, with the same shape and the same serde attributes
/// as `tandem::routes::updates::TextEdit` (whose fields are private).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TextEditBody {
    key: Option<String>,
    ops: Vec<TextOp>,
}

/// What one text-edit input did (used by the replay tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextOutcome {
    /// The body is not valid JSON for the route (400 from actix's JSON extractor).
    BadBody,
    /// The root is not text (400).
    NotText,
    /// The operations were refused (400); nothing changed.
    Refused,
    /// Applied (204).
    Applied,
}

/// The document a text edit starts from: the base document, loaded as `build_doc` does but
/// with a fixed client id so that a failing input replays exactly.
fn text_doc() -> Doc {
    let doc = Doc::with_options(Options {
        client_id: yrs::block::ClientID::new(0x1f_2e3d),
        offset_kind: OffsetKind::Utf16,
        ..Options::default()
    });
    doc.transact_mut()
        .apply_update(Update::decode_v1(BASE_DOC).expect("the base document decodes"))
        .expect("the base document applies");
    doc
}

/// The model of a batch: the same operations on a plain UTF-16 buffer.
fn model(text: &str, ops: &[TextOp]) -> Option<String> {
    let splits = |u: &[u16], at: usize| {
        at > 0
            && at < u.len()
            && (0xD800..0xDC00).contains(&u[at - 1])
            && (0xDC00..0xE000).contains(&u[at])
    };
    let mut units: Vec<u16> = text.encode_utf16().collect();
    for op in ops {
        match op {
            TextOp::Replace { replace } => units = replace.encode_utf16().collect(),
            TextOp::Insert { insert, at } => {
                let at = *at as usize;
                if at > units.len() || splits(&units, at) {
                    return None;
                }
                units.splice(at..at, insert.encode_utf16());
            }
            TextOp::Delete { delete, at } => {
                let (at, end) = (*at as usize, *at as u64 + u64::from(*delete));
                if end > units.len() as u64 || splits(&units, at) || splits(&units, end as usize) {
                    return None;
                }
                units.drain(at..end as usize);
            }
        }
    }
    Some(String::from_utf16(&units).expect("whole characters only"))
}

/// One request body, handled as `post_text` (routes/updates.rs) and the `EditText` handler
/// (collab/document/api.rs) handle it: the JSON extractor, the default key, the `to_text`
/// check, then the core's `edit` with `text_ops::apply` on `get_or_insert_text(key)`. Then: the result must match a
/// plain model of the operations, a refused batch must change nothing, and the update the
/// server stores and relays must pass the server's validator and give the same text when a
/// copy of the document (a client, or a reload) applies it.
pub fn text_edit(data: &[u8]) -> TextOutcome {
    // actix-web's `web::Json` parses the body with `serde_json::from_slice`.
    let route = serde_json::from_slice::<tandem::routes::updates::TextEdit>(data);
    let body = serde_json::from_slice::<TextEditBody>(data);
    assert_eq!(
        route.is_ok(),
        body.is_ok(),
        "the mirror of TextEdit disagrees with the route's type"
    );
    let Ok(TextEditBody { key, ops }) = body else {
        return TextOutcome::BadBody;
    };
    let key = key.unwrap_or_else(|| TEXT_KEY.to_string());
    let now = Instant::now();
    let mut core = core_of(text_doc(), now);
    let doc = core.doc().clone();
    let Ok(before) = content::to_text(&doc, &key) else {
        return TextOutcome::NotText;
    };
    let root = doc.get_or_insert_text(key.as_str());
    let expected = model(&before, &ops);
    // As the `EditText` handler makes it: one edit of the core.
    let edited = core.edit(
        |doc| text_ops::apply(doc, &doc.get_or_insert_text(key.as_str()), &ops),
        now,
    );
    let result = match edited {
        Ok(_) => Ok(core
            .take_effects()
            .into_iter()
            .filter_map(|e| match e {
                Effect::Append { data, .. } => Some(data.to_vec()),
                _ => None,
            })
            .collect::<Vec<_>>()),
        Err(LocalEditError::Refused(error)) => Err(error),
        Err(LocalEditError::Failed) => panic!("a text edit panicked"),
    };
    let after = root.get_string(&doc.transact());
    let Ok(updates) = result else {
        assert_eq!(after, before, "a refused batch changed the text");
        assert_eq!(
            expected, None,
            "the model accepts a batch that apply refused"
        );
        return TextOutcome::Refused;
    };
    assert_eq!(
        Some(&after),
        expected.as_ref(),
        "the text differs from the model"
    );
    assert_eq!(
        content::to_text(&doc, &key).as_deref(),
        Ok(after.as_str()),
        "to_text disagrees with the root"
    );
    if !updates.is_empty() {
        // A client holding the base document receives the relays, in order.
        let client = text_doc();
        for update in &updates {
            assert_ne!(
                update.as_slice(),
                EMPTY_UPDATE,
                "an empty update is not relayed"
            );
            let incoming = decode_update(Bytes::from(update.clone()))
                .expect("the server's own update passes its validator");
            client
                .transact_mut()
                .apply_update(incoming.update)
                .expect("the relayed update applies");
        }
        assert_eq!(
            content::to_text(&client, &key).as_deref(),
            Ok(after.as_str())
        );
        // A reload from the store: base snapshot plus the logged updates.
        let reloaded = build_doc(&stored(updates)).expect("stored updates decode");
        assert_eq!(
            content::to_text(&reloaded, &key).as_deref(),
            Ok(after.as_str()),
            "reload differs"
        );
    } else {
        assert_eq!(after, before, "an empty update changed the text");
    }
    TextOutcome::Applied
}
