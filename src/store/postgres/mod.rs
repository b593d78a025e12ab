//! Postgres backend: the production store.
//!
//! Durability relies on Postgres' default `synchronous_commit = on`. A batch's appends go in as
//! one multi-row `INSERT … SELECT FROM UNNEST(…)`, so a commit costs a few round trips however
//! many updates it carries.

mod deliveries;
mod documents;
mod versions;

use std::time::Duration;

use async_trait::async_trait;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use super::{
    Append, Committed, Compaction, CreatedEvents, DocSummary, LogCover, LogTail, PendingDelivery,
    StoreError, StoredDoc, VersionSummary,
};
use crate::domain::DocId;

/// Pool size: one writer plus concurrent document loads and health checks.
const MAX_CONNECTIONS: u32 = 10;
/// How long a caller waits for a free connection before the operation fails.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// A store in a Postgres database.
#[derive(Clone)]
pub(crate) struct PostgresStore {
    pool: PgPool,
    /// This process's mark on the log rows it appends (see migration 0011).
    node: i64,
}

impl PostgresStore {
    /// Connects and migrates.
    pub(crate) async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .test_before_acquire(false)
            .before_acquire(super::ping_if_idle)
            .connect(url)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        // Random, so that a restarted node counts its earlier rows as another node's.
        let node = uuid::Uuid::new_v4().as_u64_pair().0 as i64;
        Ok(Self { pool, node })
    }
}

/// The trait's table of contents: each operation is an inherent method of the same name (which
/// a path such as `PostgresStore::load` names before the trait's), written beside its SQL in
/// `documents.rs`, `versions.rs` or `deliveries.rs`.
#[async_trait]
impl super::Store for PostgresStore {
    async fn load(&self, doc: &DocId) -> Result<StoredDoc, StoreError> {
        PostgresStore::load(self, doc).await
    }

    async fn append(
        &self,
        appends: &[Append],
        created: &CreatedEvents,
    ) -> Result<Committed, StoreError> {
        PostgresStore::append(self, appends, created).await
    }

    async fn compact(&self, compactions: &[Compaction]) -> Result<(), StoreError> {
        PostgresStore::compact(self, compactions).await
    }

    fn shares_log(&self) -> bool {
        true
    }

    fn node(&self) -> i64 {
        self.node
    }

    async fn service_id(&self) -> Result<String, StoreError> {
        Ok(sqlx::query_scalar("SELECT id FROM service")
            .fetch_one(&self.pool)
            .await?)
    }

    async fn log_heads(&self, docs: &[DocId]) -> Result<Vec<(DocId, i64)>, StoreError> {
        PostgresStore::log_heads(self, docs).await
    }

    async fn read_log(&self, doc: &DocId, after: i64) -> Result<LogTail, StoreError> {
        PostgresStore::read_log(self, doc, after).await
    }

    async fn list(&self, after: Option<&DocId>, limit: i64) -> Result<Vec<DocSummary>, StoreError> {
        PostgresStore::list(self, after, limit).await
    }

    async fn get(&self, doc: &DocId) -> Result<Option<DocSummary>, StoreError> {
        PostgresStore::get(self, doc).await
    }

    async fn create(&self, doc: &DocId) -> Result<DocSummary, StoreError> {
        PostgresStore::create(self, doc).await
    }

    async fn create_with_update(
        &self,
        doc: &DocId,
        update: &[u8],
    ) -> Result<(DocSummary, i64), StoreError> {
        PostgresStore::create_with_update(self, doc, update).await
    }

    async fn delete(&self, doc: &DocId) -> Result<bool, StoreError> {
        PostgresStore::delete(self, doc).await
    }

    async fn create_version(
        &self,
        doc: &DocId,
        name: Option<&str>,
        kind: &str,
        state: &[u8],
    ) -> Result<VersionSummary, StoreError> {
        PostgresStore::create_version(self, doc, name, kind, state).await
    }

    async fn prune_versions(&self, doc: &DocId, kind: &str, keep: u32) -> Result<u64, StoreError> {
        PostgresStore::prune_versions(self, doc, kind, keep).await
    }

    async fn save_auto_version(
        &self,
        doc: &DocId,
        state: &[u8],
        cover: LogCover,
        keep: u32,
    ) -> Result<Option<VersionSummary>, StoreError> {
        PostgresStore::save_auto_version(self, doc, state, cover, keep).await
    }

    async fn list_versions(&self, doc: &DocId) -> Result<Vec<VersionSummary>, StoreError> {
        PostgresStore::list_versions(self, doc).await
    }

    async fn get_version(
        &self,
        doc: &DocId,
        version: i64,
    ) -> Result<Option<(VersionSummary, Vec<u8>)>, StoreError> {
        PostgresStore::get_version(self, doc, version).await
    }

    async fn enqueue_deliveries(
        &self,
        urls: &[String],
        event: &str,
        body: &str,
        max_backlog: Option<u64>,
    ) -> Result<Vec<u64>, StoreError> {
        PostgresStore::enqueue_deliveries(self, urls, event, body, max_backlog).await
    }

    async fn trim_deliveries(&self, url: &str, max_backlog: u64) -> Result<u64, StoreError> {
        PostgresStore::trim_deliveries(self, url, max_backlog).await
    }

    async fn due_deliveries(
        &self,
        url: &str,
        now: i64,
        limit: i64,
    ) -> Result<Vec<PendingDelivery>, StoreError> {
        PostgresStore::due_deliveries(self, url, now, limit).await
    }

    async fn delivery_backlogs(&self) -> Result<Vec<(String, i64)>, StoreError> {
        PostgresStore::delivery_backlogs(self).await
    }

    async fn drop_deliveries(&self, url: &str) -> Result<u64, StoreError> {
        PostgresStore::drop_deliveries(self, url).await
    }

    async fn finish_delivery(&self, id: i64) -> Result<(), StoreError> {
        PostgresStore::finish_delivery(self, id).await
    }

    async fn retry_delivery(&self, id: i64, attempts: i32, next_at: i64) -> Result<(), StoreError> {
        PostgresStore::retry_delivery(self, id, attempts, next_at).await
    }

    async fn log_len(&self, doc: &DocId) -> Result<i64, StoreError> {
        PostgresStore::log_len(self, doc).await
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
