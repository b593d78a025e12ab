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

mod dispatcher;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use sha2::Sha256;
use tokio::sync::Notify;

use crate::domain::DocId;
use crate::store::Store;

pub use dispatcher::spawn_dispatcher;

/// A change event waits this long after the last change before it is sent...
pub const DEBOUNCE: Duration = Duration::from_secs(2);
/// ...but while changes keep coming, one is sent at least this often.
pub const MAX_INTERVAL: Duration = Duration::from_secs(10);

/// Where events go and how they are signed; cheap to clone.
#[derive(Clone)]
pub struct Webhooks {
    inner: Arc<Inner>,
}

struct Inner {
    /// The configured URLs, each once, in the order given.
    urls: Vec<String>,
    /// One per entry of `urls`, in the same order.
    receivers: Vec<Receiver>,
    secret: Option<String>,
    store: Arc<dyn Store>,
}

/// One receiver: what its delivery lane needs.
struct Receiver {
    url: String,
    /// How logs name it (see [`receiver_label`]).
    label: String,
    /// Wakes this receiver's lane when something was queued for it.
    queued: Notify,
}

/// The JSON body of every event.
#[derive(Debug, Serialize)]
pub struct Event<'a> {
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
    /// Receivers at `urls`; a URL given twice is one receiver.
    pub fn new(urls: Vec<String>, secret: Option<String>, store: Arc<dyn Store>) -> Self {
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
            .map(|url| Receiver {
                url: url.clone(),
                label: receiver_label(url),
                queued: Notify::new(),
            })
            .collect();
        Self {
            inner: Arc::new(Inner {
                urls: unique,
                receivers,
                secret,
                store,
            }),
        }
    }

    /// True when at least one receiver is configured.
    pub fn enabled(&self) -> bool {
        !self.inner.urls.is_empty()
    }

    /// Queues `event` for every receiver. Failures are logged: an event must never block or
    /// fail the edit that caused it.
    pub async fn emit(&self, doc: &DocId, event: &str, state_vector: &[u8], text: &str) {
        if !self.enabled() {
            return;
        }
        use base64::Engine;
        let body = Event {
            id: doc.as_str(),
            event,
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            state_vector: base64::engine::general_purpose::STANDARD.encode(state_vector),
            text,
        };
        let body = match serde_json::to_string(&body) {
            Ok(body) => body,
            Err(error) => return tracing::error!(%error, "could not encode a webhook event"),
        };
        match self
            .inner
            .store
            .enqueue_deliveries(&self.inner.urls, event, &body)
            .await
        {
            Ok(()) => {
                for receiver in &self.inner.receivers {
                    receiver.queued.notify_one();
                }
            }
            Err(error) => {
                tracing::error!(doc = %doc, event, %error, "could not queue a webhook event")
            }
        }
    }
}

/// A receiver URL as logs name it: without user info, query or fragment, where a
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
    use super::{receiver_label, signature};

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
}
