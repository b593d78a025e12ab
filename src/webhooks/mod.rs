//! Signed change notifications to the operator's own systems.
//!
//! Events (`document.created`, `document.changed`, `document.deleted`) are written to the
//! database first and delivered from there, so a restart loses none. Each receiver (each
//! `--webhook-url`) has a delivery lane of its own that sends its events one at a time, in the
//! order they were queued (a failed one is retried later without holding up the next): a slow
//! or unreachable receiver holds up only itself. Each request carries
//! `X-Tandem-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">` keyed with
//! `--webhook-secret`: the receiver recomputes it, and refuses old timestamps to stop replays.
//! Failed deliveries are retried with exponential backoff.
//!
//! `document.created` of a document first written over a socket is queued by the store in the
//! same transaction as the updates that create it (an outbox: see `CreatedEvents`); the
//! persistence writer then only wakes the lanes, through [`Webhooks::outbox_written`].
//!
//! A receiver's backlog is bounded by `--webhook-max-backlog`: queueing beyond it drops that
//! receiver's oldest queued events (for the outbox, when the lane wakes). Every event carries the document's whole text and state
//! vector, so a newer event about a document supersedes an older one; keeping the newest is
//! what serves a receiver best once it is back.

mod dispatcher;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use sha2::Sha256;
use tokio::sync::Notify;

use crate::domain::DocId;
use crate::metrics::Metrics;
use crate::store::{CreatedEvents, Store};

pub(crate) use dispatcher::spawn_dispatcher;

/// A change event waits this long after the last change before it is sent...
pub(crate) const DEBOUNCE: Duration = Duration::from_secs(2);
/// ...but while changes keep coming, one is sent at least this often.
pub(crate) const MAX_INTERVAL: Duration = Duration::from_secs(10);
/// The event of a document that came into existence.
const CREATED: &str = "document.created";
/// A receiver whose backlog overflows gets at most one log line this often, so a dead receiver
/// under a steady stream of events does not flood the log; the metric counts every drop.
const DROP_LOG_EVERY: Duration = Duration::from_secs(60);

/// Where events go and how they are signed; cheap to clone.
#[derive(Clone)]
pub(crate) struct Webhooks {
    inner: Arc<Inner>,
}

struct Inner {
    /// The configured URLs, each once, in the order given.
    urls: Vec<String>,
    /// One per entry of `urls`, in the same order.
    receivers: Vec<Receiver>,
    secret: Option<String>,
    /// Queued events kept per receiver; `None` keeps all.
    max_backlog: Option<u64>,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

/// One receiver: what its delivery lane and its drop accounting need.
struct Receiver {
    url: String,
    /// How logs and metrics name it (see [`receiver_label`]).
    label: String,
    /// Wakes this receiver's lane when something was queued for it.
    queued: Notify,
    /// Events were queued for it without the backlog bound applied (by the store's outbox, or
    /// by an earlier run of the server): the lane trims the backlog before it delivers.
    untrimmed: AtomicBool,
    drops: Mutex<DropLog>,
}

/// Rate limit of the log lines about one receiver's dropped events.
#[derive(Debug, Default)]
struct DropLog {
    /// When the last line was written.
    logged_at: Option<Instant>,
    /// Drops since that line.
    unlogged: u64,
}

impl DropLog {
    /// Counts `dropped` more at `now`; returns the number to report if a line is due now.
    fn add(&mut self, dropped: u64, now: Instant) -> Option<u64> {
        self.unlogged += dropped;
        if self
            .logged_at
            .is_some_and(|at| now.duration_since(at) < DROP_LOG_EVERY)
        {
            return None;
        }
        self.logged_at = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

/// The JSON body of every event.
#[derive(Debug, Serialize)]
pub(crate) struct Event<'a> {
    pub id: &'a str,
    pub event: &'a str,
    /// RFC 3339, UTC.
    pub time: String,
    /// Base64 v1 state vector of the document after the change (empty for a deletion).
    pub state_vector: String,
    /// Text of the `content` root.
    pub text: &'a str,
}

impl Webhooks {
    /// Receivers at `urls` (a URL given twice is one receiver), each keeping at most
    /// `max_backlog` queued events (0: no limit).
    pub(crate) fn new(
        urls: Vec<String>,
        secret: Option<String>,
        max_backlog: u64,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let mut unique: Vec<String> = Vec::with_capacity(urls.len());
        for url in urls {
            if unique.contains(&url) {
                // Two lanes reading one URL's queue would send each event twice.
                tracing::warn!(receiver = %receiver_label(&url), "webhook URL given twice: it is one receiver");
            } else {
                unique.push(url);
            }
        }
        let receivers = unique
            .iter()
            .map(|url| {
                let label = receiver_label(url);
                // Present from the start, so that a rate over it is defined before any drop.
                metrics.webhook_events_dropped.with_label_values(&[&label]);
                Receiver {
                    url: url.clone(),
                    label,
                    queued: Notify::new(),
                    untrimmed: AtomicBool::new(true),
                    drops: Mutex::default(),
                }
            })
            .collect();
        Self {
            inner: Arc::new(Inner {
                urls: unique,
                receivers,
                secret,
                max_backlog: (max_backlog > 0).then_some(max_backlog),
                store,
                metrics,
            }),
        }
    }

