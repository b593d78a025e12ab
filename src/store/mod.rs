//! Durable storage of documents: one narrow trait, two backends over sqlx.
//!
//! A document is kept as an optional snapshot (its full Yjs state as of the last compaction) plus
//! an append-only log of the updates received since. Loading applies the snapshot and then the
//! log. Appends go through [`Store::append`], one transaction per batch, so that the persistence
//! writer can group the updates of all documents into a single commit. Compactions go through
//! [`Store::compact`], in transactions of their own that touch no row an append writes, so that
//! they can run beside the appends instead of holding them up.

mod parts;
mod postgres;
mod sqlite;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;

use crate::domain::DocId;

pub(crate) use postgres::PostgresStore;
pub(crate) use sqlite::SqliteStore;

/// A failed store operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database URL names no backend we support.
    #[error("unsupported database URL scheme in {0:?}: use sqlite://… or postgres://…")]
    UnsupportedUrl(String),
    /// Anything the database or the driver reported.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// Schema migration failed at start-up.
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A document with this id already exists.
    #[error("document already exists")]
    AlreadyExists,
    /// Other failures with context (for example creating the SQLite directory).
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// What the store holds for one document.
#[derive(Debug, Default)]
pub struct StoredDoc {
    /// Full state as of the last compaction, if any.
    pub snapshot: Option<Vec<u8>>,
    /// Log rows written after the snapshot, oldest first.
    pub updates: Vec<Vec<u8>>,
    /// Highest log position of this document (0 when none was ever written). A document's
    /// positions grow in commit order; on Postgres they are 1, 2, 3, … with no gaps, taken under
    /// the document's row lock (see `migrations/postgres/0010_log_positions.sql`), and on SQLite,
    /// which has one writer, they are the log's row ids.
    pub max_log_id: i64,
}

impl StoredDoc {
    /// Bytes of the log that a compaction would fold into the snapshot.
    pub(crate) fn log_bytes(&self) -> usize {
        self.updates.iter().map(Vec::len).sum()
    }
}

/// One update to append to a document's log.
#[derive(Debug, Clone)]
pub struct Append {
    pub doc: DocId,
    pub data: Bytes,
}

/// Replace a document's snapshot and drop the log rows it covers.
///
/// A snapshot that covers fewer log rows than the stored one (written by a document instance
/// that has since been reloaded) does not replace it: the rows it lacks may already be gone.
#[derive(Debug, Clone)]
pub struct Compaction {
    pub doc: DocId,
    pub snapshot: Vec<u8>,
    /// Log rows of `doc` with an id up to and including this one are contained in `snapshot`.
    pub covers_log_id: i64,
}

/// What other nodes may have appended to a document's log past a position (see
/// [`Store::read_log`]).
#[derive(Debug, Default)]
pub struct LogTail {
    /// The snapshot and the position it covers, when it covers positions past the one asked
    /// after: the rows up to there are folded into it and gone from the log.
    pub snapshot: Option<(Vec<u8>, i64)>,
    /// The rows after the position (or after the snapshot), in position order.
    pub rows: Vec<LogRow>,
}

/// One row of a document's log, as [`Store::read_log`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRow {
    pub position: i64,
    pub data: Vec<u8>,
    /// Appended through this store, by this process: a row this node relayed when its commit
    /// returned.
    pub own: bool,
}

/// How much of a document's shared log an automatic version holds: every row up to `through`,
/// and, when `exact`, nothing else. On one node nothing is shared and the store ignores it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogCover {
    pub through: i64,
    pub exact: bool,
}

/// A document as listed: its id, times (Unix epoch milliseconds) and stored size in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocSummary {
    pub id: DocId,
    pub created_at: i64,
    pub updated_at: i64,
    /// Bytes of its snapshot plus its log.
    pub size: i64,
}

/// A saved version of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionSummary {
    pub id: i64,
    pub name: Option<String>,
    /// `manual` or `auto`.
    pub kind: String,
    pub created_at: i64,
    /// Bytes of its saved state.
    pub size: i64,
}

/// A webhook delivery waiting to be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingDelivery {
    pub id: i64,
    pub url: String,
    pub event: String,
    pub body: String,
    /// Failed attempts so far.
    pub attempts: i32,
}

/// The `document.created` events a batch of appends queues, in its own transaction, for the
/// documents it brings into existence (the webhook outbox): an event is queued exactly when
/// its document's creation commits, and never for a commit that fails.
///
/// Each receiver gets one delivery per created document. The backlog bound is not applied here,
/// so that a commit writes no more than it must: the webhook dispatcher, woken after the commit,
/// trims the receivers' backlogs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreatedEvents {
    /// Receiver URLs; none: no event is queued.
    pub receivers: Vec<String>,
    /// The event name a delivery carries.
    pub event: String,
    /// A document's event body is `body_before`, its id as a JSON string, then `body_after`.
    pub body_before: String,
    pub body_after: String,
}

