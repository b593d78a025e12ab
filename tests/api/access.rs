//! Access control: API keys for the REST API, document tokens for sockets, read-only sessions,
//! revocation, the origin rule, and the refusal to serve the network without a secret.

use std::time::Duration;

use clap::Parser;
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tandem::auth::token::{Claims, sign};
use tandem::auth::{Access, TokenUser};
use tandem::config::Settings;
use tandem::startup::Application;
use tokio_tungstenite::tungstenite;

use crate::helpers::{
    Backend, TestApp, TestDb, WAIT, YClient, awareness_frame, doc_name, json_of, node_scenario,
    raw_http,
};

const SECRET: &str = "an operator secret of more than thirty-two characters";
const KEY: &str = "test-api-key-1";

fn secured(db: &TestDb) -> Settings {
    let mut settings = db.settings();
    settings.auth_secret = Some(SECRET.into());
    settings.api_keys = vec![KEY.into()];
    settings
}

async fn secured_app() -> (TestApp, TestDb) {
    let db = TestDb::new(Backend::Sqlite).await;
    let app = TestApp::spawn(secured(&db)).await.with_key(KEY);
    (app, db)
}

/// Asks the server for a token of `doc`.
async fn token(app: &TestApp, doc: &str, body: Value) -> String {
    let response = app.issue_token(doc, body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let issued: Value = response.json().await.expect("json");
    issued["token"].as_str().expect("a token").to_string()
}

/// Tries an upgrade to `/ws/{path}` and returns the refusal's status and problem JSON.
async fn refused_upgrade(app: &TestApp, path: &str, origin: Option<&str>) -> (u16, Value) {
    use tungstenite::client::IntoClientRequest;
    let mut request = format!("{}/{path}", app.ws_base())
        .into_client_request()
        .expect("request");
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("Origin", origin.parse().expect("header"));
    }
    match tokio_tungstenite::connect_async(request).await {
        Err(tungstenite::Error::Http(response)) => {
            let body = response.body().clone().unwrap_or_default();
            let problem = serde_json::from_slice(&body).expect("problem JSON body");
            (response.status().as_u16(), problem)
        }
        Ok(_) => panic!("the upgrade to {path} was accepted"),
        Err(other) => panic!("unexpected error: {other}"),
    }
}

fn claims(doc: &str, access: Access, exp: i64) -> Claims {
    Claims {
        doc: doc.into(),
        access,
        iat: 1,
        exp,
        user: None,
    }
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

#[actix_web::test]
async fn the_rest_api_wants_an_api_key_and_says_so_in_problem_json() {
    let (app, _db) = secured_app().await;
    let client = reqwest::Client::new();

    let anonymous = client.get(app.url("/api/docs")).send().await.expect("get");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        anonymous.headers()["www-authenticate"]
            .to_str()
            .expect("ascii"),
        "Bearer"
    );
    assert_eq!(
        anonymous.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = anonymous.json().await.expect("json");
    assert_eq!(problem["type"], "/problems/unauthorized");
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("API key")
    );

    let wrong = client
        .post(app.url("/api/docs"))
        .bearer_auth("test-api-key-2")
        .json(&json!({ "id": "x" }))
        .send()
        .await
        .expect("post");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);

    let right = client
        .post(app.url("/api/docs"))
        .bearer_auth(KEY)
        .json(&json!({ "id": "x", "text": "hello" }))
        .send()
        .await
        .expect("post");
    assert_eq!(right.status(), StatusCode::CREATED);
    // The API description stays public.
    let spec = client
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .expect("get");
    assert_eq!(spec.status(), StatusCode::OK);
    app.stop().await;
}

/// Spellings of one request path that a router might match as the path itself: encoded
/// letters, encoded and doubled slashes, case changes and dot segments.
fn spellings(path: &str) -> Vec<String> {
    let encode_first = |segment: &str| match segment.chars().next() {
        Some(c) if c.is_ascii_alphabetic() => format!("%{:02x}{}", c as u8, &segment[1..]),
        _ => segment.to_string(),
    };
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let mut all = vec![path.to_string()];
    for i in 0..segments.len() {
        let mut encoded: Vec<String> = segments.iter().map(|s| s.to_string()).collect();
        encoded[i] = encode_first(segments[i]);
        all.push(format!("/{}", encoded.join("/")));
    }
    let every_letter: String = path
        .chars()
        .map(|c| {
            if c.is_ascii_alphabetic() {
                format!("%{:02X}", c as u8)
            } else {
                c.to_string()
            }
        })
        .collect();
    all.push(every_letter);
    all.push(path.replacen("/api/", "/api%2F", 1));
    all.push(path.replacen("/api/", "/api%2f", 1));
    all.push(path.replace('/', "//"));
    all.push(format!("/{path}"));
    all.push(path.replacen("/api/", "/api//", 1));
    all.push(path.to_ascii_uppercase());
    all.push(path.replacen("/api", "/API", 1));
    all.push(path.replacen("/api/", "/api/./", 1));
    all.push(format!("/x/..{path}"));
    all.push(path.replacen("/api/docs/", "/api/docs/../docs/", 1));
    all.push(format!("{path}/"));
    all.push(format!("{path}?x=1"));
    all
}

