//! Postgres backend: the production store.
//!
//! Durability relies on Postgres' default `synchronous_commit = on`. A batch's appends go in as
//! one multi-row `INSERT … SELECT FROM UNNEST(…)`, so a commit costs a few round trips however
//! many updates it carries.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Row};

use super::parts;
use super::{
    Append, Committed, Compaction, CreatedEvents, DocSummary, PendingDelivery, StoreError,
    StoredDoc, VersionSummary, delivery_from_row, now_ms, summary_from_row, version_from_row,
};
use crate::domain::DocId;

/// Pool size: one writer plus concurrent document loads and health checks.
const MAX_CONNECTIONS: u32 = 10;
/// How long a caller waits for a free connection before the operation fails.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// A document (`d`) with its times and stored size: its snapshot (`s`), inline or in parts, plus
/// the log rows after it.
macro_rules! summary_sql {
    () => {
        "SELECT d.id, d.created_at, d.updated_at, \
         (COALESCE(octet_length(s.state), 0) + COALESCE((SELECT SUM(octet_length(p.data)) \
          FROM snapshot_parts p WHERE p.doc_id = d.id AND p.gen = s.gen), 0) \
         + COALESCE((SELECT SUM(octet_length(u.data)) FROM updates u \
          WHERE u.doc_id = d.id AND u.id > COALESCE(s.log_id, 0)), 0))::BIGINT \
         FROM documents d LEFT JOIN snapshots s ON s.doc_id = d.id"
    };
}

/// Documents in id order with their stored size.
const LIST_SQL: &str = concat!(summary_sql!(), " WHERE d.id > $1 ORDER BY d.id LIMIT $2");

/// One document with its stored size.
const GET_SQL: &str = concat!(summary_sql!(), " WHERE d.id = $1");

/// A store in a Postgres database.
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects and migrates.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect(url)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(Self { pool })
    }
}

#[async_trait]
impl super::Store for PostgresStore {
    #[tracing::instrument(skip(self), fields(doc = %doc))]
    async fn load(&self, doc: &DocId) -> Result<StoredDoc, StoreError> {
        // REPEATABLE READ so the snapshot and the log are seen at the same instant.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
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
        let mut committed = Committed::default();
        if appends.is_empty() {
            return Ok(committed);
        }
        let docs: Vec<&str> = appends.iter().map(|a| a.doc.as_str()).collect();
        let data: Vec<&[u8]> = appends.iter().map(|a| a.data.as_ref()).collect();
        let mut distinct = docs.clone();
        distinct.sort_unstable();
        distinct.dedup();
        // One statement, which is its own transaction: the commit costs one round trip, the
        // events of the documents it creates included.
        let row = sqlx::query(APPEND_SQL)
            .bind(&docs)
            .bind(&data)
            .bind(&distinct)
            .bind(now_ms())
            .bind(&created.receivers)
            .bind(&created.event)
            .bind(&created.body_before)
            .bind(&created.body_after)
            .fetch_one(&self.pool)
            .await?;
        let mut ids: Vec<i64> = row.try_get::<Option<Vec<i64>>, _>(0)?.unwrap_or_default();
        // The rows were inserted in array order from one statement and the sequence hands out
        // increasing ids, so sorted ids line up with the appends.
        ids.sort_unstable();
        committed.record(appends, ids)?;
        let created: Option<Vec<String>> = row.try_get(1)?;
        committed.created = created
            .unwrap_or_default()
            .iter()
            .filter_map(|id| DocId::parse(id).ok())
            .collect();
        Ok(committed)
    }

    #[tracing::instrument(skip_all, fields(compactions = compactions.len()))]
    async fn compact(&self, compactions: &[Compaction]) -> Result<(), StoreError> {
        parts::compact_in_parts!(self, compactions, ())
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
             RETURNING id, name, kind, created_at, octet_length(state)::BIGINT",
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
            "SELECT id, name, kind, created_at, octet_length(state)::BIGINT FROM versions \
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
            "SELECT id, name, kind, created_at, octet_length(state)::BIGINT, state FROM versions \
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

/// Appends, touches the documents and queues the events of those it creates, in one statement
/// (data-modifying CTEs run exactly once, whether or not the outer query reads them). `$1`/`$2`:
/// each append's document and data; `$3`: the distinct documents; `$4`: now; `$5`: the event
/// receivers; `$6`: the event name; `$7`/`$8`: the event body around the document's id as a
/// JSON string (see `CreatedEvents`). Answers the new log ids, and the documents this statement
/// created (`xmax = 0` tells inserted rows from updated ones).
const APPEND_SQL: &str = "WITH appended AS ( \
        INSERT INTO updates (doc_id, data) \
        SELECT * FROM UNNEST($1::text[], $2::bytea[]) RETURNING id), \
     touched AS ( \
        INSERT INTO documents (id, created_at, updated_at) \
        SELECT d, $4, $4 FROM UNNEST($3::text[]) AS d \
        ON CONFLICT (id) DO UPDATE SET updated_at = excluded.updated_at \
        RETURNING id, (xmax = 0) AS inserted), \
     outbox AS ( \
        INSERT INTO webhook_deliveries (url, event, body, next_attempt_at, created_at) \
        SELECT r, $6::text, $7::text || to_json(t.id)::text || $8::text, $4, $4 \
        FROM touched t CROSS JOIN UNNEST($5::text[]) AS r WHERE t.inserted) \
     SELECT (SELECT array_agg(id) FROM appended), \
            (SELECT array_agg(id) FROM touched WHERE inserted)";
