//! The document list API the browser editor uses: list, create, delete.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, TestDb, doc_name, json_of, on_both_stores};

async fn problem(response: reqwest::Response, status: StatusCode, kind: &str) {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.expect("problem JSON");
    assert_eq!(body["type"], kind, "{body}");
    assert_eq!(body["status"], status.as_u16());
}

on_both_stores! {
    async fn documents_are_created_listed_page_by_page_and_deleted(backend: Backend) {
        let db = TestDb::new(backend).await;
        let app = TestApp::spawn(db.settings()).await;
        let prefix = doc_name("list");
        let ids: Vec<String> = (0..5).map(|i| format!("{prefix}-{i}")).collect();
        for id in &ids {
            let response = app.post_doc(json!({ "id": id })).await;
            assert_eq!(response.status(), StatusCode::CREATED, "{backend:?}");
            assert_eq!(response.headers()["location"], format!("/api/docs/{id}"));
            let body: Value = response.json().await.expect("json");
            assert_eq!(body["id"], id.as_str());
            assert_eq!(body["size"], 0);
        }

        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let query = match &cursor {
                Some(c) => format!("limit=2&cursor={c}"),
                None => "limit=2".to_string(),
            };
            let page = json_of(app.list_docs(&query).await, StatusCode::OK).await;
            let docs = page["docs"].as_array().expect("docs array");
            assert!(docs.len() <= 2);
            seen.extend(
                docs.iter()
                    .map(|d| d["id"].as_str().expect("id").to_string()),
            );
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_string()),
                None => break,
            }
        }
        assert_eq!(seen, ids, "{backend:?}: every document once, in id order");

        let response = app.delete_doc(&ids[0]).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        let response = app.delete_doc(&ids[0]).await;
        problem(
            response,
            StatusCode::NOT_FOUND,
            "/problems/document-not-found",
        )
        .await;
        app.stop().await;
    }
}

#[actix_web::test]
async fn the_list_says_who_is_in_a_document_and_how_big_it_is() {
    let db = TestDb::new(Backend::Sqlite).await;
    let app = TestApp::spawn(db.settings()).await;
    let doc = doc_name("people");
    let mut alice = app.connect(&doc).await;
    let alice_id = alice.client_id();
    alice
        .set_awareness(r##"{"user":{"name":"alice","color":"#c33"}}"##)
        .await;
    alice.append("some words").await;
    alice
        .recv_until(|c| c.updates_received >= 1 && c.awareness.contains_key(&alice_id))
        .await;
    let _bob = app.connect(&doc).await;

    let page = json_of(app.list_docs("").await, StatusCode::OK).await;
    let entry = page["docs"]
        .as_array()
        .expect("docs")
        .iter()
        .find(|d| d["id"] == doc.as_str())
        .expect("the edited document is listed")
        .clone();
    assert_eq!(entry["clients"], 2, "{entry}");
    assert_eq!(entry["people"], json!(["alice"]), "{entry}");
    assert!(entry["size"].as_i64().expect("size") > 0, "{entry}");
    assert!(entry["updated_at"].as_str().expect("time").ends_with('Z'));
    app.stop().await;
}

on_both_stores! {
    async fn deleting_a_document_closes_its_editors_with_4404_and_empties_it(backend: Backend) {
        let db = TestDb::new(backend).await;
        let app = TestApp::spawn(db.settings()).await;
        let doc = doc_name("doomed");
        let mut editor = app.connect(&doc).await;
        editor.append("soon gone").await;
        editor.recv_until(|c| c.updates_received >= 1).await;

        let response = app.delete_doc(&doc).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT, "{backend:?}");
        let (code, reason) = editor.expect_close().await;
        assert_eq!(code, 4404, "{backend:?}: {reason}");

        let fresh = app.connect(&doc).await;
        assert_eq!(fresh.text(), "", "{backend:?}: deleted content came back");
        app.stop().await;
        let (stored, log_len) = crate::helpers::stored_text(&db.url, &doc).await;
        assert_eq!((stored.as_str(), log_len), ("", 0), "{backend:?}");
    }
}

#[actix_web::test]
async fn bad_requests_get_problem_json() {
    let db = TestDb::new(Backend::Sqlite).await;
    let app = TestApp::spawn(db.settings()).await;
    let doc = doc_name("dup");
    assert_eq!(
        app.post_doc(json!({ "id": doc })).await.status(),
        StatusCode::CREATED
    );
    problem(
        app.post_doc(json!({ "id": doc })).await,
        StatusCode::CONFLICT,
        "/problems/document-exists",
    )
    .await;
    problem(
        app.post_doc(json!({ "id": "bad name!" })).await,
        StatusCode::BAD_REQUEST,
        "/problems/invalid-document-name",
    )
    .await;
    let client = reqwest::Client::new();
    let response = client
        .post(app.url("/api/docs"))
        .header("content-type", "application/json")
        .body("{\"id\": ")
        .send()
        .await
        .expect("request");
    problem(response, StatusCode::BAD_REQUEST, "/problems/bad-request").await;
    for query in ["limit=0", "limit=501", "limit=x", "cursor=..%2F"] {
        let response = app.list_docs(query).await;
        problem(response, StatusCode::BAD_REQUEST, "/problems/bad-request").await;
    }
    let response = client
        .delete(app.url("/api/docs/no%20such"))
        .send()
        .await
        .expect("request");
    problem(
        response,
        StatusCode::BAD_REQUEST,
        "/problems/invalid-document-name",
    )
    .await;
    app.stop().await;
}

