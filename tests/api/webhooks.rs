//! Webhooks against a local receiver: signed, debounced, retried, and kept across restarts.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::helpers::{Backend, TestApp, TestDb, WAIT, doc_name};

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
/// and 204 after that, and reports every request.
pub(crate) async fn receiver(
    listener: TcpListener,
    failures: usize,
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

#[actix_web::test]
async fn an_event_queued_before_a_restart_is_delivered_after_it() {
    for backend in crate::helpers::backends() {
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

#[actix_web::test]
async fn a_document_first_written_over_a_socket_is_announced_as_created() {
    for backend in crate::helpers::backends() {
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
