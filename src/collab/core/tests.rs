//! The core driven as the actor drives it, with no actix and no sockets: events in, effects out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use yrs::{GetString, ReadTxn, StateVector, Text, Transact};

use super::*;
use crate::store::LogCover;
use crate::sync::protocol::{ClientMessage, decode_frame, decode_update, encode_update};

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
        webhooks: false,
        shared_log: false,
    }
}

fn core_with(settings: DocSettings, now: Instant) -> DocCore {
    core_holding(StoredDoc::default(), settings, now)
}

fn core_holding(stored: StoredDoc, settings: DocSettings, now: Instant) -> DocCore {
    let doc = build_doc(&stored).expect("an empty document builds");
    let id = DocId::parse("core-test").expect("valid name");
    DocCore::new(
        id,
        doc,
        &stored,
        Arc::new(settings),
        Arc::new(Metrics::new()),
        now,
    )
}

fn writer() -> MemberInfo {
    MemberInfo {
        can_write: true,
        user: Some("ada".into()),
        client_ip: None,
        issued_at: None,
        acks: false,
    }
}

/// A v1 update made by a client of its own that inserts `text` at the start.
fn insert(client: u64, text: &str) -> Vec<u8> {
    let doc = yrs::Doc::with_client_id(client);
    let root = doc.get_or_insert_text(DEFAULT_TEXT_KEY);
    let mut txn = doc.transact_mut();
    root.insert(&mut txn, 0, text);
    txn.encode_update_v1()
}

fn update_message(raw: Vec<u8>) -> ClientMessage {
    ClientMessage::Update(decode_update(Bytes::from(raw)).expect("a valid update"))
}

fn text_of(core: &DocCore) -> String {
    let root = core.doc().get_or_insert_text(DEFAULT_TEXT_KEY);
    root.get_string(&core.doc().transact())
}

/// The sequence numbers the effects hand to the writer, and the messages they broadcast.
fn appends_and_broadcasts(effects: &[Effect]) -> (Vec<u64>, Vec<Bytes>) {
    let mut appends = Vec::new();
    let mut broadcasts = Vec::new();
    for effect in effects {
        match effect {
            Effect::Append { seq, .. } => appends.push(*seq),
            Effect::Broadcast(message) => broadcasts.push(message.clone()),
            _ => {}
        }
    }
    (appends, broadcasts)
}

