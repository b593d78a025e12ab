//! The browser editor in a real browser: Playwright driving Debian's chromium against the server.
//! Scenarios live in `tests/browser/run.mjs`; `npm ci` in `tests/browser` installs them.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tandem::auth::Access;
use tandem::auth::token::{Claims, sign};

use crate::helpers::{Backend, TestApp, TestDb, WAIT, doc_name, node_scenario, stored_text};

/// Where screenshots go: `target/browser-artifacts/`.
fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser-artifacts");
    std::fs::create_dir_all(&dir).expect("artifact directory");
    dir
}

/// Runs one browser scenario; a browser start-up is slow, so it gets more time.
async fn scenario(name: &str, args: &[&str]) -> Value {
    node_scenario("browser", "playwright-core", name, args, WAIT * 4).await
}

async fn app() -> (TestApp, TestDb) {
    let db = TestDb::new(Backend::Sqlite).await;
    (TestApp::spawn(db.settings()).await, db)
}

fn base(app: &TestApp) -> String {
    format!("http://127.0.0.1:{}", app.port)
}

#[actix_web::test]
async fn two_people_type_together_and_see_each_other() {
    let (app, _db) = app().await;
    let doc = doc_name("browser");
    let out = artifacts();
    let result = scenario(
        "two-typists",
        &[
            "--base",
            &base(&app),
            "--doc",
            &doc,
            "--out",
            &out.to_string_lossy(),
        ],
    )
    .await;
    let typed = result["text"].as_str().expect("final text");
    assert!(!typed.is_empty());
    // What the browsers ended with is what the server holds.
    let mut reader = app.connect(&doc).await;
    reader.wait_for_text(typed).await;
    let shot = std::fs::read(out.join("two-cursors.png")).expect("screenshot saved");
    assert!(shot.starts_with(b"\x89PNG"), "screenshot is a PNG");
    app.stop().await;
}

#[actix_web::test]
async fn the_document_list_shows_new_documents_and_refuses_bad_names() {
    let (app, _db) = app().await;
    let doc = doc_name("listed");
    scenario("list", &["--base", &base(&app), "--doc", &doc]).await;
    app.stop().await;
}

#[actix_web::test]
async fn typing_continues_while_the_server_restarts() {
    let db = TestDb::new(Backend::Sqlite).await;
    let doc = doc_name("outage");
    let result = scenario(
        "offline",
        &[
            "--doc",
            &doc,
            "--server-cmd",
            env!("CARGO_BIN_EXE_tandem"),
            "--db-url",
            &db.url,
        ],
    )
    .await;
    let text = result["text"].as_str().expect("final text");
    assert!(
        text.contains("before") && text.contains("during-outage"),
        "{text}"
    );
    let (stored, _) = stored_text(&db.url, &doc).await;
    assert_eq!(stored, text);
}

#[actix_web::test]
async fn pages_are_never_cached_and_hashed_assets_always_are() {
    let (app, _db) = app().await;
    for path in ["/", "/d/some-doc"] {
        let response = reqwest::get(format!("{}{path}", base(&app)))
            .await
            .expect("page");
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.headers()["cache-control"], "no-cache", "{path}");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .expect("type")
                .starts_with("text/html")
        );
        let html = response.text().await.expect("body");
        let assets: Vec<&str> = html
            .split('"')
            .filter(|s| s.starts_with("/assets/"))
            .collect();
        assert!(!assets.is_empty(), "{path} references no assets");
        for asset in assets {
            let response = reqwest::get(format!("{}{asset}", base(&app)))
                .await
                .expect("asset");
            assert_eq!(response.status(), 200, "{asset}");
            assert_eq!(
                response.headers()["cache-control"],
                "public, max-age=31536000, immutable",
                "{asset}"
            );
            // Nothing is fetched from elsewhere at run time.
            let body = response.text().await.unwrap_or_default();
            assert!(!body.contains("https://cdn"), "{asset} loads from a CDN");
        }
    }
    let missing = reqwest::get(format!("{}/assets/nope-123.js", base(&app)))
        .await
        .expect("request");
    assert_eq!(missing.status(), 404);
    app.stop().await;
}

#[actix_web::test]
async fn deleting_from_the_list_asks_first_and_tells_open_editors() {
    let (app, _db) = app().await;
    let doc = doc_name("deleted");
    scenario("delete", &["--base", &base(&app), "--doc", &doc]).await;
    app.stop().await;
}

#[actix_web::test]
async fn an_editor_page_with_an_invalid_name_explains_the_rule() {
    let (app, _db) = app().await;
    scenario("bad-name", &["--base", &base(&app)]).await;
    app.stop().await;
}

const SECRET: &str = "the browser tests' operator secret, over 32 characters";
const KEY: &str = "browser-test-api-key";

