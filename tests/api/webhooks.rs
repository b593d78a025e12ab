//! Webhooks against local receivers: signed, debounced, retried, kept across restarts, each
//! receiver delivered to on its own, and each receiver's backlog bounded.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::helpers::{Backend, TestApp, TestDb, WAIT, doc_name, on_both_stores};

const SECRET: &str = "test-secret";

/// One request the receiver got.
#[derive(Debug)]
pub(crate) struct Received {
    headers: Vec<(String, String)>,
    body: String,
    /// What the receiver answered.
    status: u16,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("event body is JSON")
    }

    /// The signature header matches the body under the shared secret.
    fn assert_signed(&self) {
        let header = self.header("x-tandem-signature").expect("signed");
        let timestamp: u64 = header
            .strip_prefix("t=")
            .and_then(|rest| rest.split(',').next())
            .and_then(|t| t.parse().ok())
            .expect("timestamp in the signature");
        assert_eq!(
            header,
            tandem::webhooks::signature(SECRET, timestamp, &self.body)
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        assert!(now.abs_diff(timestamp) < 60, "timestamp is current");
    }
}

/// A minimal HTTP receiver on a loopback port: answers 500 to the first `failures` requests
/// and 204 after that, and reports every request once it has answered.
pub(crate) async fn receiver(
    listener: TcpListener,
    failures: usize,
) -> mpsc::UnboundedReceiver<Received> {
    slow_receiver(listener, failures, Duration::ZERO).await
}

/// A receiver like [`receiver`] that waits `delay` before each answer.
pub(crate) async fn slow_receiver(
    listener: TcpListener,
    failures: usize,
    delay: Duration,
) -> mpsc::UnboundedReceiver<Received> {
    let (tx, rx) = mpsc::unbounded_channel();
    let seen = Arc::new(AtomicUsize::new(0));
    actix_web::rt::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (tx, seen) = (tx.clone(), seen.clone());
            actix_web::rt::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut reader = BufReader::new(read);
                let mut headers = Vec::new();
                let mut line = String::new();
                reader.read_line(&mut line).await.ok()?; // request line
                loop {
                    line.clear();
                    reader.read_line(&mut line).await.ok()?;
                    let trimmed = line.trim_end();
                    if trimmed.is_empty() {
                        break;
                    }
                    let (name, value) = trimmed.split_once(':')?;
                    headers.push((name.trim().to_string(), value.trim().to_string()));
                }
                let length: usize = headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0; length];
                reader.read_exact(&mut body).await.ok()?;
                let status = if seen.fetch_add(1, Ordering::SeqCst) < failures {
                    500
                } else {
                    204
                };
                tokio::time::sleep(delay).await;
                let answer = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                write.write_all(answer.as_bytes()).await.ok()?;
                let _ = tx.send(Received {
                    headers,
                    body: String::from_utf8_lossy(&body).into_owned(),
                    status,
                });
                Some(())
            });
        }
    });
    rx
}

pub(crate) async fn next(events: &mut mpsc::UnboundedReceiver<Received>) -> Received {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("a webhook arrives in time")
        .expect("receiver running")
}

async fn app_with_webhook(db: &TestDb, url: &str) -> TestApp {
    let mut settings = db.settings();
    settings.webhook_urls = vec![url.to_string()];
    settings.webhook_secret = Some(SECRET.to_string());
    TestApp::spawn(settings).await
}

#[actix_web::test]
async fn signed_events_announce_creation_debounced_changes_and_deletion() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let mut events = receiver(listener, 0).await;
    let db = TestDb::new(Backend::Sqlite).await;
    let app = app_with_webhook(&db, &url).await;
    let doc = doc_name("hooked");

    app.create_doc(&doc).await;
    let created = next(&mut events).await;
    created.assert_signed();
    assert_eq!(created.header("x-tandem-event"), Some("document.created"));
    assert_eq!(created.json()["id"], doc.as_str());

    // A burst of edits is announced once, after the burst.
    let mut editor = app.connect(&doc).await;
    for word in ["one ", "two ", "three ", "four ", "five"] {
        editor.append(word).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let changed = next(&mut events).await;
    changed.assert_signed();
    let body = changed.json();
    assert_eq!(body["event"], "document.changed");
    assert_eq!(body["text"], "one two three four five");
    assert!(!body["state_vector"].as_str().expect("sv").is_empty());
    // Nothing more follows for the same burst.
    let extra = tokio::time::timeout(Duration::from_millis(2500), events.recv()).await;
    assert!(extra.is_err(), "a second event for one burst: {extra:?}");

    let response = reqwest::Client::new()
        .delete(format!("http://127.0.0.1:{}/api/docs/{doc}", app.port))
        .send()
        .await
        .expect("delete");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let deleted = next(&mut events).await;
    deleted.assert_signed();
    assert_eq!(deleted.json()["event"], "document.deleted");
    app.stop().await;
}