#[actix_web::test]
async fn every_rest_route_refuses_without_a_key_whatever_the_spelling_of_its_path() {
    let (app, _db) = secured_app().await;
    let client = reqwest::Client::new();
    // Documents named like each public sub-path, and one with an ordinary name.
    let names = ["plain", "access", "tokens", "reference", "openapi.json"];
    for name in names {
        let created = client
            .post(app.url("/api/docs"))
            .bearer_auth(KEY)
            .json(&json!({ "id": name, "text": "kept" }))
            .send()
            .await
            .expect("create");
        assert_eq!(created.status(), StatusCode::CREATED, "{name}");
    }
    let spec: Value = client
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .expect("spec")
        .json()
        .await
        .expect("json");
    let paths = spec["paths"].as_object().expect("paths");
    let mut requests = Vec::new();
    for (template, operations) in paths {
        for method in operations.as_object().expect("operations").keys() {
            let method = method.to_ascii_uppercase();
            // The one route that takes a document token instead of a key.
            if template == "/api/docs/{id}/access" && method == "GET" {
                continue;
            }
            let body: &[u8] = match template.as_str() {
                "/api/docs/{id}/update" => b"\x00\x00",
                _ if method == "POST" => br#"{"id":"new","text":"x","ops":[],"access":"write"}"#,
                _ => b"",
            };
            for name in names {
                let path = template.replace("{id}", name).replace("{version}", "1");
                for spelled in spellings(&path) {
                    let canonical = spelled == path || spelled == format!("{path}?x=1");
                    requests.push((method.clone(), spelled, body, canonical));
                }
            }
        }
    }
    let checked = requests.len();
    // Concurrently: a refusal that leaves a request body unread holds its connection until the
    // server's disconnect timeout.
    futures_util::stream::iter(requests)
        .for_each_concurrent(64, |(method, spelled, body, canonical)| async move {
            let head = format!("{method} {spelled} HTTP/1.1\r\nContent-Type: application/json");
            let (status, answer) = raw_http(app.port, &head, body).await;
            assert!(
                status == 401 || status == 404 || status == 405,
                "{method} {spelled} without a key answered {status}: {answer}"
            );
            if canonical {
                assert_eq!(status, 401, "{method} {spelled}: {answer}");
            }
        })
        .await;
    assert!(checked > 500, "only {checked} requests were tried");
    // Nothing was created, changed or deleted.
    let listed: Value = client
        .get(app.url("/api/docs"))
        .bearer_auth(KEY)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    let ids: Vec<&str> = listed["docs"]
        .as_array()
        .expect("docs")
        .iter()
        .map(|d| d["id"].as_str().expect("id"))
        .collect();
    let mut expected = names.to_vec();
    expected.sort();
    assert_eq!(ids, expected);
    for name in names {
        let text = client
            .get(app.url(&format!("/api/docs/{name}/content?format=text")))
            .bearer_auth(KEY)
            .send()
            .await
            .expect("content")
            .text()
            .await
            .expect("text");
        assert_eq!(text, "kept", "{name}");
    }
    app.stop().await;
}

