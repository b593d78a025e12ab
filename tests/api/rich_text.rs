//! Rich text (ProseMirror) over REST: a fragment read, created, replaced and restored, live to
//! connected editors and durable before the answer; and the same content as a stock Yjs client
//! with y-prosemirror reads it (`tests/interop/prosemirror.mjs`).

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    Backend, TestApp, TestDb, WAIT, YClient, doc_name, json_of, node_scenario, on_both_stores,
};

fn first() -> Value {
    json!({"type": "doc", "content": [
        {"type": "heading", "attrs": {"level": 1}, "content": [{"type": "text", "text": "Plan 🎉"}]},
        {"type": "paragraph", "content": [
            {"type": "text", "text": "plain "},
            {"type": "text", "text": "bold", "marks": [{"type": "bold", "attrs": {}}]},
            {"type": "text", "text": " link", "marks": [{"type": "link", "attrs": {"href": "https://a.example"}}]}
        ]},
        {"type": "bulletList", "content": [{"type": "listItem", "content": [
            {"type": "paragraph", "content": [{"type": "text", "text": "item"}]}
        ]}]}
    ]})
}

fn second() -> Value {
    let mut doc = first();
    doc["content"][1] = json!({"type": "paragraph", "content": [
        {"type": "text", "text": "replaced", "marks": [{"type": "italic", "attrs": {}}]}
    ]});
    doc
}

async fn prosemirror_of(app: &TestApp, doc: &str) -> Value {
    json_of(
        app.get_content(doc, "format=prosemirror").await,
        StatusCode::OK,
    )
    .await
}

/// What the store holds for fragment `default` of `doc`, read as ProseMirror JSON.
async fn stored_prosemirror(db_url: &str, doc: &str) -> Value {
    let store = tandem::store::connect(db_url).await.expect("store opens");
    let id = tandem::domain::DocId::parse(doc).expect("valid name");
    let stored = store.load(&id).await.expect("document loads");
    store.close().await;
    let doc = tandem::collab::document::build_doc(&stored).expect("stored data decodes");
    tandem::sync::prosemirror::to_json(&doc, "default").expect("a fragment")
}

fn fragment_of(client: &YClient) -> Option<Value> {
    tandem::sync::prosemirror::to_json(&client.doc, "default").ok()
}

