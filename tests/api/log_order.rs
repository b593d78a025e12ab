//! The order of a document's log on Postgres, where several nodes append to one database: a
//! document's positions are 1, 2, 3, … with no gaps, and they grow in commit order, so that
//! whoever sees position n committed sees every position before it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tandem::domain::DocId;
use tandem::store::{Append, CreatedEvents, Store};

use crate::helpers::{Backend, TestDb, postgres_configured};

const DOCS: [&str; 3] = ["shared-a", "shared-b", "shared-c"];

/// One writer's appends: `batches` commits of one to three appends, to the shared documents in
/// an order of its own (forwards for even writers, backwards for odd ones), each append's data
/// naming the writer, the batch and the append. Returns what each position was given.
async fn write(store: Arc<dyn Store>, writer: usize, batches: usize) -> Vec<(DocId, i64, Vec<u8>)> {
    let mut given = Vec::new();
    for batch in 0..batches {
        let count = 1 + (writer + batch) % 3;
        let appends: Vec<Append> = (0..count)
            .map(|k| {
                let index = if writer.is_multiple_of(2) { k } else { 2 - k };
                let doc = DocId::parse(DOCS[(index + batch) % DOCS.len()]).expect("a valid id");
                let data = format!("writer {writer} batch {batch} append {k}").into_bytes();
                Append {
                    doc,
                    data: data.into(),
                }
            })
            .collect();
        let committed = store
            .append(&appends, &CreatedEvents::default())
            .await
            .expect("the append commits");
        assert_eq!(committed.ids.len(), appends.len());
        for (append, id) in appends.iter().zip(&committed.ids) {
            given.push((append.doc.clone(), *id, append.data.to_vec()));
        }
    }
    given
}

#[actix_web::test]
async fn concurrent_writers_on_two_pools_take_contiguous_positions_in_commit_order() {
    if !postgres_configured() {
        return;
    }
    let db = TestDb::new(Backend::Postgres).await;
    // Two pools, as two nodes on one database would have.
    let nodes: Vec<Arc<dyn Store>> = vec![
        tandem::store::connect(&db.url).await.expect("node 0"),
        tandem::store::connect(&db.url).await.expect("node 1"),
    ];
    let watcher = sqlx::PgPool::connect(&db.url).await.expect("watcher");

    // While they write, every look at the log sees a prefix with no gap: a document's highest
    // committed position is its number of rows.
    let writing = Arc::new(AtomicBool::new(true));
    let watching = tokio::spawn({
        let (writing, watcher) = (writing.clone(), watcher.clone());
        async move {
            let mut looks = 0u64;
            while writing.load(Ordering::SeqCst) {
                let rows: Vec<(String, i64, i64)> =
                    sqlx::query_as("SELECT doc_id, MAX(id), COUNT(*) FROM updates GROUP BY doc_id")
                        .fetch_all(&watcher)
                        .await
                        .expect("a look at the log");
                for (doc, max, count) in rows {
                    assert_eq!(
                        max, count,
                        "{doc}: position {max} committed with {count} rows"
                    );
                }
                looks += 1;
            }
            looks
        }
    });
    let writers: Vec<_> = (0..8)
        .map(|writer| tokio::spawn(write(nodes[writer % 2].clone(), writer, 40)))
        .collect();
    let mut given = Vec::new();
    for writer in writers {
        given.extend(writer.await.expect("a writer"));
    }
    writing.store(false, Ordering::SeqCst);
    let looks = watching.await.expect("the watcher");
    assert!(looks > 0);

    // Every position was given once, to exactly the data stored there, and the document's
    // `log_seq` is its last.
    let mut per_doc: HashMap<DocId, Vec<i64>> = HashMap::new();
    for (doc, id, data) in &given {
        let stored: Vec<u8> =
            sqlx::query_scalar("SELECT data FROM updates WHERE doc_id = $1 AND id = $2")
                .bind(doc.as_str())
                .bind(id)
                .fetch_one(&watcher)
                .await
                .expect("the row at the position given");
        assert_eq!(&stored, data, "{doc} at {id}");
        per_doc.entry(doc.clone()).or_default().push(*id);
    }
    for (doc, mut ids) in per_doc {
        ids.sort_unstable();
        let expected: Vec<i64> = (1..=ids.len() as i64).collect();
        assert_eq!(ids, expected, "{doc}");
        let log_seq: i64 = sqlx::query_scalar("SELECT log_seq FROM documents WHERE id = $1")
            .bind(doc.as_str())
            .fetch_one(&watcher)
            .await
            .expect("the document");
        assert_eq!(log_seq, ids.len() as i64, "{doc}");
        let stored = nodes[0].load(&doc).await.expect("loads");
        assert_eq!(stored.max_log_id, log_seq);
        assert_eq!(stored.updates.len() as i64, log_seq);
    }
}