#[actix_web::test]
async fn sockets_without_a_valid_token_for_their_document_are_refused_before_the_upgrade() {
    let (app, _db) = secured_app().await;
    let doc = doc_name("guarded");
    let secret = SECRET.as_bytes();

    let (status, problem) = refused_upgrade(&app, &doc, None).await;
    assert_eq!(status, 401);
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("token is required")
    );

    let other_doc = token(&app, "another-doc", json!({ "access": "write" })).await;
    let (status, problem) = refused_upgrade(&app, &format!("{doc}?token={other_doc}"), None).await;
    assert_eq!(
        (status, problem["detail"].clone()),
        (403, json!("the token is for another document"))
    );

    let expired = sign(secret, &claims(&doc, Access::Write, now_s() - 1));
    let (status, problem) = refused_upgrade(&app, &format!("{doc}?token={expired}"), None).await;
    assert_eq!(
        (status, problem["detail"].clone()),
        (401, json!("the token has expired"))
    );

    let forged = sign(
        b"not the operator's secret, but just as long!",
        &claims(&doc, Access::Write, now_s() + 60),
    );
    let (status, problem) = refused_upgrade(&app, &format!("{doc}?token={forged}"), None).await;
    assert_eq!(
        (status, problem["detail"].clone()),
        (401, json!("the token's signature is not valid"))
    );

    // A read token with its payload swapped for a write one keeps the old signature.
    let read = token(&app, &doc, json!({ "access": "read" })).await;
    let genuine_write = sign(secret, &claims(&doc, Access::Write, now_s() + 60));
    let (_, read_sig) = read.rsplit_once('.').expect("signed");
    let (write_payload, _) = genuine_write.rsplit_once('.').expect("signed");
    let tampered = format!("{write_payload}.{read_sig}");
    let (status, _) = refused_upgrade(&app, &format!("{doc}?token={tampered}"), None).await;
    assert_eq!(status, 401);

    let (status, _) = refused_upgrade(&app, &format!("{doc}?token=garbage"), None).await;
    assert_eq!(status, 401);

    // A valid token gets in; so does an API key (for servers).
    let write = token(&app, &doc, json!({ "access": "write" })).await;
    let mut client = YClient::connect(&app.ws_base(), &format!("{doc}?token={write}")).await;
    client.append("in").await;
    client.recv_until(|c| c.updates_received >= 1).await;
    let server = YClient::connect_authorized(&app.ws_base(), &doc, KEY).await;
    assert_eq!(server.text(), "in");
    // API keys belong in the header: in a URL they would end up in logs.
    let (status, _) = refused_upgrade(&app, &format!("{doc}?token={KEY}"), None).await;
    assert_eq!(status, 401);
    app.stop().await;
}

#[actix_web::test]
async fn a_read_only_session_sees_everything_and_changes_nothing() {
    let (app, _db) = secured_app().await;
    let doc = doc_name("readonly");
    let write = token(&app, &doc, json!({ "access": "write" })).await;
    let read = token(
        &app,
        &doc,
        json!({ "access": "read", "user": { "name": "Rita" } }),
    )
    .await;
    let mut writer = YClient::connect(&app.ws_base(), &format!("{doc}?token={write}")).await;
    writer.append("original").await;
    writer.recv_until(|c| c.updates_received >= 1).await;

    let mut reader = YClient::connect(&app.ws_base(), &format!("{doc}?token={read}")).await;
    assert_eq!(reader.text(), "original");
    assert_eq!(reader.denied, None, "catching up is not a write");

    // Its edit is dropped, and it is told once why; the socket stays open.
    reader.append(" vandalised").await;
    reader.recv_until(|c| c.denied.is_some()).await;
    assert!(
        reader
            .denied
            .as_deref()
            .expect("reason")
            .contains("read-only")
    );

    // It still receives, and its presence still shows.
    reader
        .send_raw(awareness_frame(
            reader.client_id(),
            1,
            r#"{"user":{"name":"Rita"}}"#,
        ))
        .await;
    let rita = reader.client_id();
    writer.recv_until(|c| c.awareness.contains_key(&rita)).await;
    // (Its own dropped edit stays in its local copy, so look for the new character anywhere.)
    writer.append("!").await;
    reader.recv_until(|c| c.text().contains('!')).await;

    let probe = YClient::connect_authorized(&app.ws_base(), &doc, KEY).await;
    assert_eq!(probe.text(), "original!");
    app.stop().await;
}

#[actix_web::test]
async fn the_stock_client_with_a_read_only_token_receives_and_is_told_its_edits_are_dropped() {
    let (app, _db) = secured_app().await;
    let doc = doc_name("stock-readonly");
    let write = token(&app, &doc, json!({ "access": "write" })).await;
    let read = token(&app, &doc, json!({ "access": "read" })).await;
    let url = app.ws_base();
    let result = node_scenario(
        "interop",
        "y-websocket",
        "read-only",
        &[
            "--url",
            &url,
            "--doc",
            &doc,
            "--write-token",
            &write,
            "--read-token",
            &read,
        ],
        WAIT,
    )
    .await;
    assert!(
        result["denied"]
            .as_str()
            .expect("reason")
            .contains("read-only"),
        "{result}"
    );
    assert_eq!(result["readerStayedConnected"], true);
    assert_eq!(result["writerText"], "from-writer later");
    assert_eq!(result["checkerText"], "from-writer later");
    app.stop().await;
}

