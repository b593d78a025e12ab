//! The writer and the compactor against the real SQLite store, made to fail on purpose: a
//! failed commit is retried with backoff, what arrives meanwhile joins it, nothing is dropped.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, ReadTxn, Text, Transact, Update};

use super::{CommittedRow, Durable, DurableSink, PersistHandle};
use crate::domain::DocId;
use crate::metrics::Metrics;
use crate::store::{
    Append, Committed, Compaction, CreatedEvents, DocSummary, PendingDelivery, SqliteStore, Store,
    StoreError, StoredDoc, VersionSummary,
};
use crate::webhooks::Webhooks;

/// Longest a test waits for something the writer should do at once.
const PATIENCE: Duration = Duration::from_secs(10);

/// The real SQLite store, whose first `failing` appends (and compactions) fail as a lost
/// connection would, before it takes writes again.
struct Flaky {
    inner: SqliteStore,
    failing_appends: AtomicUsize,
    failing_compactions: AtomicUsize,
    /// Every `append` call: when, how many rows, and whether it failed on purpose.
    appends: Mutex<Vec<(Instant, usize, bool)>>,
    compactions: AtomicUsize,
}

impl Flaky {
    async fn new(dir: &tempfile::TempDir, failing_appends: usize) -> Arc<Self> {
        let url = format!("sqlite://{}", dir.path().join("flaky.db").display());
        Arc::new(Self {
            inner: SqliteStore::connect(&url).await.expect("store opens"),
            failing_appends: AtomicUsize::new(failing_appends),
            failing_compactions: AtomicUsize::new(0),
            appends: Mutex::default(),
            compactions: AtomicUsize::new(0),
        })
    }

    fn calls(&self) -> Vec<(Instant, usize, bool)> {
        self.appends.lock().expect("not poisoned").clone()
    }

    fn failed_appends(&self) -> usize {
        self.calls().iter().filter(|(_, _, failed)| *failed).count()
    }