impl CreatedEvents {
    /// The event body for `doc`.
    pub(crate) fn body(&self, doc: &DocId) -> String {
        // Document ids are JSON strings as they stand (see `DocId`), but quote them properly.
        let id = serde_json::Value::from(doc.as_str()).to_string();
        format!("{}{id}{}", self.body_before, self.body_after)
    }
}

/// What a committed batch of appends did.
#[derive(Debug, Default)]
pub struct Committed {
    /// The log position of each append, in the batch's order.
    pub ids: Vec<i64>,
    /// For each document that got appends, its highest new log position.
    pub log_ids: HashMap<DocId, i64>,
    /// Documents that these appends brought into existence.
    pub created: Vec<DocId>,
}

impl Committed {
    /// Records the log ids that `appends` received, given in the appends' order.
    fn record(&mut self, appends: &[Append], ids: Vec<i64>) -> Result<(), StoreError> {
        if ids.len() != appends.len() {
            return Err(StoreError::Other(anyhow::anyhow!(
                "{} log ids for {} appends",
                ids.len(),
                appends.len()
            )));
        }
        for (append, id) in appends.iter().zip(&ids) {
            let max = self.log_ids.entry(append.doc.clone()).or_insert(*id);
            *max = (*max).max(*id);
        }
        self.ids = ids;
        Ok(())
    }
}

