//! Postgres: documents and their log — loading, the one-statement append with its outbox,
//! compaction, listing, creating and deleting.

use std::collections::HashMap;

use sqlx::Row;

use super::PostgresStore;
use crate::domain::DocId;
use crate::store::{
    self, Append, Committed, Compaction, CreatedEvents, DocSummary, LogRow, LogTail, StoreError,
    StoredDoc, now_ms, parts, summary_from_row,
};

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

impl PostgresStore {
    #[tracing::instrument(skip(self), fields(doc = %doc))]
    pub(super) async fn load(&self, doc: &DocId) -> Result<StoredDoc, StoreError> {
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

    pub(super) async fn log_heads(&self, docs: &[DocId]) -> Result<Vec<(DocId, i64)>, StoreError> {
        let ids: Vec<&str> = docs.iter().map(DocId::as_str).collect();
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT id, log_seq FROM documents WHERE id = ANY($1)")
                .bind(&ids)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, head)| DocId::parse(&id).ok().map(|id| (id, head)))
            .collect())
    }

    #[tracing::instrument(skip(self), fields(doc = %doc))]
    pub(super) async fn read_log(&self, doc: &DocId, after: i64) -> Result<LogTail, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let covers: Option<i64> =
            sqlx::query_scalar("SELECT log_id FROM snapshots WHERE doc_id = $1")
                .bind(doc.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        let mut tail = LogTail::default();
        let mut from = after;
        if covers.is_some_and(|covers| covers > after) {
            let (snapshot, covers) = parts::read_snapshot!(tx, doc);
            if let Some(state) = snapshot {
                tail.snapshot = Some((state, covers));
                from = from.max(covers);
            }
        }
        let rows: Vec<(i64, Option<i64>, Vec<u8>)> = sqlx::query_as(
            "SELECT id, node, data FROM updates WHERE doc_id = $1 AND id > $2 ORDER BY id",
        )
        .bind(doc.as_str())
        .bind(from)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        tail.rows = rows
            .into_iter()
            .map(|(position, node, data)| LogRow {
                position,
                data,
                own: node == Some(self.node),
            })
            .collect();
        Ok(tail)
    }

    #[tracing::instrument(skip_all, fields(appends = appends.len()))]
    pub(super) async fn append(
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
        // One statement, which is its own transaction: the commit costs one round trip, the
        // events of the documents it creates included.
        let row = sqlx::query(APPEND_SQL)
            .bind(&docs)
            .bind(&data)
            .bind(now_ms())
            .bind(&created.receivers)
            .bind(&created.event)
            .bind(&created.body_before)
            .bind(&created.body_after)
            .bind(self.node)
            .fetch_one(&self.pool)
            .await?;
        let touched: Vec<String> = row
            .try_get::<Option<Vec<String>>, _>(0)?
            .unwrap_or_default();
        let last: Vec<i64> = row.try_get::<Option<Vec<i64>>, _>(1)?.unwrap_or_default();
        let ids = positions(appends, &touched, &last)?;
        committed.record(appends, ids)?;
        let created: Option<Vec<String>> = row.try_get(2)?;
        committed.created = created
            .unwrap_or_default()
            .iter()
            .filter_map(|id| DocId::parse(id).ok())
            .collect();
        Ok(committed)
    }

    #[tracing::instrument(skip_all, fields(compactions = compactions.len()))]
    /// Several nodes may compact one document at once. Each compaction holds the document's
    /// advisory lock on one connection from its first part to its last statement, so that two
    /// never share a generation of parts, nor drop the parts of one the other has yet to name;
    /// a compaction that finds the lock taken is skipped (the other covers as much, or the next
    /// one will).
    pub(super) async fn compact(&self, compactions: &[Compaction]) -> Result<(), StoreError> {
        for compaction in compactions {
            let mut conn = self.pool.acquire().await?;
            let key = format!("tandem-compact:{}", compaction.doc);
            let mine: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1))")
                .bind(&key)
                .fetch_one(&mut *conn)
                .await?;
            if !mine {
                tracing::debug!(doc = %compaction.doc, "another node is compacting; skipped");
                continue;
            }
            let result = compact_one(&mut conn, compaction).await;
            let unlocked = sqlx::query("SELECT pg_advisory_unlock(hashtext($1))")
                .bind(&key)
                .execute(&mut *conn)
                .await;
            if unlocked.is_err() {
                // A session lock must not stay with a pooled connection: close it instead.
                let _ = conn.close().await;
            }
            result?;
        }
        Ok(())
    }

    pub(super) async fn list(
        &self,
        after: Option<&DocId>,
        limit: i64,
    ) -> Result<Vec<DocSummary>, StoreError> {
        let rows = sqlx::query(LIST_SQL)
            .bind(after.map_or("", DocId::as_str))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(summary_from_row).collect()
    }

    pub(super) async fn get(&self, doc: &DocId) -> Result<Option<DocSummary>, StoreError> {
        let row = sqlx::query(GET_SQL)
            .bind(doc.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(summary_from_row).transpose()
    }

    #[tracing::instrument(skip(self), fields(doc = %doc))]
    pub(super) async fn create(&self, doc: &DocId) -> Result<DocSummary, StoreError> {
        let now = now_ms();
        let created = sqlx::query(store::CREATE_SQL)
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
    pub(super) async fn create_with_update(
        &self,
        doc: &DocId,
        update: &[u8],
    ) -> Result<(DocSummary, i64), StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let created = sqlx::query(store::CREATE_SQL)
            .bind(doc.as_str())
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
        if created.is_none() {
            // Dropping the transaction rolls it back: nothing was written.
            return Err(StoreError::AlreadyExists);
        }
        let log_id: i64 = sqlx::query_scalar(NEXT_POSITION_SQL)
            .bind(doc.as_str())
            .fetch_one(&mut *tx)
            .await?;
        sqlx::query(APPEND_AT_SQL)
            .bind(doc.as_str())
            .bind(log_id)
            .bind(update)
            .bind(self.node)
            .execute(&mut *tx)
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
    pub(super) async fn delete(&self, doc: &DocId) -> Result<bool, StoreError> {
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

    pub(super) async fn log_len(&self, doc: &DocId) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM updates WHERE doc_id = $1")
                .bind(doc.as_str())
                .fetch_one(&self.pool)
                .await?,
        )
    }
}