fn closes(effects: &[Effect]) -> Vec<(SubscriberId, u16)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Close(id, code, _) => Some((*id, *code)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_subscriber_is_greeted_with_the_state_vector() {
    let now = Instant::now();
    let mut core = core_with(settings(), now);
    core.subscribe(1, writer(), now).expect("open");
    let effects = core.take_effects();
    let greeting = effects.iter().find_map(|e| match e {
        Effect::Send(1, message) => Some(message.clone()),
        _ => None,
    });
    let messages = decode_frame(&greeting.expect("a greeting")).expect("it decodes");
    assert!(
        matches!(&messages[..], [ClientMessage::SyncStep1(sv)] if *sv == StateVector::default())
    );
}

#[test]
fn an_update_is_relayed_only_once_the_writer_says_it_is_durable() {
    let now = Instant::now();
    let mut core = core_with(settings(), now);
    core.subscribe(1, writer(), now).expect("open");
    core.subscribe(2, writer(), now).expect("open");
    core.take_effects();
    let raw = insert(7, "hello");
    core.receive(1, vec![update_message(raw.clone())], now);
    let (appends, broadcasts) = appends_and_broadcasts(&core.take_effects());
    assert_eq!(appends, vec![1]);
    assert!(
        broadcasts.is_empty(),
        "nothing is relayed before it is durable"
    );
    assert_eq!(text_of(&core), "hello");

    core.durable(
        Durable {
            up_to_seq: 1,
            max_log_id: 10,
            rows: 1,
            merged: Vec::new(),
        },
        now,
    );
    let (_, broadcasts) = appends_and_broadcasts(&core.take_effects());
    assert_eq!(broadcasts, vec![encode_update(&raw)]);
}

#[test]
fn a_committed_row_goes_out_as_one_message_for_the_updates_it_merged() {
    let now = Instant::now();
    let mut core = core_with(settings(), now);
    core.subscribe(1, writer(), now).expect("open");
    core.take_effects();
    let updates: Vec<Vec<u8>> = (0..3).map(|i| insert(20 + i, "x")).collect();
    for raw in &updates {
        core.receive(1, vec![update_message(raw.clone())], now);
    }
    let (appends, _) = appends_and_broadcasts(&core.take_effects());
    assert_eq!(appends, vec![1, 2, 3]);
    let merged = crate::sync::merge_updates(updates.iter().map(Vec::as_slice)).expect("merges");
    let row = CommittedRow {
        first_seq: 1,
        last_seq: 3,
        data: Bytes::from(merged.clone()),
        log_id: 1,
    };
    core.durable(
        Durable {
            up_to_seq: 3,
            max_log_id: 1,
            rows: 1,
            merged: vec![row],
        },
        now,
    );
    let (_, broadcasts) = appends_and_broadcasts(&core.take_effects());
    assert_eq!(broadcasts, vec![encode_update(&merged)]);
}

#[test]
fn while_the_store_fails_updates_are_relayed_and_api_answers_wait_for_its_return() {
    let now = Instant::now();
    let mut core = core_with(settings(), now);
    core.subscribe(1, writer(), now).expect("open");
    core.take_effects();
    let raw = insert(7, "kept in memory");
    core.receive(1, vec![update_message(raw.clone())], now);
    let mut answer = core.answer_when_durable(b"read".to_vec(), now);
    let (_, broadcasts) = appends_and_broadcasts(&core.take_effects());
    assert!(broadcasts.is_empty());
    assert_eq!(
        core.next_wake()
            .map(|at| at <= now + Duration::from_secs(1)),
        Some(true)
    );

    // The writer's commits fail: the held update goes out, the API answer does not.
    core.tick(true, now + Duration::from_millis(300));
    let (_, broadcasts) = appends_and_broadcasts(&core.take_effects());
    assert_eq!(broadcasts, vec![encode_update(&raw)]);
    assert!(
        answer.try_recv().is_err(),
        "an API answer waits for durability"
    );

    // A later update during the outage goes out at once.
    core.receive(1, vec![update_message(insert(8, "more"))], now);
    let (appends, broadcasts) = appends_and_broadcasts(&core.take_effects());
    assert_eq!((appends.len(), broadcasts.len()), (1, 1));

    // The store is back and commits both: the answer comes, nothing is relayed twice.
    core.store_failing(false, now);
    core.durable(
        Durable {
            up_to_seq: 2,
            max_log_id: 2,
            rows: 1,
            merged: Vec::new(),
        },
        now,
    );
    let (_, broadcasts) = appends_and_broadcasts(&core.take_effects());
    assert!(broadcasts.is_empty());
    assert_eq!(answer.try_recv().expect("answered"), b"read".to_vec());
}

#[test]
fn a_read_only_subscriber_is_told_once_and_its_changes_are_dropped() {
    let now = Instant::now();
    let mut core = core_with(settings(), now);
    let reader = MemberInfo {
        can_write: false,
        ..writer()
    };
    core.subscribe(3, reader, now).expect("open");
    core.take_effects();
    core.receive(
        3,
        vec![
            update_message(insert(9, "no")),
            update_message(insert(10, "no")),
        ],
        now,
    );
    let effects = core.take_effects();
    let told = effects
        .iter()
        .filter(|e| matches!(e, Effect::Send(3, _)))
        .count();
    assert_eq!(told, 1);
    assert!(appends_and_broadcasts(&effects).0.is_empty());
    assert_eq!(text_of(&core), "");
}

#[test]
fn an_update_beyond_the_size_limit_closes_its_sender_with_1009_and_changes_nothing() {
    let now = Instant::now();
    let mut core = core_with(
        DocSettings {
            max_document_size: 8,
            ..settings()
        },
        now,
    );
    core.subscribe(1, writer(), now).expect("open");
    core.take_effects();
    core.receive(
        1,
        vec![update_message(insert(7, "far too long for the limit"))],
        now,
    );
    let effects = core.take_effects();
    assert_eq!(closes(&effects), vec![(1, close::TOO_LARGE)]);
    assert_eq!(text_of(&core), "");
    assert_eq!(core.presence_summary().clients, 0);
}

#[test]
fn revoking_a_user_closes_only_their_subscribers_with_4403() {
    let now = Instant::now();
    let mut core = core_with(settings(), now);
    core.subscribe(1, writer(), now).expect("open");
    core.subscribe(
        2,
        MemberInfo {
            user: Some("bob".into()),
            ..writer()
        },
        now,
    )
    .expect("open");
    core.take_effects();
    assert_eq!(core.revoke(Some("bob"), None, now), 1);
    assert_eq!(closes(&core.take_effects()), vec![(2, close::REVOKED)]);
    assert_eq!(core.presence_summary().clients, 1);
}

#[test]
fn an_idle_document_asks_to_unload_after_the_idle_delay() {
    let now = Instant::now();
    let mut core = core_with(settings(), now);
    core.subscribe(1, writer(), now).expect("open");
    assert_eq!(
        core.next_wake(),
        None,
        "a subscribed document has nothing to wait for"
    );
    let left = now + Duration::from_secs(5);
    core.unsubscribe(1, left);
    core.take_effects();
    let due = left + Duration::from_secs(30);
    assert_eq!(core.next_wake(), Some(due));
    core.tick(false, due - Duration::from_millis(1));
    assert!(
        !core
            .take_effects()
            .iter()
            .any(|e| matches!(e, Effect::Unload))
    );
    core.tick(false, due);
    assert!(
        core.take_effects()
            .iter()
            .any(|e| matches!(e, Effect::Unload))
    );
    let plan = core.begin_unload(due);
    assert!(plan.compaction.is_none(), "nothing was logged");
    assert!(
        core.subscribe(2, writer(), due).is_err(),
        "an unloading document turns newcomers away"
    );
}

#[test]
fn a_costly_update_is_applied_off_the_thread_and_what_came_after_it_waits() {
    let now = Instant::now();
    // A document of 300 KB makes even a small paste costly.
    let stored = StoredDoc {
        snapshot: Some(insert(39, &"p".repeat(300 * 1024))),
        ..StoredDoc::default()
    };
    let mut core = core_holding(stored, settings(), now);
    core.subscribe(1, writer(), now).expect("open");
    core.take_effects();
    // A paste of 300 structs: past what the document does on its thread even when it trusts
    // small updates.
    let big = {
        let doc = yrs::Doc::with_client_id(40);
        let root = doc.get_or_insert_text(DEFAULT_TEXT_KEY);
        for i in 0..300 {
            let mut txn = doc.transact_mut();
            root.insert(&mut txn, 0, if i % 2 == 0 { "a" } else { "bb" });
        }
        doc.transact()
            .encode_state_as_update_v1(&StateVector::default())
    };
    let after = insert(41, "after");
    core.receive(1, vec![update_message(big), update_message(after)], now);
    // The paste goes off the thread; the keystroke after it waits its turn, and is then applied
    // on the thread.
    let mut appends = Vec::new();
    let mut jobs = 0;
    loop {
        let mut job = None;
        for effect in core.take_effects() {
            match effect {
                Effect::ApplyOffThread(j) => job = Some(j),
                Effect::Append { seq, .. } => appends.push(seq),
                _ => {}
            }
        }
        let Some(job) = job else { break };
        jobs += 1;
        assert!(core.is_applying());
        assert!(appends.is_empty(), "nothing is applied before the paste");
        let done = job.run();
        core.applied_off_thread(done, now);
    }
    assert_eq!(jobs, 1);
    assert_eq!(
        appends,
        vec![1, 2],
        "the costly update, then the one that waited behind it"
    );
    let text = text_of(&core);
    assert!(
        text.contains("after") && text.contains("bba"),
        "both were applied"
    );
}

#[test]
fn keystrokes_into_a_large_document_are_applied_on_its_thread() {
    let now = Instant::now();
    let stored = StoredDoc {
        snapshot: Some(insert(39, &"p".repeat(2 * 1024 * 1024))),
        ..StoredDoc::default()
    };
    let mut core = core_holding(stored, settings(), now);
    core.subscribe(1, writer(), now).expect("open");
    core.take_effects();
    for (i, key) in ["a", "b", "c"].into_iter().enumerate() {
        core.receive(1, vec![update_message(insert(41 + i as u64, key))], now);
        let effects = core.take_effects();
        assert!(
            !effects
                .iter()
                .any(|e| matches!(e, Effect::ApplyOffThread(_))),
            "keystroke {i} went off the thread"
        );
        assert!(
            effects
                .iter()
                .any(|e| matches!(e, Effect::Append { seq, .. } if *seq == i as u64 + 1)),
            "keystroke {i} was not handed to the writer"
        );
        assert!(!core.is_applying());
    }
}

#[test]
fn the_log_is_compacted_once_it_holds_enough_rows() {
    let now = Instant::now();
    let mut core = core_with(
        DocSettings {
            compact_after_updates: 2,
            ..settings()
        },
        now,
    );
    core.subscribe(1, writer(), now).expect("open");
    core.take_effects();
    for seq in 1..=2u64 {
        core.receive(1, vec![update_message(insert(50 + seq, "r"))], now);
        core.durable(
            Durable {
                up_to_seq: seq,
                max_log_id: seq as i64,
                rows: 1,
                merged: Vec::new(),
            },
            now,
        );
    }
    core.receive(1, vec![update_message(insert(60, "s"))], now);
    let compaction = core.take_effects().into_iter().find_map(|e| match e {
        Effect::Compact(compaction, _) => Some(compaction),
        _ => None,
    });
    let compaction = compaction.expect("compaction is due");
    assert_eq!(compaction.covers_log_id, 2);
    let snapshot = StoredDoc {
        snapshot: Some(compaction.snapshot),
        ..StoredDoc::default()
    };
    let rebuilt = build_doc(&snapshot).expect("the snapshot builds");
    let root = rebuilt.get_or_insert_text(DEFAULT_TEXT_KEY);
    assert_eq!(root.get_string(&rebuilt.transact()).len(), 3);
}

#[test]
fn presence_beyond_the_cap_closes_the_subscriber_with_1008() {
    use crate::wire::AwarenessEntry;
    let now = Instant::now();
    let mut core = core_with(
        DocSettings {
            max_presence_states: 1,
            ..settings()
        },
        now,
    );
    core.subscribe(1, writer(), now).expect("open");
    core.take_effects();
    let entries: Vec<AwarenessEntry> = (0..2)
        .map(|client| AwarenessEntry {
            client,
            clock: 1,
            json: r#"{"user":{"name":"x"}}"#.into(),
        })
        .collect();
    core.receive(1, vec![ClientMessage::Awareness(entries)], now);
    assert_eq!(closes(&core.take_effects()), vec![(1, close::POLICY)]);
}

#[test]
fn compaction_policy_weighs_the_log_against_the_snapshot() {
    let s = settings();
    assert!(!compaction_due(&s, 999, 30_000, 20_000));
    assert!(compaction_due(&s, 1000, 30_000, 20_000));
    // A document never compacted has no snapshot to weigh the log against.
    assert!(compaction_due(&s, 1000, 1_000, 0));
    let snapshot = 10 << 20;
    assert!(!compaction_due(&s, 5000, 6 << 20, snapshot));
    assert!(compaction_due(&s, 5000, snapshot, snapshot));
    assert!(compaction_due(&s, 3, 5 << 20, 512 << 10));
    assert!(!compaction_due(&s, 3, 3 << 20, 512 << 10));
    // Sixteen times the rows compact whatever the sizes.
    assert!(!compaction_due(&s, 15_999, 500_000, 50 << 20));
    assert!(compaction_due(&s, 16_000, 500_000, 50 << 20));
}

#[test]
fn in_a_shared_log_other_nodes_rows_are_read_relayed_once_and_never_compacted_past_a_gap() {
    let now = Instant::now();
    let shared = DocSettings {
        shared_log: true,
        ..settings()
    };
    let stored = StoredDoc {
        updates: vec![insert(1, "a")],
        max_log_id: 1,
        ..StoredDoc::default()
    };
    let mut core = core_holding(stored, shared, now);
    core.subscribe(1, writer(), now).expect("open");
    core.take_effects();

    // This node's keystroke commits at position 3: position 2 is another node's, not read yet.
    core.receive(1, vec![update_message(insert(2, "b"))], now);
    core.take_effects();
    let mine = insert(2, "b");
    core.durable(
        Durable {
            up_to_seq: 1,
            max_log_id: 3,
            rows: 1,
            merged: vec![CommittedRow {
                first_seq: 1,
                last_seq: 1,
                data: Bytes::from(mine.clone()),
                log_id: 3,
            }],
        },
        now,
    );
    let effects = core.take_effects();
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::ReadLog { after: 1 })),
        "the gap at 2 is read"
    );
    let (_, relayed) = appends_and_broadcasts(&effects);
    assert_eq!(
        relayed.len(),
        1,
        "this node's own row, relayed once it is durable"
    );

    // A compaction now covers position 1 only: row 2 is not in this copy.
    core.compact(None);
    let covers = core.take_effects().into_iter().find_map(|e| match e {
        Effect::Compact(c, _) => Some(c.covers_log_id),
        _ => None,
    });
    assert_eq!(covers, Some(1));

    // The read finds row 2 (another node's) and row 3 (this node's): only row 2 is relayed.
    let theirs = insert(3, "c");
    core.log_read(
        Some(crate::store::LogTail {
            snapshot: None,
            rows: vec![
                crate::store::LogRow {
                    position: 2,
                    data: theirs.clone(),
                    own: false,
                },
                crate::store::LogRow {
                    position: 3,
                    data: mine,
                    own: true,
                },
            ],
        }),
        now,
    );
    let effects = core.take_effects();
    let (_, relayed) = appends_and_broadcasts(&effects);
    assert_eq!(relayed, vec![encode_update(&theirs)]);
    assert!(!effects.iter().any(|e| matches!(e, Effect::ReadLog { .. })));
    let text = text_of(&core);
    assert!(
        text.contains('a') && text.contains('b') && text.contains('c'),
        "{text}"
    );

    // Nothing missing: the log watch at 3 asks for nothing, at 4 it reads again.
    core.log_head(3, now);
    assert!(core.take_effects().is_empty());
    core.log_head(4, now);
    assert!(
        core.take_effects()
            .iter()
            .any(|e| matches!(e, Effect::ReadLog { after: 3 }))
    );
    core.compact(None);
    let covers = core.take_effects().into_iter().find_map(|e| match e {
        Effect::Compact(c, _) => Some(c.covers_log_id),
        _ => None,
    });
    assert_eq!(covers, Some(3));
}