#[actix_web::test]
async fn tokens_make_the_editor_read_only_or_deny_access() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut settings = db.settings();
    settings.auth_secret = Some(SECRET.into());
    settings.api_keys = vec![KEY.into()];
    let app = TestApp::spawn(settings).await;
    let doc = doc_name("guarded");
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64;
    // Signed by the server's secret for this document, but a minute past its expiry.
    let expired = sign(
        SECRET.as_bytes(),
        &Claims {
            doc: doc.clone(),
            access: Access::Write,
            iat: (now_s - 120) * 1000,
            exp: now_s - 60,
            user: None,
        },
    );
    let out = artifacts();
    let result = scenario(
        "access",
        &[
            "--base",
            &base(&app),
            "--doc",
            &doc,
            "--api-key",
            KEY,
            "--expired-token",
            &expired,
            "--out",
            &out.to_string_lossy(),
        ],
    )
    .await;
    let text = result["text"].as_str().expect("final text");
    let refused = result["refused"].as_str().expect("what the reader typed");
    // The server holds what the writers typed and nothing of the reader's.
    let stored = reqwest::Client::new()
        .get(app.url(&format!("/api/docs/{doc}/content?format=text")))
        .bearer_auth(KEY)
        .send()
        .await
        .expect("content")
        .text()
        .await
        .expect("text");
    assert_eq!(stored, text);
    assert!(!stored.contains(refused), "{stored:?}");
    assert!(stored.contains("Ada writes") && stored.contains("Bo answers"));
    for shot in ["read-only.png", "access-denied.png"] {
        let png = std::fs::read(out.join(shot)).expect("screenshot saved");
        assert!(png.starts_with(b"\x89PNG"), "{shot} is a PNG");
    }
    app.stop().await;
}

/// ProseMirror JSON of a doc of paragraphs as runs of (text, sorted mark names), neighbouring runs
/// with the same marks joined; panics on any other node.
fn paragraph_runs(doc: &Value) -> Vec<Vec<(String, Vec<String>)>> {
    assert_eq!(doc["type"], "doc", "{doc}");
    let blocks = doc["content"].as_array().expect("doc content");
    blocks
        .iter()
        .map(|block| {
            assert_eq!(block["type"], "paragraph", "{block}");
            let mut runs: Vec<(String, Vec<String>)> = Vec::new();
            for inline in block["content"].as_array().into_iter().flatten() {
                assert_eq!(inline["type"], "text", "{inline}");
                let text = inline["text"].as_str().expect("text").to_owned();
                let mut marks: Vec<String> = inline["marks"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|mark| mark["type"].as_str().expect("mark type").to_owned())
                    .collect();
                marks.sort();
                match runs.last_mut() {
                    Some((last, last_marks)) if *last_marks == marks => last.push_str(&text),
                    _ => runs.push((text, marks)),
                }
            }
            runs
        })
        .collect()
}

#[actix_web::test]
async fn a_stock_tiptap_editor_collaborates_over_hocuspocus() {
    // The Tiptap pages come from an origin of their own, as a Tiptap app's would, which the
    // server is told to allow; the scenario serves them on this port.
    let fixture_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let db = TestDb::new(Backend::Sqlite).await;
    let mut settings = db.settings();
    settings.allowed_origins = vec![format!("http://127.0.0.1:{fixture_port}")];
    let app = TestApp::spawn(settings).await;
    let doc = doc_name("tiptap");
    let out = artifacts();
    let result = scenario(
        "tiptap",
        &[
            "--base",
            &base(&app),
            "--doc",
            &doc,
            "--fixture-port",
            &fixture_port.to_string(),
            "--out",
            &out.to_string_lossy(),
        ],
    )
    .await;
    let run = |text: &str, marks: &[&str]| {
        (
            text.to_owned(),
            marks.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
        )
    };
    let expected = vec![
        vec![
            run("Start: Alice writes ", &[]),
            run("in bold", &["bold"]),
            run(" here.", &[]),
        ],
        vec![run("Second paragraph.", &[])],
        vec![
            run("Bob adds ", &[]),
            run("his bold", &["bold"]),
            run(" words.", &[]),
        ],
    ];
    // What the editors ended with, what the scenario read over REST, and what the server answers
    // and stores now are the same paragraphs with the same bold runs.
    assert_eq!(paragraph_runs(&result["editor"]), expected, "{result}");
    assert_eq!(paragraph_runs(&result["prosemirror"]), expected, "{result}");
    let served = crate::helpers::json_of(
        app.get_content(&doc, "format=prosemirror").await,
        reqwest::StatusCode::OK,
    )
    .await;
    assert_eq!(paragraph_runs(&served), expected, "{served}");
    assert_eq!(
        result["carets"],
        serde_json::json!({"alice": "bob", "bob": "alice"})
    );
    app.stop().await;
    let store = tandem::store::connect(&db.url).await.expect("store opens");
    let stored = store
        .load(&tandem::domain::DocId::parse(&doc).expect("valid name"))
        .await
        .expect("document loads");
    store.close().await;
    let ydoc = tandem::collab::document::build_doc(&stored).expect("stored data decodes");
    let stored = tandem::sync::prosemirror::to_json(&ydoc, "default").expect("a fragment");
    assert_eq!(paragraph_runs(&stored), expected, "{stored}");
    for shot in ["tiptap-alice.png", "tiptap-bob.png"] {
        let png = std::fs::read(out.join(shot)).expect("screenshot saved");
        assert!(png.starts_with(b"\x89PNG"), "{shot} is a PNG");
    }
}