/// Appends, touches the documents and queues the events of those it creates, in one statement
/// (data-modifying CTEs run exactly once, whether or not the outer query reads them). `$1`/`$2`:
/// each append's document and data; `$3`: now; `$4`: the event receivers; `$5`: the event name;
/// `$6`/`$7`: the event body around the document's id as a JSON string (see `CreatedEvents`);
/// `$8`: this node's mark on its rows.
///
/// Each document's row is inserted or updated first, in id order (so that two nodes' commits
/// lock shared documents in the same order), and its `log_seq` grows by its number of appends:
/// the row lock, held to the commit, makes a document's positions contiguous and in commit
/// order. Its appends take the positions after the old `log_seq`, in array order. Answers the
/// touched documents with their new `log_seq`, and the documents this statement created
/// (`xmax = 0` tells inserted rows from updated ones).
const APPEND_SQL: &str = "WITH input AS ( \
        SELECT d, data, ord FROM UNNEST($1::text[], $2::bytea[]) WITH ORDINALITY AS t(d, data, ord)), \
     counts AS (SELECT d, COUNT(*)::BIGINT AS n FROM input GROUP BY d), \
     touched AS ( \
        INSERT INTO documents (id, created_at, updated_at, log_seq) \
        SELECT d, $3, $3, n FROM counts ORDER BY d \
        ON CONFLICT (id) DO UPDATE SET updated_at = excluded.updated_at, \
            log_seq = documents.log_seq + excluded.log_seq \
        RETURNING id, log_seq, (xmax = 0) AS inserted), \
     appended AS ( \
        INSERT INTO updates (doc_id, id, node, data) \
        SELECT i.d, t.log_seq - c.n + ROW_NUMBER() OVER (PARTITION BY i.d ORDER BY i.ord), \
            $8::bigint, i.data \
        FROM input i JOIN touched t ON t.id = i.d JOIN counts c ON c.d = i.d), \
     outbox AS ( \
        INSERT INTO webhook_deliveries (url, event, body, next_attempt_at, created_at) \
        SELECT r, $5::text, $6::text || to_json(t.id)::text || $7::text, $3, $3 \
        FROM touched t CROSS JOIN UNNEST($4::text[]) AS r WHERE t.inserted) \
     SELECT (SELECT array_agg(id) FROM touched), (SELECT array_agg(log_seq) FROM touched), \
            (SELECT array_agg(id) FROM touched WHERE inserted)";

