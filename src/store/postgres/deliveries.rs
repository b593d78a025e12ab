//! Postgres: the webhook delivery queue — queueing with its backlog bound, the due deliveries,
//! and forgetting or rescheduling one.

use sqlx::Row;

use super::PostgresStore;
use crate::store::{self, PendingDelivery, StoreError, delivery_from_row, now_ms};

impl PostgresStore {
    pub(super) async fn enqueue_deliveries(
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
            sqlx::query(store::ENQUEUE_DELIVERY_SQL)
                .bind(url)
                .bind(event)
                .bind(body)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            let trimmed = match max_backlog {
                Some(max) => sqlx::query(store::TRIM_DELIVERIES_SQL)
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

    pub(super) async fn trim_deliveries(
        &self,
        url: &str,
        max_backlog: u64,
    ) -> Result<u64, StoreError> {
        Ok(sqlx::query(store::TRIM_DELIVERIES_SQL)
            .bind(url)
            .bind(i64::try_from(max_backlog).unwrap_or(i64::MAX))
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    pub(super) async fn due_deliveries(
        &self,
        url: &str,
        now: i64,
        limit: i64,
    ) -> Result<Vec<PendingDelivery>, StoreError> {
        let rows = sqlx::query(CLAIM_SQL)
            .bind(url)
            .bind(now)
            .bind(limit.min(CLAIM_AT_MOST))
            .bind(now + CLAIM_MS)
            .fetch_all(&self.pool)
            .await?;
        let mut due: Vec<PendingDelivery> = rows
            .iter()
            .map(delivery_from_row)
            .collect::<Result<_, _>>()?;
        due.sort_unstable_by_key(|delivery| delivery.id);
        Ok(due)
    }

    pub(super) async fn delivery_backlogs(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(store::DELIVERY_BACKLOGS_SQL)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect()
    }

    pub(super) async fn drop_deliveries(&self, url: &str) -> Result<u64, StoreError> {
        Ok(sqlx::query(store::DROP_DELIVERIES_SQL)
            .bind(url)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    pub(super) async fn finish_delivery(&self, id: i64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM webhook_deliveries WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(super) async fn retry_delivery(
        &self,
        id: i64,
        attempts: i32,
        next_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE webhook_deliveries SET attempts = $2, next_attempt_at = $3, claimed_until = 0 \
             WHERE id = $1",
        )
        .bind(id)
        .bind(attempts)
        .bind(next_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// How long a claim holds: longer than a node takes to make the deliveries it claims at once
/// ([`CLAIM_AT_MOST`], each given up after 10 s). A node that dies leaves its claimed
/// deliveries to another after this.
const CLAIM_MS: i64 = 2 * 60 * 1000;
/// Most deliveries one claim takes.
const CLAIM_AT_MOST: i64 = 8;

/// Claims a receiver's (`$1`) deliveries due at `$2`, at most `$3`, until `$4`, unless some of
/// its deliveries are claimed already (by this node or another). The advisory lock, held to the
/// end of the statement's transaction, keeps two nodes from both finding none claimed.
const CLAIM_SQL: &str = "WITH free AS ( \
        SELECT pg_try_advisory_xact_lock(hashtext('tandem-webhooks:' || $1)) AS mine), \
     picked AS ( \
        SELECT w.id FROM webhook_deliveries w, free \
        WHERE free.mine AND w.url = $1 AND w.next_attempt_at <= $2 \
          AND NOT EXISTS (SELECT 1 FROM webhook_deliveries c \
                          WHERE c.url = $1 AND c.claimed_until > $2) \
        ORDER BY w.id LIMIT $3) \
     UPDATE webhook_deliveries d SET claimed_until = $4 FROM picked WHERE d.id = picked.id \
     RETURNING d.id, d.url, d.event, d.body, d.attempts";