/// The automatic version the effects ask for, once it is durable.
fn version_asked(effects: Vec<Effect>) -> oneshot::Receiver<AutoVersion> {
    effects
        .into_iter()
        .find_map(|e| match e {
            Effect::SaveVersion(wait) => Some(wait),
            _ => None,
        })
        .expect("a version is asked for")
}

fn committed(seq: u64, log_id: i64, data: Vec<u8>) -> Durable {
    Durable {
        up_to_seq: seq,
        max_log_id: log_id,
        rows: 1,
        merged: vec![CommittedRow {
            first_seq: seq,
            last_seq: seq,
            data: Bytes::from(data),
            log_id,
        }],
    }
}

#[test]
fn in_a_shared_log_a_version_says_whether_it_holds_exactly_the_log_up_to_a_position() {
    let now = Instant::now();
    let pause = Duration::from_secs(1);
    let shared = DocSettings {
        shared_log: true,
        auto_version_after: pause,
        ..settings()
    };
    let stored = StoredDoc {
        updates: vec![insert(1, "a")],
        max_log_id: 1,
        ..StoredDoc::default()
    };
    let mut core = core_holding(stored, shared, now);
    core.subscribe(1, writer(), now).expect("open");
    core.take_effects();

    // A keystroke, and the pause after it, before its commit: the version waits for it, and then
    // holds exactly the log up to the keystroke's position.
    let mine = insert(2, "b");
    core.receive(1, vec![update_message(mine.clone())], now);
    core.take_effects();
    core.tick(false, now + pause);
    let mut wait = version_asked(core.take_effects());
    assert!(wait.try_recv().is_err(), "not before the commit");
    core.durable(committed(1, 2, mine), now + pause);
    let version = wait.try_recv().expect("durable now");
    assert_eq!(
        version.cover,
        LogCover {
            through: 2,
            exact: true
        }
    );

    // Another node's change counts as an edit: a pause after it takes a version too.
    let theirs = insert(3, "c");
    core.peer_row(3, Bytes::from(theirs), now + pause);
    core.take_effects();
    core.tick(false, now + pause * 2);
    let version = version_asked(core.take_effects())
        .try_recv()
        .expect("nothing to wait for");
    assert_eq!(
        version.cover,
        LogCover {
            through: 3,
            exact: true
        }
    );

    // A keystroke taken, then another node's row read before the keystroke commits after it:
    // the version lacks that row, so it holds at least the log up to 3, and no more is claimed.
    let later = insert(5, "d");
    core.receive(1, vec![update_message(later.clone())], now + pause * 2);
    core.take_effects();
    core.tick(false, now + pause * 3);
    let mut wait = version_asked(core.take_effects());
    core.peer_row(4, Bytes::from(insert(4, "e")), now + pause * 3);
    core.take_effects();
    core.durable(committed(2, 5, later), now + pause * 3);
    let version = wait.try_recv().expect("durable now");
    assert_eq!(
        version.cover,
        LogCover {
            through: 3,
            exact: false
        }
    );
}

