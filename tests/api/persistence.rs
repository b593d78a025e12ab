//! What is stored stays stored: restarts, compaction, failed loads, `kill -9` and SIGTERM.

use std::time::Duration;

use nix::sys::signal::Signal;
use yrs::{ReadTxn, Transact};

use crate::helpers::{
    Backend, ServerProcess, TestApp, TestDb, YClient, doc_name, on_both_stores, stored_text,
};

on_both_stores! {
    async fn content_survives_a_restart(backend: Backend) {
        let db = TestDb::new(backend).await;
        let doc = doc_name("restart");
        let app = TestApp::spawn(db.settings()).await;
        let mut client = app.connect(&doc).await;
        client.append("kept across restarts").await;
        client.recv_until(|c| c.updates_received >= 1).await;
        client.close().await;
        app.stop().await;

        let app = TestApp::spawn(db.settings()).await;
        let client = app.connect(&doc).await;
        assert_eq!(client.text(), "kept across restarts", "{backend:?}");
        app.stop().await;
    }
}

on_both_stores! {
    async fn compaction_keeps_the_content_and_shrinks_the_log(backend: Backend) {
        let db = TestDb::new(backend).await;
        let mut settings = db.settings();
        settings.compact_after_updates = 10;
        let doc = doc_name("compact");
        let app = TestApp::spawn(settings.clone()).await;
        let mut client = app.connect(&doc).await;
        for i in 0..95 {
            client.append(&format!("{i} ")).await;
        }
        client.recv_echo().await;
        let expected = client.text();

        let (stored, log_len) = stored_text(&db.url, &doc).await;
        assert_eq!(stored, expected, "{backend:?}");
        assert!(
            log_len < 95,
            "{backend:?}: log not compacted ({log_len} rows)"
        );
        assert!(log_len <= 20, "{backend:?}: log holds {log_len} rows");
        app.stop().await;

        // Shutdown compacts what is left; the content is the same after a restart.
        let (stored, log_len) = stored_text(&db.url, &doc).await;
        assert_eq!(stored, expected, "{backend:?}");
        assert_eq!(log_len, 0, "{backend:?}");
        let app = TestApp::spawn(settings).await;
        assert_eq!(app.connect(&doc).await.text(), expected, "{backend:?}");
        app.stop().await;
    }
}

#[actix_web::test]
async fn a_document_that_fails_to_load_closes_with_1011_and_writes_nothing() {
    let db = TestDb::new(Backend::Sqlite).await;
    let doc = doc_name("corrupt");
    let app = TestApp::spawn(db.settings()).await;
    let mut client = app.connect(&doc).await;
    client.append("stored before the damage").await;
    client.recv_until(|c| c.updates_received >= 1).await;
    client.close().await;
    app.stop().await;

    // Damage the stored log so the document cannot be rebuilt.
    let pool = sqlx::SqlitePool::connect(&db.url).await.expect("open db");
    sqlx::query("INSERT INTO updates (doc_id, data) VALUES ($1, $2)")
        .bind(&doc)
        .bind(&[0xffu8, 0xff, 0xff][..])
        .execute(&pool)
        .await
        .expect("insert damage");
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM updates WHERE doc_id = $1")
            .bind(&doc)
            .fetch_one(&pool)
            .await
            .expect("count")
    };
    let snapshot = || async {
        sqlx::query_scalar::<_, Vec<u8>>("SELECT state FROM snapshots WHERE doc_id = $1")
            .bind(&doc)
            .fetch_optional(&pool)
            .await
            .expect("snapshot query")
    };
    let (rows_before, snapshot_before) = (count().await, snapshot().await);

    let app = TestApp::spawn(db.settings()).await;
    let mut client = YClient::open(&app.ws_base(), &doc, yrs::Doc::new()).await;
    let (code, reason) = client.expect_close().await;
    assert_eq!(code, 1011, "{reason}");
    app.stop().await;

    assert_eq!(count().await, rows_before, "log rows changed");
    assert_eq!(
        snapshot().await,
        snapshot_before,
        "the snapshot was written over"
    );
}

