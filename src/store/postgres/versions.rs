//! Postgres: a document's saved versions — saving, pruning, listing, reading one.

use sqlx::Row;

use super::PostgresStore;
use crate::domain::DocId;
use crate::store::{LogCover, StoreError, VersionSummary, now_ms, version_from_row};

/// Deletes all but the newest `$3` versions of kind `$2` of document `$1`.
const PRUNE_SQL: &str = "DELETE FROM versions WHERE doc_id = $1 AND kind = $2 AND id NOT IN \
     (SELECT id FROM versions WHERE doc_id = $1 AND kind = $2 ORDER BY id DESC LIMIT $3)";

impl PostgresStore {
    pub(super) async fn create_version(
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

    pub(super) async fn prune_versions(
        &self,
        doc: &DocId,
        kind: &str,
        keep: u32,
    ) -> Result<u64, StoreError> {
        let pruned = sqlx::query(PRUNE_SQL)
            .bind(doc.as_str())
            .bind(kind)
            .bind(i64::from(keep))
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(pruned)
    }

    /// Several nodes holding a document each save an automatic version after the same pause.
    /// Under the document's advisory lock, a node whose copy is exactly the log up to a
    /// position that an automatic version holds already saves none; any other version is saved
    /// with the position it holds everything up to.
    pub(super) async fn save_auto_version(
        &self,
        doc: &DocId,
        state: &[u8],
        cover: LogCover,
        keep: u32,
    ) -> Result<Option<VersionSummary>, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('tandem-versions:' || $1))")
            .bind(doc.as_str())
            .execute(&mut *tx)
            .await?;
        if cover.exact {
            let held: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM versions \
                 WHERE doc_id = $1 AND kind = 'auto' AND log_position >= $2)",
            )
            .bind(doc.as_str())
            .bind(cover.through)
            .fetch_one(&mut *tx)
            .await?;
            if held {
                tx.commit().await?;
                return Ok(None);
            }
        }
        let row = sqlx::query(
            "INSERT INTO versions (doc_id, name, kind, created_at, state, log_position) \
             VALUES ($1, NULL, 'auto', $2, $3, $4) \
             RETURNING id, name, kind, created_at, octet_length(state)::BIGINT",
        )
        .bind(doc.as_str())
        .bind(now_ms())
        .bind(state)
        .bind(cover.through)
        .fetch_one(&mut *tx)
        .await?;
        let version = version_from_row(&row)?;
        sqlx::query(PRUNE_SQL)
            .bind(doc.as_str())
            .bind("auto")
            .bind(i64::from(keep))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(version))
    }

    pub(super) async fn list_versions(
        &self,
        doc: &DocId,
    ) -> Result<Vec<VersionSummary>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, kind, created_at, octet_length(state)::BIGINT FROM versions \
             WHERE doc_id = $1 ORDER BY id DESC",
        )
        .bind(doc.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(version_from_row).collect()
    }

    pub(super) async fn get_version(
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
}
