//! `/metrics`: the Prometheus text format, counting what really happened.

use std::collections::HashMap;

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use yrs::sync::{Message, SyncMessage};
use yrs::updates::encoder::Encode;

use crate::helpers::{Backend, TestApp, TestDb, awareness_frame, doc_name};

/// Samples of the text format by series (name with labels), comments skipped.
pub async fn scrape(app: &TestApp) -> HashMap<String, f64> {
    let response = reqwest::get(app.url("/metrics")).await.expect("scraped");
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/plain; version=0.0.4")
    );
    response
        .text()
        .await
        .expect("body")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

#[actix_web::test]
async fn metrics_count_connections_documents_updates_commits_and_closes() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut settings = db.settings();
    settings.message_rate = 1;
    settings.message_burst = 3;
    let app = TestApp::spawn(settings).await;
    let doc = doc_name("metered");
    let mut writer = app.connect(&doc).await;
    let mut reader = app.connect(&doc).await;
    writer.append("counted").await;
    reader.wait_for_text("counted").await;

    let m = scrape(&app).await;
    assert_eq!(m["tandem_connections"], 2.0);
    assert_eq!(m["tandem_connections_total"], 2.0);
    assert_eq!(m["tandem_documents_loaded"], 1.0);
    assert!(m["tandem_updates_applied_total"] >= 1.0);
    assert!(m["tandem_store_commit_seconds_count"] >= 1.0);
    assert!(m["tandem_store_commit_batch_updates_sum"] >= 1.0);
    assert!(m["tandem_bytes_received_total"] > 0.0);
    assert!(m["tandem_bytes_sent_total"] > 0.0);
    assert!(m["tandem_frames_sent_total"] >= 4.0);
    assert_eq!(m["tandem_document_load_seconds_count"], 1.0);
    assert_eq!(m["tandem_store_failing"], 0.0);

    // A client over its message rate is closed with 1008, and counted by code.
    let id = reader.client_id();
    for clock in 1..=10 {
        reader.send_raw(awareness_frame(id, clock, "{}")).await;
    }
    assert_eq!(reader.expect_close().await.0, 1008);
    let m = scrape(&app).await;
    assert_eq!(m[r#"tandem_connections_closed_total{code="1008"}"#], 1.0);
    app.stop().await;
}

/// With `--log-format json`, what happens to a document is logged inside a `document` span, and
/// what happens to a connection inside a `session` span; both name the document.
#[actix_web::test]
async fn json_logs_put_each_document_and_session_in_a_span() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut server =
        crate::helpers::ServerProcess::start(&db.url, &[("TANDEM_LOG", "tandem=debug,info")]).await;
    let doc = doc_name("spans");
    let mut client = crate::helpers::YClient::connect(&server.ws_base(), &doc).await;

    let loaded = server.log_line(|e| e["message"] == "document loaded").await;
    assert_eq!(loaded["span"]["name"], "document", "{loaded}");
    assert_eq!(loaded["span"]["doc"], doc.as_str(), "{loaded}");

    // A text frame is refused: the session logs why it closes, in its own span.
    client
        .ws
        .send(WsMessage::Text("not y-websocket".into()))
        .await
        .expect("frame sent");
    let (code, _) = client.expect_close().await;
    assert_eq!(code, 1003);
    let closing = server.log_line(|e| e["message"] == "closing").await;
    let span = &closing["span"];
    assert_eq!(span["name"], "session", "{closing}");
    assert_eq!(span["doc"], doc.as_str(), "{closing}");
    assert_eq!(span["access"], "Write", "{closing}");
    assert!(span["session"].as_u64().is_some(), "{closing}");
    assert_eq!(span["client_ip"], "127.0.0.1", "{closing}");
    let ended = server.log_line(|e| e["message"] == "session ended").await;
    assert_eq!(ended["span"]["session"], span["session"], "{ended}");

    server.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(server.wait().await, Some(0));
}

/// At the default level, where sessions have no span, every refusal of what a client sent names
/// the session, the document and where the client connects from.
#[actix_web::test]
async fn refusals_name_the_client_address_at_the_default_level() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut server = crate::helpers::ServerProcess::start(&db.url, &[]).await;
    let doc = doc_name("refusals");
    let mut writer = crate::helpers::YClient::connect(&server.ws_base(), &doc).await;
    writer.append("words").await;
    writer.recv_echo().await;

    // The document refuses an update: an item placed inside a character.
    let mut forger = crate::helpers::YClient::connect(&server.ws_base(), &doc).await;
    forger
        .send_raw(
            Message::Sync(SyncMessage::Update(crate::helpers::item_inside(
                77,
                (writer.client_id(), 2),
            )))
            .encode_v1(),
        )
        .await;
    assert_eq!(forger.expect_close().await.0, 1007);
    let refused = server
        .log_line(|e| e["message"] == "refused an update that does not apply")
        .await;
    assert_eq!(refused["client_ip"], "127.0.0.1", "{refused}");
    assert!(refused["session"].as_u64().is_some(), "{refused}");
    assert_eq!(refused["span"]["doc"], doc.as_str(), "{refused}");

    // The session refuses a frame.
    writer
        .ws
        .send(WsMessage::Text("not y-websocket".into()))
        .await
        .expect("frame sent");
    assert_eq!(writer.expect_close().await.0, 1003);
    let closing = server.log_line(|e| e["message"] == "closing").await;
    assert_eq!(closing["level"], "INFO", "{closing}");
    assert_eq!(closing["client_ip"], "127.0.0.1", "{closing}");
    assert_eq!(closing["doc"], doc.as_str(), "{closing}");
    assert!(closing["session"].as_u64().is_some(), "{closing}");

    server.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(server.wait().await, Some(0));
}

/// A token in the query is blanked from logged request targets however its name is spelt: the
/// query parser reads `%74oken` as `token`, so a refusal logged with the target must not carry
/// the value.
#[actix_web::test]
async fn tokens_are_blanked_from_logged_targets_however_their_name_is_spelt() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut server = crate::helpers::ServerProcess::start(
        &db.url,
        &[
            (
                "TANDEM_AUTH_SECRET",
                "an operator secret of more than thirty-two characters",
            ),
            ("TANDEM_API_KEYS", "a-key"),
        ],
    )
    .await;
    let doc = doc_name("redacted");
    let leaked = "v1.bGVha2VkLXBheWxvYWQ.bGVha2VkLXNpZ25hdHVyZQ";
    for query in [format!("%74oken={leaked}"), format!("x=1&T%6Fken={leaked}")] {
        let url = format!("{}/{doc}?{query}", server.ws_base());
        match tokio_tungstenite::connect_async(url).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 401, "{query}");
            }
            other => panic!("{query}: expected a refusal, got {other:?}"),
        }
        let refusal = server
            .log_line(|e| {
                e["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("Error encountered"))
            })
            .await;
        let line = refusal.to_string();
        assert!(line.contains("REDACTED"), "{line}");
        assert!(
            !line.contains("bGVha2Vk"),
            "the token is in the log: {line}"
        );
    }
    server.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(server.wait().await, Some(0));
}
