//! SQLite backend: the embedded default.
//!
//! WAL journal with `synchronous=FULL`: a commit survives a killed process and a power cut. The
//! fsync per commit is affordable because the persistence writer groups many updates into one
//! transaction.

mod deliveries;
mod documents;
mod versions;

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::{
    Append, Committed, Compaction, CreatedEvents, DocSummary, PendingDelivery, StoreError,
    StoredDoc, VersionSummary,
};
use crate::domain::DocId;

/// How long a connection waits for a lock held by another before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Readers (document loads) run concurrently with the single writer under WAL.
const MAX_CONNECTIONS: u32 = 8;

/// A store in one SQLite file.
#[derive(Clone)]
pub(crate) struct SqliteStore {
    pool: SqlitePool,
    /// Held by appends and compactions while they write. SQLite takes one writer at a time, and
    /// one waiting on another's lock sleeps in steps of milliseconds: they queue here instead.
    write_gate: Arc<tokio::sync::Mutex<()>>,
    /// Documents whose row this store has seen committed, so that their appends need no upsert
    /// (the log's trigger touches the row): one statement, and so one round trip to SQLite's
    /// worker thread, per commit. Changed only under `write_gate`; cleared when it grows past
    /// [`MAX_KNOWN_DOCS`], and a document leaves it when it is deleted.
    known: Arc<std::sync::Mutex<HashSet<DocId>>>,
}

/// Most documents [`SqliteStore`] remembers as existing: about 64 bytes each.
const MAX_KNOWN_DOCS: usize = 65_536;

impl SqliteStore {
    /// Opens (creating if needed) the database file and its directory, and migrates it.
    pub(crate) async fn connect(url: &str) -> Result<Self, StoreError> {
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
            .test_before_acquire(false)
            .before_acquire(super::ping_if_idle)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(Self {
            pool,
            write_gate: Arc::default(),
            known: Arc::default(),
        })
    }
}

impl SqliteStore {
    fn known(&self) -> std::sync::MutexGuard<'_, HashSet<DocId>> {
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether every append's document is known to exist.
    fn all_known(&self, appends: &[Append]) -> bool {
        let known = self.known();
        appends.iter().all(|append| known.contains(&append.doc))
    }

    /// Remembers the documents of committed appends.
    fn remember(&self, appends: &[Append]) {
        let mut known = self.known();
        if known.len() + appends.len() > MAX_KNOWN_DOCS {
            known.clear();
        }
        known.extend(appends.iter().map(|append| append.doc.clone()));
    }

    fn forget(&self, doc: &DocId) {
        self.known().remove(doc);
    }
}

/// The trait's table of contents: each operation is an inherent method of the same name (which
/// a path such as `SqliteStore::load` names before the trait's), written beside its SQL in
/// `documents.rs`, `versions.rs` or `deliveries.rs`.
#[async_trait]
impl super::Store for SqliteStore {
    async fn load(&self, doc: &DocId) -> Result<StoredDoc, StoreError> {
        SqliteStore::load(self, doc).await
    }

    async fn append(
        &self,
        appends: &[Append],
        created: &CreatedEvents,
    ) -> Result<Committed, StoreError> {
        SqliteStore::append(self, appends, created).await
    }

    async fn compact(&self, compactions: &[Compaction]) -> Result<(), StoreError> {
        SqliteStore::compact(self, compactions).await
    }

    async fn list(&self, after: Option<&DocId>, limit: i64) -> Result<Vec<DocSummary>, StoreError> {
        SqliteStore::list(self, after, limit).await
    }

    async fn get(&self, doc: &DocId) -> Result<Option<DocSummary>, StoreError> {
        SqliteStore::get(self, doc).await
    }

    async fn create(&self, doc: &DocId) -> Result<DocSummary, StoreError> {
        SqliteStore::create(self, doc).await
    }

    async fn create_with_update(
        &self,
        doc: &DocId,
        update: &[u8],
    ) -> Result<(DocSummary, i64), StoreError> {
        SqliteStore::create_with_update(self, doc, update).await
    }

    async fn delete(&self, doc: &DocId) -> Result<bool, StoreError> {
        SqliteStore::delete(self, doc).await
    }

    async fn create_version(
        &self,
        doc: &DocId,
        name: Option<&str>,
        kind: &str,
        state: &[u8],
    ) -> Result<VersionSummary, StoreError> {
        SqliteStore::create_version(self, doc, name, kind, state).await
    }

    async fn prune_versions(&self, doc: &DocId, kind: &str, keep: u32) -> Result<u64, StoreError> {
        SqliteStore::prune_versions(self, doc, kind, keep).await
    }

    async fn list_versions(&self, doc: &DocId) -> Result<Vec<VersionSummary>, StoreError> {
        SqliteStore::list_versions(self, doc).await
    }

    async fn get_version(
        &self,
        doc: &DocId,
        version: i64,
    ) -> Result<Option<(VersionSummary, Vec<u8>)>, StoreError> {
        SqliteStore::get_version(self, doc, version).await
    }

    async fn enqueue_deliveries(
        &self,
        urls: &[String],
        event: &str,
        body: &str,
        max_backlog: Option<u64>,
    ) -> Result<Vec<u64>, StoreError> {
        SqliteStore::enqueue_deliveries(self, urls, event, body, max_backlog).await
    }

    async fn trim_deliveries(&self, url: &str, max_backlog: u64) -> Result<u64, StoreError> {
        SqliteStore::trim_deliveries(self, url, max_backlog).await
    }

    async fn due_deliveries(
        &self,
        url: &str,
        now: i64,
        limit: i64,
    ) -> Result<Vec<PendingDelivery>, StoreError> {
        SqliteStore::due_deliveries(self, url, now, limit).await
    }

    async fn delivery_backlogs(&self) -> Result<Vec<(String, i64)>, StoreError> {
        SqliteStore::delivery_backlogs(self).await
    }

    async fn drop_deliveries(&self, url: &str) -> Result<u64, StoreError> {
        SqliteStore::drop_deliveries(self, url).await
    }

    async fn finish_delivery(&self, id: i64) -> Result<(), StoreError> {
        SqliteStore::finish_delivery(self, id).await
    }

    async fn retry_delivery(&self, id: i64, attempts: i32, next_at: i64) -> Result<(), StoreError> {
        SqliteStore::retry_delivery(self, id, attempts, next_at).await
    }

    async fn log_len(&self, doc: &DocId) -> Result<i64, StoreError> {
        SqliteStore::log_len(self, doc).await
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