#[test]
fn an_api_call_waits_until_the_copy_holds_the_log_as_far_as_the_store_had_it() {
    let now = Instant::now();
    let shared = DocSettings {
        shared_log: true,
        ..settings()
    };
    let stored = StoredDoc {
        updates: vec![insert(1, "a")],
        max_log_id: 1,
        ..StoredDoc::default()
    };
    let mut core = core_holding(stored, shared, now);

    // Held already: answered at once.
    let (reply, mut answered) = oneshot::channel();
    core.catch_up(1, reply, now);
    assert!(answered.try_recv().is_ok());

    // Another node wrote up to 3: the copy reads, and answers once it holds 3.
    let (reply, mut answered) = oneshot::channel();
    core.catch_up(3, reply, now);
    assert!(
        core.take_effects()
            .iter()
            .any(|e| matches!(e, Effect::ReadLog { after: 1 }))
    );
    assert!(answered.try_recv().is_err());
    let row = |position: i64, client: u64| crate::store::LogRow {
        position,
        data: insert(client, "x"),
        own: false,
    };
    core.log_read(
        Some(crate::store::LogTail {
            snapshot: None,
            rows: vec![row(2, 2)],
        }),
        now,
    );
    assert!(answered.try_recv().is_err(), "not at 2");
    core.peer_row(3, Bytes::from(insert(3, "y")), now);
    assert!(answered.try_recv().is_ok(), "at 3");
}