#[actix_web::test]
async fn disconnect_closes_the_matching_sessions_and_their_tokens_stop_working() {
    let (app, _db) = secured_app().await;
    let doc = doc_name("revoke");
    let ada_token = token(
        &app,
        &doc,
        json!({ "access": "write", "user": { "name": "Ada", "color": "#f00" } }),
    )
    .await;
    let bob_token = token(
        &app,
        &doc,
        json!({ "access": "write", "user": { "name": "Bob" } }),
    )
    .await;
    let mut ada = YClient::connect(&app.ws_base(), &format!("{doc}?token={ada_token}")).await;
    let mut bob = YClient::connect(&app.ws_base(), &format!("{doc}?token={bob_token}")).await;

    let response = app.disconnect(&doc, Some(json!({ "user": "Ada" }))).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.expect("json"),
        json!({ "disconnected": 1 })
    );
    assert_eq!(
        ada.expect_close().await,
        (4403, "access revoked".to_string())
    );

    // Bob is unaffected; Ada's old token no longer admits her, a new one does.
    bob.append("still here").await;
    bob.recv_until(|c| c.updates_received >= 1).await;
    let (status, problem) = refused_upgrade(&app, &format!("{doc}?token={ada_token}"), None).await;
    assert_eq!(
        (status, problem["detail"].clone()),
        (403, json!("the token was revoked"))
    );
    let fresh = token(
        &app,
        &doc,
        json!({ "access": "write", "user": { "name": "Ada" } }),
    )
    .await;
    let ada = YClient::connect(&app.ws_base(), &format!("{doc}?token={fresh}")).await;
    assert_eq!(ada.text(), "still here");

    // Everyone, with an empty body; a misspelt body is refused rather than widened.
    let typo = app.disconnect(&doc, Some(json!({ "usr": "Bob" }))).await;
    assert_eq!(typo.status(), StatusCode::BAD_REQUEST);
    let everyone = app.disconnect(&doc, None).await;
    assert_eq!(
        everyone.json::<Value>().await.expect("json"),
        json!({ "disconnected": 2 })
    );
    assert_eq!(bob.expect_close().await.0, 4403);
    app.stop().await;
}

#[actix_web::test]
async fn revocations_survive_a_restart() {
    let db = TestDb::new(Backend::Sqlite).await;
    let app = TestApp::spawn(secured(&db)).await.with_key(KEY);
    let doc = doc_name("lasting");
    let old = token(&app, &doc, json!({ "access": "write" })).await;
    let response = app.disconnect(&doc, None).await;
    assert_eq!(response.status(), StatusCode::OK);
    app.stop().await;

    let app = TestApp::spawn(secured(&db)).await.with_key(KEY);
    let (status, _) = refused_upgrade(&app, &format!("{doc}?token={old}"), None).await;
    assert_eq!(status, 403);
    app.stop().await;
}

#[actix_web::test]
async fn a_revoked_token_stays_refused_after_a_restart_with_a_shorter_lifetime_limit() {
    let db = TestDb::new(Backend::Sqlite).await;
    let app = TestApp::spawn(secured(&db)).await.with_key(KEY);
    let doc = doc_name("shortened");
    let old = token(&app, &doc, json!({ "access": "write", "expires_in": 3600 })).await;
    let response = app.disconnect(&doc, None).await;
    assert_eq!(response.status(), StatusCode::OK);
    app.stop().await;

    // Every revocation made before the restart is older than the new limit, so none is loaded:
    // the hour-long token must still not get in.
    let mut settings = secured(&db);
    settings.token_lifetime = Duration::ZERO;
    settings.max_token_lifetime = Duration::ZERO;
    let app = TestApp::spawn(settings).await;
    let (status, problem) = refused_upgrade(&app, &format!("{doc}?token={old}"), None).await;
    assert_eq!(status, 401, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("--max-token-lifetime"),
        "{problem}"
    );
    let check = app.check_access(&doc, Some(&old)).await;
    assert_eq!(check.status(), StatusCode::UNAUTHORIZED);
    app.stop().await;
}

#[actix_web::test]
async fn a_session_ends_when_its_token_expires() {
    let (app, _db) = secured_app().await;
    let doc = doc_name("expiring");
    let short = token(&app, &doc, json!({ "access": "write", "expires_in": 2 })).await;
    let mut client = YClient::connect(&app.ws_base(), &format!("{doc}?token={short}")).await;
    assert_eq!(
        client.expect_close().await,
        (1008, "token expired".to_string())
    );

    let response = reqwest::Client::new()
        .post(app.url(&format!("/api/docs/{doc}/tokens")))
        .bearer_auth(KEY)
        .json(&json!({ "access": "write", "expires_in": 999_999_999u64 }))
        .send()
        .await
        .expect("token request");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    app.stop().await;
}

