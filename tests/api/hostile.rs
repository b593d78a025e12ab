//! One hostile client beside honest ones: frames packed with messages, and presence used to
//! flood or bloat. Each test has the hostile socket do what an attacker did to a server, and
//! checks that it costs only what the client may spend and that everyone else is unharmed.

use futures_util::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use yrs::sync::{Message, SyncMessage};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, ReadTxn, StateVector, Text, Transact};

use crate::helpers::{Backend, TestApp, TestDb, WAIT, YClient, awareness_frame, doc_name};

/// A document holding `len` characters of text.
async fn doc_with_text(app: &TestApp, len: usize) -> String {
    let name = doc_name("hostile");
    let response = reqwest::Client::new()
        .post(app.url("/api/docs"))
        .json(&json!({ "id": name, "text": "x".repeat(len) }))
        .send()
        .await
        .expect("create");
    assert_eq!(response.status(), reqwest::StatusCode::CREATED);
    name
}

/// Reads until `answers` SyncStep2 messages came; returns the bytes of those answers.
async fn sync_answer_bytes(client: &mut YClient, answers: usize) -> usize {
    let (mut seen, mut bytes) = (0, 0);
    tokio::time::timeout(WAIT, async {
        while seen < answers {
            match client.ws.next().await {
                Some(Ok(WsMessage::Binary(frame))) => {
                    if let Ok(Message::Sync(SyncMessage::SyncStep2(_))) = Message::decode_v1(&frame)
                    {
                        seen += 1;
                        bytes += frame.len();
                    }
                }
                Some(Ok(WsMessage::Close(frame))) => panic!("closed: {frame:?}"),
                Some(Ok(_)) => {}
                Some(Err(error)) => panic!("socket error: {error}"),
                None => panic!("socket ended"),
            }
        }
    })
    .await
    .expect("every answer in time");
    bytes
}

/// Posts a binary update to `doc` on the server at `base` (`http://host:port`).
async fn post_update(base: &str, doc: &str, update: Vec<u8>) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}/api/docs/{doc}/update"))
        .header("content-type", "application/octet-stream")
        .body(update)
        .send()
        .await
        .expect("post")
}

async fn text_of(app: &TestApp, doc: &str) -> String {
    reqwest::Client::new()
        .get(app.url(&format!("/api/docs/{doc}/content?format=text")))
        .send()
        .await
        .expect("content")
        .text()
        .await
        .expect("text")
}

#[actix_web::test]
async fn a_frame_packed_with_sync_requests_costs_each_and_is_answered_at_the_cost_of_one() {
    let db = TestDb::new(Backend::Sqlite).await;
    let app = TestApp::spawn(db.settings()).await;
    let size = 50_000;
    let doc = doc_with_text(&app, size).await;
    let step1 = Message::Sync(SyncMessage::SyncStep1(StateVector::default())).encode_v1();

    // More requests in one frame than the burst allows: refused before any is answered.
    let mut flood = YClient::open(&app.ws_base(), &doc, Doc::new()).await;
    flood.send_raw(step1.repeat(20_000)).await;
    let (code, reason) = flood.expect_close().await;
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("rate"), "{reason}");

    // Within the burst: every request is answered, but the document is encoded at most twice:
    // for the first request, and once more for the first one that claims less than that.
    let requests = 900;
    let mut claims = StateVector::default();
    claims.set_max(yrs::ClientID::new(123_456), 1);
    let mut frame = Message::Sync(SyncMessage::SyncStep1(claims)).encode_v1();
    frame.extend(step1.repeat(requests - 1));
    let mut packed = YClient::open(&app.ws_base(), &doc, Doc::new()).await;
    packed.send_raw(frame).await;
    let bytes = sync_answer_bytes(&mut packed, requests).await;
    assert!(
        bytes < 2 * size + requests * 16,
        "{requests} answers took {bytes} bytes for a document of {size}"
    );
    // Later requests are answered with nothing more to send.
    packed.send_raw(step1.repeat(3)).await;
    let again = sync_answer_bytes(&mut packed, 3).await;
    assert!(again < 64, "{again} bytes");

    // An honest client on the same document is served as ever.
    let honest = app.connect(&doc).await;
    assert_eq!(honest.text().len(), size);
    app.stop().await;
}

