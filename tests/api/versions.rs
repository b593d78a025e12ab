//! Versions: saved states of a document, listed, read and restored through new edits.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, TestDb, doc_name, json_of, on_both_stores};

async fn get_json(response: reqwest::Response) -> Value {
    json_of(response, StatusCode::OK).await
}

on_both_stores! {
    async fn a_restored_version_reaches_editors_and_can_itself_be_undone(backend: Backend) {
        let db = TestDb::new(backend).await;
        let app = TestApp::spawn(db.settings()).await;
        let doc = doc_name("versions");
        let created = app.post_doc(json!({ "id": doc, "text": "first draft" })).await;
        assert_eq!(created.status(), StatusCode::CREATED);
        let mut editor = app.connect(&doc).await;

        let v1 = app.save_version(&doc, Some(json!({ "name": "draft" }))).await;
        assert_eq!(v1.status(), StatusCode::CREATED, "{backend:?}");
        let v1: Value = v1.json().await.expect("json");
        assert_eq!(v1["name"], "draft");
        assert_eq!(v1["kind"], "manual");

        editor.append(", then much more").await;
        editor.recv_until(|c| c.updates_received >= 1).await;
        // A version without a name, with no body at all.
        let v2 = app.save_version(&doc, None).await;
        assert_eq!(v2.status(), StatusCode::CREATED);
        let v2: Value = v2.json().await.expect("json");
        assert_eq!(v2["name"], Value::Null);

        let list = get_json(app.list_versions(&doc).await).await;
        let ids: Vec<&Value> = list["versions"]
            .as_array()
            .expect("array")
            .iter()
            .map(|v| &v["id"])
            .collect();
        assert_eq!(ids, vec![&v2["id"], &v1["id"]], "{backend:?}: newest first");
        let read = get_json(app.get_version(&doc, &v1["id"]).await).await;
        assert_eq!(
            read["content"],
            json!({ "content": "first draft" }),
            "{backend:?}"
        );

        let restored = app.restore_version(&doc, &v1["id"]).await;
        assert_eq!(restored.status(), StatusCode::NO_CONTENT, "{backend:?}");
        editor.wait_for_text("first draft").await;
        assert_eq!(app.text(&doc).await, "first draft", "{backend:?}");

        // Restoring the later version undoes the restore.
        let undone = app.restore_version(&doc, &v2["id"]).await;
        assert_eq!(undone.status(), StatusCode::NO_CONTENT);
        editor.wait_for_text("first draft, then much more").await;
        app.stop().await;
    }
}

#[actix_web::test]
async fn version_errors_get_problem_json() {
    let db = TestDb::new(Backend::Sqlite).await;
    let app = TestApp::spawn(db.settings()).await;
    let doc = doc_name("versions-bad");
    app.create_doc(&doc).await;
    let missing = doc_name("absent");
    for (response, status, kind) in [
        (
            app.get_version(&doc, 999999).await,
            StatusCode::NOT_FOUND,
            "/problems/version-not-found",
        ),
        (
            app.get_version(&doc, "abc").await,
            StatusCode::BAD_REQUEST,
            "/problems/bad-request",
        ),
        (
            app.list_versions(&missing).await,
            StatusCode::NOT_FOUND,
            "/problems/document-not-found",
        ),
        (
            app.restore_version(&doc, 999999).await,
            StatusCode::NOT_FOUND,
            "/problems/version-not-found",
        ),
        (
            reqwest::Client::new()
                .post(app.url(&format!("/api/docs/{doc}/versions")))
                .header("content-type", "application/json")
                .body("{\"name\": ")
                .send()
                .await
                .expect("r"),
            StatusCode::BAD_REQUEST,
            "/problems/bad-request",
        ),
    ] {
        assert_eq!(response.status(), status, "{kind}");
        let body: Value = response.json().await.expect("problem JSON");
        assert_eq!(body["type"], kind);
    }
    app.stop().await;
}

/// Waits until `doc` has `count` automatic versions and the newest holds `text`.
async fn auto_versions_become(app: &TestApp, doc: &str, count: usize, text: &str) {
    let deadline = std::time::Instant::now() + crate::helpers::WAIT;
    loop {
        let list = get_json(app.list_versions(doc).await).await;
        let autos: Vec<Value> = list["versions"]
            .as_array()
            .expect("array")
            .iter()
            .filter(|v| v["kind"] == "auto")
            .cloned()
            .collect();
        if let (Some(newest), true) = (autos.first(), autos.len() == count) {
            let read = get_json(app.get_version(doc, &newest["id"]).await).await;
            if read["content"]["content"] == text {
                return;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never {count} automatic versions with the newest holding {text:?}; have {}",
            autos.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[actix_web::test]
async fn a_pause_in_editing_saves_a_version_and_old_ones_are_pruned() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut settings = db.settings();
    settings.auto_version_after = std::time::Duration::from_millis(300);
    settings.auto_version_retention = 2;
    let app = TestApp::spawn(settings).await;
    let doc = doc_name("auto");
    app.create_doc(&doc).await;
    let mut editor = app.connect(&doc).await;

    let mut expected = String::new();
    for round in 1..=3 {
        let chunk = format!("pause {round}. ");
        expected.push_str(&chunk);
        editor.append(&chunk).await;
        editor.recv_until(|c| c.updates_received >= round).await;
        // One version per pause, and no more than the retention keeps.
        auto_versions_become(&app, &doc, round.min(2), &expected).await;
    }
    app.stop().await;
}