/// The operations the server needs from a database.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reads a document's snapshot and log. A document never written is `StoredDoc::default()`.
    async fn load(&self, doc: &DocId) -> Result<StoredDoc, StoreError>;

    /// Appends updates to their documents' logs in one transaction, all or none, creating the
    /// documents that do not exist yet (and queueing their `created` events in the same
    /// transaction) and touching `updated_at` of the others.
    async fn append(
        &self,
        appends: &[Append],
        created: &CreatedEvents,
    ) -> Result<Committed, StoreError>;

    /// Writes snapshots and drops the log rows they cover, switching to the snapshots and
    /// dropping the rows in one transaction (a backend may write a large snapshot's bytes ahead
    /// of it, unread until that transaction names them). A snapshot of a document that no
    /// longer exists is not written.
    async fn compact(&self, compactions: &[Compaction]) -> Result<(), StoreError>;

    /// Documents in id order, starting after `after`, at most `limit` of them.
    async fn list(&self, after: Option<&DocId>, limit: i64) -> Result<Vec<DocSummary>, StoreError>;

    /// One document's summary, if it exists.
    async fn get(&self, doc: &DocId) -> Result<Option<DocSummary>, StoreError>;

    /// Creates an empty document; `AlreadyExists` if the id is taken.
    async fn create(&self, doc: &DocId) -> Result<DocSummary, StoreError>;

    /// Creates a document holding `update` as its first log row, both in one transaction:
    /// `AlreadyExists` (and nothing written) if the id is taken. Returns the new row's log id.
    async fn create_with_update(
        &self,
        doc: &DocId,
        update: &[u8],
    ) -> Result<(DocSummary, i64), StoreError>;

    /// Deletes a document with its log; false if there was nothing to delete.
    async fn delete(&self, doc: &DocId) -> Result<bool, StoreError>;

    /// Saves a version of `doc` with its full state.
    async fn create_version(
        &self,
        doc: &DocId,
        name: Option<&str>,
        kind: &str,
        state: &[u8],
    ) -> Result<VersionSummary, StoreError>;

    /// Deletes all but the newest `keep` versions of `kind` of a document.
    async fn prune_versions(&self, doc: &DocId, kind: &str, keep: u32) -> Result<u64, StoreError>;

    /// Saves an automatic version of `doc` and keeps the newest `keep`. Where several nodes hold
    /// the document, a version whose state is `exact`ly the log up to a position that an
    /// automatic version holds already is not saved again: `None`.
    async fn save_auto_version(
        &self,
        doc: &DocId,
        state: &[u8],
        cover: LogCover,
        keep: u32,
    ) -> Result<Option<VersionSummary>, StoreError> {
        let _ = cover;
        let version = self.create_version(doc, None, "auto", state).await?;
        self.prune_versions(doc, "auto", keep).await?;
        Ok(Some(version))
    }

    /// A document's versions, newest first.
    async fn list_versions(&self, doc: &DocId) -> Result<Vec<VersionSummary>, StoreError>;

    /// One version with its state.
    async fn get_version(
        &self,
        doc: &DocId,
        version: i64,
    ) -> Result<Option<(VersionSummary, Vec<u8>)>, StoreError>;

    /// Queues one delivery of `body` per URL. With `max_backlog`, each of these URLs then keeps
    /// at most that many queued deliveries: its oldest beyond the bound are dropped, in the same
    /// transaction. Returns how many were dropped for each URL, in the order of `urls`.
    async fn enqueue_deliveries(
        &self,
        urls: &[String],
        event: &str,
        body: &str,
        max_backlog: Option<u64>,
    ) -> Result<Vec<u64>, StoreError>;

    /// Drops the oldest deliveries queued for `url` beyond its newest `max_backlog`; returns
    /// how many went.
    async fn trim_deliveries(&self, url: &str, max_backlog: u64) -> Result<u64, StoreError>;

    /// Deliveries to `url` due at `now` (epoch ms), oldest first, at most `limit`.
    async fn due_deliveries(
        &self,
        url: &str,
        now: i64,
        limit: i64,
    ) -> Result<Vec<PendingDelivery>, StoreError>;

    /// How many deliveries are queued for each URL that has any, in URL order.
    async fn delivery_backlogs(&self) -> Result<Vec<(String, i64)>, StoreError>;

    /// Drops every delivery queued for `url`; returns how many there were.
    async fn drop_deliveries(&self, url: &str) -> Result<u64, StoreError>;

    /// Forgets a delivery: made, or given up on.
    async fn finish_delivery(&self, id: i64) -> Result<(), StoreError>;

    /// Records a failed attempt and when to try again.
    async fn retry_delivery(&self, id: i64, attempts: i32, next_at: i64) -> Result<(), StoreError>;

    /// Number of log rows a document has (operators and tests use it to watch compaction).
    async fn log_len(&self, doc: &DocId) -> Result<i64, StoreError>;

    /// Records that tokens of `doc` (of `user` only, if given) issued at or before `at_ms` are
    /// no longer valid.
    async fn revoke(&self, doc: &DocId, user: Option<&str>, at_ms: i64) -> Result<(), StoreError>;

    /// Revocations made at or after `since_ms`: (document, user, time).
    async fn revocations_since(
        &self,
        since_ms: i64,
    ) -> Result<Vec<(DocId, Option<String>, i64)>, StoreError>;

    /// Cheap round trip that tells whether the database answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Whether other nodes may append to the same logs (Postgres): a document's positions are
    /// then 1, 2, 3, … with no gaps, and [`Store::log_heads`] and [`Store::read_log`] tell what
    /// the others appended. A store no other node writes (SQLite) needs neither.
    fn shares_log(&self) -> bool {
        false
    }

    /// This process's mark on the rows it appends (0 where no other node writes).
    fn node(&self) -> i64 {
        0
    }

    /// The id every node on this database shares (see `migrations/postgres/0012_service.sql`).
    async fn service_id(&self) -> Result<String, StoreError> {
        Err(not_shared())
    }

    /// The last position of each of `docs` that exists, in no particular order.
    async fn log_heads(&self, docs: &[DocId]) -> Result<Vec<(DocId, i64)>, StoreError> {
        let _ = docs;
        Err(not_shared())
    }

    /// Where one document's log ends (0: the store does not hold it).
    async fn log_head(&self, doc: &DocId) -> Result<i64, StoreError> {
        let heads = self.log_heads(std::slice::from_ref(doc)).await?;
        Ok(heads.first().map_or(0, |(_, head)| *head))
    }

    /// A document's log after position `after`, read at one instant: the rows, and the snapshot
    /// too if a compaction has folded rows past `after` into it.
    async fn read_log(&self, doc: &DocId, after: i64) -> Result<LogTail, StoreError> {
        let _ = (doc, after);
        Err(not_shared())
    }

    /// Closes the pool, waiting for connections in use.
    async fn close(&self);
}

/// Opens the backend named by the URL scheme and brings its schema up to date.
pub async fn connect(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::connect(url).await?))
    } else {
        Err(StoreError::UnsupportedUrl(redact(url)))
    }
}

/// What a store that no other node writes answers when asked what the others appended.
fn not_shared() -> StoreError {
    StoreError::Other(anyhow::anyhow!("this store is not shared with other nodes"))
}

/// The SQL that inserts a document row unless the id is taken, the same on both backends: it
/// returns a row exactly when it inserted one.
pub(crate) const CREATE_SQL: &str = "INSERT INTO documents (id, created_at, updated_at) \
     VALUES ($1, $2, $2) ON CONFLICT (id) DO NOTHING RETURNING id";

/// The SQL of `revoke`, the same on both backends.
pub(crate) const REVOKE_SQL: &str = "INSERT INTO revocations (doc_id, user_name, revoked_at) \
     VALUES ($1, $2, $3) ON CONFLICT (doc_id, user_name) \
     DO UPDATE SET revoked_at = excluded.revoked_at";