#[actix_web::test]
async fn the_access_check_tells_the_editor_what_a_token_allows() {
    let (app, _db) = secured_app().await;
    let doc = doc_name("check");
    let read = token(
        &app,
        &doc,
        json!({ "access": "read", "user": { "name": "Rita", "color": "#0a0" } }),
    )
    .await;
    let view = json_of(app.check_access(&doc, Some(&read)).await, StatusCode::OK).await;
    assert_eq!(view["access"], "read");
    assert_eq!(view["auth"], true);
    assert_eq!(view["user"], json!({ "name": "Rita", "color": "#0a0" }));
    let denied = app.check_access(&doc, None).await;
    assert_eq!(denied.status(), StatusCode::UNAUTHORIZED);
    app.stop().await;

    // Open servers grant write to anyone, and have no tokens to issue.
    let db = TestDb::new(Backend::Sqlite).await;
    let open = TestApp::spawn(db.settings()).await;
    let view = json_of(open.check_access("any", None).await, StatusCode::OK).await;
    assert_eq!(
        (view["access"].clone(), view["auth"].clone()),
        (json!("write"), json!(false))
    );
    let no_tokens = open.issue_token("any", json!({ "access": "read" })).await;
    assert_eq!(no_tokens.status(), StatusCode::CONFLICT);
    open.stop().await;
}

#[actix_web::test]
async fn pages_of_other_origins_may_connect_only_when_allowed() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut settings = db.settings();
    settings.allowed_origins = vec!["https://app.example".into()];
    let app = TestApp::spawn(settings).await;
    let doc = doc_name("origin");

    let (status, problem) = refused_upgrade(&app, &doc, Some("https://evil.example")).await;
    assert_eq!(status, 403);
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("origin")
    );

    use tungstenite::client::IntoClientRequest;
    for origin in [
        "https://app.example".to_string(),
        format!("http://127.0.0.1:{}", app.port),
    ] {
        let mut request = format!("{}/{doc}", app.ws_base())
            .into_client_request()
            .expect("request");
        request
            .headers_mut()
            .insert("Origin", origin.parse().expect("header"));
        let connected = tokio_tungstenite::connect_async(request).await;
        assert!(connected.is_ok(), "{origin} may connect");
    }

    // CORS for the REST API follows the same list.
    let client = reqwest::Client::new();
    let preflight = client
        .request(reqwest::Method::OPTIONS, app.url("/api/docs"))
        .header("Origin", "https://app.example")
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization, content-type",
        )
        .send()
        .await
        .expect("preflight");
    assert!(preflight.status().is_success());
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let foreign = client
        .get(app.url("/api/docs"))
        .header("Origin", "https://evil.example")
        .send()
        .await
        .expect("get");
    assert!(
        foreign
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    app.stop().await;
}