#[test]
fn a_look_at_the_log_older_than_this_nodes_commits_is_checked_before_it_counts_as_a_delete() {
    let now = Instant::now();
    let shared = DocSettings {
        shared_log: true,
        ..settings()
    };
    let stored = StoredDoc {
        updates: vec![insert(1, "a")],
        max_log_id: 1,
        ..StoredDoc::default()
    };
    let mut core = core_holding(stored, shared, now);
    core.subscribe(1, writer(), now).expect("open");
    core.receive(1, vec![update_message(insert(2, "b"))], now);
    core.durable(committed(1, 2, insert(2, "b")), now);
    core.take_effects();

    // A look that began before the commit at 2 sees the log at 1: looked at again, nobody closed.
    core.log_head(1, now);
    let effects = core.take_effects();
    assert!(
        matches!(effects.as_slice(), [Effect::VerifyLog { applied: 2 }]),
        "{} effects",
        effects.len()
    );
    core.log_head(1, now);
    assert!(core.take_effects().is_empty(), "one second look at a time");
    core.log_verified(Some(2), 2, now);
    assert!(core.take_effects().is_empty());
    assert_eq!(core.presence_summary().clients, 1);

    // The second look finds it shorter too: it was deleted on another node.
    core.log_head(0, now);
    core.take_effects();
    core.log_verified(Some(0), 2, now);
    let effects = core.take_effects();
    assert!(effects.iter().any(|e| matches!(e, Effect::Failed)));
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::CloseAll(code, _) if *code == close::DELETED))
    );
}

