//! SQLite: documents and their log — loading, the batched append with its outbox, compaction,
//! listing, creating and deleting.

use sqlx::Row;

use super::SqliteStore;
use crate::domain::DocId;
use crate::store::{
    self, Append, Committed, Compaction, CreatedEvents, DocSummary, StoreError, StoredDoc, now_ms,
    parts, summary_from_row,
};

/// Log rows appended by one INSERT (two bound values each, far below SQLite's limit).
const APPEND_ROWS_PER_STATEMENT: usize = 256;

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

impl SqliteStore {
    #[tracing::instrument(skip(self), fields(doc = %doc))]
    pub(super) async fn load(&self, doc: &DocId) -> Result<StoredDoc, StoreError> {
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
    pub(super) async fn append(
        &self,
        appends: &[Append],
        created: &CreatedEvents,
    ) -> Result<Committed, StoreError> {
        let now = now_ms();
        let mut committed = Committed::default();
        if appends.is_empty() {
            return Ok(committed);
        }
        let _writing = self.write_gate.lock().await;
        if appends.len() <= APPEND_ROWS_PER_STATEMENT && self.all_known(appends) {
            // Every row exists: one INSERT is the whole commit, its own transaction.
            let ids = insert_rows(&self.pool, appends).await?;
            committed.record(appends, ids)?;
            return Ok(committed);
        }
        let mut ids = Vec::with_capacity(appends.len());
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
                sqlx::query(store::ENQUEUE_DELIVERY_SQL)
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
            ids.extend(insert_rows(&mut *tx, chunk).await?);
        }
        committed.record(appends, ids)?;
        tx.commit().await?;
        self.remember(appends);
        Ok(committed)
    }

    #[tracing::instrument(skip_all, fields(compactions = compactions.len()))]
    pub(super) async fn compact(&self, compactions: &[Compaction]) -> Result<(), StoreError> {
        parts::compact_in_parts!(self, compactions, self.write_gate.lock().await)
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
        // Appends and compactions queue on the gate; so does this, rather than wait on their
        // lock in SQLite's sleeps.
        let _writing = self.write_gate.lock().await;
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
        let log_id: i64 = sqlx::query_scalar(APPEND_ONE_SQL)
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
    pub(super) async fn delete(&self, doc: &DocId) -> Result<bool, StoreError> {
        // Under the gate, so that no append takes the document for known once it is gone.
        let _writing = self.write_gate.lock().await;
        self.forget(doc);
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

/// Inserts one log row per append (at most [`APPEND_ROWS_PER_STATEMENT`]) in one statement and
/// answers their ids in the appends' order.
async fn insert_rows<'e, E>(executor: E, appends: &[Append]) -> Result<Vec<i64>, StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
{
    let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new("INSERT INTO updates (doc_id, data) ");
    insert.push_values(appends, |mut row, append| {
        row.push_bind(append.doc.as_str())
            .push_bind(append.data.as_ref());
    });
    insert.push(" RETURNING id");
    let mut ids = insert
        .build()
        .fetch_all(executor)
        .await?
        .iter()
        .map(|row| row.try_get::<i64, _>(0))
        .collect::<Result<Vec<_>, _>>()?;
    // One statement inserts its rows in VALUES order with increasing ids (the order of
    // RETURNING rows is not defined): sorted ids line up with the appends.
    ids.sort_unstable();
    Ok(ids)
}

/// Appends one log row and returns its id.
const APPEND_ONE_SQL: &str = "INSERT INTO updates (doc_id, data) VALUES ($1, $2) RETURNING id";