on_both_stores! {
    async fn prosemirror_content_is_created_read_and_replaced_live(backend: Backend) {
        let db = TestDb::new(backend).await;
        let app = TestApp::spawn(db.settings()).await;
        let doc = doc_name("rich");
        let created = app.post_doc(json!({"id": doc, "prosemirror": first()})).await;
        assert_eq!(created.status(), StatusCode::CREATED, "{backend:?}");
        assert_eq!(prosemirror_of(&app, &doc).await, first(), "{backend:?}");
        // Durable before the answer: the store holds it already.
        assert_eq!(stored_prosemirror(&db.url, &doc).await, first(), "{backend:?}");

        let mut editor = app.connect(&doc).await;
        assert_eq!(fragment_of(&editor), Some(first()));
        let replaced = app
            .put_content(&doc, "format=prosemirror&key=default", &second())
            .await;
        assert_eq!(replaced.status(), StatusCode::NO_CONTENT, "{backend:?}");
        assert_eq!(stored_prosemirror(&db.url, &doc).await, second(), "{backend:?}");
        editor
            .recv_until(|c| fragment_of(c) == Some(second()))
            .await;
        assert_eq!(prosemirror_of(&app, &doc).await, second());

        // The same content after a restart, read from the store.
        app.stop().await;
        let app = TestApp::spawn(db.settings()).await;
        assert_eq!(prosemirror_of(&app, &doc).await, second(), "{backend:?}");
        // Another fragment of the same document, created by the replace.
        let other = app.put_content(&doc, "format=prosemirror&key=notes", &first()).await;
        assert_eq!(other.status(), StatusCode::NO_CONTENT);
        let notes = json_of(
            app.get_content(&doc, "format=prosemirror&key=notes").await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(notes, first());
        app.stop().await;
    }
}

on_both_stores! {
    async fn a_rich_text_version_is_restored_live(backend: Backend) {
        let db = TestDb::new(backend).await;
        let app = TestApp::spawn(db.settings()).await;
        let doc = doc_name("rich-versions");
        let created = app.post_doc(json!({"id": doc, "prosemirror": first()})).await;
        assert_eq!(created.status(), StatusCode::CREATED);
        let version = json_of(app.save_version(&doc, None).await, StatusCode::CREATED).await;
        let mut editor = app.connect(&doc).await;
        let replaced = app.put_content(&doc, "format=prosemirror", &second()).await;
        assert_eq!(replaced.status(), StatusCode::NO_CONTENT);
        editor.recv_until(|c| fragment_of(c) == Some(second())).await;

        let restored = app.restore_version(&doc, &version["id"]).await;
        assert_eq!(restored.status(), StatusCode::NO_CONTENT, "{backend:?}");
        editor.recv_until(|c| fragment_of(c) == Some(first())).await;
        assert_eq!(prosemirror_of(&app, &doc).await, first(), "{backend:?}");
        assert_eq!(stored_prosemirror(&db.url, &doc).await, first(), "{backend:?}");
        app.stop().await;
    }
}

on_both_stores! {
    async fn bad_rich_text_is_refused_with_problem_json(backend: Backend) {
        let db = TestDb::new(backend).await;
        let app = TestApp::spawn(db.settings()).await;
        let doc = doc_name("rich-bad");
        let created = app.post_doc(json!({"id": doc, "text": "plain"})).await;
        assert_eq!(created.status(), StatusCode::CREATED);
        let problem = |status| move |body: Value| {
            assert_eq!(body["status"], status, "{body}");
            body["detail"].as_str().unwrap_or_default().to_string()
        };
        let refused = |r: reqwest::Response, status: StatusCode| async move {
            assert_eq!(r.status(), status, "{}", r.url());
            assert_eq!(
                r.headers().get("content-type").and_then(|v| v.to_str().ok()),
                Some("application/problem+json")
            );
            problem(status.as_u16())(r.json().await.expect("problem JSON"))
        };
        let bad = StatusCode::BAD_REQUEST;
        // A text root is not a fragment, read or written.
        let detail = refused(app.get_content(&doc, "format=prosemirror&key=content").await, bad).await;
        assert!(detail.contains("not an XML fragment"), "{detail}");
        let detail = refused(app.put_content(&doc, "format=prosemirror&key=content", &first()).await, bad).await;
        assert!(detail.contains("not an XML fragment"), "{detail}");
        assert_eq!(app.text(&doc).await, "plain");
        // A fragment that does not exist is 404; a document that does not exist too.
        refused(app.get_content(&doc, "format=prosemirror").await, StatusCode::NOT_FOUND).await;
        refused(app.put_content("nope", "format=prosemirror", &first()).await, StatusCode::NOT_FOUND).await;
        // Only ProseMirror is written.
        refused(app.put_content(&doc, "format=json", &first()).await, bad).await;
        // Shapes: each names where it went wrong.
        let mut deep = json!({"type": "paragraph"});
        for _ in 0..200 {
            deep = json!({"type": "div", "content": [deep]});
        }
        for (body, expected) in [
            (json!({"type": "paragraph"}), "the top node"),
            (json!({"type": "doc", "content": [{"type": "p", "content": [{"type": "text", "text": 1}]}]}), "content[0].content[0]"),
            (json!({"type": "doc", "content": [{"type": "text", "text": "a", "marks": [{"type": "bold", "attrs": "x"}]}]}), "marks[0].attrs"),
            (json!({"type": "doc", "content": [deep]}), ""),
        ] {
            let detail = refused(app.put_content(&doc, "format=prosemirror", &body).await, bad).await;
            assert!(detail.contains(expected), "{body}: {detail}");
        }
        // Creating: text or prosemirror, not both; a key only with prosemirror.
        for body in [
            json!({"id": doc_name("x"), "text": "a", "prosemirror": first()}),
            json!({"id": doc_name("x"), "text": "a", "key": "default"}),
            json!({"id": doc_name("x"), "prosemirror": {"type": "doc", "content": [{"type": "text", "text": ""}]}}),
        ] {
            refused(app.post_doc(body).await, bad).await;
        }
        app.stop().await;
    }
}

#[actix_web::test]
async fn a_large_prosemirror_body_is_refused_as_too_large() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut settings = db.settings();
    settings.max_body_size = 1024;
    let app = TestApp::spawn(settings).await;
    let doc = doc_name("rich-large");
    app.create_doc(&doc).await;
    let text = "x".repeat(2048);
    let body = json!({"type": "doc", "content": [{"type": "paragraph", "content": [{"type": "text", "text": text}]}]});
    let response = app.put_content(&doc, "format=prosemirror", &body).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    app.stop().await;
}