/// What the effects send subscriber `id`.
fn sent_to(effects: &[Effect], id: SubscriberId) -> Vec<Bytes> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send(to, message) if *to == id => Some(message.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_subscriber_that_wants_acks_is_told_of_each_update_once_it_is_stored_and_not_before() {
    let now = Instant::now();
    let mut core = core_with(settings(), now);
    let acked = MemberInfo {
        acks: true,
        ..writer()
    };
    core.subscribe(1, acked, now).expect("open");
    core.subscribe(2, writer(), now).expect("open");
    core.take_effects();
    let stored = crate::sync::hocuspocus::sync_status(true);

    // Two updates and an empty one: three acknowledgements, none before the commit.
    core.receive(
        1,
        vec![
            update_message(insert(7, "a")),
            update_message(insert(8, "b")),
            update_message(EMPTY_UPDATE.to_vec()),
        ],
        now,
    );
    assert!(sent_to(&core.take_effects(), 1).is_empty());

    // The store fails: the updates are relayed to the others, the acknowledgements wait.
    core.tick(true, now + Duration::from_millis(300));
    let effects = core.take_effects();
    assert_eq!(appends_and_broadcasts(&effects).1.len(), 2);
    assert!(
        sent_to(&effects, 1).is_empty(),
        "an outage of the store releases no acknowledgement"
    );

    // The first commit holds the first update only.
    core.store_failing(false, now);
    core.durable(committed(1, 1, insert(7, "a")), now);
    assert_eq!(sent_to(&core.take_effects(), 1), vec![stored.clone()]);
    core.durable(committed(2, 2, insert(8, "b")), now);
    assert_eq!(
        sent_to(&core.take_effects(), 1),
        vec![stored.clone(), stored]
    );
    // The other subscriber, which asked for none, got none.
    core.receive(2, vec![update_message(insert(9, "c"))], now);
    core.durable(committed(3, 3, insert(9, "c")), now);
    assert!(sent_to(&core.take_effects(), 2).is_empty());
}

#[test]
fn a_read_only_subscriber_that_wants_acks_gets_a_refusal_per_change_and_no_permission_denied() {
    let now = Instant::now();
    let mut core = core_with(settings(), now);
    let reader = MemberInfo {
        can_write: false,
        acks: true,
        ..writer()
    };
    core.subscribe(3, reader, now).expect("open");
    core.take_effects();
    core.receive(
        3,
        vec![
            update_message(insert(9, "no")),
            update_message(insert(10, "no")),
            update_message(EMPTY_UPDATE.to_vec()),
        ],
        now,
    );
    let refused = crate::sync::hocuspocus::sync_status(false);
    let stored = crate::sync::hocuspocus::sync_status(true);
    assert_eq!(
        sent_to(&core.take_effects(), 3),
        vec![refused.clone(), refused, stored]
    );
    assert_eq!(text_of(&core), "");
    assert_eq!(core.presence_summary().clients, 1);
}
