//! Limits and fairness: document size, connection counts, message rate and body size each turn
//! the excess away with a close code (or status) and a reason, and nothing else is harmed.

use reqwest::StatusCode;
use serde_json::Value;
use yrs::{Doc, Text, Transact};

use crate::helpers::{Backend, TestApp, TestDb, YClient, awareness_frame, doc_name};

async fn app_with(change: impl FnOnce(&mut tandem::config::Settings)) -> (TestApp, TestDb) {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut settings = db.settings();
    change(&mut settings);
    (TestApp::spawn(settings).await, db)
}

/// An update inserting `len` characters, made by a client of its own.
fn big_update(len: usize) -> Vec<u8> {
    let doc = Doc::new();
    let text = doc.get_or_insert_text("content");
    let mut txn = doc.transact_mut();
    text.insert(&mut txn, 0, &"x".repeat(len));
    txn.encode_update_v1()
}

#[actix_web::test]
async fn a_document_may_not_grow_beyond_its_size_limit() {
    let (app, _db) = app_with(|s| s.max_document_size = 4_000).await;
    let doc = doc_name("sized");
    let mut writer = app.connect(&doc).await;
    writer.append(&"a".repeat(1_000)).await;
    writer.recv_until(|c| c.updates_received >= 1).await;

    writer.append(&"b".repeat(5_000)).await;
    let (code, reason) = writer.expect_close().await;
    assert_eq!(code, 1009);
    assert!(reason.contains("document too large"), "{reason}");

    let response = reqwest::Client::new()
        .post(app.url(&format!("/api/docs/{doc}/update")))
        .header("Content-Type", "application/octet-stream")
        .body(big_update(5_000))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let problem: Value = response.json().await.expect("json");
    assert_eq!(problem["type"], "/problems/document-too-large");

    let text = reqwest::Client::new()
        .post(app.url(&format!("/api/docs/{doc}/text")))
        .json(&serde_json::json!({ "ops": [{ "insert": "c".repeat(5_000), "at": 0 }] }))
        .send()
        .await
        .expect("post");
    assert_eq!(text.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let problem: Value = text.json().await.expect("json");
    assert_eq!(problem["type"], "/problems/document-too-large");

    let probe = app.connect(&doc).await;
    assert_eq!(probe.text(), "a".repeat(1_000));
    app.stop().await;
}

#[actix_web::test]
async fn connections_beyond_a_limit_are_closed_with_1013_and_free_their_slot_on_leaving() {
    let (app, _db) = app_with(|s| {
        s.max_connections_per_doc = 2;
        s.max_connections = 3;
    })
    .await;
    let doc = doc_name("crowded");
    let first = app.connect(&doc).await;
    let _second = app.connect(&doc).await;
    let mut third = YClient::open(&app.ws_base(), &doc, Doc::new()).await;
    let (code, reason) = third.expect_close().await;
    assert_eq!(code, 1013);
    assert!(reason.contains("document full"), "{reason}");

    let _elsewhere = app.connect(&doc_name("other")).await;
    let mut fourth = YClient::open(&app.ws_base(), &doc_name("more"), Doc::new()).await;
    let (code, reason) = fourth.expect_close().await;
    assert_eq!(
        (code, reason.contains("server full")),
        (1013, true),
        "{reason}"
    );

    first.close().await;
    // The slot comes back once the server has seen the close; a new client then gets in.
    let joined = tokio::time::timeout(crate::helpers::WAIT, async {
        loop {
            let mut attempt = YClient::open(&app.ws_base(), &doc, Doc::new()).await;
            let sv = yrs::ReadTxn::state_vector(&attempt.doc.transact());
            attempt
                .send(yrs::sync::Message::Sync(yrs::sync::SyncMessage::SyncStep1(
                    sv,
                )))
                .await;
            match futures_util::StreamExt::next(&mut attempt.ws).await {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Binary(_))) => return,
                _ => tokio::task::yield_now().await,
            }
        }
    })
    .await;
    assert!(joined.is_ok(), "a freed slot admits a new client");
    app.stop().await;
}

#[actix_web::test]
async fn connections_from_one_address_are_limited() {
    let (app, _db) = app_with(|s| s.max_connections_per_ip = 1).await;
    let _held = app.connect(&doc_name("a")).await;
    let mut second = YClient::open(&app.ws_base(), &doc_name("b"), Doc::new()).await;
    let (code, reason) = second.expect_close().await;
    assert_eq!(code, 1013);
    assert!(reason.contains("your address"), "{reason}");
    app.stop().await;
}