/// Tries an upgrade to `/ws/{path}` with extra headers (`Host` among them replaces the
/// client's): `Ok` if it was accepted, else the refusal's status and problem JSON.
async fn upgrade_with(
    app: &TestApp,
    path: &str,
    headers: &[(&'static str, String)],
) -> Result<(), (u16, Value)> {
    use tungstenite::client::IntoClientRequest;
    let mut request = format!("{}/{path}", app.ws_base())
        .into_client_request()
        .expect("request");
    for (name, value) in headers {
        request
            .headers_mut()
            .insert(*name, value.parse().expect("header"));
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => Ok(()),
        Err(tungstenite::Error::Http(response)) => {
            let body = response.body().clone().unwrap_or_default();
            let problem = serde_json::from_slice(&body).expect("problem JSON body");
            Err((response.status().as_u16(), problem))
        }
        Err(other) => panic!("unexpected error: {other}"),
    }
}

/// The status and problem `type` of a raw request (see `raw_http`).
async fn raw_problem(port: u16, head: &str, body: &[u8]) -> (u16, Value) {
    let (status, body) = raw_http(port, head, body).await;
    let problem = serde_json::from_str(&body).unwrap_or(Value::Null);
    (status, problem)
}

/// A Yjs update that writes `text` into `content`.
fn text_update(text: &str) -> Vec<u8> {
    use yrs::{ReadTxn, StateVector, Text, Transact};
    let doc = yrs::Doc::new();
    let root = doc.get_or_insert_text("content");
    root.insert(&mut doc.transact_mut(), 0, text);
    doc.transact()
        .encode_state_as_update_v1(&StateVector::default())
}

#[actix_web::test]
async fn pages_of_other_origins_may_not_change_anything_even_without_a_secret() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut settings = db.settings();
    settings.allowed_origins = vec!["https://app.example".into()];
    let app = TestApp::spawn(settings).await;
    let doc = doc_name("csrf");
    let client = reqwest::Client::new();
    let created = client
        .post(app.url("/api/docs"))
        .json(&json!({ "id": doc, "text": "original" }))
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), StatusCode::CREATED);
    let version: Value = client
        .post(app.url(&format!("/api/docs/{doc}/versions")))
        .send()
        .await
        .expect("version")
        .json()
        .await
        .expect("json");
    let version = version["id"].as_i64().expect("version id");

    // What a page of another site can send without a preflight: "simple" requests.
    let forged = text_update("forged ");
    let attempts: Vec<(reqwest::Method, String, Vec<u8>)> = vec![
        (
            reqwest::Method::POST,
            format!("/api/docs/{doc}/update"),
            forged.clone(),
        ),
        (
            reqwest::Method::POST,
            format!("/api/docs/{doc}/versions/{version}/restore"),
            Vec::new(),
        ),
        (
            reqwest::Method::POST,
            format!("/api/docs/{doc}/text"),
            br#"{"ops":[{"insert":"forged ","at":0}]}"#.to_vec(),
        ),
        (
            reqwest::Method::POST,
            "/api/docs".to_string(),
            br#"{"id":"planted"}"#.to_vec(),
        ),
        (
            reqwest::Method::DELETE,
            format!("/api/docs/{doc}"),
            Vec::new(),
        ),
    ];
    let foreign: [(&str, &str); 3] = [
        ("Origin", "https://evil.example"),
        ("Origin", "null"),
        ("Sec-Fetch-Site", "cross-site"),
    ];
    for (method, path, body) in &attempts {
        for (header, value) in foreign {
            let response = client
                .request(method.clone(), app.url(path))
                .header(header, value)
                .header("Content-Type", "text/plain")
                .body(body.clone())
                .send()
                .await
                .expect("request");
            assert_eq!(
                response.status(),
                StatusCode::FORBIDDEN,
                "{method} {path} with {header}: {value}"
            );
            let problem: Value = response.json().await.expect("problem JSON");
            assert_eq!(problem["type"], "/problems/forbidden", "{problem}");
        }
    }
    let text = client
        .get(app.url(&format!("/api/docs/{doc}/content?format=text")))
        .send()
        .await
        .expect("read");
    assert_eq!(text.status(), StatusCode::OK, "the document is still there");
    assert_eq!(text.text().await.expect("text"), "original");
    let planted = client
        .get(app.url("/api/docs/planted"))
        .send()
        .await
        .expect("read");
    assert_eq!(planted.status(), StatusCode::NOT_FOUND);

    // The server's own pages, the allowed origins, and clients that are no browser may.
    for origin in [
        Some(format!("http://127.0.0.1:{}", app.port)),
        Some("https://app.example".to_string()),
        None,
    ] {
        let mut request = client
            .post(app.url(&format!("/api/docs/{doc}/update")))
            .header("Content-Type", "application/octet-stream")
            .body(text_update(&format!("{origin:?} ")));
        if let Some(origin) = &origin {
            request = request.header("Origin", origin);
        }
        let response = request.send().await.expect("request");
        assert_eq!(response.status(), StatusCode::NO_CONTENT, "{origin:?}");
    }
    app.stop().await;
}