#[actix_web::test]
async fn a_failing_receiver_gets_the_event_again_until_it_takes_it_once() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let mut events = receiver(listener, 2).await;
    let db = TestDb::new(Backend::Sqlite).await;
    let app = app_with_webhook(&db, &url).await;
    let doc = doc_name("retried");
    app.create_doc(&doc).await;

    let attempts = [
        next(&mut events).await,
        next(&mut events).await,
        next(&mut events).await,
    ];
    let ids: Vec<_> = attempts
        .iter()
        .map(|a| a.header("x-tandem-delivery"))
        .collect();
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "the same delivery each time: {ids:?}"
    );
    let statuses: Vec<u16> = attempts.iter().map(|a| a.status).collect();
    assert_eq!(statuses, vec![500, 500, 204]);
    // Once taken, it is not sent again.
    let extra = tokio::time::timeout(Duration::from_millis(2500), events.recv()).await;
    assert!(extra.is_err(), "delivered again after success: {extra:?}");
    app.stop().await;
}

on_both_stores! {
    async fn an_event_queued_before_a_restart_is_delivered_after_it(backend: Backend) {
        queued_event_survives_a_restart(backend).await;
    }
}

async fn queued_event_survives_a_restart(backend: Backend) {
    // A port nobody listens on yet.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let url = format!("http://{addr}/hook");
    let db = TestDb::new(backend).await;
    let app = app_with_webhook(&db, &url).await;
    let doc = doc_name("survives");
    app.create_doc(&doc).await;
    app.stop().await;

    let listener = TcpListener::bind(addr).await.expect("rebind");
    let mut events = receiver(listener, 0).await;
    let app = app_with_webhook(&db, &url).await;
    let created = next(&mut events).await;
    created.assert_signed();
    assert_eq!(created.json()["id"], doc.as_str());
    assert_eq!(created.json()["event"], "document.created");
    app.stop().await;
}

on_both_stores! {
    async fn a_document_first_written_over_a_socket_is_announced_as_created(backend: Backend) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let mut events = receiver(listener, 0).await;
        let db = TestDb::new(backend).await;
        let app = app_with_webhook(&db, &url).await;
        let doc = doc_name("implicit");
        let mut editor = app.connect(&doc).await;
        editor.append("hello").await;
        editor.append(" again").await;

        let created = next(&mut events).await;
        created.assert_signed();
        assert_eq!(created.json()["event"], "document.created", "{backend:?}");
        assert_eq!(created.json()["id"], doc.as_str());
        let changed = next(&mut events).await;
        assert_eq!(changed.json()["event"], "document.changed", "{backend:?}");
        assert_eq!(changed.json()["text"], "hello again");
        app.stop().await;
    }
}

/// How long the slow receiver takes to answer each request.
const SLOW_ANSWER: Duration = Duration::from_secs(3);