    /// Takes one of the failures left, if any.
    fn take(failures: &AtomicUsize) -> bool {
        failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

fn injected() -> StoreError {
    StoreError::Other(anyhow::anyhow!("injected: the database went away"))
}

#[async_trait]
impl Store for Flaky {
    async fn load(&self, doc: &DocId) -> Result<StoredDoc, StoreError> {
        self.inner.load(doc).await
    }
    async fn append(
        &self,
        appends: &[Append],
        created: &CreatedEvents,
    ) -> Result<Committed, StoreError> {
        let fail = Self::take(&self.failing_appends);
        let call = (Instant::now(), appends.len(), fail);
        self.appends.lock().expect("not poisoned").push(call);
        if fail {
            return Err(injected());
        }
        self.inner.append(appends, created).await
    }
    async fn compact(&self, compactions: &[Compaction]) -> Result<(), StoreError> {
        self.compactions.fetch_add(1, Ordering::SeqCst);
        if Self::take(&self.failing_compactions) {
            return Err(injected());
        }
        self.inner.compact(compactions).await
    }
    async fn list(&self, after: Option<&DocId>, limit: i64) -> Result<Vec<DocSummary>, StoreError> {
        self.inner.list(after, limit).await
    }
    async fn get(&self, doc: &DocId) -> Result<Option<DocSummary>, StoreError> {
        self.inner.get(doc).await
    }
    async fn create(&self, doc: &DocId) -> Result<DocSummary, StoreError> {
        self.inner.create(doc).await
    }
    async fn create_with_update(
        &self,
        doc: &DocId,
        update: &[u8],
    ) -> Result<(DocSummary, i64), StoreError> {
        self.inner.create_with_update(doc, update).await
    }
    async fn delete(&self, doc: &DocId) -> Result<bool, StoreError> {
        self.inner.delete(doc).await
    }
    async fn create_version(
        &self,
        doc: &DocId,
        name: Option<&str>,
        kind: &str,
        state: &[u8],
    ) -> Result<VersionSummary, StoreError> {
        self.inner.create_version(doc, name, kind, state).await
    }
    async fn prune_versions(&self, doc: &DocId, kind: &str, keep: u32) -> Result<u64, StoreError> {
        self.inner.prune_versions(doc, kind, keep).await
    }
    async fn list_versions(&self, doc: &DocId) -> Result<Vec<VersionSummary>, StoreError> {
        self.inner.list_versions(doc).await
    }
    async fn get_version(
        &self,
        doc: &DocId,
        version: i64,
    ) -> Result<Option<(VersionSummary, Vec<u8>)>, StoreError> {
        self.inner.get_version(doc, version).await
    }
    async fn enqueue_deliveries(
        &self,
        urls: &[String],
        event: &str,
        body: &str,
        max_backlog: Option<u64>,
    ) -> Result<Vec<u64>, StoreError> {
        self.inner
            .enqueue_deliveries(urls, event, body, max_backlog)
            .await
    }
    async fn trim_deliveries(&self, url: &str, max_backlog: u64) -> Result<u64, StoreError> {
        self.inner.trim_deliveries(url, max_backlog).await
    }
    async fn due_deliveries(
        &self,
        url: &str,
        now: i64,
        limit: i64,
    ) -> Result<Vec<PendingDelivery>, StoreError> {
        self.inner.due_deliveries(url, now, limit).await
    }
    async fn delivery_backlogs(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.inner.delivery_backlogs().await
    }
    async fn drop_deliveries(&self, url: &str) -> Result<u64, StoreError> {
        self.inner.drop_deliveries(url).await
    }
    async fn finish_delivery(&self, id: i64) -> Result<(), StoreError> {
        self.inner.finish_delivery(id).await
    }
    async fn retry_delivery(&self, id: i64, attempts: i32, next_at: i64) -> Result<(), StoreError> {
        self.inner.retry_delivery(id, attempts, next_at).await
    }
    async fn log_len(&self, doc: &DocId) -> Result<i64, StoreError> {
        self.inner.log_len(doc).await
    }
    async fn revoke(&self, doc: &DocId, user: Option<&str>, at_ms: i64) -> Result<(), StoreError> {
        self.inner.revoke(doc, user, at_ms).await
    }
    async fn revocations_since(
        &self,
        since_ms: i64,
    ) -> Result<Vec<(DocId, Option<String>, i64)>, StoreError> {
        self.inner.revocations_since(since_ms).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
    async fn close(&self) {
        self.inner.close().await
    }
}

/// Hears the notices of one document, tagged with its name.
struct Heard {
    doc: &'static str,
    tx: mpsc::UnboundedSender<(&'static str, Durable)>,
}

impl DurableSink for Heard {
    fn durable(&self, notice: Durable) {
        let _ = self.tx.send((self.doc, notice));
    }
}

/// A webhook receiver no dispatcher delivers to: its queue shows what the outbox got.
const HOOK: &str = "http://hook.test/in";

/// What the documents of a test hear: each notice tagged with its document's name.
type Notices = (
    mpsc::UnboundedSender<(&'static str, Durable)>,
    mpsc::UnboundedReceiver<(&'static str, Durable)>,
);

/// A writer over `store` (with one webhook receiver, [`HOOK`]), its task, and what its
/// documents hear.
fn writer(store: Arc<Flaky>) -> (PersistHandle, tokio::task::JoinHandle<()>, Notices) {
    let metrics = Arc::new(Metrics::new());
    let hooks = vec![HOOK.to_string()];
    let webhooks = Webhooks::new(hooks, None, 0, store.clone(), metrics.clone());
    let (handle, task) = PersistHandle::start(store, webhooks, metrics, None);
    (handle, task, mpsc::unbounded_channel())
}

fn doc(name: &str) -> DocId {
    DocId::parse(name).expect("valid name")
}

/// The updates one client sends typing `texts` one after another.
fn typing(client: u64, texts: &[&str]) -> Vec<Bytes> {
    let author = Doc::with_client_id(client);
    let text = author.get_or_insert_text("content");
    texts
        .iter()
        .map(|typed| {
            let before = author.transact().state_vector();
            let mut txn = author.transact_mut();
            let end = text.len(&txn);
            text.insert(&mut txn, end, typed);
            drop(txn);
            Bytes::from(author.transact().encode_diff_v1(&before))
        })
        .collect()
}

/// The text a document's stored log holds.
async fn stored_text(store: &dyn Store, name: &str) -> String {
    let stored = store.load(&doc(name)).await.expect("loads");
    let reader = Doc::new();
    let text = reader.get_or_insert_text("content");
    let mut txn = reader.transact_mut();
    for update in stored.snapshot.iter().chain(&stored.updates) {
        txn.apply_update(Update::decode_v1(update).expect("decodes"))
            .expect("applies");
    }
    text.get_string(&txn)
}

async fn next(
    rx: &mut mpsc::UnboundedReceiver<(&'static str, Durable)>,
) -> (&'static str, Durable) {
    tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .expect("a notice in time")
        .expect("the writer runs")
}

#[tokio::test]
async fn a_failed_commit_is_retried_with_backoff_until_the_store_takes_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Flaky::new(&dir, 3).await;
    let (persist, task, (tx, mut heard)) = writer(store.clone());
    let update = typing(1, &["kept"]).remove(0);

    let sink = Arc::new(Heard { doc: "a", tx });
    persist
        .append(doc("a"), update.clone(), None, 1, sink)
        .expect("writer runs");
    let (_, notice) = next(&mut heard).await;

    let calls = store.calls();
    assert_eq!(calls.len(), 4, "three failures, then the commit");
    assert!(calls[..3].iter().all(|call| call.2) && !calls[3].2);
    let gaps: Vec<Duration> = calls.windows(2).map(|w| w[1].0 - w[0].0).collect();
    for (gap, least) in gaps.iter().zip([50, 100, 200]) {
        assert!(*gap >= Duration::from_millis(least), "{gaps:?}");
    }
    assert!(
        !persist.health().is_failing(),
        "healthy once a commit succeeds"
    );
    assert_eq!(notice.up_to_seq, 1);
    assert_eq!(notice.rows, 1);
    assert!(notice.max_log_id > 0);
    let row = CommittedRow {
        first_seq: 1,
        last_seq: 1,
        data: update,
        log_id: notice.max_log_id,
    };
    assert_eq!(notice.merged, [row]);
    assert_eq!(stored_text(store.as_ref(), "a").await, "kept");

    drop(persist);
    tokio::time::timeout(PATIENCE, task)
        .await
        .expect("drains")
        .expect("no panic");
}

#[tokio::test]
async fn requests_during_an_outage_join_the_batch_and_nothing_is_dropped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Flaky::new(&dir, 2).await;
    let (persist, task, (tx, mut heard)) = writer(store.clone());
    let (a, b) = (typing(1, &["a", "b", "c"]), typing(2, &["z"]));
    let sink_a: Arc<dyn DurableSink> = Arc::new(Heard {
        doc: "a",
        tx: tx.clone(),
    });
    let sink_b: Arc<dyn DurableSink> = Arc::new(Heard { doc: "b", tx });

    persist
        .append(doc("a"), a[0].clone(), None, 1, sink_a.clone())
        .expect("writer runs");
    let deadline = Instant::now() + PATIENCE;
    while store.failed_appends() == 0 {
        assert!(Instant::now() < deadline, "the first commit was tried");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(persist.health().is_failing(), "the outage is reported");
    // The writer now waits before its second attempt: these arrive during the outage.
    persist
        .append(doc("a"), a[1].clone(), None, 2, sink_a.clone())
        .expect("writer runs");
    persist
        .append(doc("b"), b[0].clone(), None, 1, sink_b)
        .expect("writer runs");
    persist
        .append(doc("a"), a[2].clone(), None, 3, sink_a)
        .expect("writer runs");
    let barrier = tokio::spawn({
        let persist = persist.clone();
        async move { persist.barrier().await }
    });

    let mut notices = [next(&mut heard).await, next(&mut heard).await];
    notices.sort_by_key(|(doc, _)| *doc);
    let (_, for_a) = &notices[0];
    let (_, for_b) = &notices[1];
    assert_eq!(notices[0].0, "a");
    assert_eq!(for_a.up_to_seq, 3, "one notice for all three");
    assert_eq!(for_a.rows, 1);
    let ranges: Vec<_> = for_a
        .merged
        .iter()
        .map(|r| (r.first_seq, r.last_seq))
        .collect();
    assert_eq!(ranges, [(1, 3)], "the row took the appends that joined");
    assert_eq!((for_b.up_to_seq, for_b.rows, for_b.merged.len()), (1, 1, 1));
    assert_eq!(for_b.merged[0].data, b[0]);
    tokio::time::timeout(PATIENCE, barrier)
        .await
        .expect("the barrier resolves")
        .expect("no panic")
        .expect("writer runs");
    assert!(heard.try_recv().is_err(), "no notice twice");

    let calls = store.calls();
    assert_eq!(calls.len(), 3, "two failures, then the commit");
    assert_eq!(calls.last().map(|c| c.1), Some(2), "one row per document");
    assert_eq!(store.log_len(&doc("a")).await.expect("counts"), 1);
    assert_eq!(stored_text(store.as_ref(), "a").await, "abc");
    assert_eq!(stored_text(store.as_ref(), "b").await, "z");
    // What the notice says is exactly what the log holds.
    let stored = store.load(&doc("a")).await.expect("loads");
    assert_eq!(stored.updates, [for_a.merged[0].data.to_vec()]);
    assert_eq!(stored.max_log_id, for_a.max_log_id);
    // Each new document announced once, by the commit that created it.
    let queued = store.due_deliveries(HOOK, i64::MAX, 64).await.expect("due");
    let mut announced: Vec<String> = queued
        .iter()
        .map(|d| {
            assert_eq!(d.event, "document.created");
            let body: serde_json::Value = serde_json::from_str(&d.body).expect("JSON");
            body["id"].as_str().expect("id").to_string()
        })
        .collect();
    announced.sort();
    assert_eq!(announced, ["a", "b"]);

    drop(persist);
    tokio::time::timeout(PATIENCE, task)
        .await
        .expect("drains")
        .expect("no panic");
}

#[tokio::test]
async fn a_failed_compaction_is_retried_and_the_barrier_behind_it_waits() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Flaky::new(&dir, 0).await;
    store.failing_compactions.store(2, Ordering::SeqCst);
    let (persist, task, (tx, mut heard)) = writer(store.clone());
    let a = typing(1, &["one", "two"]);
    let sink: Arc<dyn DurableSink> = Arc::new(Heard { doc: "a", tx });
    persist
        .append(doc("a"), a[0].clone(), None, 1, sink.clone())
        .expect("writer runs");
    persist
        .append(doc("a"), a[1].clone(), None, 2, sink)
        .expect("writer runs");
    let snapshot = crate::sync::merge_updates(a.iter().map(|u| &u[..])).expect("merges");
    let compaction = Compaction {
        doc: doc("a"),
        snapshot,
        covers_log_id: 0,
    };
    let (done, compacted) = tokio::sync::oneshot::channel();
    persist
        .compact(compaction, Some(done))
        .expect("writer runs");
    persist.barrier().await.expect("writer runs");

    assert!(compacted.await.is_ok(), "answered once committed");
    assert_eq!(
        store.compactions.load(Ordering::SeqCst),
        3,
        "two failures, then it"
    );
    assert_eq!(next(&mut heard).await.1.up_to_seq, 2);
    assert_eq!(
        store.log_len(&doc("a")).await.expect("counts"),
        0,
        "covered rows gone"
    );
    assert_eq!(stored_text(store.as_ref(), "a").await, "onetwo");

    drop(persist);
    tokio::time::timeout(PATIENCE, task)
        .await
        .expect("drains")
        .expect("no panic");
}