on_both_stores! {
    async fn a_document_can_be_created_with_text_and_a_generated_name(backend: Backend) {
        let db = TestDb::new(backend).await;
        let app = TestApp::spawn(db.settings()).await;
        let response = app.post_doc(json!({ "text": "first draft\n" })).await;
        assert_eq!(response.status(), StatusCode::CREATED, "{backend:?}");
        let location = response.headers()["location"]
            .to_str()
            .expect("location")
            .to_string();
        let body: Value = response.json().await.expect("json");
        let id = body["id"].as_str().expect("generated id").to_string();
        assert_eq!(location, format!("/api/docs/{id}"));
        assert!(body["size"].as_i64().expect("size") > 0, "{body}");

        let editor = app.connect(&id).await;
        assert_eq!(editor.text(), "first draft\n", "{backend:?}");
        app.stop().await;
    }
}

#[actix_web::test]
async fn an_oversized_json_body_gets_413() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut settings = db.settings();
    settings.max_body_size = 1024;
    let app = TestApp::spawn(settings).await;
    let response = app
        .post_doc(json!({ "id": doc_name("big"), "text": "x".repeat(4096) }))
        .await;
    problem(
        response,
        StatusCode::PAYLOAD_TOO_LARGE,
        "/problems/body-too-large",
    )
    .await;
    app.stop().await;
}

#[actix_web::test]
async fn the_api_is_described_by_openapi_with_a_local_reference_page() {
    let db = TestDb::new(Backend::Sqlite).await;
    let app = TestApp::spawn(db.settings()).await;
    let spec = json_of(app.openapi().await, StatusCode::OK).await;
    assert_eq!(spec["openapi"], "3.1.0");
    for path in [
        "/api/docs",
        "/api/docs/{id}",
        "/api/docs/{id}/content",
        "/api/docs/{id}/text",
        "/api/docs/{id}/update",
        "/api/docs/{id}/versions",
        "/api/docs/{id}/versions/{version}",
        "/api/docs/{id}/versions/{version}/restore",
    ] {
        assert!(spec["paths"][path].is_object(), "{path} is not described");
    }
    let page = reqwest::get(app.url("/api/reference/"))
        .await
        .expect("reference page");
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.expect("html");
    assert!(html.contains("swagger-ui-bundle.js"));
    assert!(
        !html.contains("https://"),
        "the reference page loads from elsewhere"
    );
    let bundle = reqwest::get(app.url("/api/reference/swagger-ui-bundle.js"))
        .await
        .expect("bundle");
    assert_eq!(bundle.status(), StatusCode::OK);
    app.stop().await;
}

on_both_stores! {
    async fn a_document_refused_for_its_size_is_not_created(backend: Backend) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let mut events = crate::webhooks::receiver(listener, 0).await;
        let db = TestDb::new(backend).await;
        let mut settings = db.settings();
        settings.max_document_size = 1024;
        settings.webhook_urls = vec![url];
        let app = TestApp::spawn(settings).await;
        let id = doc_name("oversized");

        let response = app.post_doc(json!({ "id": id, "text": "x".repeat(2048) })).await;
        problem(
            response,
            StatusCode::PAYLOAD_TOO_LARGE,
            "/problems/document-too-large",
        )
        .await;
        let after = app.get_doc(&id).await;
        assert_eq!(after.status(), StatusCode::NOT_FOUND, "{backend:?}");

        // Asking again with text that fits creates it, and announces it.
        let response = app.post_doc(json!({ "id": id, "text": "fits" })).await;
        assert_eq!(response.status(), StatusCode::CREATED, "{backend:?}");
        let created = crate::webhooks::next(&mut events).await.json();
        assert_eq!(created["event"], "document.created", "{backend:?}");
        assert_eq!(created["id"], id.as_str());
        assert_eq!(created["text"], "fits");
        assert_eq!(app.text(&id).await, "fits", "{backend:?}");
        app.stop().await;
    }
}

on_both_stores! {
    async fn text_a_document_is_created_with_reaches_editors_already_on_its_name_and_is_stored(backend: Backend) {
        let db = TestDb::new(backend).await;
        let app = TestApp::spawn(db.settings()).await;
        let id = doc_name("awaited");
        // Someone opened the name before the document existed.
        let mut early = app.connect(&id).await;
        let response = app.post_doc(json!({ "id": id, "text": "welcome" })).await;
        assert_eq!(response.status(), StatusCode::CREATED, "{backend:?}");
        let body: Value = response.json().await.expect("json");
        assert!(body["size"].as_i64().expect("size") > 0, "{body}");
        early.wait_for_text("welcome").await;
        let again = app.post_doc(json!({ "id": id, "text": "twice" })).await;
        problem(again, StatusCode::CONFLICT, "/problems/document-exists").await;
        early.append("!").await;
        early.recv_echo().await;
        app.stop().await;

        let (stored, _) = crate::helpers::stored_text(&db.url, &id).await;
        assert_eq!(stored, "welcome!", "{backend:?}");
    }
}