#[actix_web::test]
async fn a_slow_receiver_delays_only_its_own_events() {
    const EVENTS: usize = 5;
    let slow_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let slow_url = format!("http://{}/hook", slow_listener.local_addr().expect("addr"));
    let mut slow = slow_receiver(slow_listener, 0, SLOW_ANSWER).await;
    let fast_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let fast_url = format!("http://{}/hook", fast_listener.local_addr().expect("addr"));
    let mut fast = receiver(fast_listener, 0).await;
    let db = TestDb::new(Backend::Sqlite).await;
    let mut settings = db.settings();
    // The slow receiver first: in one queue shared by both, each of its events would come ahead
    // of the fast receiver's copy.
    settings.webhook_urls = vec![slow_url, fast_url];
    settings.webhook_secret = Some(SECRET.to_string());
    let app = TestApp::spawn(settings).await;
    let docs: Vec<String> = (0..EVENTS).map(|i| doc_name(&format!("lane{i}"))).collect();
    for doc in &docs {
        app.create_doc(doc).await;
    }

    let mut fast_ids = Vec::new();
    for _ in &docs {
        let event = next(&mut fast).await;
        event.assert_signed();
        fast_ids.push(event.json()["id"].as_str().expect("id").to_string());
    }
    assert_eq!(fast_ids, docs, "the fast receiver gets its events in order");
    // Answers reach the slow receiver's channel once they are written, SLOW_ANSWER apart: all
    // the fast receiver's events came before the second of them.
    let mut slow_events = Vec::new();
    while let Ok(event) = slow.try_recv() {
        slow_events.push(event);
    }
    assert!(
        slow_events.len() < 2,
        "the fast receiver's last event waited for {} answers of the slow one",
        slow_events.len()
    );

    // The slow receiver is held up only by itself: it still gets everything, in order.
    while slow_events.len() < EVENTS {
        slow_events.push(next(&mut slow).await);
    }
    for event in &slow_events {
        event.assert_signed();
    }
    let slow_ids: Vec<_> = slow_events
        .iter()
        .map(|event| event.json()["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(slow_ids, docs, "the slow receiver gets its events in order");
    app.stop().await;
}

on_both_stores! {
    async fn events_queued_for_a_receiver_no_longer_configured_are_dropped_at_start(backend: Backend) {
        // A receiver nobody listens on: what is queued for it stays queued.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let gone_url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        drop(listener);
        let db = TestDb::new(backend).await;
        let app = app_with_webhook(&db, &gone_url).await;
        app.create_doc(&doc_name("before")).await;
        app.stop().await;

        // Restarted with another receiver only.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let mut events = receiver(listener, 0).await;
        let app = app_with_webhook(&db, &url).await;
        let doc = doc_name("after");
        app.create_doc(&doc).await;
        // Lanes start once the stale queue is gone, so by this event it is.
        assert_eq!(next(&mut events).await.json()["id"], doc.as_str());
        let store = tandem::store::connect(&db.url).await.expect("store opens");
        let queued = store.delivery_backlogs().await.expect("backlogs");
        store.close().await;
        assert!(
            queued.iter().all(|(queued_url, _)| *queued_url != gone_url),
            "{backend:?}: {queued:?}"
        );
        app.stop().await;
    }
}

on_both_stores! {
    async fn a_dead_receiver_keeps_only_its_newest_events_and_the_dropped_ones_are_counted(backend: Backend) {
        dead_receiver_backlog_is_bounded(backend).await;
    }
}

async fn dead_receiver_backlog_is_bounded(backend: Backend) {
    const BACKLOG: usize = 3;
    const EVENTS: usize = 8;
    // A port nobody listens on yet: connections to it are refused.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let dead_addr = listener.local_addr().expect("addr");
    drop(listener);
    let dead_url = format!("http://{dead_addr}/hook");
    let live_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let live_url = format!("http://{}/hook", live_listener.local_addr().expect("addr"));
    let mut live = receiver(live_listener, 0).await;
    let db = TestDb::new(backend).await;
    let mut settings = db.settings();
    settings.webhook_urls = vec![dead_url.clone(), live_url.clone()];
    settings.webhook_secret = Some(SECRET.to_string());
    settings.webhook_max_backlog = BACKLOG as u64;
    let app = TestApp::spawn(settings).await;
    let docs: Vec<String> = (0..EVENTS)
        .map(|i| doc_name(&format!("dropped{i}")))
        .collect();
    // The receiver that answers loses nothing to the dead one's bound. Its own backlog counts
    // what it has not taken yet, so each of its events is awaited before the next is queued.
    for doc in &docs {
        app.create_doc(doc).await;
        assert_eq!(
            next(&mut live).await.json()["id"],
            doc.as_str(),
            "{backend:?}"
        );
    }
    // Events are queued (and dropped) before the API answers, so the count is final.
    let metrics = crate::metrics::scrape(&app).await;
    let dropped =
        |url: &str| metrics[&format!("tandem_webhook_events_dropped_total{{receiver=\"{url}\"}}")];
    assert_eq!(dropped(&dead_url), (EVENTS - BACKLOG) as f64, "{backend:?}");
    assert_eq!(dropped(&live_url), 0.0, "{backend:?}");
    let store = tandem::store::connect(&db.url).await.expect("store opens");
    let queued = store.delivery_backlogs().await.expect("backlogs");
    store.close().await;
    let dead_queued = queued.iter().find(|(url, _)| *url == dead_url);
    assert_eq!(
        dead_queued.map(|(_, n)| *n),
        Some(BACKLOG as i64),
        "{backend:?}: {queued:?}"
    );

    // Back up, the receiver gets the newest events (retries need not keep their order) and no
    // older one.
    let listener = TcpListener::bind(dead_addr).await.expect("rebind");
    let mut revived = receiver(listener, 0).await;
    let mut got = Vec::new();
    for _ in 0..BACKLOG {
        let event = next(&mut revived).await;
        event.assert_signed();
        got.push(event.json()["id"].as_str().expect("id").to_string());
    }
    got.sort();
    let mut newest = docs[EVENTS - BACKLOG..].to_vec();
    newest.sort();
    assert_eq!(got, newest, "{backend:?}");
    let extra = tokio::time::timeout(Duration::from_millis(2500), revived.recv()).await;
    assert!(
        extra.is_err(),
        "{backend:?}: a dropped event was sent: {extra:?}"
    );
    app.stop().await;
}
