//! Signed change notifications to the operator's own systems.
//!
//! Events (`document.created`, `document.changed`, `document.deleted`) are written to the
//! database first and delivered from there by one dispatcher, so a restart loses none. Each
//! request carries `X-Tandem-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`
//! keyed with `--webhook-secret`: the receiver recomputes it, and refuses old timestamps to stop
//! replays. Failed deliveries are retried with exponential backoff.

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
    urls: Vec<String>,
    secret: Option<String>,
    store: Arc<dyn Store>,
    /// Wakes the dispatcher when something was queued.
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
    pub fn new(urls: Vec<String>, secret: Option<String>, store: Arc<dyn Store>) -> Self {
        Self {
            inner: Arc::new(Inner {
                urls,
                secret,
                store,
                queued: Notify::new(),
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
            Ok(()) => self.inner.queued.notify_one(),
            Err(error) => {
                tracing::error!(doc = %doc, event, %error, "could not queue a webhook event")
            }
        }
    }
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
    use super::signature;

    #[test]
    fn the_signature_covers_the_timestamp_and_the_body() {
        let a = signature("secret", 1_700_000_000, r#"{"id":"x"}"#);
        assert!(a.starts_with("t=1700000000,v1="));
        assert_eq!(a.len(), "t=1700000000,v1=".len() + 64);
        assert_ne!(a, signature("secret", 1_700_000_001, r#"{"id":"x"}"#));
        assert_ne!(a, signature("secret", 1_700_000_000, r#"{"id":"y"}"#));
        assert_ne!(a, signature("other", 1_700_000_000, r#"{"id":"x"}"#));
    }
}
