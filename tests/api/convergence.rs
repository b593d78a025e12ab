//! A property: whatever several clients do concurrently — edit, drop the connection, keep
//! editing offline, come back — every replica, the server and the store end with the same text,
//! and so does the store after a graceful stop and a restart.
//!
//! One server per backend serves every case, each case on a document of its own. Steps run
//! without waiting for delivery, so edits are really concurrent. Nothing expected is written
//! down: each replica, the server and the store are compared with the merge of every replica's
//! own state, made locally by yrs. Every edit lives on in the replica that made it, so a server
//! that loses, fails to relay or fails to store any update leaves somebody short of that merge.

use std::cell::RefCell;
use std::time::Instant;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use yrs::sync::{Message, SyncMessage};
use yrs::updates::decoder::Decode;
use yrs::{
    Doc, GetString, OffsetKind, Options, ReadTxn, StateVector, Text, TextRef, Transact, Update,
};

use crate::helpers::{
    TestApp, TestDb, YClient, awareness_frame, doc_name, on_both_stores, stored_text,
};

/// Cases per backend (`PROPTEST_CASES` overrides it).
const CASES: u32 = 24;
/// Positions are drawn below this and taken modulo the text's length (in characters).
const POSITIONS: usize = 256;
/// What inserted text is made of: ASCII, and characters of 2, 3 and 4 UTF-8 bytes (the last one a
/// UTF-16 surrogate pair, two units where Yjs counts positions).
const ALPHABET: &[char] = &['a', 'b', 'c', ' ', 'é', '中', '😀'];

/// One thing that happens; `client` indexes the scenario's clients.
#[derive(Debug, Clone)]
enum Step {
    /// Inserts `text` at character `at` modulo (length + 1), online or offline.
    Insert {
        client: usize,
        at: usize,
        text: String,
    },
    /// Deletes up to `len` characters from character `at` modulo the length, online or offline.
    Delete {
        client: usize,
        at: usize,
        len: usize,
    },
    /// Leaves (with a close frame, or by dropping the socket), keeping the document to edit
    /// offline. Nothing if already offline.
    Disconnect { client: usize, abrupt: bool },
    /// Connects again with the same document, syncing both ways. Nothing if already online.
    Reconnect { client: usize },
    /// Every online client sends a presence update and reads until its echo comes back,
    /// applying whatever arrived meanwhile.
    Pause,
}

#[derive(Debug, Clone)]
struct Scenario {
    clients: usize,
    steps: Vec<Step>,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (2usize..=4).prop_flat_map(|clients| {
        prop::collection::vec(step(clients), 10..=40)
            .prop_map(move |steps| Scenario { clients, steps })
    })
}

fn step(clients: usize) -> impl Strategy<Value = Step> {
    let chunk = prop::collection::vec(prop::sample::select(ALPHABET), 1..=6)
        .prop_map(|chars| chars.into_iter().collect::<String>());
    prop_oneof![
        5 => (0..clients, 0..POSITIONS, chunk)
            .prop_map(|(client, at, text)| Step::Insert { client, at, text }),
        3 => (0..clients, 0..POSITIONS, 1..=8usize)
            .prop_map(|(client, at, len)| Step::Delete { client, at, len }),
        2 => (0..clients, any::<bool>())
            .prop_map(|(client, abrupt)| Step::Disconnect { client, abrupt }),
        2 => (0..clients).prop_map(|client| Step::Reconnect { client }),
        1 => Just(Step::Pause),
    ]
}

/// A document counting positions in UTF-16 units, as Yjs does.
fn utf16_doc() -> Doc {
    Doc::with_options(Options {
        offset_kind: OffsetKind::Utf16,
        ..Options::default()
    })
}

/// The UTF-16 offset of the character at index `chars` of `s`.
fn utf16_offset(s: &str, chars: usize) -> u32 {
    s.chars().take(chars).map(char::len_utf16).sum::<usize>() as u32
}

/// One client's replica: its document outlives its connections.
struct Replica {
    doc: Doc,
    text: TextRef,
    conn: Option<YClient>,
}

impl Replica {
    async fn connect(ws_base: &str, name: &str) -> Replica {
        let doc = utf16_doc();
        let text = doc.get_or_insert_text("content");
        let conn = YClient::connect_with(ws_base, name, doc.clone()).await;
        Replica {
            doc,
            text,
            conn: Some(conn),
        }
    }

    fn content(&self) -> String {
        self.text.get_string(&self.doc.transact())
    }