    /// True when at least one receiver is configured.
    pub(crate) fn enabled(&self) -> bool {
        !self.inner.urls.is_empty()
    }

    /// What the store queues, in the transaction of a batch of appends, for the documents the
    /// batch creates: `document.created` (empty state vector and text, the time now) for every
    /// receiver, or nothing when none is configured.
    pub(crate) fn created_events(&self) -> CreatedEvents {
        if !self.enabled() {
            return CreatedEvents::default();
        }
        let time = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let json = |value: &str| serde_json::Value::from(value).to_string();
        // The fields in the order of `Event`, so the body reads as `emit` would write it.
        CreatedEvents {
            receivers: self.inner.urls.clone(),
            event: CREATED.to_string(),
            body_before: "{\"id\":".to_string(),
            body_after: format!(
                ",\"event\":{},\"time\":{},\"state_vector\":\"\",\"text\":\"\"}}",
                json(CREATED),
                json(&time)
            ),
        }
    }

    /// Tells the lanes that a commit queued events through the store's outbox: they apply the
    /// backlog bound, then deliver. Does no I/O, so the persistence writer calls it in its loop.
    pub(crate) fn outbox_written(&self) {
        for receiver in &self.inner.receivers {
            receiver
                .untrimmed
                .store(true, std::sync::atomic::Ordering::Release);
            receiver.queued.notify_one();
        }
    }

    /// Queues `event` for every receiver. Failures are logged: an event must never block or
    /// fail the edit that caused it.
    pub(crate) async fn emit(&self, doc: &DocId, event: &str, state_vector: &[u8], text: &str) {
        if !self.enabled() {
            return;
        }
        let body = match event_body(doc, event, state_vector, text) {
            Ok(body) => body,
            Err(error) => return tracing::error!(%error, "could not encode a webhook event"),
        };
        let inner = &self.inner;
        match inner
            .store
            .enqueue_deliveries(&inner.urls, event, &body, inner.max_backlog)
            .await
        {
            Ok(dropped) => {
                for (receiver, dropped) in inner.receivers.iter().zip(dropped) {
                    receiver.queued.notify_one();
                    if dropped > 0 {
                        self.dropped(receiver, dropped);
                    }
                }
            }
            Err(error) => {
                tracing::error!(doc = %doc, event, %error, "could not queue a webhook event")
            }
        }
    }

    /// Accounts for `dropped` events of `receiver` that its full backlog pushed out.
    fn dropped(&self, receiver: &Receiver, dropped: u64) {
        self.inner
            .metrics
            .webhook_events_dropped
            .with_label_values(&[&receiver.label])
            .inc_by(dropped);
        let report = receiver
            .drops
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .add(dropped, Instant::now());
        if let Some(dropped) = report {
            tracing::warn!(
                receiver = %receiver.label,
                dropped,
                max_backlog = self.inner.max_backlog,
                "webhook backlog full: dropped the receiver's oldest queued events (counted in \
                 tandem_webhook_events_dropped_total; at most one such line a minute)"
            );
        }
    }
}

/// The JSON body of `event` about `doc`, timed now.
fn event_body(
    doc: &DocId,
    event: &str,
    state_vector: &[u8],
    text: &str,
) -> serde_json::Result<String> {
    use base64::Engine;
    serde_json::to_string(&Event {
        id: doc.as_str(),
        event,
        time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        state_vector: base64::engine::general_purpose::STANDARD.encode(state_vector),
        text,
    })
}

/// A receiver URL as logs and metrics name it: without user info, query or fragment, where a
/// receiver may expect a credential.
fn receiver_label(url: &str) -> String {
    let url = &url[..url.find(['?', '#']).unwrap_or(url.len())];
    if let Some(scheme_end) = url.find("://").map(|at| at + 3) {
        let rest = &url[scheme_end..];
        let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
        if let Some(at) = authority.rfind('@') {
            return format!("{}{}", &url[..scheme_end], &rest[at + 1..]);
        }
    }
    url.to_string()
}

/// The signature header value for `body` sent at `timestamp` (Unix seconds).
pub fn signature(secret: &str, timestamp: u64, body: &str) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::{DROP_LOG_EVERY, DropLog, Event, Webhooks, dispatcher, receiver_label, signature};
    use crate::domain::DocId;
    use crate::metrics::Metrics;
    use crate::store::{Append, CreatedEvents, SqliteStore, Store};