#[actix_web::test]
async fn forwarded_addresses_count_only_from_trusted_proxies() {
    let forwarded =
        |ip: &str| -> [(&'static str, String); 1] { [("X-Forwarded-For", ip.to_string())] };
    async fn open(app: &TestApp, doc: &str, headers: &[(&'static str, String)]) -> YClient {
        let headers: Vec<(&'static str, &str)> =
            headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        YClient::open_with_headers(&app.ws_base(), doc, &headers).await
    }

    // Anyone may send the header: from an untrusted peer it changes nothing.
    let (direct, _db) = app_with(|s| s.max_connections_per_ip = 1).await;
    let _held = open(&direct, &doc_name("a"), &forwarded("203.0.113.1"))
        .await
        .handshake()
        .await;
    let mut second = open(&direct, &doc_name("b"), &forwarded("203.0.113.2")).await;
    let (code, reason) = second.expect_close().await;
    assert_eq!(code, 1013);
    assert!(reason.contains("your address"), "{reason}");
    direct.stop().await;

    // Behind a trusted proxy (here the test itself, on loopback) each client counts alone, by
    // the rightmost address the proxy did not add for itself.
    let (proxied, _db) = app_with(|s| {
        s.max_connections_per_ip = 1;
        s.trusted_proxies = vec!["127.0.0.1".into()];
    })
    .await;
    let _first = open(&proxied, &doc_name("c"), &forwarded("6.6.6.6, 203.0.113.1"))
        .await
        .handshake()
        .await;
    let _other = open(&proxied, &doc_name("d"), &forwarded("203.0.113.2"))
        .await
        .handshake()
        .await;
    // The client forging a different leftmost entry is still 203.0.113.1.
    let mut again = open(&proxied, &doc_name("e"), &forwarded("7.7.7.7, 203.0.113.1")).await;
    let (code, reason) = again.expect_close().await;
    assert_eq!(code, 1013);
    assert!(reason.contains("your address"), "{reason}");
    // IPv6 clients count by their /64.
    let _v6 = open(&proxied, &doc_name("f"), &forwarded("2001:db8:1:2::1"))
        .await
        .handshake()
        .await;
    let mut same_64 = open(
        &proxied,
        &doc_name("g"),
        &forwarded("[2001:db8:1:2:ffff::9]:443"),
    )
    .await;
    assert_eq!(same_64.expect_close().await.0, 1013);
    proxied.stop().await;
}

#[actix_web::test]
async fn a_client_sending_faster_than_its_rate_is_closed_with_1008() {
    let (app, _db) = app_with(|s| {
        s.message_rate = 5;
        s.message_burst = 10;
    })
    .await;
    let doc = doc_name("flood");
    let mut bystander = app.connect(&doc).await;
    let mut flooder = app.connect(&doc).await;
    let id = flooder.client_id();
    for clock in 1..=100 {
        flooder.send_raw(awareness_frame(id, clock, "{}")).await;
    }
    let (code, reason) = flooder.expect_close().await;
    assert_eq!(code, 1008);
    assert!(reason.contains("rate"), "{reason}");
    bystander.append("unharmed").await;
    bystander.recv_until(|c| c.updates_received >= 1).await;
    app.stop().await;
}

#[actix_web::test]
async fn rest_bodies_beyond_the_limit_get_413() {
    let (app, _db) = app_with(|s| s.max_body_size = 1_000).await;
    let doc = doc_name("body");
    app.create_doc(&doc).await;
    let client = reqwest::Client::new();
    let update = client
        .post(app.url(&format!("/api/docs/{doc}/update")))
        .header("Content-Type", "application/octet-stream")
        .body(big_update(2_000))
        .send()
        .await
        .expect("post");
    assert_eq!(update.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let text = client
        .post(app.url(&format!("/api/docs/{doc}/text")))
        .json(&serde_json::json!({ "ops": [{ "insert": "y".repeat(2_000), "at": 0 }] }))
        .send()
        .await
        .expect("post");
    assert_eq!(text.status(), StatusCode::PAYLOAD_TOO_LARGE);
    app.stop().await;
}