#[actix_web::test]
async fn updates_packed_in_one_frame_count_one_by_one_against_the_rate() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut settings = db.settings();
    settings.message_rate = 100;
    settings.message_burst = 500;
    let app = TestApp::spawn(settings).await;
    let doc = doc_name("packed-updates");
    app.create_doc(&doc).await;

    // 2,000 one-character edits, each its own Update message, all in one frame.
    let source = Doc::new();
    let text = source.get_or_insert_text("content");
    let mut frame = Vec::new();
    for _ in 0..2_000 {
        let mut txn = source.transact_mut();
        text.push(&mut txn, "a");
        let update = txn.encode_update_v1();
        frame.extend(Message::Sync(SyncMessage::Update(update)).encode_v1());
    }
    let mut hostile = YClient::open(&app.ws_base(), &doc, Doc::new()).await;
    hostile.send_raw(frame).await;
    let (code, reason) = hostile.expect_close().await;
    assert_eq!(code, 1008, "{reason}");
    // Refused whole: none of them reached the document.
    assert_eq!(text_of(&app, &doc).await, "");

    // The same edits one frame each, within the burst, are all applied.
    let mut honest = app.connect(&doc).await;
    for _ in 0..20 {
        honest.append("b").await;
    }
    honest.recv_echo().await;
    assert_eq!(text_of(&app, &doc).await, "b".repeat(20));
    app.stop().await;
}