/// The SQL of `revocations_since`, the same on both backends.
pub(crate) const REVOCATIONS_SQL: &str =
    "SELECT doc_id, user_name, revoked_at FROM revocations WHERE revoked_at >= $1";

/// The SQL that queues one delivery, the same on both backends.
pub(crate) const ENQUEUE_DELIVERY_SQL: &str = "INSERT INTO webhook_deliveries \
     (url, event, body, next_attempt_at, created_at) VALUES ($1, $2, $3, $4, $4)";
/// Drops the deliveries to URL `$1` older than its newest `$2`: the row `$2` places below the
/// newest is the newest of those to go (none, so nothing goes, when fewer rows are queued).
pub(crate) const TRIM_DELIVERIES_SQL: &str = "DELETE FROM webhook_deliveries \
     WHERE url = $1 AND id <= (SELECT id FROM webhook_deliveries WHERE url = $1 \
     ORDER BY id DESC LIMIT 1 OFFSET $2)";
/// The SQL of `due_deliveries`, the same on both backends.
pub(crate) const DUE_DELIVERIES_SQL: &str = "SELECT id, url, event, body, attempts \
     FROM webhook_deliveries WHERE url = $1 AND next_attempt_at <= $2 ORDER BY id LIMIT $3";
/// The SQL of `delivery_backlogs`, the same on both backends.
pub(crate) const DELIVERY_BACKLOGS_SQL: &str =
    "SELECT url, COUNT(*) FROM webhook_deliveries GROUP BY url ORDER BY url";
/// The SQL of `drop_deliveries`, the same on both backends.
pub(crate) const DROP_DELIVERIES_SQL: &str = "DELETE FROM webhook_deliveries WHERE url = $1";

/// Builds a pending delivery from a row of (id, url, event, body, attempts).
pub(crate) fn delivery_from_row<R>(row: &R) -> Result<PendingDelivery, StoreError>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(PendingDelivery {
        id: row.try_get(0)?,
        url: row.try_get(1)?,
        event: row.try_get(2)?,
        body: row.try_get(3)?,
        attempts: row.try_get(4)?,
    })
}

/// Builds a revocation from a row of (doc_id, user_name, revoked_at); `None` for a row whose
/// name is no longer valid.
pub(crate) fn revocation_from_row<R>(
    row: &R,
) -> Result<Option<(DocId, Option<String>, i64)>, StoreError>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let doc: String = row.try_get(0)?;
    let user: String = row.try_get(1)?;
    let at: i64 = row.try_get(2)?;
    Ok(DocId::parse(&doc)
        .ok()
        .map(|doc| (doc, (!user.is_empty()).then_some(user), at)))
}

/// Builds a summary from a row of (id, created_at, updated_at, size).
pub(crate) fn summary_from_row<R>(row: &R) -> Result<DocSummary, StoreError>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let id: String = row.try_get(0)?;
    Ok(DocSummary {
        id: DocId::parse(&id).map_err(|e| anyhow::anyhow!("stored document id {id:?}: {e}"))?,
        created_at: row.try_get(1)?,
        updated_at: row.try_get(2)?,
        size: row.try_get(3)?,
    })
}

/// Builds a version summary from a row of (id, name, kind, created_at, size).
pub(crate) fn version_from_row<R>(row: &R) -> Result<VersionSummary, StoreError>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(VersionSummary {
        id: row.try_get(0)?,
        name: row.try_get(1)?,
        kind: row.try_get(2)?,
        created_at: row.try_get(3)?,
        size: row.try_get(4)?,
    })
}

/// Current time as Unix epoch milliseconds.
/// A pooled connection idle at least this long is pinged before it is handed out; one in steady
/// use is not, which spares the writer a round trip per commit. A connection that fails the ping
/// is closed and another is taken.
const PING_AFTER_IDLE: std::time::Duration = std::time::Duration::from_secs(1);

/// The pools' `before_acquire` check: [`PING_AFTER_IDLE`].
pub(crate) fn ping_if_idle<C: sqlx::Connection>(
    conn: &mut C,
    meta: sqlx::pool::PoolConnectionMetadata,
) -> futures_util::future::BoxFuture<'_, Result<bool, sqlx::Error>> {
    Box::pin(async move {
        if meta.idle_for >= PING_AFTER_IDLE {
            conn.ping().await?;
        }
        Ok(true)
    })
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A database URL with any password replaced, safe for logs and error messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redact_hides_only_the_password() {
        assert_eq!(
            redact("postgres://tandem:s3cret@db:5432/tandem"),
            "postgres://tandem:***@db:5432/tandem"
        );
        assert_eq!(
            redact("postgres://root@localhost/x"),
            "postgres://root@localhost/x"
        );
        assert_eq!(redact("sqlite://data/tandem.db"), "sqlite://data/tandem.db");
    }
}
