//! Documents as Yjs updates over HTTP, meeting editors on WebSockets.

use base64::Engine;
use reqwest::StatusCode;
use serde_json::Value;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, ReadTxn, Text, Transact, Update};

use crate::helpers::{Backend, TestApp, TestDb, doc_name, on_both_stores, stored_text};

fn text_of(update: &[u8]) -> String {
    let doc = Doc::new();
    let text = doc.get_or_insert_text("content");
    doc.transact_mut()
        .apply_update(Update::decode_v1(update).expect("update decodes"))
        .expect("update applies");
    text.get_string(&doc.transact())
}

on_both_stores! {
    async fn an_update_posted_over_http_reaches_editors_and_is_stored_first(backend: Backend) {
        let db = TestDb::new(backend).await;
        let app = TestApp::spawn(db.settings()).await;
        let doc = doc_name("rest-in");
        app.create_doc(&doc).await;
        let mut editor = app.connect(&doc).await;

        let source = Doc::new();
        let update = {
            let text = source.get_or_insert_text("content");
            let mut txn = source.transact_mut();
            text.insert(&mut txn, 0, "from an integration");
            txn.encode_update_v1()
        };
        let response = app.post_update(&doc, update).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT, "{backend:?}");
        // Answered only once durable: the store has it before the editor is even asked.
        let (stored, _) = stored_text(&db.url, &doc).await;
        assert_eq!(stored, "from an integration", "{backend:?}");
        editor.wait_for_text("from an integration").await;
        app.stop().await;
    }
}

on_both_stores! {
    async fn an_edit_from_a_websocket_is_in_the_next_update_read(backend: Backend) {
        let db = TestDb::new(backend).await;
        let app = TestApp::spawn(db.settings()).await;
        let doc = doc_name("rest-out");
        app.create_doc(&doc).await;
        let mut editor = app.connect(&doc).await;
        editor.append("typed in a browser").await;
        editor.recv_until(|c| c.updates_received >= 1).await;

        let whole = app.get_update(&doc, None).await;
        assert_eq!(whole.status(), StatusCode::OK);
        assert_eq!(whole.headers()["content-type"], "application/octet-stream");
        let whole = whole.bytes().await.expect("body");
        assert_eq!(text_of(&whole), "typed in a browser", "{backend:?}");

        // With the state vector of a peer that has it all, only the (empty) rest comes back.
        let sv = editor.doc.transact().state_vector().encode_v1();
        for engine in [
            base64::engine::general_purpose::STANDARD,
            base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ] {
            let encoded = engine.encode(&sv);
            let url = reqwest::Url::parse_with_params(
                &app.url(&format!("/api/docs/{doc}/update")),
                [("sv", encoded.as_str())],
            )
            .expect("url");
            let diff = reqwest::get(url)
                .await
                .expect("diff")
                .bytes()
                .await
                .expect("body");
            assert!(diff.len() < whole.len(), "{backend:?}: diff is not smaller");
            // The whole document followed by the diff is still the whole document.
            let have = Doc::new();
            for part in [&whole[..], &diff[..]] {
                have.transact_mut()
                    .apply_update(Update::decode_v1(part).expect("decodes"))
                    .expect("applies");
            }
            let text = have.get_or_insert_text("content");
            assert_eq!(text.get_string(&have.transact()), "typed in a browser");
        }

        let meta: Value = app.get_doc(&doc).await
            .json()
            .await
            .expect("json");
        assert_eq!(meta["id"], doc.as_str());
        assert_eq!(meta["clients"], 1);
        assert!(meta["size"].as_i64().expect("size") > 0);
        app.stop().await;
    }
}