/// Takes the next position in a document's (`$1`) log, for a row appended on its own.
const NEXT_POSITION_SQL: &str =
    "UPDATE documents SET log_seq = log_seq + 1 WHERE id = $1 RETURNING log_seq";

/// Appends one row (`$1` document, `$2` position, `$3` data, `$4` this node's mark).
const APPEND_AT_SQL: &str = "INSERT INTO updates (doc_id, id, data, node) VALUES ($1, $2, $3, $4)";

/// The position each append took: a document's appends take, in order, the positions that end
/// at its new `log_seq` (`last`, given per `touched` document).
fn positions(appends: &[Append], touched: &[String], last: &[i64]) -> Result<Vec<i64>, StoreError> {
    let mut counts: HashMap<&str, i64> = HashMap::new();
    for append in appends {
        *counts.entry(append.doc.as_str()).or_default() += 1;
    }
    let mut next: HashMap<&str, i64> = HashMap::with_capacity(counts.len());
    for (doc, last) in touched.iter().zip(last) {
        if let Some(count) = counts.get(doc.as_str()) {
            next.insert(doc.as_str(), last - count + 1);
        }
    }
    appends
        .iter()
        .map(|append| {
            let position = next.get_mut(append.doc.as_str()).ok_or_else(|| {
                StoreError::Other(anyhow::anyhow!(
                    "the append did not report the log position of {}",
                    append.doc
                ))
            })?;
            *position += 1;
            Ok(*position - 1)
        })
        .collect()
}

/// One compaction on one connection, under its document's lock: the parts of a large snapshot,
/// each in a transaction of its own, then the switch to the snapshot and the drop of the rows it
/// covers in one.
async fn compact_one(
    conn: &mut sqlx::PgConnection,
    compaction: &Compaction,
) -> Result<(), StoreError> {
    use sqlx::Connection;
    let doc = compaction.doc.as_str();
    let mut inline = compaction.snapshot.as_slice();
    let (mut generation, mut count) = (None, 0i64);
    if let Some(chunks) = parts::split(&compaction.snapshot) {
        let next: i64 = sqlx::query_scalar(parts::NEXT_GENERATION_SQL)
            .bind(doc)
            .fetch_one(&mut *conn)
            .await?;
        for data in chunks {
            sqlx::query(parts::PART_SQL)
                .bind(doc)
                .bind(next)
                .bind(count)
                .bind(data)
                .execute(&mut *conn)
                .await?;
            count += 1;
        }
        generation = Some(next);
        inline = &[];
    }
    let mut tx = conn.begin().await?;
    sqlx::query(parts::SNAPSHOT_SQL)
        .bind(doc)
        .bind(inline)
        .bind(compaction.covers_log_id)
        .bind(generation)
        .bind(count)
        .execute(&mut *tx)
        .await?;
    sqlx::query(parts::DROP_STALE_SQL)
        .bind(doc)
        .execute(&mut *tx)
        .await?;
    sqlx::query(parts::DROP_COVERED_SQL)
        .bind(doc)
        .bind(compaction.covers_log_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}