#[actix_web::test]
async fn requests_under_another_host_name_are_refused_without_a_secret() {
    let db = TestDb::new(Backend::Sqlite).await;
    let app = TestApp::spawn(db.settings()).await;
    let port = app.port;
    let doc = doc_name("rebind");
    app.create_doc(&doc).await;

    // DNS rebinding: a page of rebind.evil.example, whose name now resolves to 127.0.0.1, is of
    // the same origin as what it reads.
    let evil = format!("rebind.evil.example:{port}");
    let (status, problem) = raw_problem(
        port,
        &format!("GET /api/docs HTTP/1.1\r\nHost: {evil}\r\nOrigin: http://{evil}"),
        b"",
    )
    .await;
    assert_eq!(status, 421, "{problem}");
    assert_eq!(problem["type"], "/problems/unknown-host");
    let detail = problem["detail"].as_str().expect("detail");
    assert!(
        detail.contains("rebind.evil.example") && detail.contains("--public-host"),
        "{detail}"
    );
    let refused = upgrade_with(
        &app,
        &doc,
        &[("Host", evil.clone()), ("Origin", format!("http://{evil}"))],
    )
    .await;
    assert_eq!(refused.map_err(|(status, _)| status), Err(421));
    // Nor does an X-Forwarded-Host of its own make it this server: 127.0.0.1 is no proxy here.
    let (status, _) = raw_problem(
        port,
        &format!("GET /api/docs HTTP/1.1\r\nHost: {evil}\r\nX-Forwarded-Host: localhost:{port}"),
        b"",
    )
    .await;
    assert_eq!(status, 421);
    let (status, _) = raw_problem(
        port,
        &format!("POST /api/docs/{doc}/update HTTP/1.1\r\nHost: {evil}"),
        &text_update("rebound"),
    )
    .await;
    assert_eq!(status, 421);

    // Addresses and loopback names are this server's; the health probes answer any name.
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        "editor.localhost".to_string(),
    ] {
        let (status, body) = raw_http(
            port,
            &format!("GET /api/docs HTTP/1.1\r\nHost: {host}"),
            b"",
        )
        .await;
        assert_eq!(status, 200, "{host}: {body}");
    }
    let (status, _) = raw_http(
        port,
        &format!("GET / HTTP/1.1\r\nHost: localhost:{port}"),
        b"",
    )
    .await;
    assert_eq!(status, 200, "the editor's page under localhost");
    let local = upgrade_with(
        &app,
        &doc,
        &[
            ("Host", format!("localhost:{port}")),
            ("Origin", format!("http://localhost:{port}")),
        ],
    )
    .await;
    assert_eq!(local.map_err(|(status, _)| status), Ok(()));
    for probe in ["/healthz", "/readyz"] {
        let (status, _) = raw_http(
            port,
            &format!("GET {probe} HTTP/1.1\r\nHost: tandem.internal.example"),
            b"",
        )
        .await;
        assert_eq!(status, 200, "{probe}");
    }
    app.stop().await;
}

#[actix_web::test]
async fn a_forwarded_host_counts_only_from_a_trusted_proxy() {
    let db = TestDb::new(Backend::Sqlite).await;
    let doc = doc_name("forwarded");
    // Not through a proxy: the page's claim that it asked for its own host is not believed.
    let app = TestApp::spawn(db.settings()).await;
    let forged = upgrade_with(
        &app,
        &doc,
        &[
            ("X-Forwarded-Host", "evil.example".to_string()),
            ("Origin", "http://evil.example".to_string()),
        ],
    )
    .await;
    assert_eq!(forged.map_err(|(status, _)| status), Err(403));
    app.stop().await;

    // From a trusted proxy it names the host the browser asked for, which the page's is.
    let mut settings = db.settings();
    settings.trusted_proxies = vec!["127.0.0.1".into()];
    let app = TestApp::spawn(settings).await;
    let proxied = upgrade_with(
        &app,
        &doc,
        &[
            ("X-Forwarded-Host", "docs.localhost".to_string()),
            ("Origin", "https://docs.localhost".to_string()),
        ],
    )
    .await;
    assert_eq!(proxied.map_err(|(status, _)| status), Ok(()));
    app.stop().await;
}

#[actix_web::test]
async fn public_host_names_are_served_and_a_proxy_passes_on_no_other() {
    let db = TestDb::new(Backend::Sqlite).await;
    let doc = doc_name("public");
    // Behind a proxy on loopback that serves docs.example.com.
    let mut settings = Settings::try_parse_from(["tandem", "--public-host", "docs.example.com"])
        .expect("--public-host is a flag");
    settings.database_url = db.url.clone();
    settings.bind = "127.0.0.1:0".parse().expect("address");
    settings.trusted_proxies = vec!["127.0.0.1".into()];
    let app = TestApp::spawn(settings).await;
    let port = app.port;
    let proxied = upgrade_with(
        &app,
        &doc,
        &[
            ("X-Forwarded-Host", "docs.example.com".to_string()),
            ("Origin", "https://docs.example.com".to_string()),
        ],
    )
    .await;
    assert_eq!(proxied.map_err(|(status, _)| status), Ok(()));
    let (status, _) = raw_problem(
        port,
        "GET /api/docs HTTP/1.1\r\nHost: docs.example.com",
        b"",
    )
    .await;
    assert_eq!(status, 200);
    // The proxy passing on a rebinding page's host name: refused, whatever Host it sends.
    for head in [
        format!("GET /api/docs HTTP/1.1\r\nX-Forwarded-Host: rebind.evil.example:{port}"),
        "GET /api/docs HTTP/1.1\r\nHost: rebind.evil.example\r\nX-Forwarded-Host: docs.example.com"
            .to_string(),
    ] {
        let (status, problem) = raw_problem(port, &head, b"").await;
        assert_eq!(status, 421, "{head}: {problem}");
    }
    app.stop().await;

    // With a secret and no public names, a rebinding page gains nothing (it holds no key):
    // any name is served, and the key is asked for.
    let app = TestApp::spawn(secured(&db)).await.with_key(KEY);
    let (status, problem) = raw_problem(
        app.port,
        "GET /api/docs HTTP/1.1\r\nHost: anything.example",
        b"",
    )
    .await;
    assert_eq!(status, 401, "{problem}");
    app.stop().await;
}

