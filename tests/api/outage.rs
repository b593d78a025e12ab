//! Store outages: while the store refuses writes, connected clients keep editing together in
//! memory, `/readyz` answers 503, and once the store is back every update is stored.

use std::time::Duration;

use sqlx::Connection;

use crate::helpers::{Backend, TestApp, TestDb, WAIT, doc_name, on_both_stores, stored_text};

/// Polls until `/readyz` answers `status`.
async fn readyz_becomes(app: &TestApp, status: u16) {
    let client = reqwest::Client::new();
    tokio::time::timeout(WAIT * 2, async {
        loop {
            if let Ok(response) = client.get(app.url("/readyz")).send().await
                && response.status().as_u16() == status
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("/readyz did not answer {status} in time"));
}

/// Polls the store itself until the document's stored text is `expected`.
async fn stored_becomes(db_url: &str, doc: &str, expected: &str) {
    let mut last = String::new();
    let reached = tokio::time::timeout(WAIT * 2, async {
        loop {
            last = stored_text(db_url, doc).await.0;
            if last == expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        reached.is_ok(),
        "the store never held {expected:?}; last {last:?}"
    );
}

/// Makes the store refuse the server's writes until `unblock`.
enum Blocker {
    /// A transaction holding SQLite's write lock.
    Sqlite(sqlx::SqliteConnection),
    /// The test database closed to connections, its sessions terminated.
    Postgres {
        admin: sqlx::PgConnection,
        name: String,
    },
}

impl Blocker {
    async fn block(db: &TestDb, backend: Backend) -> Blocker {
        match backend {
            Backend::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&db.url)
                    .await
                    .expect("open");
                sqlx::raw_sql("BEGIN EXCLUSIVE")
                    .execute(&mut conn)
                    .await
                    .expect("write lock taken");
                Blocker::Sqlite(conn)
            }
            Backend::Postgres => {
                let admin_url = std::env::var("TEST_DATABASE_URL").expect("TEST_DATABASE_URL");
                let mut admin = sqlx::PgConnection::connect(&admin_url)
                    .await
                    .expect("admin");
                let name = db
                    .url
                    .rsplit('/')
                    .next()
                    .expect("database name")
                    .to_string();
                for sql in [
                    format!(r#"ALTER DATABASE "{name}" ALLOW_CONNECTIONS false"#),
                    format!(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                         WHERE datname = '{name}' AND pid <> pg_backend_pid()"
                    ),
                ] {
                    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                        .execute(&mut admin)
                        .await
                        .expect("database blocked");
                }
                Blocker::Postgres { admin, name }
            }
        }
    }

    async fn unblock(self) {
        match self {
            Blocker::Sqlite(mut conn) => {
                sqlx::raw_sql("ROLLBACK")
                    .execute(&mut conn)
                    .await
                    .expect("lock released");
            }
            Blocker::Postgres { mut admin, name } => {
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    r#"ALTER DATABASE "{name}" ALLOW_CONNECTIONS true"#
                )))
                .execute(&mut admin)
                .await
                .expect("database reopened");
            }
        }
    }
}

on_both_stores! {
    async fn editing_goes_on_through_a_store_outage_and_everything_is_stored_after(backend: Backend) {
        let db = TestDb::new(backend).await;
        let app = TestApp::spawn(db.settings()).await;
        let doc = doc_name("outage");
        let mut ada = app.connect(&doc).await;
        let mut bob = app.connect(&doc).await;
        ada.append("before ").await;
        bob.wait_for_text("before ").await;
        readyz_becomes(&app, 200).await;

        let blocker = Blocker::block(&db, backend).await;
        // Edits made while the store refuses writes still reach the other client.
        ada.append("during ").await;
        bob.wait_for_text("before during ").await;
        bob.append("outage ").await;
        ada.wait_for_text("before during outage ").await;
        readyz_becomes(&app, 503).await;
        // A newcomer gets all of it from memory.
        let late = app.connect(&doc).await;
        assert_eq!(late.text(), "before during outage ", "{backend:?}");

        blocker.unblock().await;
        // The first commit after the store returns writes the whole backlog, and only then is
        // the server ready again.
        readyz_becomes(&app, 200).await;
        assert_eq!(
            stored_text(&db.url, &doc).await.0,
            "before during outage ",
            "{backend:?}"
        );
        ada.append("after").await;
        bob.wait_for_text("before during outage after").await;
        app.stop().await;
        let (stored, _) = stored_text(&db.url, &doc).await;
        assert_eq!(stored, "before during outage after", "{backend:?}");
    }
}