/// Runs one rich-text stock-client scenario against `app`.
async fn scenario(app: &TestApp, name: &str, doc: &str) -> Value {
    let url = app.ws_base();
    let args = ["--url", url.as_str(), "--doc", doc];
    node_scenario("interop", "y-prosemirror", name, &args, WAIT).await
}

/// A stock client builds a fragment through y-prosemirror (as Tiptap does) and edits it; the
/// server's ProseMirror JSON equals y-prosemirror's rendering of the client's document, and the
/// root's JSON view its `toString()`, live and after a reload from the store.
#[actix_web::test]
async fn a_stock_clients_rich_text_reads_the_same_over_rest_live_and_reloaded() {
    let db = TestDb::new(Backend::Sqlite).await;
    let app = TestApp::spawn(db.settings()).await;
    let doc = doc_name("stock-rich");
    app.create_doc(&doc).await;
    let result = scenario(&app, "pm-read", &doc).await;
    assert_eq!(result["same"], true, "{result}");
    assert_eq!(result["sameXml"], true, "{result}");
    let expected = &result["expected"];
    let expected_xml = json!({ "default": result["expectedXml"].clone() });
    app.stop().await;

    let app = TestApp::spawn(db.settings()).await;
    assert_eq!(&prosemirror_of(&app, &doc).await, expected);
    let all = json_of(app.get_content(&doc, "").await, StatusCode::OK).await;
    assert_eq!(all, expected_xml);
    app.stop().await;
}

/// REST creates a document from ProseMirror JSON and later replaces it; a connected stock
/// client reads both through y-prosemirror, the replacement live.
#[actix_web::test]
async fn rest_rich_text_reaches_a_stock_client_live() {
    let db = TestDb::new(Backend::Sqlite).await;
    let app = TestApp::spawn(db.settings()).await;
    let result = scenario(&app, "pm-write", &doc_name("stock-rich-write")).await;
    assert_eq!(result["createdSame"], true, "{result}");
    assert_eq!(result["replacedLive"], true, "{result}");
    assert_eq!(result["servedSame"], true, "{result}");
    app.stop().await;
}

#[actix_web::test]
async fn the_rich_text_endpoints_are_described_by_openapi() {
    let db = TestDb::new(Backend::Sqlite).await;
    let app = TestApp::spawn(db.settings()).await;
    let spec = json_of(app.openapi().await, StatusCode::OK).await;
    let content = &spec["paths"]["/api/docs/{id}/content"];
    assert!(
        content["get"].is_object() && content["put"].is_object(),
        "{content}"
    );
    let create = &spec["components"]["schemas"]["CreateDoc"]["properties"];
    assert!(create["prosemirror"].is_object(), "{create}");
    assert!(create["key"].is_object(), "{create}");
    app.stop().await;
}

/// A document large enough that a replace is written off its thread, as a large text edit is:
/// the answer still waits for it, and editors still see it.
#[actix_web::test]
async fn a_replace_in_a_large_document_is_written_off_its_thread() {
    let db = TestDb::new(Backend::Sqlite).await;
    let app = TestApp::spawn(db.settings()).await;
    let doc = doc_name("rich-large-doc");
    let text = "many words ".repeat(5_000);
    let created = app.post_doc(json!({"id": doc, "text": text})).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let mut editor = app.connect(&doc).await;
    let replaced = app.put_content(&doc, "format=prosemirror", &first()).await;
    assert_eq!(replaced.status(), StatusCode::NO_CONTENT);
    editor.recv_until(|c| fragment_of(c) == Some(first())).await;
    assert_eq!(prosemirror_of(&app, &doc).await, first());
    assert_eq!(stored_prosemirror(&db.url, &doc).await, first());
    assert_eq!(app.text(&doc).await, text);
    app.stop().await;
}