#[actix_web::test]
async fn without_a_secret_the_server_refuses_to_listen_beyond_loopback() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut settings = db.settings();
    settings.bind = "0.0.0.0:0".parse().expect("address");
    let error = Application::build(settings.clone())
        .await
        .err()
        .expect("refused");
    let message = error.to_string();
    assert!(
        message.contains("--auth-secret") && message.contains("--insecure-no-auth"),
        "{message}"
    );

    settings.insecure_no_auth = true;
    let app = Application::build(settings.clone())
        .await
        .expect("explicitly allowed");
    drop(app);
    settings.insecure_no_auth = false;
    settings.auth_secret = Some(SECRET.into());
    settings.api_keys = vec![KEY.into()];
    let app = Application::build(settings.clone()).await.expect("secured");
    drop(app);

    settings.auth_secret = Some("short".into());
    let error = Application::build(settings).await.err().expect("refused");
    assert!(error.to_string().contains("at least 32"), "{error}");
}

#[test]
fn tokens_carry_their_user() {
    let user = TokenUser {
        name: "Ada".into(),
        color: Some("#f00".into()),
    };
    let mut c = claims("d", Access::Read, i64::MAX);
    c.user = Some(user.clone());
    let token = sign(b"k", &c);
    let doc = tandem::domain::DocId::parse("d").expect("name");
    let back = tandem::auth::token::verify(b"k", &token, &doc, 0).expect("valid");
    assert_eq!(back.user, Some(user));
}

#[actix_web::test]
async fn metrics_want_their_token_or_an_api_key_when_access_control_is_on() {
    const SCRAPER: &str = "a-metrics-scraper-token";
    let db = TestDb::new(Backend::Sqlite).await;
    let mut settings = secured(&db);
    settings.metrics_token = Some(SCRAPER.into());
    let app = TestApp::spawn(settings).await;
    let client = reqwest::Client::new();
    let scrape = |credential: Option<&str>| {
        let request = client.get(app.url("/metrics"));
        let request = match credential {
            Some(c) => request.bearer_auth(c),
            None => request,
        };
        async move { request.send().await.expect("scrape") }
    };
    for credential in [None, Some("not-the-token")] {
        let refused = scrape(credential).await;
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED, "{credential:?}");
        let problem: Value = refused.json().await.expect("problem json");
        assert_eq!(problem["status"], 401);
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|d| d.contains("metrics")),
            "{problem}"
        );
    }
    for credential in [SCRAPER, KEY] {
        let scraped = scrape(Some(credential)).await;
        assert_eq!(scraped.status(), StatusCode::OK);
        assert!(
            scraped
                .text()
                .await
                .expect("body")
                .contains("tandem_connections")
        );
    }
    // The scraper's token opens nothing else.
    let api = client
        .get(app.url("/api/docs"))
        .bearer_auth(SCRAPER)
        .send()
        .await
        .expect("list");
    assert_eq!(api.status(), StatusCode::UNAUTHORIZED);
    app.stop().await;

    // Without access control, metrics are open unless a token is set.
    let open = TestApp::spawn(db.settings()).await;
    let scraped = reqwest::get(open.url("/metrics")).await.expect("scrape");
    assert_eq!(scraped.status(), StatusCode::OK);
    open.stop().await;
    let mut settings = db.settings();
    settings.metrics_token = Some(SCRAPER.into());
    let guarded = TestApp::spawn(settings).await;
    let refused = reqwest::get(guarded.url("/metrics")).await.expect("scrape");
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let scraped = client
        .get(guarded.url("/metrics"))
        .bearer_auth(SCRAPER)
        .send()
        .await
        .expect("scrape");
    assert_eq!(scraped.status(), StatusCode::OK);
    guarded.stop().await;
}