#[actix_web::test]
async fn api_calls_during_an_outage_get_503_not_a_hang() {
    let db = TestDb::new(Backend::Sqlite).await;
    let app = TestApp::spawn(db.settings()).await;
    let doc = doc_name("outage-api");
    app.create_doc(&doc).await;
    let mut editor = app.connect(&doc).await;
    let blocker = Blocker::block(&db, Backend::Sqlite).await;
    editor.append("held").await;
    // Its echo proves the document has it (relayed from memory once the store counts as down).
    editor.recv_until(|c| c.updates_received >= 1).await;
    let response = reqwest::Client::new()
        .post(app.url(&format!("/api/docs/{doc}/text")))
        .json(&serde_json::json!({ "ops": [{ "insert": "!", "at": 0 }] }))
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    let problem: serde_json::Value = response.json().await.expect("json");
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("will be stored when the store is back"),
        "{problem}"
    );
    blocker.unblock().await;
    stored_becomes(&db.url, &doc, "!held").await;
    app.stop().await;
}

/// Updates that one commit makes durable reach readers merged into a few frames, in order, and
/// not before they are stored: a short store stall (well under the 2 s after which the server
/// stops waiting for it) holds them back, then releases them together.
#[actix_web::test]
async fn updates_made_durable_together_are_relayed_merged_and_not_before() {
    let db = TestDb::new(Backend::Sqlite).await;
    let app = TestApp::spawn(db.settings()).await;
    let doc = doc_name("merged");
    let mut writer = app.connect(&doc).await;
    let mut reader = app.connect(&doc).await;
    writer.append("start ").await;
    reader.wait_for_text("start ").await;
    let frames_before = reader.updates_received;

    let blocker = Blocker::block(&db, Backend::Sqlite).await;
    const UPDATES: usize = 50;
    for i in 0..UPDATES {
        writer.append(&format!("{i} ")).await;
    }
    let expected = writer.text();
    let early = tokio::time::timeout(
        Duration::from_millis(500),
        reader.recv_until(|c| c.updates_received > frames_before),
    )
    .await;
    assert!(early.is_err(), "an update was relayed before it was stored");
    assert_eq!(reader.text(), "start ");

    blocker.unblock().await;
    reader.wait_for_text(&expected).await;
    let frames = reader.updates_received - frames_before;
    assert!(
        frames <= 5,
        "{UPDATES} updates stored by about two commits came in {frames} frames"
    );
    stored_becomes(&db.url, &doc, &expected).await;
    app.stop().await;
}

#[actix_web::test]
async fn shutdown_during_an_outage_ends_in_time_and_names_the_documents_it_skipped() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut server =
        crate::helpers::ServerProcess::start(&db.url, &[("TANDEM_SHUTDOWN_TIMEOUT", "1s")]).await;
    let doc = doc_name("skipped");
    let mut editor = crate::helpers::YClient::connect(&server.ws_base(), &doc).await;
    editor.append("stored").await;
    editor.recv_echo().await;
    let blocker = Blocker::block(&db, Backend::Sqlite).await;
    editor.append(" held").await;
    editor.recv_echo().await;

    let stopping = std::time::Instant::now();
    server.signal(nix::sys::signal::Signal::SIGTERM);
    let skipped = server
        .log_line(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("skipped at shutdown"))
        })
        .await;
    let line = skipped.to_string();
    assert!(line.contains(&doc), "{line}");
    assert!(line.contains("the store is failing"), "{line}");
    assert_eq!(server.wait().await, Some(0));
    assert!(
        stopping.elapsed() < Duration::from_secs(12),
        "shutdown took {:?}",
        stopping.elapsed()
    );
    blocker.unblock().await;
    assert_eq!(stored_text(&db.url, &doc).await.0, "stored");
}
