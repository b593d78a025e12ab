//! SQLite backend: the embedded default.
//!
//! WAL journal with `synchronous=FULL`: a commit survives a killed process and a power cut. The
//! fsync per commit is affordable because the persistence writer groups many updates into one
//! transaction.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use super::parts;
use super::{
    Append, Committed, Compaction, CreatedEvents, DocSummary, PendingDelivery, StoreError,
    StoredDoc, VersionSummary, delivery_from_row, now_ms, summary_from_row, version_from_row,
};
use crate::domain::DocId;

/// How long a connection waits for a lock held by another before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Log rows appended by one INSERT (two bound values each, far below SQLite's limit).
const APPEND_ROWS_PER_STATEMENT: usize = 256;
/// Readers (document loads) run concurrently with the single writer under WAL.
const MAX_CONNECTIONS: u32 = 8;

/// A document (`d`) with its times and stored size: its snapshot (`s`), inline or in parts, plus
/// the log rows after it.
macro_rules! summary_sql {
    () => {
        "SELECT d.id, d.created_at, d.updated_at, \
         COALESCE(LENGTH(s.state), 0) + COALESCE((SELECT SUM(LENGTH(p.data)) \
          FROM snapshot_parts p WHERE p.doc_id = d.id AND p.gen = s.gen), 0) \
         + COALESCE((SELECT SUM(LENGTH(u.data)) FROM updates u \
          WHERE u.doc_id = d.id AND u.id > COALESCE(s.log_id, 0)), 0) \
         FROM documents d LEFT JOIN snapshots s ON s.doc_id = d.id"
    };
}

/// Documents in id order with their stored size.
const LIST_SQL: &str = concat!(summary_sql!(), " WHERE d.id > $1 ORDER BY d.id LIMIT $2");

/// One document with its stored size.
const GET_SQL: &str = concat!(summary_sql!(), " WHERE d.id = $1");

/// A store in one SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// Held by appends and compactions while they write. SQLite takes one writer at a time, and
    /// one waiting on another's lock sleeps in steps of milliseconds: they queue here instead.
    write_gate: Arc<tokio::sync::Mutex<()>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and its directory, and migrates it.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT);
        if let Some(dir) = options.get_filename().parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).with_context(|| {
                format!("Failed to create the database directory {}", dir.display())
            })?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(Self {
            pool,
            write_gate: Arc::default(),
        })
    }
}

#[async_trait]
impl super::Store for SqliteStore {
    #[tracing::instrument(skip(self), fields(doc = %doc))]
    async fn load(&self, doc: &DocId) -> Result<StoredDoc, StoreError> {
        // One read transaction so the snapshot and the log are seen at the same instant.
        let mut tx = self.pool.begin().await?;
        let (snapshot, snapshot_log_id) = parts::read_snapshot!(tx, doc);
        let rows =
            sqlx::query("SELECT id, data FROM updates WHERE doc_id = $1 AND id > $2 ORDER BY id")
                .bind(doc.as_str())
                .bind(snapshot_log_id)
                .fetch_all(&mut *tx)
                .await?;
        tx.commit().await?;
        let mut stored = StoredDoc {
            snapshot,
            updates: Vec::with_capacity(rows.len()),
            max_log_id: snapshot_log_id,
        };
        for row in rows {
            stored.max_log_id = stored.max_log_id.max(row.try_get::<i64, _>(0)?);
            stored.updates.push(row.try_get::<Vec<u8>, _>(1)?);
        }
        Ok(stored)
    }

