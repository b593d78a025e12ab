//! Every input the fuzzers turned up (`fuzz/regressions/`), replayed against a real server: each
//! is refused with 1007 and a reason, or applied harmlessly. Never a 1011 (a panic), never a 5xx,
//! and the document still loads, syncs and reads after a restart.

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use yrs::sync::{Message, SyncMessage};
use yrs::updates::encoder::Encode;

use crate::helpers::{Backend, TestApp, TestDb, WAIT, doc_name};

fn inputs() -> Vec<(String, Vec<u8>)> {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/sync_message");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("fuzz/regressions/sync_message exists")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no regression inputs found");
    files
        .into_iter()
        .map(|p| {
            let name = p.file_name().expect("name").to_string_lossy().into_owned();
            (name, std::fs::read(&p).expect("readable"))
        })
        .collect()
}

/// Sends `frame` and then a SyncStep1: the server's SyncStep2 answer means the frame was taken.
/// Returns the close code if the server closed the connection instead.
async fn send_frame(app: &TestApp, doc: &str, frame: &[u8]) -> Option<(u16, String)> {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("{}/{doc}", app.ws_base()))
        .await
        .expect("connects");
    ws.send(WsMessage::Binary(frame.to_vec().into()))
        .await
        .expect("sent");
    let step1 = Message::Sync(SyncMessage::SyncStep1(yrs::StateVector::default())).encode_v1();
    ws.send(WsMessage::Binary(step1.into()))
        .await
        .expect("sent");
    tokio::time::timeout(WAIT, async {
        while let Some(message) = ws.next().await {
            match message.expect("socket") {
                WsMessage::Close(Some(frame)) => {
                    return Some((u16::from(frame.code), frame.reason.to_string()));
                }
                WsMessage::Binary(bytes) if bytes.starts_with(&[0, 1]) => return None,
                _ => {}
            }
        }
        panic!("socket ended without a close frame")
    })
    .await
    .expect("answered in time")
}

async fn content_status(app: &TestApp, doc: &str) -> (u16, String) {
    let response = reqwest::get(app.url(&format!("/api/docs/{doc}/content")))
        .await
        .expect("answered");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

#[actix_web::test]
async fn fuzzer_findings_are_refused_or_harmless() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut settings = db.settings();
    // Compact as early as allowed: the seed goes through a snapshot at once, and each accepted
    // input through one when its document unloads.
    settings.compact_after_updates = 1;
    let app = TestApp::spawn(settings.clone()).await;
    let base = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/base/base_doc.bin"),
    )
    .expect("base document");
    let client = reqwest::Client::new();
    let mut docs = Vec::new();
    for (name, frame) in inputs() {
        let doc = doc_name("fuzzed");
        app.create_doc(&doc).await;
        let seeded = client
            .post(app.url(&format!("/api/docs/{doc}/update")))
            .header("Content-Type", "application/octet-stream")
            .body(base.clone())
            .send()
            .await
            .expect("seeded");
        assert_eq!(seeded.status(), reqwest::StatusCode::NO_CONTENT, "{name}");
        match send_frame(&app, &doc, &frame).await {
            Some((code, reason)) => assert_eq!(code, 1007, "{name}: closed with {code} {reason}"),
            None => eprintln!("{name}: applied"),
        }
        // Whatever happened, the document still reads (never a 5xx) and syncs.
        let (status, body) = content_status(&app, &doc).await;
        assert!(
            status == 200 || status == 409,
            "{name}: content answered {status} {body}"
        );
        let probe = app.connect(&doc).await;
        drop(probe);
        docs.push((name, doc, status, body));
    }
    app.stop().await;

    // After a restart (every document was compacted and unloaded), each loads as it was.
    let app = TestApp::spawn(settings).await;
    for (name, doc, status, body) in docs {
        let (status_after, body_after) = content_status(&app, &doc).await;
        assert_eq!(
            (status_after, body_after),
            (status, body),
            "{name} after a restart"
        );
    }
    app.stop().await;
}

/// `fuzz/regressions/content_read_hangs/`: four updates after which yrs's list reader never
/// returned on the document's thread. Posted in order, the one that made the hang (`1.bin`,
/// whose origins lie in two types) is refused, the content reads, and the thread still serves
/// the document's clients. (Stock clients reach the hanging structure honestly: the interop
/// test `a_root_used_as_text_and_as_array_still_reads` covers that.)
#[actix_web::test]
async fn a_list_that_once_hung_its_thread_reads() {
    let db = TestDb::new(Backend::Sqlite).await;
    let app = TestApp::spawn(db.settings()).await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions/content_read_hangs");
    let doc = doc_name("list-hang");
    app.create_doc(&doc).await;
    let client = reqwest::Client::new();
    for (file, expected) in [
        ("0-before.bin", reqwest::StatusCode::NO_CONTENT),
        ("1.bin", reqwest::StatusCode::BAD_REQUEST),
        ("2.bin", reqwest::StatusCode::NO_CONTENT),
        ("3.bin", reqwest::StatusCode::NO_CONTENT),
    ] {
        let posted = client
            .post(app.url(&format!("/api/docs/{doc}/update")))
            .header("Content-Type", "application/octet-stream")
            .body(std::fs::read(dir.join(file)).expect("regression input"))
            .send()
            .await
            .expect("posted");
        let status = posted.status();
        let body = posted.text().await.expect("body");
        assert_eq!(status, expected, "{file}: {body}");
        if status == reqwest::StatusCode::BAD_REQUEST {
            assert!(
                body.contains("origins lie in two different shared types"),
                "{body}"
            );
        }
    }
    let (status, body) = tokio::time::timeout(WAIT, content_status(&app, &doc))
        .await
        .expect("the content read answered in time");
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert!(json["list"].is_array(), "{body}");
    let mut probe = app.connect(&doc).await;
    probe.append("still served").await;
    probe.recv_echo().await;
    let (status, body) = tokio::time::timeout(WAIT, content_status(&app, &doc))
        .await
        .expect("the second read answered in time");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("still served"), "{body}");
    app.stop().await;
}