#[actix_web::test]
async fn a_connection_may_hold_only_a_few_presence_states_each_of_bounded_size() {
    let db = TestDb::new(Backend::Sqlite).await;
    let app = TestApp::spawn(db.settings()).await;
    let doc = doc_name("presence-cap");
    let mut observer = app.connect(&doc).await;

    // Five client ids from one socket: one more than the default cap of four.
    let mut hostile = app.connect(&doc).await;
    let mut frame = Vec::new();
    for client in 1..=5u64 {
        frame.extend(awareness_frame(client, 1, r#"{"user":{"name":"sybil"}}"#));
    }
    hostile.send_raw(frame).await;
    let (code, reason) = hostile.expect_close().await;
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("presence states"), "{reason}");

    // A state longer than the limit.
    let mut bloated = app.connect(&doc).await;
    let state = format!(r#"{{"pad":"{}"}}"#, "x".repeat(20 * 1024));
    bloated.set_awareness(&state).await;
    let (code, reason) = bloated.expect_close().await;
    assert_eq!(code, 1009, "{reason}");
    assert!(reason.contains("presence state too large"), "{reason}");

    // The observer hears its own state back and none of the refused ones, and a late joiner's
    // greeting holds the observer's state alone.
    observer
        .set_awareness(r#"{"user":{"name":"honest"}}"#)
        .await;
    let me = observer.client_id();
    observer.recv_until(|c| c.awareness.contains_key(&me)).await;
    assert_eq!(observer.awareness.len(), 1, "{:?}", observer.awareness);
    let mut late = app.connect(&doc).await;
    late.recv_until(|c| c.awareness.contains_key(&me)).await;
    assert_eq!(late.awareness.len(), 1, "{:?}", late.awareness);
    app.stop().await;
}

#[actix_web::test]
async fn a_presence_flood_never_gets_honest_readers_closed_as_slow() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut settings = db.settings();
    // Limits opened wide, so that only the relay itself stands between the flood and the
    // readers: a small send queue, large states, many of them, no rate limit.
    settings.outbound_queue_bytes = 128 * 1024;
    settings.max_presence_state_size = 64 * 1024;
    settings.max_presence_states = 1_000;
    settings.message_rate = 0;
    let app = TestApp::spawn(settings).await;
    let doc = doc_name("presence-flood");
    let mut readers = Vec::new();
    for _ in 0..3 {
        readers.push(app.connect(&doc).await);
    }
    let mut writer = app.connect(&doc).await;

    // 300 states of 60 KB, in two frames, while the readers read nothing.
    let mut hostile = app.connect(&doc).await;
    let state = format!(r#"{{"pad":"{}"}}"#, "x".repeat(60_000));
    for batch in 0..2u64 {
        let mut frame = Vec::new();
        for client in 0..150u64 {
            frame.extend(awareness_frame(10_000 + batch * 150 + client, 1, &state));
        }
        hostile.send_raw(frame).await;
    }
    // The hostile client hears its own states back: the flood went through the document.
    hostile
        .recv_until(|c| c.awareness.keys().filter(|&&id| id >= 10_000).count() > 0)
        .await;

    // Every reader is still connected and gets the next edit.
    writer.append("still here").await;
    writer.recv_echo().await;
    for reader in &mut readers {
        reader.wait_for_text("still here").await;
    }
    let metrics = reqwest::get(app.url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let dropped: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tandem_presence_drops_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the presence drop counter");
    assert!(dropped > 0.0, "no presence frame was dropped");
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("tandem_outbound_drops_total ") && !l.ends_with(" 0")),
        "a client was closed as slow"
    );
    app.stop().await;
}

/// A document holding the items "L" and "R" of `content`, with `between` items between them
/// (typed backwards, so that none joins its neighbour), and its outline: "LR" alone.
fn items_between(between: usize) -> (Vec<u8>, Vec<u8>) {
    let author = Doc::with_client_id(1);
    let text = author.get_or_insert_text("content");
    text.insert(&mut author.transact_mut(), 0, "L");
    text.insert(&mut author.transact_mut(), 1, "R");
    let outline = author
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    {
        let mut txn = author.transact_mut();
        for _ in 0..between {
            text.insert(&mut txn, 1, "x");
        }
    }
    let base = author
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    (base, outline)
}

/// A one-character insert by `client`, placed between "L" and "R" of `outline`: yrs compares
/// it with every item between them.
fn insert_between(outline: &[u8], client: u64) -> Vec<u8> {
    let sybil = Doc::with_client_id(client);
    let text = sybil.get_or_insert_text("content");
    sybil
        .transact_mut()
        .apply_update(yrs::Update::decode_v1(outline).expect("decodes"))
        .expect("applies");
    let before = sybil.transact().state_vector();
    text.insert(&mut sybil.transact_mut(), 1, "y");
    sybil.transact().encode_state_as_update_v1(&before)
}

/// An update that costs far more than its size: `clients` one-character inserts, each by a
/// client of its own, all placed between the items "L" and "R" of `base`, which holds `between`
/// items there already.
fn costly_update(between: usize, clients: u64) -> (Vec<u8>, Vec<u8>) {
    let (base, outline) = items_between(between);
    let inserts: Vec<Vec<u8>> = (0..clients)
        .map(|i| insert_between(&outline, 1_000 + i))
        .collect();
    let attack = yrs::merge_updates_v1(inserts).expect("merges");
    (base, attack)
}

/// A document and `count` one-struct updates into it (keystrokes, to the server's eye), each
/// taking at least `at_least` to apply in this build (the time the first took is returned): the
/// items between their origins double until they do.
fn slow_keystrokes(
    at_least: std::time::Duration,
    count: u64,
) -> (Vec<u8>, Vec<Vec<u8>>, std::time::Duration) {
    let mut between = 200_000;
    loop {
        let (base, outline) = items_between(between);
        let keystrokes: Vec<Vec<u8>> = (0..count)
            .map(|i| insert_between(&outline, 5_000 + i))
            .collect();
        let doc = Doc::new();
        let decode = |bytes: &[u8]| yrs::Update::decode_v1(bytes).expect("decodes");
        doc.transact_mut()
            .apply_update(decode(&base))
            .expect("applies");
        let started = std::time::Instant::now();
        doc.transact_mut()
            .apply_update(decode(&keystrokes[0]))
            .expect("applies");
        let took = started.elapsed();
        if took >= at_least {
            return (base, keystrokes, took);
        }
        between *= 2;
    }
}

/// The value of the counter `name` on `app`'s `/metrics`.
async fn counter(app: &TestApp, name: &str) -> u64 {
    metric(&app.url("/metrics"), name).await
}

/// The value of the counter `name` at the metrics URL `url`.
async fn metric(url: &str, name: &str) -> u64 {
    crate::helpers::metric_at(url, name)
        .await
        .unwrap_or_else(|| panic!("{name} on {url}")) as u64
}

/// Editors of documents spread over the server's threads: one more than there are threads, so
/// that at least one shares the thread of any given document.
async fn bystanders(app: &TestApp) -> Vec<YClient> {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let mut others = Vec::new();
    for i in 0..=threads {
        others.push(app.connect(&doc_name(&format!("bystander-{i}"))).await);
    }
    others
}

/// Has every bystander type and await its echo, round after round while `going` holds (and at
/// least once); returns the slowest echo and the rounds made.
async fn slowest_echo(
    others: &mut [YClient],
    going: impl Fn() -> bool,
) -> (std::time::Duration, usize) {
    let (mut slowest, mut rounds) = (std::time::Duration::ZERO, 0);
    loop {
        for other in others.iter_mut() {
            let asked = std::time::Instant::now();
            other.append("k").await;
            tokio::time::timeout(std::time::Duration::from_secs(10), other.recv_echo())
                .await
                .expect("echo");
            slowest = slowest.max(asked.elapsed());
        }
        rounds += 1;
        if !going() {
            return (slowest, rounds);
        }
    }
}

/// A server with `budget` for updates, holding a document whose text `costly_update` was made
/// for; returns the update that costs past any small budget.
async fn costly_document(
    budget: std::time::Duration,
    name: &str,
) -> (TestApp, TestDb, String, Vec<u8>) {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut settings = db.settings();
    settings.update_cost_budget = budget;
    let app = TestApp::spawn(settings).await;
    let doc = doc_name(name);
    app.create_doc(&doc).await;
    let (base, attack) = costly_update(40_000, 2_000);
    let stored = post_update(&app.url(""), &doc, base).await;
    assert_eq!(stored.status(), reqwest::StatusCode::NO_CONTENT);
    (app, db, doc, attack)
}

#[actix_web::test]
async fn an_update_that_costs_past_the_budget_is_stopped_and_never_stalls_other_documents() {
    let (app, _db, doc, attack) =
        costly_document(std::time::Duration::from_secs(2), "costly").await;
    let mut others = bystanders(&app).await;

    let mut hostile = app.connect(&doc).await;
    hostile
        .send(Message::Sync(SyncMessage::Update(attack)))
        .await;
    // While it is applied, every other document answers its editor at once, again and again.
    let started = std::time::Instant::now();
    let (slowest, rounds) = slowest_echo(&mut others, || {
        started.elapsed() < std::time::Duration::from_secs(3)
    })
    .await;
    assert!(
        slowest < std::time::Duration::from_millis(1_500),
        "another document waited {slowest:?} for its echo ({rounds} rounds)"
    );
    let (code, reason) = hostile.expect_close().await;
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("too costly"), "{reason}");

    // What was applied before it was stopped is stored and served whole: a reader that joins
    // now and the stored document agree.
    let reader = app.connect(&doc).await;
    let text = reader.text();
    assert!(text.starts_with('L') && text.ends_with('R'), "{:.20}", text);
    assert!(text.len() >= 40_002, "{}", text.len());
    assert_eq!(text_of(&app, &doc).await, text);
    app.stop().await;
}

#[actix_web::test]
async fn keystrokes_into_a_large_document_stay_on_its_thread_until_one_is_slow() {
    let (base, keystrokes, slow) = slow_keystrokes(std::time::Duration::from_millis(600), 4);
    let db = TestDb::new(Backend::Sqlite).await;
    let mut settings = db.settings();
    settings.update_cost_budget = std::time::Duration::from_secs(60);
    let app = TestApp::spawn(settings).await;
    let doc = doc_name("slow-keystrokes");
    app.create_doc(&doc).await;
    let stored = post_update(&app.url(""), &doc, base).await;
    assert_eq!(stored.status(), reqwest::StatusCode::NO_CONTENT);
    let off_thread = "tandem_updates_applied_off_thread_total";
    let mut others = bystanders(&app).await;
    let mut reader = app.connect(&doc).await;
    let mut writer = app.connect(&doc).await;
    let len = reader.text().len();

    // An honest keystroke at the end of a document of megabytes: applied on its thread.
    let before = counter(&app, off_thread).await;
    writer.append("k").await;
    reader.recv_until(|r| r.text().len() == len + 1).await;
    assert_eq!(counter(&app, off_thread).await, before);

    // A keystroke that is slow to apply is still applied on the thread, once.
    writer
        .send(Message::Sync(SyncMessage::Update(keystrokes[0].clone())))
        .await;
    reader.recv_until(|r| r.text().len() == len + 2).await;
    assert_eq!(counter(&app, off_thread).await, before);

    // From then on the document applies them off its thread: every other document answers its
    // editor at once meanwhile. (The reader waits: applying them costs it as much, and it shares
    // this test's thread with the editors.)
    let applied = counter(&app, "tandem_updates_applied_total").await;
    for keystroke in &keystrokes[1..] {
        writer
            .send(Message::Sync(SyncMessage::Update(keystroke.clone())))
            .await;
    }
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watching = tokio::spawn({
        let (done, metrics) = (done.clone(), app.url("/metrics"));
        let all = applied + keystrokes.len() as u64 - 1;
        async move {
            while metric(&metrics, "tandem_updates_applied_total").await < all {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let (slowest, rounds) = slowest_echo(&mut others, || {
        !done.load(std::sync::atomic::Ordering::SeqCst)
    })
    .await;
    tokio::time::timeout(WAIT, watching)
        .await
        .expect("every keystroke applied in time")
        .expect("the watcher");
    let all = len + 1 + keystrokes.len();
    reader.recv_until(|r| r.text().len() == all).await;
    assert!(
        slowest < slow / 2,
        "another document waited {slowest:?} for its echo ({rounds} rounds)"
    );
    assert_eq!(
        counter(&app, off_thread).await,
        before + keystrokes.len() as u64 - 1
    );
    assert_eq!(text_of(&app, &doc).await, reader.text());
    app.stop().await;
}

#[actix_web::test]
async fn shutdown_while_a_costly_update_is_applied_ends_in_bounded_time() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut server = crate::helpers::ServerProcess::start(&db.url, &[]).await;
    let doc = doc_name("costly-shutdown");
    let (base, attack) = costly_update(40_000, 2_000);
    let created = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/api/docs", server.port))
        .json(&json!({ "id": doc }))
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), reqwest::StatusCode::CREATED);
    let stored = post_update(&format!("http://127.0.0.1:{}", server.port), &doc, base).await;
    assert_eq!(stored.status(), reqwest::StatusCode::NO_CONTENT);
    let mut hostile = YClient::connect(&server.ws_base(), &doc).await;
    hostile
        .send(Message::Sync(SyncMessage::Update(attack)))
        .await;
    // Shut down while the document is applying it.
    let metrics = format!("http://127.0.0.1:{}/metrics", server.port);
    tokio::time::timeout(WAIT, async {
        loop {
            let text = reqwest::get(&metrics)
                .await
                .expect("metrics")
                .text()
                .await
                .expect("text");
            if text
                .lines()
                .any(|l| l == "tandem_updates_applying_off_thread 1")
            {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the document applies the update");
    let stopping = std::time::Instant::now();
    server.signal(nix::sys::signal::Signal::SIGTERM);
    server
        .log_line(|e| {
            e["message"] == "stopped an update past its cost budget; keeping the part applied"
        })
        .await;
    assert_eq!(server.wait().await, Some(0));
    // The update budget (2 s) and one part, then the flush: far from the minutes it once took.
    assert!(
        stopping.elapsed() < std::time::Duration::from_secs(12),
        "shutdown took {:?}",
        stopping.elapsed()
    );
}

#[actix_web::test]
async fn a_costly_update_over_http_is_answered_400_and_keeps_the_part_applied() {
    let (app, _db, doc, attack) =
        costly_document(std::time::Duration::from_millis(300), "costly-rest").await;
    let refused = post_update(&app.url(""), &doc, attack).await;
    assert_eq!(refused.status(), reqwest::StatusCode::BAD_REQUEST);
    let problem: serde_json::Value = refused.json().await.expect("problem JSON");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("budget")),
        "{problem}"
    );
    // Part of it went in, not all: L, the 40,000 between, R, and some of the 2,000.
    let len = text_of(&app, &doc).await.len();
    assert!(len > 40_002 && len < 42_002, "{len}");
    app.stop().await;
}

#[actix_web::test]
async fn a_long_text_edit_never_stalls_other_documents_and_a_batch_has_at_most_so_many_operations()
{
    let db = TestDb::new(Backend::Sqlite).await;
    let app = TestApp::spawn(db.settings()).await;
    let size = 1_000_000u64;
    let doc = doc_with_text(&app, size as usize).await;
    let mut others = bystanders(&app).await;
    let mut seed = 12_345u64;
    let ops: Vec<serde_json::Value> = (0..10_000)
        .map(|_| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            json!({ "insert": "y", "at": (seed >> 33) % size })
        })
        .collect();
    let url = app.url(&format!("/api/docs/{doc}/text"));
    let edit = tokio::spawn({
        let url = url.clone();
        let ops = ops.clone();
        async move {
            reqwest::Client::new()
                .post(url)
                .json(&json!({ "ops": ops }))
                .send()
                .await
                .expect("edit")
                .status()
        }
    });
    let (slowest, rounds) = slowest_echo(&mut others, || !edit.is_finished()).await;
    assert_eq!(edit.await.expect("joins"), reqwest::StatusCode::NO_CONTENT);
    assert!(
        slowest < std::time::Duration::from_millis(1_500),
        "another document waited {slowest:?} for its echo ({rounds} rounds)"
    );
    assert_eq!(text_of(&app, &doc).await.len(), size as usize + 10_000);

    let mut too_many = ops;
    too_many.push(json!({ "insert": "z", "at": 0 }));
    let refused = reqwest::Client::new()
        .post(url)
        .json(&json!({ "ops": too_many }))
        .send()
        .await
        .expect("edit");
    assert_eq!(refused.status(), reqwest::StatusCode::BAD_REQUEST);
    assert_eq!(text_of(&app, &doc).await.len(), size as usize + 10_000);
    app.stop().await;
}