    #[tracing::instrument(skip_all, fields(appends = appends.len()))]
    async fn append(
        &self,
        appends: &[Append],
        created: &CreatedEvents,
    ) -> Result<Committed, StoreError> {
        let now = now_ms();
        let mut committed = Committed::default();
        if appends.is_empty() {
            return Ok(committed);
        }
        let mut ids = Vec::with_capacity(appends.len());
        let _writing = self.write_gate.lock().await;
        let mut tx = self.pool.begin().await?;
        let mut touched = std::collections::HashSet::new();
        for append in appends {
            if touched.insert(&append.doc) && touch_document(&mut tx, &append.doc, now).await? {
                committed.created.push(append.doc.clone());
            }
        }
        // The outbox: events of the documents created here commit with them, or not at all.
        for doc in &committed.created {
            let body = created.body(doc);
            for url in &created.receivers {
                sqlx::query(super::ENQUEUE_DELIVERY_SQL)
                    .bind(url)
                    .bind(&created.event)
                    .bind(&body)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        // Many rows per statement: each statement is a round trip to SQLite's worker thread.
        for chunk in appends.chunks(APPEND_ROWS_PER_STATEMENT) {
            let mut insert =
                sqlx::QueryBuilder::<sqlx::Sqlite>::new("INSERT INTO updates (doc_id, data) ");
            insert.push_values(chunk, |mut row, append| {
                row.push_bind(append.doc.as_str())
                    .push_bind(append.data.as_ref());
            });
            insert.push(" RETURNING id");
            let mut chunk_ids = insert
                .build()
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|row| row.try_get::<i64, _>(0))
                .collect::<Result<Vec<_>, _>>()?;
            // One statement inserts its rows in VALUES order with increasing ids (the order of
            // RETURNING rows is not defined): sorted ids line up with the chunk.
            chunk_ids.sort_unstable();
            ids.extend(chunk_ids);
        }
        committed.record(appends, ids)?;
        tx.commit().await?;
        Ok(committed)
    }

    #[tracing::instrument(skip_all, fields(compactions = compactions.len()))]
    async fn compact(&self, compactions: &[Compaction]) -> Result<(), StoreError> {
        parts::compact_in_parts!(self, compactions, self.write_gate.lock().await)
    }

    async fn list(&self, after: Option<&DocId>, limit: i64) -> Result<Vec<DocSummary>, StoreError> {
        let rows = sqlx::query(LIST_SQL)
            .bind(after.map_or("", DocId::as_str))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(summary_from_row).collect()
    }

    async fn get(&self, doc: &DocId) -> Result<Option<DocSummary>, StoreError> {
        let row = sqlx::query(GET_SQL)
            .bind(doc.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(summary_from_row).transpose()
    }

    #[tracing::instrument(skip(self), fields(doc = %doc))]
    async fn create(&self, doc: &DocId) -> Result<DocSummary, StoreError> {
        let now = now_ms();
        let created = sqlx::query(super::CREATE_SQL)
            .bind(doc.as_str())
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
        match created {
            Some(_) => Ok(DocSummary {
                id: doc.clone(),
                created_at: now,
                updated_at: now,
                size: 0,
            }),
            None => Err(StoreError::AlreadyExists),
        }
    }

    #[tracing::instrument(skip(self, update), fields(doc = %doc, bytes = update.len()))]
    async fn create_with_update(
        &self,
        doc: &DocId,
        update: &[u8],
    ) -> Result<(DocSummary, i64), StoreError> {
        let now = now_ms();
        // Appends and compactions queue on the gate; so does this, rather than wait on their
        // lock in SQLite's sleeps.
        let _writing = self.write_gate.lock().await;
        let mut tx = self.pool.begin().await?;
        let created = sqlx::query(super::CREATE_SQL)
            .bind(doc.as_str())
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
        if created.is_none() {
            // Dropping the transaction rolls it back: nothing was written.
            return Err(StoreError::AlreadyExists);
        }
        let log_id: i64 = sqlx::query_scalar(super::APPEND_ONE_SQL)
            .bind(doc.as_str())
            .bind(update)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        let summary = DocSummary {
            id: doc.clone(),
            created_at: now,
            updated_at: now,
            size: i64::try_from(update.len()).unwrap_or(i64::MAX),
        };
        Ok((summary, log_id))
    }

    #[tracing::instrument(skip(self), fields(doc = %doc))]
    async fn delete(&self, doc: &DocId) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query("DELETE FROM updates WHERE doc_id = $1")
            .bind(doc.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM versions WHERE doc_id = $1")
            .bind(doc.as_str())
            .execute(&mut *tx)
            .await?;
        for sql in [
            "DELETE FROM snapshots WHERE doc_id = $1",
            "DELETE FROM snapshot_parts WHERE doc_id = $1",
        ] {
            sqlx::query(sql)
                .bind(doc.as_str())
                .execute(&mut *tx)
                .await?;
        }
        let docs = sqlx::query("DELETE FROM documents WHERE id = $1")
            .bind(doc.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(rows + docs > 0)
    }

    async fn create_version(
        &self,
        doc: &DocId,
        name: Option<&str>,
        kind: &str,
        state: &[u8],
    ) -> Result<VersionSummary, StoreError> {
        let row = sqlx::query(
            "INSERT INTO versions (doc_id, name, kind, created_at, state) \
             VALUES ($1, $2, $3, $4, $5) \
             RETURNING id, name, kind, created_at, LENGTH(state)",
        )
        .bind(doc.as_str())
        .bind(name)
        .bind(kind)
        .bind(now_ms())
        .bind(state)
        .fetch_one(&self.pool)
        .await?;
        version_from_row(&row)
    }

    async fn prune_versions(&self, doc: &DocId, kind: &str, keep: u32) -> Result<u64, StoreError> {
        let pruned = sqlx::query(
            "DELETE FROM versions WHERE doc_id = $1 AND kind = $2 AND id NOT IN \
             (SELECT id FROM versions WHERE doc_id = $1 AND kind = $2 ORDER BY id DESC LIMIT $3)",
        )
        .bind(doc.as_str())
        .bind(kind)
        .bind(i64::from(keep))
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(pruned)
    }

    async fn list_versions(&self, doc: &DocId) -> Result<Vec<VersionSummary>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, kind, created_at, LENGTH(state) FROM versions \
             WHERE doc_id = $1 ORDER BY id DESC",
        )
        .bind(doc.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(version_from_row).collect()
    }

    async fn get_version(
        &self,
        doc: &DocId,
        version: i64,
    ) -> Result<Option<(VersionSummary, Vec<u8>)>, StoreError> {
        let row = sqlx::query(
            "SELECT id, name, kind, created_at, LENGTH(state), state FROM versions \
             WHERE doc_id = $1 AND id = $2",
        )
        .bind(doc.as_str())
        .bind(version)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => Ok(Some((version_from_row(&row)?, row.try_get(5)?))),
            None => Ok(None),
        }
    }

    async fn enqueue_deliveries(
        &self,
        urls: &[String],
        event: &str,
        body: &str,
        max_backlog: Option<u64>,
    ) -> Result<Vec<u64>, StoreError> {
        let now = now_ms();
        let mut dropped = Vec::with_capacity(urls.len());
        let mut tx = self.pool.begin().await?;
        for url in urls {
            sqlx::query(super::ENQUEUE_DELIVERY_SQL)
                .bind(url)
                .bind(event)
                .bind(body)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            let trimmed = match max_backlog {
                Some(max) => sqlx::query(super::TRIM_DELIVERIES_SQL)
                    .bind(url)
                    .bind(i64::try_from(max).unwrap_or(i64::MAX))
                    .execute(&mut *tx)
                    .await?
                    .rows_affected(),
                None => 0,
            };
            dropped.push(trimmed);
        }
        tx.commit().await?;
        Ok(dropped)
    }

    async fn trim_deliveries(&self, url: &str, max_backlog: u64) -> Result<u64, StoreError> {
        Ok(sqlx::query(super::TRIM_DELIVERIES_SQL)
            .bind(url)
            .bind(i64::try_from(max_backlog).unwrap_or(i64::MAX))
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    async fn due_deliveries(
        &self,
        url: &str,
        now: i64,
        limit: i64,
    ) -> Result<Vec<PendingDelivery>, StoreError> {
        let rows = sqlx::query(super::DUE_DELIVERIES_SQL)
            .bind(url)
            .bind(now)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(delivery_from_row).collect()
    }

    async fn delivery_backlogs(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(super::DELIVERY_BACKLOGS_SQL)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect()
    }

    async fn drop_deliveries(&self, url: &str) -> Result<u64, StoreError> {
        Ok(sqlx::query(super::DROP_DELIVERIES_SQL)
            .bind(url)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    async fn finish_delivery(&self, id: i64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM webhook_deliveries WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn retry_delivery(&self, id: i64, attempts: i32, next_at: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE webhook_deliveries SET attempts = $2, next_attempt_at = $3 WHERE id = $1",
        )
        .bind(id)
        .bind(attempts)
        .bind(next_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn log_len(&self, doc: &DocId) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM updates WHERE doc_id = $1")
                .bind(doc.as_str())
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn revoke(&self, doc: &DocId, user: Option<&str>, at_ms: i64) -> Result<(), StoreError> {
        sqlx::query(super::REVOKE_SQL)
            .bind(doc.as_str())
            .bind(user.unwrap_or(""))
            .bind(at_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn revocations_since(
        &self,
        since_ms: i64,
    ) -> Result<Vec<(DocId, Option<String>, i64)>, StoreError> {
        let rows = sqlx::query(super::REVOCATIONS_SQL)
            .bind(since_ms)
            .fetch_all(&self.pool)
            .await?;
        let mut revocations = Vec::with_capacity(rows.len());
        for row in &rows {
            revocations.extend(super::revocation_from_row(row)?);
        }
        Ok(revocations)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

/// Creates the document row on its first write and records the time of the latest change;
/// true when the row was created.
async fn touch_document(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    doc: &DocId,
    now: i64,
) -> Result<bool, StoreError> {
    // The row was just inserted exactly when its creation time is this write's.
    let created_at: i64 = sqlx::query_scalar(
        "INSERT INTO documents (id, created_at, updated_at) VALUES ($1, $2, $2) \
         ON CONFLICT (id) DO UPDATE SET updated_at = excluded.updated_at RETURNING created_at",
    )
    .bind(doc.as_str())
    .bind(now)
    .fetch_one(&mut **tx)
    .await?;
    Ok(created_at == now)
}