on_both_stores! {
    async fn after_kill_9_every_update_a_reader_saw_is_stored(backend: Backend) {
        let db = TestDb::new(backend).await;
        let doc = doc_name("kill9");
        let server = ServerProcess::start(&db.url, &[]).await;
        let mut writer = YClient::connect(&server.ws_base(), &doc).await;
        let mut reader = YClient::connect(&server.ws_base(), &doc).await;
        let writer_id = yrs::ClientID::new(writer.client_id());

        // The writer keeps sending while the reader counts what it is given.
        let sending = async {
            for i in 0.. {
                writer.append(&format!("{i};")).await;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        };
        // At least 100 updates (each adds two or more characters) have reached the reader.
        let reading = reader.recv_until(|c| c.relayed.get(&writer_id) >= 200);
        tokio::select! {
            () = sending => unreachable!("the writer never stops"),
            () = reading => {}
        }
        server.signal(Signal::SIGKILL);
        let _ = server.wait().await;
        let seen_text = reader.text();
        let seen_clock = reader.doc.transact().state_vector().get(&writer_id);

        let server = ServerProcess::start(&db.url, &[]).await;
        let after = YClient::connect(&server.ws_base(), &doc).await;
        let stored_clock = after.doc.transact().state_vector().get(&writer_id);
        assert!(
            stored_clock >= seen_clock,
            "{backend:?}: reader saw clock {seen_clock}, store has {stored_clock}"
        );
        assert!(
            after.text().starts_with(&seen_text),
            "{backend:?}: stored text lost what the reader saw"
        );
        server.signal(Signal::SIGTERM);
        assert_eq!(server.wait().await, Some(0));
    }
}

on_both_stores! {
    async fn updates_pending_at_sigterm_are_stored(backend: Backend) {
        let db = TestDb::new(backend).await;
        let doc = doc_name("sigterm");
        // Create the schema, then hold the store's write lock so updates stay pending.
        let server = ServerProcess::start(&db.url, &[]).await;
        let lock = WriteLock::take(backend, &db.url).await;

        let mut client = YClient::connect(&server.ws_base(), &doc).await;
        let client_id = client.client_id();
        for i in 0..50 {
            client.append(&format!("pending-{i} ")).await;
        }
        // Presence is relayed without waiting for the store and is handled after the updates:
        // its echo proves the server holds all 50 updates in memory.
        client.set_awareness(r#"{"user":{"name":"probe"}}"#).await;
        client
            .recv_until(|c| c.awareness.contains_key(&client_id))
            .await;
        assert_eq!(
            client.updates_received, 0,
            "{backend:?}: relayed before durable"
        );

        server.signal(Signal::SIGTERM);
        let (code, _) = client.expect_close().await;
        assert_eq!(code, 1001, "{backend:?}");
        // Let the writer through only now; shutdown must wait for it.
        tokio::time::sleep(Duration::from_millis(300)).await;
        lock.release().await;
        assert_eq!(server.wait().await, Some(0), "{backend:?}");

        let (stored, log_len) = stored_text(&db.url, &doc).await;
        assert_eq!(stored, client.text(), "{backend:?}");
        assert_eq!(log_len, 0, "{backend:?}: shutdown compacts");
    }
}

on_both_stores! {
    async fn updates_committed_together_are_stored_merged_and_load_back_whole(backend: Backend) {
        let db = TestDb::new(backend).await;
        let doc = doc_name("merged");
        let server = ServerProcess::start(&db.url, &[]).await;
        let mut first = YClient::connect(&server.ws_base(), &doc).await;
        let mut second = YClient::connect(&server.ws_base(), &doc).await;
        let (first_id, second_id) = (first.client_id(), second.client_id());

        // With the log locked, both clients' updates queue up for the same commit.
        let lock = WriteLock::take(backend, &db.url).await;
        for i in 0..40 {
            first.append(&format!("a{i} ")).await;
            second.append(&format!("b{i} ")).await;
        }
        // Each session's presence is handled after its updates: both echoes prove the server
        // holds all 80.
        first.set_awareness(r#"{"user":{"name":"first"}}"#).await;
        second.set_awareness(r#"{"user":{"name":"second"}}"#).await;
        first
            .recv_until(|c| c.awareness.contains_key(&first_id))
            .await;
        second
            .recv_until(|c| c.awareness.contains_key(&second_id))
            .await;
        lock.release().await;

        let (first_cid, second_cid) = (yrs::ClientID::new(first_id), yrs::ClientID::new(second_id));
        let first_clock = first.doc.transact().state_vector().get(&first_cid);
        let second_clock = second.doc.transact().state_vector().get(&second_cid);
        first
            .recv_until(|c| c.relayed.get(&second_cid) >= second_clock)
            .await;
        second
            .recv_until(|c| c.relayed.get(&first_cid) >= first_clock)
            .await;
        assert_eq!(first.text(), second.text(), "{backend:?}");

        // No shutdown compaction: what loads back is the log as the commits wrote it.
        server.signal(Signal::SIGKILL);
        let _ = server.wait().await;
        let (stored, log_len) = stored_text(&db.url, &doc).await;
        assert_eq!(stored, first.text(), "{backend:?}");
        assert!(
            log_len <= 4,
            "{backend:?}: 80 updates committed together took {log_len} log rows"
        );
        let server = ServerProcess::start(&db.url, &[]).await;
        let after = YClient::connect(&server.ws_base(), &doc).await;
        assert_eq!(after.text(), first.text(), "{backend:?}");
        server.signal(Signal::SIGTERM);
        assert_eq!(server.wait().await, Some(0), "{backend:?}");
    }
}

/// Holds the database's write lock from outside the server.
enum WriteLock {
    Sqlite(sqlx::pool::PoolConnection<sqlx::Sqlite>),
    Postgres(sqlx::pool::PoolConnection<sqlx::Postgres>),
}

impl WriteLock {
    async fn take(backend: Backend, url: &str) -> WriteLock {
        match backend {
            Backend::Sqlite => {
                let pool = sqlx::SqlitePool::connect(url).await.expect("open sqlite");
                let mut conn = pool.acquire().await.expect("connection");
                sqlx::query("BEGIN IMMEDIATE")
                    .execute(&mut *conn)
                    .await
                    .expect("take the write lock");
                WriteLock::Sqlite(conn)
            }
            Backend::Postgres => {
                let pool = sqlx::PgPool::connect(url).await.expect("open postgres");
                let mut conn = pool.acquire().await.expect("connection");
                sqlx::query("BEGIN")
                    .execute(&mut *conn)
                    .await
                    .expect("begin");
                sqlx::query("LOCK TABLE updates IN EXCLUSIVE MODE")
                    .execute(&mut *conn)
                    .await
                    .expect("lock the log");
                WriteLock::Postgres(conn)
            }
        }
    }

    async fn release(self) {
        match self {
            WriteLock::Sqlite(mut conn) => {
                sqlx::query("ROLLBACK")
                    .execute(&mut *conn)
                    .await
                    .expect("release");
            }
            WriteLock::Postgres(mut conn) => {
                sqlx::query("ROLLBACK")
                    .execute(&mut *conn)
                    .await
                    .expect("release");
            }
        }
    }
}

/// Snapshot bytes the store does not interpret: distinct per seed, with no repeating pattern
/// that a swapped or shifted part could match.
fn snapshot_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Runs one statement with the document's name as `$1` straight on the test database; returns
/// the first column of its first row (a `SELECT`) or the number of rows it changed.
async fn direct_sql(backend: Backend, db_url: &str, sql: &'static str, doc: &str) -> i64 {
    macro_rules! run {
        ($pool:expr) => {{
            let pool = $pool.expect("open db");
            let result = if sql.starts_with("SELECT") {
                let query = sqlx::query_scalar::<_, i64>(sql).bind(doc);
                query.fetch_one(&pool).await.expect("query")
            } else {
                let done = sqlx::query(sql).bind(doc).execute(&pool).await;
                done.expect("statement").rows_affected() as i64
            };
            pool.close().await;
            result
        }};
    }
    match backend {
        Backend::Sqlite => run!(sqlx::SqlitePool::connect(db_url).await),
        Backend::Postgres => run!(sqlx::PgPool::connect(db_url).await),
    }
}

const COUNT_PARTS_SQL: &str = "SELECT COUNT(*) FROM snapshot_parts WHERE doc_id = $1";

on_both_stores! {
    /// A snapshot of several hundred KiB (written in parts, a transaction each) reads back byte for
    /// byte, and so does each one that replaces it, large or small. The summary counts its size, and
    /// the parts of replaced snapshots, or of a compaction cut short, do not stay behind.
    async fn a_large_snapshot_reads_back_whole_and_its_replacements_leave_nothing_behind(backend: Backend) {
        use tandem::store::{Append, Compaction};

        let db = TestDb::new(backend).await;
        let store = tandem::store::connect(&db.url).await.expect("store opens");
        let name = doc_name("large-snapshot");
        let doc = tandem::domain::DocId::parse(&name).expect("valid name");
        store.create(&doc).await.expect("document created");
        for (round, len) in [(1, 300_001), (2, 131_072), (3, 2_000), (4, 200_000)] {
            let committed = store
                .append(
                    &[Append {
                        doc: doc.clone(),
                        data: bytes::Bytes::from(vec![round as u8; 10]),
                    }],
                    &Default::default(),
                )
                .await
                .expect("append");
            if round == 4 {
                // A compaction cut short leaves parts that no snapshot names.
                let inserted = direct_sql(
                    backend,
                    &db.url,
                    "INSERT INTO snapshot_parts (doc_id, gen, part, data) \
                     SELECT doc_id, 90, 0, data FROM updates WHERE doc_id = $1",
                    &name,
                )
                .await;
                assert_eq!(inserted, 1, "{backend:?}");
            }
            let snapshot = snapshot_bytes(len, round);
            store
                .compact(&[Compaction {
                    doc: doc.clone(),
                    snapshot: snapshot.clone(),
                    covers_log_id: committed.ids[0],
                }])
                .await
                .expect("compact");

            let stored = store.load(&doc).await.expect("load");
            assert!(
                stored.snapshot.as_ref() == Some(&snapshot),
                "{backend:?} round {round}: the snapshot read back differs ({:?} bytes of {len})",
                stored.snapshot.as_ref().map(Vec::len)
            );
            assert!(stored.updates.is_empty(), "{backend:?}: covered rows left");
            assert_eq!(stored.max_log_id, committed.ids[0], "{backend:?}");
            let summary = store.get(&doc).await.expect("get").expect("exists");
            assert_eq!(summary.size, len as i64, "{backend:?} round {round}");
            let parts = if len > 64 << 10 {
                len.div_ceil(64 << 10)
            } else {
                0
            };
            assert_eq!(
                direct_sql(backend, &db.url, COUNT_PARTS_SQL, &name).await,
                parts as i64,
                "{backend:?} round {round}: parts stored"
            );
        }

        assert!(store.delete(&doc).await.expect("delete"), "{backend:?}");
        assert!(store.get(&doc).await.expect("get").is_none(), "{backend:?}");
        assert_eq!(
            direct_sql(backend, &db.url, COUNT_PARTS_SQL, &name).await,
            0,
            "{backend:?}: parts outlived the document"
        );
        store.close().await;
    }
}

on_both_stores! {
    /// A snapshot stored in parts with one part missing fails to load: it is never read as a
    /// shorter state.
    async fn a_snapshot_missing_a_part_fails_to_load(backend: Backend) {
        use tandem::store::Compaction;

        let db = TestDb::new(backend).await;
        let store = tandem::store::connect(&db.url).await.expect("store opens");
        let name = doc_name("missing-part");
        let doc = tandem::domain::DocId::parse(&name).expect("valid name");
        store.create(&doc).await.expect("document created");
        store
            .compact(&[Compaction {
                doc: doc.clone(),
                snapshot: snapshot_bytes(200_000, 9),
                covers_log_id: 0,
            }])
            .await
            .expect("compact");
        assert!(store.load(&doc).await.is_ok(), "{backend:?}");

        let dropped = direct_sql(
            backend,
            &db.url,
            "DELETE FROM snapshot_parts WHERE doc_id = $1 AND part = 1",
            &name,
        )
        .await;
        assert_eq!(dropped, 1, "{backend:?}");
        let error = store
            .load(&doc)
            .await
            .expect_err("a partial snapshot must not load");
        assert!(error.to_string().contains("parts"), "{backend:?}: {error}");
        store.close().await;
    }
}