#[actix_web::test]
async fn bad_update_requests_get_problem_json() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut settings = db.settings();
    settings.max_body_size = 1024;
    let app = TestApp::spawn(settings).await;
    let doc = doc_name("rest-bad");
    app.create_doc(&doc).await;

    let check = |response: reqwest::Response, status: StatusCode, kind: &'static str| async move {
        assert_eq!(response.status(), status);
        let body: Value = response.json().await.expect("problem JSON");
        assert_eq!(body["type"], kind, "{body}");
    };
    let missing = doc_name("absent");
    check(
        app.get_doc(&missing).await,
        StatusCode::NOT_FOUND,
        "/problems/document-not-found",
    )
    .await;
    check(
        app.get_update(&missing, None).await,
        StatusCode::NOT_FOUND,
        "/problems/document-not-found",
    )
    .await;
    check(
        app.post_update(&missing, vec![0, 0]).await,
        StatusCode::NOT_FOUND,
        "/problems/document-not-found",
    )
    .await;
    check(
        reqwest::get(app.url(&format!("/api/docs/{doc}/update?sv=%%%")))
            .await
            .expect("get"),
        StatusCode::BAD_REQUEST,
        "/problems/bad-request",
    )
    .await;
    check(
        app.post_update(&doc, vec![0xff; 16]).await,
        StatusCode::BAD_REQUEST,
        "/problems/bad-request",
    )
    .await;
    check(
        app.post_update(&doc, vec![0; 2048]).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "/problems/body-too-large",
    )
    .await;
    // An update from a client id beyond 53 bits is refused, not masked.
    let mut huge = Vec::new();
    {
        use yrs::encoding::write::Write;
        huge.write_var(1u32);
        huge.write_var(1u32);
        huge.write_var(1u64 << 53);
        huge.write_var(0u32);
        huge.write_u8(4);
        huge.write_var(1u32);
        huge.write_string("content");
        huge.write_string("x");
        huge.write_var(0u32);
    }
    check(
        app.post_update(&doc, huge).await,
        StatusCode::BAD_REQUEST,
        "/problems/bad-request",
    )
    .await;
    // None of it changed the document.
    let whole = app
        .get_update(&doc, None)
        .await
        .bytes()
        .await
        .expect("body");
    assert_eq!(text_of(&whole), "");
    app.stop().await;
}

on_both_stores! {
    async fn content_reads_as_json_and_as_text(backend: Backend) {
        let db = TestDb::new(backend).await;
        let app = TestApp::spawn(db.settings()).await;
        let doc = doc_name("content");
        app.create_doc(&doc).await;
        let mut editor = app.connect(&doc).await;
        editor.append("line one\nline two").await;
        editor.recv_until(|c| c.updates_received >= 1).await;
        // Another program keeps a map root in the same document.
        let source = Doc::new();
        let update = {
            let meta = source.get_or_insert_map("meta");
            let mut txn = source.transact_mut();
            yrs::Map::insert(&meta, &mut txn, "title", "Minutes");
            txn.encode_update_v1()
        };
        assert_eq!(
            app.post_update(&doc, update).await.status(),
            StatusCode::NO_CONTENT
        );

        let json: Value = app.get_content(&doc, "").await
            .json()
            .await
            .expect("body");
        assert_eq!(
            json,
            serde_json::json!({ "content": "line one\nline two", "meta": { "title": "Minutes" } }),
            "{backend:?}"
        );
        let one: Value = app.get_content(&doc, "key=meta").await
            .json()
            .await
            .expect("body");
        assert_eq!(one, serde_json::json!({ "title": "Minutes" }));

        let text = app.get_content(&doc, "format=text").await;
        assert_eq!(text.headers()["content-type"], "text/plain; charset=utf-8");
        assert_eq!(text.text().await.expect("body"), "line one\nline two");

        for (query, status, kind) in [
            (
                "key=nope",
                StatusCode::NOT_FOUND,
                "/problems/key-not-found",
            ),
            (
                "format=xml",
                StatusCode::BAD_REQUEST,
                "/problems/bad-request",
            ),
            (
                "format=text&key=meta",
                StatusCode::BAD_REQUEST,
                "/problems/bad-request",
            ),
        ] {
            let response = app.get_content(&doc, query).await;
            assert_eq!(response.status(), status, "{query}");
            let body: Value = response.json().await.expect("problem");
            assert_eq!(body["type"], kind, "{query}");
        }
        app.stop().await;
    }
}

on_both_stores! {
    async fn text_edits_over_http_reach_editors_without_disturbing_their_work(backend: Backend) {
        let db = TestDb::new(backend).await;
        let app = TestApp::spawn(db.settings()).await;
        let doc = doc_name("text-ops");
        app.create_doc(&doc).await;
        let mut editor = app.connect(&doc).await;

        let response = app.post_text(&doc,
            serde_json::json!({ "ops": [
                { "insert": "Hello world", "at": 0 },
                { "insert": ",", "at": 5 },
                { "delete": 1, "at": 6 },
                { "insert": " 🌍", "at": 11 }
            ] }),
        )
        .await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT, "{backend:?}");
        editor.wait_for_text("Hello,world 🌍").await;

        // The editor types at the end, and before its edit reaches the server an integration
        // replaces the whole text with one word changed: both edits survive.
        let typed = {
            let len = editor.text.len(&editor.doc.transact());
            let mut txn = editor.doc.transact_mut();
            editor.text.insert(&mut txn, len, " (typed)");
            txn.encode_update_v1()
        };
        let response = app.post_text(&doc,
            serde_json::json!({ "ops": [{ "replace": "Howdy,world 🌍" }] }),
        )
        .await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        editor
            .recv_until(|c| c.text() == "Howdy,world 🌍 (typed)")
            .await;
        editor
            .send(yrs::sync::Message::Sync(yrs::sync::SyncMessage::Update(
                typed,
            )))
            .await;
        editor.recv_until(|c| c.updates_received >= 3).await;
        let (stored, _) = stored_text(&db.url, &doc).await;
        assert_eq!(stored, "Howdy,world 🌍 (typed)", "{backend:?}");
        app.stop().await;
    }
}

