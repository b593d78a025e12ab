//! The stock Hocuspocus provider (`@hocuspocus/provider` 3.x, and 2.x where it can) against
//! Tandem's `/ws`. Scenarios live in `tests/hocuspocus/run.mjs`; `npm ci` in
//! `tests/hocuspocus` installs them.

use nix::sys::signal::Signal;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tandem::auth::Access;
use tandem::auth::token::{Claims, sign};

use crate::helpers::{Backend, ServerProcess, TestApp, TestDb, WAIT, doc_name, node_scenario};

const SECRET: &str = "an operator secret of more than thirty-two characters";
const KEY: &str = "hocuspocus-api-key";

/// Runs one Hocuspocus scenario against the server at `ws` with provider `version`.
async fn scenario(ws: &str, version: &str, name: &str, extra: &[&str]) -> Value {
    let mut args = vec!["--url", ws, "--provider", version];
    args.extend_from_slice(extra);
    node_scenario("hocuspocus", "@hocuspocus/provider", name, &args, WAIT).await
}

async fn open_app() -> (TestApp, TestDb) {
    let db = TestDb::new(Backend::Sqlite).await;
    (TestApp::spawn(db.settings()).await, db)
}

async fn secured_app() -> (TestApp, TestDb) {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut settings = db.settings();
    settings.auth_secret = Some(SECRET.into());
    settings.api_keys = vec![KEY.into()];
    (TestApp::spawn(settings).await.with_key(KEY), db)
}

