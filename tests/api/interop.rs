//! The stock Yjs client (`WebsocketProvider` from npm `y-websocket`) against Tandem.
//! Scenarios live in `tests/interop/run.mjs`; `npm ci` in `tests/interop` installs them.

use serde_json::Value;

use crate::helpers::{Backend, TestApp, TestDb, WAIT, doc_name, node_scenario};

/// Runs one stock-client scenario against `app`.
async fn scenario(app: &TestApp, name: &str, doc: &str, extra: &[&str]) -> Value {
    let url = app.ws_base();
    let mut args = vec!["--url", url.as_str(), "--doc", doc];
    args.extend_from_slice(extra);
    node_scenario("interop", "y-websocket", name, &args, WAIT).await
}

async fn app() -> (TestApp, TestDb) {
    let db = TestDb::new(Backend::Sqlite).await;
    (TestApp::spawn(db.settings()).await, db)
}

#[actix_web::test]
async fn stock_clients_converge() {
    let (app, _db) = app().await;
    let result = scenario(&app, "converge", &doc_name("stock"), &["--clients", "4"]).await;
    assert_eq!(result["markers"], 80);
    app.stop().await;
}

#[actix_web::test]
async fn stock_client_presence_is_echoed_and_cleared_on_disconnect() {
    let (app, _db) = app().await;
    for extra in [&[][..], &["--abrupt"][..]] {
        let result = scenario(&app, "awareness", &doc_name("stock-presence"), extra).await;
        assert_eq!(result["seenByB"], true);
        assert_eq!(result["echoToA"], true);
        assert_eq!(result["removedOnDisconnect"], true);
    }
    app.stop().await;
}

#[actix_web::test]
async fn stock_client_offline_edits_merge() {
    let (app, _db) = app().await;
    let result = scenario(&app, "offline", &doc_name("stock-offline"), &[]).await;
    let text = result["text"].as_str().expect("text");
    assert!(
        text.contains("offline-A") && text.contains("online-B"),
        "{text}"
    );
    app.stop().await;
}

#[actix_web::test]
async fn stock_and_yrs_clients_see_each_others_edits() {
    let (app, _db) = app().await;
    let doc = doc_name("mixed");
    // Stock client writes; a yrs client reads it.
    scenario(&app, "write", &doc, &["--text", "from-node "]).await;
    let mut rust = app.connect(&doc).await;
    assert_eq!(rust.text(), "from-node ");

    // Both at once: each waits for the other's words.
    let node = scenario(
        &app,
        "rust-peer",
        &doc,
        &["--text", "node-says-hi ", "--expect", "rust-says-hi"],
    );
    let rust_side = async {
        rust.append("rust-says-hi").await;
        rust.recv_until(|c| c.text().contains("node-says-hi")).await;
    };
    let (node, ()) = tokio::join!(node, rust_side);
    rust.recv_until(|c| c.text() == node["text"].as_str().unwrap_or_default())
        .await;

    // And a stock reader sees the same document as the yrs client.
    let read = scenario(&app, "read", &doc, &[]).await;
    assert_eq!(read["text"].as_str(), Some(rust.text().as_str()));
    app.stop().await;
}

/// One stock client types text with an emoji into a root, another inserts into the same root as
/// an array: the server's readers (which once looped for ever on this) answer with the text.
#[actix_web::test]
async fn a_root_used_as_text_and_as_array_still_reads() {
    let (app, _db) = app().await;
    let doc = doc_name("mixed-root");
    let result = scenario(&app, "mixed-root", &doc, &["--text", "party 🎉 time"]).await;
    assert_eq!(result["text"].as_str(), Some("party 🎉 time"));
    let client = reqwest::Client::new();
    for (query, expected) in [
        ("", r#"{"notes":"party 🎉 time"}"#),
        ("?format=text&key=notes", "party 🎉 time"),
    ] {
        let response = tokio::time::timeout(
            WAIT,
            client
                .get(app.url(&format!("/api/docs/{doc}/content{query}")))
                .send(),
        )
        .await
        .expect("the content read answered in time")
        .expect("answered");
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.expect("body"), expected);
    }
    // The document's thread is still serving: a client syncs and sees the text.
    let read = scenario(&app, "read", &doc, &[]).await;
    assert_eq!(read["ok"], true);
    app.stop().await;
}