#[actix_web::test]
async fn an_existing_log_is_renumbered_by_document_and_loads_the_same() {
    if !postgres_configured() {
        return;
    }
    let db = TestDb::new(Backend::Postgres).await;
    let pool = sqlx::PgPool::connect(&db.url).await.expect("pool");
    // The schema as it was before positions: every migration up to 0009.
    let mut before = sqlx::migrate::Migrator::new(std::path::Path::new("migrations/postgres"))
        .await
        .expect("the migrations");
    let all = before.migrations.len();
    let earlier: Vec<_> = before
        .migrations
        .iter()
        .filter(|m| m.version < 10)
        .cloned()
        .collect();
    assert!(earlier.len() < all, "0010 is among the migrations");
    before.migrations = earlier.into();
    before.run(&pool).await.expect("migrates to 0009");

    // Two documents' rows interleaved under global ids; `b` has a snapshot covering its first
    // row.
    for doc in ["a", "b"] {
        sqlx::query("INSERT INTO documents (id, created_at, updated_at) VALUES ($1, 0, 0)")
            .bind(doc)
            .execute(&pool)
            .await
            .expect("a document");
    }
    for (doc, data) in [
        ("a", "a1"),
        ("b", "b1"),
        ("a", "a2"),
        ("b", "b2"),
        ("a", "a3"),
    ] {
        sqlx::query("INSERT INTO updates (doc_id, data) VALUES ($1, $2)")
            .bind(doc)
            .bind(data.as_bytes())
            .execute(&pool)
            .await
            .expect("a row");
    }
    sqlx::query("INSERT INTO snapshots (doc_id, state, log_id) VALUES ('b', 'snap', 2)")
        .execute(&pool)
        .await
        .expect("a snapshot");
    pool.close().await;

    // Starting Tandem runs 0010.
    let store = tandem::store::connect(&db.url).await.expect("migrates");
    let a = store
        .load(&DocId::parse("a").expect("id"))
        .await
        .expect("a");
    assert_eq!(
        a.updates,
        vec![b"a1".to_vec(), b"a2".to_vec(), b"a3".to_vec()]
    );
    assert_eq!(a.max_log_id, 3);
    let b = store
        .load(&DocId::parse("b").expect("id"))
        .await
        .expect("b");
    assert_eq!(b.snapshot.as_deref(), Some(&b"snap"[..]));
    assert_eq!(b.updates, vec![b"b2".to_vec()]);
    assert_eq!(b.max_log_id, 1);
    // And the next append takes the next position.
    let committed = store
        .append(
            &[Append {
                doc: DocId::parse("a").expect("id"),
                data: b"a4".to_vec().into(),
            }],
            &CreatedEvents::default(),
        )
        .await
        .expect("appends");
    assert_eq!(committed.ids, vec![4]);
}

#[actix_web::test]
async fn two_nodes_compacting_one_document_at_once_never_mix_their_snapshots() {
    if !postgres_configured() {
        return;
    }
    let db = TestDb::new(Backend::Postgres).await;
    let nodes: Vec<Arc<dyn Store>> = vec![
        tandem::store::connect(&db.url).await.expect("node 0"),
        tandem::store::connect(&db.url).await.expect("node 1"),
    ];
    let doc = DocId::parse("compacted-twice").expect("a valid id");
    nodes[0]
        .append(
            &[Append {
                doc: doc.clone(),
                data: b"row".to_vec().into(),
            }],
            &CreatedEvents::default(),
        )
        .await
        .expect("the document exists");
    // Two snapshots of several parts each, different in every byte, written at the same time
    // again and again: what is stored afterwards is one of them, whole.
    let snapshots = [vec![b'a'; 300 * 1024], vec![b'b'; 300 * 1024]];
    for round in 0..10 {
        let compact = |node: usize| {
            let (store, doc) = (nodes[node].clone(), doc.clone());
            let snapshot = snapshots[node].clone();
            async move {
                store
                    .compact(&[tandem::store::Compaction {
                        doc,
                        snapshot,
                        covers_log_id: round + 1,
                    }])
                    .await
            }
        };
        let (first, second) = tokio::join!(compact(0), compact(1));
        first.expect("node 0 compacts or skips");
        second.expect("node 1 compacts or skips");
        let stored = nodes[0].load(&doc).await.expect("the document loads");
        let state = stored.snapshot.expect("a snapshot");
        assert!(
            state == snapshots[0] || state == snapshots[1],
            "round {round}: a snapshot of {} bytes mixing both",
            state.len()
        );
    }
}