#[actix_web::test]
async fn bad_text_edits_change_nothing() {
    let db = TestDb::new(Backend::Sqlite).await;
    let app = TestApp::spawn(db.settings()).await;
    let doc = doc_name("text-bad");
    app.create_doc(&doc).await;
    assert_eq!(
        app.post_text(
            &doc,
            serde_json::json!({ "ops": [{ "insert": "a😀b", "at": 0 }] })
        )
        .await
        .status(),
        StatusCode::NO_CONTENT
    );
    for body in [
        serde_json::json!({ "ops": [{ "insert": "x", "at": 0 }, { "delete": 1, "at": 99 }] }),
        serde_json::json!({ "ops": [{ "insert": "x", "at": 2 }] }), // inside the emoji
        serde_json::json!({ "ops": [{ "insert": "x" }] }),
        serde_json::json!({ "ops": [{ "delete": -1, "at": 0 }] }),
        serde_json::json!({ "ops": "nope" }),
        serde_json::json!({ "key": "content", "ops": [], "extra": 1 }),
    ] {
        let response = app.post_text(&doc, body.clone()).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        let problem: Value = response.json().await.expect("problem JSON");
        assert_eq!(problem["type"], "/problems/bad-request", "{body}");
    }
    let text = app.text(&doc).await;
    assert_eq!(text, "a😀b");
    let missing = doc_name("absent");
    let response = app
        .post_text(&missing, serde_json::json!({ "ops": [] }))
        .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    app.stop().await;
}

/// Rich text with an embedded object (an image, say): positions count the text alone, the
/// object keeps its place, and a character after it is never split. A root that another client
/// used as an array holds values with no text position: 409, nothing changed.
#[actix_web::test]
async fn text_edits_leave_embedded_objects_in_place() {
    let db = TestDb::new(Backend::Sqlite).await;
    let app = TestApp::spawn(db.settings()).await;
    let doc = doc_name("rich-text");
    app.create_doc(&doc).await;
    let mut editor = app.connect(&doc).await;
    let update = {
        let mut txn = editor.doc.transact_mut();
        editor
            .text
            .insert_embed(&mut txn, 0, yrs::Any::from("image.png"));
        editor.text.insert(&mut txn, 1, "🎉 party");
        txn.encode_update_v1()
    };
    editor
        .send(yrs::sync::Message::Sync(yrs::sync::SyncMessage::Update(
            update,
        )))
        .await;
    editor.recv_echo().await;

    // Text position 2 is just after "🎉"; yrs's position 2 is inside it.
    let response = app
        .post_text(
            &doc,
            serde_json::json!({ "ops": [{ "insert": "!", "at": 2 }] }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    editor.recv_until(|c| c.text() == "🎉! party").await;
    let diff = editor
        .text
        .diff(&editor.doc.transact(), yrs::types::text::YChange::identity);
    assert_eq!(diff.len(), 2, "the object and the text: {diff:?}");
    assert_eq!(
        diff[0].insert,
        yrs::Out::Any(yrs::Any::from("image.png")),
        "{diff:?}"
    );

    // Another client inserts a list value at the front of the same root.
    let list_value = {
        let other = Doc::new();
        other
            .transact_mut()
            .apply_update(
                Update::decode_v1(
                    &editor
                        .doc
                        .transact()
                        .encode_state_as_update_v1(&yrs::StateVector::default()),
                )
                .expect("decodes"),
            )
            .expect("applies");
        let list = other.get_or_insert_array("content");
        let mut txn = other.transact_mut();
        yrs::Array::insert(&list, &mut txn, 0, 42);
        txn.encode_update_v1()
    };
    let response = app.post_update(&doc, list_value).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let whole = || async {
        app.get_update(&doc, None)
            .await
            .bytes()
            .await
            .expect("body")
    };
    let before = whole().await;
    let response = app
        .post_text(
            &doc,
            serde_json::json!({ "ops": [{ "insert": "?", "at": 0 }] }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    let problem: Value = response.json().await.expect("problem JSON");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("neither text nor embedded objects")),
        "{problem}"
    );
    assert_eq!(whole().await, before);
    app.stop().await;
}