    #[test]
    fn the_signature_covers_the_timestamp_and_the_body() {
        let a = signature("secret", 1_700_000_000, r#"{"id":"x"}"#);
        assert!(a.starts_with("t=1700000000,v1="));
        assert_eq!(a.len(), "t=1700000000,v1=".len() + 64);
        assert_ne!(a, signature("secret", 1_700_000_001, r#"{"id":"x"}"#));
        assert_ne!(a, signature("secret", 1_700_000_000, r#"{"id":"y"}"#));
        assert_ne!(a, signature("other", 1_700_000_000, r#"{"id":"x"}"#));
    }

    #[test]
    fn a_receiver_is_named_without_its_credentials() {
        assert_eq!(
            receiver_label("https://user:pw@hooks.example.com:8443/in?token=abc#x"),
            "https://hooks.example.com:8443/in"
        );
        assert_eq!(
            receiver_label("http://127.0.0.1:9000/hook"),
            "http://127.0.0.1:9000/hook"
        );
        // An `@` in the path is not user info.
        assert_eq!(
            receiver_label("http://example.com/a@b"),
            "http://example.com/a@b"
        );
        assert_eq!(receiver_label("not a url?secret"), "not a url");
    }

    #[test]
    fn drops_are_logged_at_once_then_summed_into_at_most_one_line_a_minute() {
        let start = Instant::now();
        let mut log = DropLog::default();
        assert_eq!(log.add(2, start), Some(2));
        assert_eq!(log.add(1, start + Duration::from_secs(1)), None);
        assert_eq!(log.add(4, start + DROP_LOG_EVERY / 2), None);
        assert_eq!(log.add(1, start + DROP_LOG_EVERY), Some(6));
        assert_eq!(
            log.add(1, start + DROP_LOG_EVERY + Duration::from_secs(1)),
            None
        );
    }

    #[actix_web::test]
    async fn each_receivers_backlog_keeps_its_newest_events_and_counts_the_dropped_ones() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("hooks.db").display());
        let store: Arc<dyn Store> = Arc::new(SqliteStore::connect(&url).await.expect("store"));
        let metrics = Arc::new(Metrics::new());
        let (a, b) = (
            "http://a.test/hook".to_string(),
            "http://b.test/hook".to_string(),
        );
        let urls = vec![a.clone(), b.clone(), a.clone()];
        let webhooks = Webhooks::new(urls, None, 3, store.clone(), metrics.clone());
        let doc = DocId::parse("bounded").expect("valid name");
        for text in ["1", "2", "3", "4", "5"] {
            webhooks.emit(&doc, "document.changed", &[], text).await;
        }

        // A URL given twice is one receiver: it got each event once.
        let backlogs = store.delivery_backlogs().await.expect("backlogs");
        assert_eq!(backlogs, vec![(a.clone(), 3), (b.clone(), 3)]);
        let texts = |deliveries: Vec<crate::store::PendingDelivery>| -> Vec<String> {
            deliveries
                .iter()
                .map(|d| {
                    let body: serde_json::Value = serde_json::from_str(&d.body).expect("JSON");
                    body["text"].as_str().expect("text").to_string()
                })
                .collect()
        };
        let due = store.due_deliveries(&a, i64::MAX, 64).await.expect("due");
        assert!(due.iter().all(|d| d.url == a), "only this receiver's");
        assert_eq!(texts(due), ["3", "4", "5"], "the oldest went, order kept");
        let due = store.due_deliveries(&b, i64::MAX, 2).await.expect("due");
        assert_eq!(texts(due), ["3", "4"], "at most the limit, oldest first");
        let dropped = |url: &str| {
            metrics
                .webhook_events_dropped
                .with_label_values(&[url])
                .get()
        };
        assert_eq!((dropped(&a), dropped(&b)), (2, 2));

        assert_eq!(store.drop_deliveries(&a).await.expect("dropped"), 3);
        let backlogs = store.delivery_backlogs().await.expect("backlogs");
        assert_eq!(backlogs, vec![(b, 3)]);
        store.close().await;
    }

    #[actix_web::test]
    async fn a_created_event_from_the_outbox_reads_as_emit_writes_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("body.db").display());
        let store: Arc<dyn Store> = Arc::new(SqliteStore::connect(&url).await.expect("store"));
        let hooks = |urls: Vec<String>| {
            Webhooks::new(urls, None, 0, store.clone(), Arc::new(Metrics::new()))
        };
        assert_eq!(hooks(Vec::new()).created_events(), CreatedEvents::default());

        let url = "http://a.test/hook".to_string();
        let events = hooks(vec![url.clone()]).created_events();
        assert_eq!(events.receivers, [url]);
        assert_eq!(events.event, "document.created");
        let doc = DocId::parse("fresh.doc-1").expect("valid name");
        let body = events.body(&doc);
        let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        let time = json["time"].as_str().expect("time");
        let as_emitted = serde_json::to_string(&Event {
            id: doc.as_str(),
            event: "document.created",
            time: time.to_string(),
            state_vector: String::new(),
            text: "",
        })
        .expect("encodes");
        assert_eq!(body, as_emitted, "byte for byte");
        assert!(humantime::parse_rfc3339(time).is_ok(), "{time}");
    }

    #[actix_web::test]
    async fn appends_that_create_a_document_queue_its_event_once_and_the_lane_trims_the_backlog() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("outbox.db").display());
        let store: Arc<dyn Store> = Arc::new(SqliteStore::connect(&url).await.expect("store"));
        let metrics = Arc::new(Metrics::new());
        let (a, b) = (
            "http://a.test/hook".to_string(),
            "http://b.test/hook".to_string(),
        );
        let webhooks = Webhooks::new(
            vec![a.clone(), b.clone()],
            None,
            2,
            store.clone(),
            metrics.clone(),
        );
        let append = |name: &str| Append {
            doc: DocId::parse(name).expect("valid name"),
            data: bytes::Bytes::from_static(b"\x00\x00"),
        };
        let created = webhooks.created_events();
        let committed = store
            .append(&[append("one"), append("two"), append("one")], &created)
            .await
            .expect("commits");
        assert_eq!(committed.created.len(), 2);
        // Written again: no longer new, so no event.
        store
            .append(&[append("two"), append("three")], &created)
            .await
            .expect("commits");

        let ids = |url: &str| {
            let store = store.clone();
            let url = url.to_string();
            async move {
                let due = store.due_deliveries(&url, i64::MAX, 64).await.expect("due");
                assert!(due.iter().all(|d| d.event == "document.created"));
                due.iter()
                    .map(|d| {
                        let body: serde_json::Value = serde_json::from_str(&d.body).expect("JSON");
                        body["id"].as_str().expect("id").to_string()
                    })
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(
            ids(&a).await,
            ["one", "two", "three"],
            "past the bound, untrimmed"
        );
        assert_eq!(ids(&b).await, ["one", "two", "three"]);

        webhooks.outbox_written();
        for receiver in &webhooks.inner.receivers {
            dispatcher::trim_if_due(&webhooks, receiver).await;
        }
        assert_eq!(ids(&a).await, ["two", "three"], "the oldest went");
        assert_eq!(ids(&b).await, ["two", "three"]);
        let dropped = |url: &str| {
            metrics
                .webhook_events_dropped
                .with_label_values(&[url])
                .get()
        };
        assert_eq!((dropped(&a), dropped(&b)), (1, 1), "counted");
        store.close().await;
    }

    #[actix_web::test]
    async fn a_backlog_of_zero_is_unbounded() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("hooks.db").display());
        let store: Arc<dyn Store> = Arc::new(SqliteStore::connect(&url).await.expect("store"));
        let metrics = Arc::new(Metrics::new());
        let receiver = "http://a.test/hook".to_string();
        let webhooks = Webhooks::new(vec![receiver.clone()], None, 0, store.clone(), metrics);
        let doc = DocId::parse("unbounded").expect("valid name");
        for _ in 0..20 {
            webhooks.emit(&doc, "document.changed", &[], "x").await;
        }
        let backlogs = store.delivery_backlogs().await.expect("backlogs");
        assert_eq!(backlogs, vec![(receiver, 20)]);
        store.close().await;
    }
}