    async fn insert(&mut self, at: u32, chunk: &str) {
        match &mut self.conn {
            Some(conn) => conn.insert(at, chunk).await,
            None => self.text.insert(&mut self.doc.transact_mut(), at, chunk),
        }
    }

    async fn delete(&mut self, at: u32, len: u32) {
        match &mut self.conn {
            Some(conn) => conn.delete(at, len).await,
            None => self
                .text
                .remove_range(&mut self.doc.transact_mut(), at, len),
        }
    }

    async fn disconnect(&mut self, abrupt: bool) {
        match self.conn.take() {
            Some(conn) if abrupt => drop(conn),
            Some(conn) => conn.close().await,
            None => {}
        }
    }

    async fn reconnect(&mut self, ws_base: &str, name: &str) {
        if self.conn.is_none() {
            let conn = YClient::connect_with(ws_base, name, self.doc.clone()).await;
            self.conn = Some(conn);
        }
    }
}

fn state_vector(doc: &Doc) -> StateVector {
    doc.transact().state_vector()
}

/// Sets this client's presence (clock `clock`, which must beat any it used before, across
/// connections too: the server ignores stale presence) and reads until it comes back, applying
/// whatever arrived before it.
async fn presence_round_trip(conn: &mut YClient, clock: u32) {
    let id = conn.client_id();
    let json = format!(r#"{{"pause":{clock}}}"#);
    conn.send_raw(awareness_frame(id, clock, &json)).await;
    conn.recv_until(|c| c.awareness.get(&id) == Some(&json))
        .await;
}

/// Sends SyncStep1 and returns the text and state vector the client had just before the answer
/// (a SyncStep2) arrived. The server answers only after relaying everything it applied before,
/// so this is what relaying gave the client, without the answer's repair.
async fn relayed_state(conn: &mut YClient) -> (String, StateVector) {
    conn.synced = false;
    let sv = state_vector(&conn.doc);
    conn.send(Message::Sync(SyncMessage::SyncStep1(sv))).await;
    let mut before = None;
    conn.recv_until(|c| {
        if !c.synced {
            before = Some((c.text(), state_vector(&c.doc)));
        }
        c.synced
    })
    .await;
    before.expect("the closure ran before the answer")
}

/// Runs one scenario on a fresh document of `app`; returns the document's name and the text
/// everything converged to.
async fn run_case(
    app: &TestApp,
    db_url: &str,
    scenario: &Scenario,
) -> Result<(String, String), TestCaseError> {
    let name = doc_name("converge");
    app.create_doc(&name).await;
    let ws_base = app.ws_base();
    let mut replicas = Vec::with_capacity(scenario.clients);
    for _ in 0..scenario.clients {
        replicas.push(Replica::connect(&ws_base, &name).await);
    }

    let mut pauses = 0u32;
    for step in &scenario.steps {
        match step {
            Step::Insert { client, at, text } => {
                let replica = &mut replicas[*client];
                let current = replica.content();
                let at = at % (current.chars().count() + 1);
                replica.insert(utf16_offset(&current, at), text).await;
            }
            Step::Delete { client, at, len } => {
                let replica = &mut replicas[*client];
                let current = replica.content();
                let chars = current.chars().count();
                if chars == 0 {
                    continue;
                }
                let start = at % chars;
                let end = (start + len).min(chars);
                let (start, end) = (utf16_offset(&current, start), utf16_offset(&current, end));
                replica.delete(start, end - start).await;
            }
            Step::Disconnect { client, abrupt } => replicas[*client].disconnect(*abrupt).await,
            Step::Reconnect { client } => replicas[*client].reconnect(&ws_base, &name).await,
            Step::Pause => {
                pauses += 1;
                for conn in replicas.iter_mut().filter_map(|r| r.conn.as_mut()) {
                    presence_round_trip(conn, pauses).await;
                }
            }
        }
    }

    for replica in &mut replicas {
        replica.reconnect(&ws_base, &name).await;
    }
    // The server handles presence in order with updates: once each client's presence comes back,
    // the server has applied everything every client sent.
    pauses += 1;
    for replica in &mut replicas {
        let conn = replica.conn.as_mut().expect("everyone is online");
        presence_round_trip(conn, pauses).await;
    }

    // The merge of every replica's state holds every edit ever made.
    let merged = utf16_doc();
    for replica in &replicas {
        let state = replica
            .doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        let update = Update::decode_v1(&state).expect("a replica's state decodes");
        merged
            .transact_mut()
            .apply_update(update)
            .expect("a replica's state applies");
    }
    let expected = merged
        .get_or_insert_text("content")
        .get_string(&merged.transact());
    let expected_sv = state_vector(&merged);

    // What relaying alone gave each client must already be all of it.
    for (i, replica) in replicas.iter_mut().enumerate() {
        let conn = replica.conn.as_mut().expect("everyone is online");
        let (relayed, relayed_sv) = relayed_state(conn).await;
        prop_assert_eq!(&relayed, &expected, "client {}'s text", i);
        prop_assert_eq!(
            relayed_sv,
            expected_sv.clone(),
            "client {}'s state vector",
            i
        );
    }
    for (i, replica) in replicas.iter().enumerate() {
        prop_assert_eq!(
            replica.content(),
            replicas[0].content(),
            "client {} vs 0",
            i
        );
        prop_assert_eq!(
            state_vector(&replica.doc),
            expected_sv.clone(),
            "client {}",
            i
        );
    }

    // The server relays an update only once it is stored, so both hold everything by now.
    let served = reqwest::get(app.url(&format!("/api/docs/{name}/update")))
        .await
        .expect("state request")
        .error_for_status()
        .expect("the state is served")
        .bytes()
        .await
        .expect("state body");
    let server = utf16_doc();
    server
        .transact_mut()
        .apply_update(Update::decode_v1(&served).expect("the server's state decodes"))
        .expect("the server's state applies");
    let server_text = server
        .get_or_insert_text("content")
        .get_string(&server.transact());
    prop_assert_eq!(&server_text, &expected, "the server's text");
    prop_assert_eq!(
        state_vector(&server),
        expected_sv,
        "the server's state vector"
    );
    let (stored, _) = stored_text(db_url, &name).await;
    prop_assert_eq!(&stored, &expected, "the stored text");
    // The plain-text reading of the API agrees, emptied text included.
    let as_text = reqwest::get(app.url(&format!("/api/docs/{name}/content?format=text")))
        .await
        .expect("text request")
        .error_for_status()
        .expect("the text is served")
        .text()
        .await
        .expect("text body");
    prop_assert_eq!(&as_text, &expected, "the API's plain text");

    for replica in replicas {
        if let Some(conn) = replica.conn {
            conn.close().await;
        }
    }
    Ok((name, expected))
}

fn config() -> Config {
    let mut config = Config {
        source_file: Some(file!()),
        // Keep shrinking bounded: a server that never answers costs `WAIT` per attempt.
        max_shrink_iters: 256,
        max_shrink_time: 60_000,
        ..Config::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = CASES;
    }
    config
}

// proptest's runner is synchronous: like `#[actix_web::test]`, drive everything from one actix
// `System`, one `block_on` per case, with the server spawned on that system and kept across cases.
on_both_stores! {
    fn concurrent_and_offline_edits_converge_in_replicas_and_store(backend: Backend) {
        let system = actix_web::rt::System::new();
        let started = Instant::now();
        let db = system.block_on(TestDb::new(backend));
        let app = system.block_on(TestApp::spawn(db.settings()));
        let converged = RefCell::new(Vec::new());
        let mut runner = TestRunner::new(config());
        let result = runner.run(&scenario(), |scenario| {
            let case = system.block_on(run_case(&app, &db.url, &scenario))?;
            converged.borrow_mut().push(case);
            Ok(())
        });
        match result {
            Ok(()) => {}
            Err(TestError::Fail(reason, scenario)) => {
                panic!("{backend:?}: {reason}\nminimal failing scenario: {scenario:#?}")
            }
            Err(TestError::Abort(reason)) => panic!("{backend:?}: aborted: {reason}"),
        }

        // Every case's document, after a graceful stop and on a new server over the same store.
        let converged = converged.into_inner();
        system.block_on(async {
            app.stop().await;
            for (name, expected) in &converged {
                let (stored, _) = stored_text(&db.url, name).await;
                assert_eq!(
                    &stored, expected,
                    "{backend:?}: {name} stored after stopping"
                );
            }
            let app = TestApp::spawn(db.settings()).await;
            for (name, expected) in &converged {
                let client = YClient::connect_with(&app.ws_base(), name, utf16_doc()).await;
                assert_eq!(
                    &client.text(),
                    expected,
                    "{backend:?}: {name} after a restart"
                );
                client.close().await;
            }
            app.stop().await;
        });
        eprintln!(
            "{backend:?}: {} converged cases in {:.1?}",
            converged.len(),
            started.elapsed()
        );
    }
}