async fn token(app: &TestApp, doc: &str, body: Value) -> String {
    let response = app.issue_token(doc, body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let issued: Value = response.json().await.expect("json");
    issued["token"].as_str().expect("a token").to_string()
}

async fn text_of(app: &TestApp, doc: &str) -> String {
    app.text(doc).await
}

#[actix_web::test]
async fn providers_2_and_3_converge_and_share_presence() {
    let (app, _db) = open_app().await;
    let ws = app.ws_base();
    for version in ["3", "2"] {
        let doc = doc_name("hp-converge");
        let result = scenario(&ws, version, "converge", &["--doc", &doc, "--clients", "3"]).await;
        assert_eq!(result["markers"], 30);
        // Every marker the providers were told is stored is in the store.
        let stored = text_of(&app, &doc).await;
        assert_eq!(stored, result["text"], "provider {version}");

        let doc = doc_name("hp-presence");
        let result = scenario(&ws, version, "awareness", &["--doc", &doc]).await;
        assert_eq!(result["seenByB"], true);
        assert_eq!(result["removedOnLeave"], true);
    }
    app.stop().await;
}

#[actix_web::test]
async fn one_socket_carries_several_documents_apart_and_takes_and_drops_them_while_open() {
    let (app, _db) = open_app().await;
    let ws = app.ws_base();
    for version in ["3", "2"] {
        let docs: Vec<String> = (0..3).map(|i| doc_name(&format!("hp-mux{i}"))).collect();
        let result = scenario(&ws, version, "multiplex", &["--docs", &docs.join(",")]).await;
        assert_eq!(result["opens"], 1, "one socket for every document");
        let texts = &result["texts"];
        assert_eq!(texts[&docs[0]], "only in a;more in a;");
        assert_eq!(texts[&docs[1]], "only in b;");
        assert_eq!(texts[&docs[2]], "only in c;");
        assert_eq!(texts[format!("{}-late", docs[0])], "only in d;");
        assert_eq!(text_of(&app, &docs[1]).await, "only in b;");
    }
    app.stop().await;
}

#[actix_web::test]
async fn a_hocuspocus_and_a_y_websocket_client_see_each_others_edits_and_presence() {
    let (app, _db) = open_app().await;
    for version in ["3", "2"] {
        let doc = doc_name("hp-mixed");
        let result = scenario(&app.ws_base(), version, "mixed", &["--doc", &doc]).await;
        assert_eq!(result["text"], result["yText"]);
        assert_eq!(
            text_of(&app, &doc).await,
            "from hocuspocus;from y-websocket;"
        );
    }
    app.stop().await;
}

#[actix_web::test]
async fn bad_tokens_are_refused_with_a_reason_and_read_only_edits_without_closing() {
    let (app, _db) = secured_app().await;
    let ws = app.ws_base();
    let doc = doc_name("hp-tokens");
    let good = token(&app, &doc, json!({ "access": "write" })).await;
    let reader = token(&app, &doc, json!({ "access": "read" })).await;
    let other = token(&app, "another-doc", json!({ "access": "write" })).await;
    let expired = sign(
        SECRET.as_bytes(),
        &Claims {
            doc: doc.clone(),
            access: Access::Write,
            iat: 1,
            exp: 2,
            user: None,
        },
    );
    let forged = sign(
        b"not the operator secret, but just as long as it",
        &Claims {
            doc: doc.clone(),
            access: Access::Write,
            iat: 1,
            exp: i64::MAX / 2000,
            user: None,
        },
    );
    let revoked = token(
        &app,
        &doc,
        json!({ "access": "write", "user": { "name": "mallory" } }),
    )
    .await;
    let response = app
        .disconnect(&doc, Some(json!({ "user": "mallory" })))
        .await;
    assert_eq!(response.status(), StatusCode::OK);

    for version in ["3", "2"] {
        let bad = ["garbage", &forged, &expired, &revoked, &other].join(",");
        let mut args = vec!["--doc", &doc, "--token", &good, "--bad-tokens", &bad];
        // 2.x sends no auth message without a token; 3.x sends an empty one.
        let with_missing = format!("none,{bad}");
        if version == "3" {
            args[5] = &with_missing;
        }
        let result = scenario(&ws, version, "tokens", &args).await;
        let refused: Vec<&str> = result["refused"]
            .as_array()
            .expect("reasons")
            .iter()
            .map(|r| r.as_str().expect("a reason"))
            .collect();
        assert_eq!(result["scope"], "read-write");
        let mut expected = vec![
            "malformed",
            "signature",
            "expired",
            "revoked",
            "another document",
        ];
        if version == "3" {
            expected.insert(0, "token is required");
        }
        assert_eq!(refused.len(), expected.len(), "{refused:?}");
        for (reason, part) in refused.iter().zip(expected) {
            assert!(
                !reason.is_empty() && reason.contains(part),
                "{reason:?} lacks {part:?}"
            );
        }

        let result = scenario(
            &ws,
            version,
            "read-only",
            &["--doc", &doc, "--token", &good, "--read-token", &reader],
        )
        .await;
        assert_eq!(result["scope"], "readonly");
        assert!(
            result["readerUnsynced"].as_u64().expect("a count") > 0,
            "a refused edit is not counted as saved: {result}"
        );
        assert_eq!(result["readerClosed"], 0);
        assert_eq!(result["readerAuthFailed"], 0);
        assert!(
            !result["writerSees"]
                .as_str()
                .expect("text")
                .contains("reader edit"),
            "{result}"
        );
    }
    let stored = text_of(&app, &doc).await;
    assert!(!stored.contains("reader edit"), "{stored}");
    app.stop().await;
}

#[actix_web::test]
async fn what_the_provider_counts_as_saved_survives_a_kill_9() {
    let db = TestDb::new(Backend::Sqlite).await;
    let doc = doc_name("hp-saved");
    let text = "every piece of this text was acknowledged before the server died;";
    for version in ["3", "2"] {
        let server = ServerProcess::start(&db.url, &[]).await;
        let doc = format!("{doc}-{version}");
        let result = scenario(
            &server.ws_base(),
            version,
            "write-saved",
            &["--doc", &doc, "--text", text],
        )
        .await;
        assert_eq!(result["unsynced"], 0);
        // `unsyncedChanges` is 0: the server is killed at once, before anything else.
        server.signal(Signal::SIGKILL);
        drop(server);
        let server = ServerProcess::start(&db.url, &[]).await;
        let result = scenario(
            &server.ws_base(),
            version,
            "read",
            &["--doc", &doc, "--expect", text],
        )
        .await;
        assert_eq!(result["text"], text);
    }
}

#[actix_web::test]
async fn a_bad_message_closes_its_documents_channel_and_an_unreadable_frame_the_socket() {
    let (app, _db) = open_app().await;
    let docs: Vec<String> = (0..3).map(|i| doc_name(&format!("hp-bad{i}"))).collect();
    let result = scenario(
        &app.ws_base(),
        "3",
        "bad-messages",
        &["--docs", &docs.join(",")],
    )
    .await;
    assert!(
        result["bClosed"]
            .as_str()
            .is_some_and(|r| r.starts_with("1007 ")),
        "{result}"
    );
    assert!(
        result["aClosed"]
            .as_str()
            .is_some_and(|r| r.starts_with("1003 ")),
        "{result}"
    );
    assert_eq!(result["socketClose"][0], 1007);
    assert_eq!(result["cText"], "c still works;c works on;");
    // Nothing of the refused message reached the store: b was never stored at all.
    let b = app.get_content(&docs[1], "format=text").await;
    assert_eq!(b.status(), StatusCode::NOT_FOUND);
    app.stop().await;
}

#[actix_web::test]
async fn delete_and_revocation_close_their_documents_on_a_shared_socket_with_y_websocket_codes() {
    let (app, _db) = secured_app().await;
    let docs: Vec<String> = (0..3).map(|i| doc_name(&format!("hp-closed{i}"))).collect();
    // One token per document (each provider sends its own).
    let mut tokens = Vec::new();
    for doc in &docs {
        let body = json!({ "access": "write", "user": { "name": "ada" } });
        tokens.push(token(&app, doc, body).await);
    }
    let result = scenario(
        &app.ws_base(),
        "3",
        "closed-by-server",
        &[
            "--docs",
            &docs.join(","),
            "--tokens",
            &tokens.join(","),
            "--api",
            &app.url(""),
            "--api-key",
            KEY,
        ],
    )
    .await;
    assert_eq!(result["bClosed"], "4404 document deleted");
    assert_eq!(result["cClosed"], "4403 access revoked");
    assert_eq!(result["aText"], "saved;a still works;");
    app.stop().await;
}

#[actix_web::test]
async fn the_documents_of_one_socket_are_limited_and_count_as_connections_to_each() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut settings = db.settings();
    settings.max_documents_per_connection = 2;
    settings.max_connections_per_doc = 1;
    let app = TestApp::spawn(settings).await;
    let docs: Vec<String> = (0..3).map(|i| doc_name(&format!("hp-limit{i}"))).collect();
    // A y-websocket client holds the only place on a fourth document.
    let full = doc_name("hp-full");
    let _holder = app.connect(&full).await;
    let result = scenario(
        &app.ws_base(),
        "3",
        "limits",
        &["--docs", &docs.join(","), "--doc", &full],
    )
    .await;
    assert!(
        result["thirdRefused"]
            .as_str()
            .is_some_and(|r| r.contains("at most 2")),
        "{result}"
    );
    assert!(
        result["fullClosed"]
            .as_str()
            .is_some_and(|r| r.starts_with("1013 document full")),
        "{result}"
    );
    app.stop().await;
}
