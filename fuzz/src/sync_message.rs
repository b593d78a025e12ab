//! The `sync_message` target: one WebSocket binary frame, through the frame decoder and the
//! document core, then reads, compaction and reloads, each checked against the live document.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tandem::collab::core::{MemberInfo, build_doc};
use tandem::store::StoredDoc;
use tandem::sync::content;
use tandem::sync::protocol::{ClientMessage, decode_frame, decode_state_vector, decode_update};
use yrs::updates::encoder::Encode;
use yrs::{ReadTxn, StateVector, Transact};

use crate::driver::{OWNER, READER, SyncOutcome, base_doc, core_of, run, stored};
use crate::view::view;

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
        issued_at: None,
        acks: false,
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
    if log.len() > 1
        && !has_pending
        && let Some(merged) = tandem::sync::merge_updates(log.iter().map(Vec::as_slice))
    {
        decode_update(Bytes::from(merged.clone())).expect("a merged update is valid");
        let reloaded = build_doc(&stored(vec![merged])).expect("a merged update decodes");
        assert_eq!(view(&reloaded), live, "reload from the merged log differs");
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
