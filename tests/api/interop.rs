//! The stock Yjs client (`WebsocketProvider` from npm `y-websocket`) against Tandem.
//! Scenarios live in `tests/interop/run.mjs`; `npm ci` in `tests/interop` installs them.

use std::path::Path;

use serde_json::Value;

use crate::helpers::{Backend, TestApp, TestDb, WAIT, doc_name};

/// Runs one scenario and returns its JSON result, failing the test if the scenario failed.
async fn scenario(app: &TestApp, name: &str, doc: &str, extra: &[&str]) -> Value {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop");
    assert!(
        dir.join("node_modules/y-websocket").exists(),
        "stock client not installed: run `npm ci` in tests/interop"
    );
    let timeout_ms = WAIT.as_millis().to_string();
    let output = tokio::process::Command::new("node")
        .current_dir(&dir)
        .arg("run.mjs")
        .arg(name)
        .args(["--url", &app.ws_base(), "--doc", doc])
        .args(["--timeout-ms", &timeout_ms])
        .args(extra)
        .kill_on_drop(true)
        .output()
        .await
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let result: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        panic!(
            "{name}: no JSON result; stdout: {stdout}; stderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    assert!(
        output.status.success() && result["ok"] == true,
        "{name} failed: {result}; stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    result
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
