//! Versions: saved states of a document, listed, read and restored through new edits.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, TestDb, doc_name, on_both_stores};

async fn post(app: &TestApp, path: &str, body: Option<Value>) -> reqwest::Response {
    let request = reqwest::Client::new().post(app.url(path));
    let request = match body {
        Some(body) => request.json(&body),
        None => request,
    };
    request.send().await.expect("request")
}

async fn get_json(app: &TestApp, path: &str) -> Value {
    let response = reqwest::get(app.url(path)).await.expect("request");
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    response.json().await.expect("json")
}

on_both_stores! {
    async fn a_restored_version_reaches_editors_and_can_itself_be_undone(backend: Backend) {
        let db = TestDb::new(backend).await;
        let app = TestApp::spawn(db.settings()).await;
        let doc = doc_name("versions");
        let created = post(
            &app,
            "/api/docs",
            Some(json!({ "id": doc, "text": "first draft" })),
        )
        .await;
        assert_eq!(created.status(), StatusCode::CREATED);
        let mut editor = app.connect(&doc).await;

        let v1 = post(
            &app,
            &format!("/api/docs/{doc}/versions"),
            Some(json!({ "name": "draft" })),
        )
        .await;
        assert_eq!(v1.status(), StatusCode::CREATED, "{backend:?}");
        let v1: Value = v1.json().await.expect("json");
        assert_eq!(v1["name"], "draft");
        assert_eq!(v1["kind"], "manual");

        editor.append(", then much more").await;
        editor.recv_until(|c| c.updates_received >= 1).await;
        // A version without a name, with no body at all.
        let v2 = post(&app, &format!("/api/docs/{doc}/versions"), None).await;
        assert_eq!(v2.status(), StatusCode::CREATED);
        let v2: Value = v2.json().await.expect("json");
        assert_eq!(v2["name"], Value::Null);

        let list = get_json(&app, &format!("/api/docs/{doc}/versions")).await;
        let ids: Vec<&Value> = list["versions"]
            .as_array()
            .expect("array")
            .iter()
            .map(|v| &v["id"])
            .collect();
        assert_eq!(ids, vec![&v2["id"], &v1["id"]], "{backend:?}: newest first");
        let read = get_json(&app, &format!("/api/docs/{doc}/versions/{}", v1["id"])).await;
        assert_eq!(
            read["content"],
            json!({ "content": "first draft" }),
            "{backend:?}"
        );

        let restored = post(
            &app,
            &format!("/api/docs/{doc}/versions/{}/restore", v1["id"]),
            None,
        )
        .await;
        assert_eq!(restored.status(), StatusCode::NO_CONTENT, "{backend:?}");
        editor.wait_for_text("first draft").await;
        let text = reqwest::get(app.url(&format!("/api/docs/{doc}/content?format=text")))
            .await
            .expect("read")
            .text()
            .await
            .expect("body");
        assert_eq!(text, "first draft", "{backend:?}");

        // Restoring the later version undoes the restore.
        let undone = post(
            &app,
            &format!("/api/docs/{doc}/versions/{}/restore", v2["id"]),
            None,
        )
        .await;
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
    post(&app, "/api/docs", Some(json!({ "id": doc }))).await;
    let missing = doc_name("absent");
    for (response, status, kind) in [
        (
            reqwest::get(app.url(&format!("/api/docs/{doc}/versions/999999")))
                .await
                .expect("r"),
            StatusCode::NOT_FOUND,
            "/problems/version-not-found",
        ),
        (
            reqwest::get(app.url(&format!("/api/docs/{doc}/versions/abc")))
                .await
                .expect("r"),
            StatusCode::BAD_REQUEST,
            "/problems/bad-request",
        ),
        (
            reqwest::get(app.url(&format!("/api/docs/{missing}/versions")))
                .await
                .expect("r"),
            StatusCode::NOT_FOUND,
            "/problems/document-not-found",
        ),
        (
            post(
                &app,
                &format!("/api/docs/{doc}/versions/999999/restore"),
                None,
            )
            .await,
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
        let list = get_json(app, &format!("/api/docs/{doc}/versions")).await;
        let autos: Vec<Value> = list["versions"]
            .as_array()
            .expect("array")
            .iter()
            .filter(|v| v["kind"] == "auto")
            .cloned()
            .collect();
        if let (Some(newest), true) = (autos.first(), autos.len() == count) {
            let read = get_json(app, &format!("/api/docs/{doc}/versions/{}", newest["id"])).await;
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
    post(&app, "/api/docs", Some(json!({ "id": doc }))).await;
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
