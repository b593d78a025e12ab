//! The dispatcher: delivers queued webhook events and retries failures with backoff.

use std::time::Duration;

use super::{Webhooks, signature, unix_now};
use crate::store::{PendingDelivery, now_ms};

/// How long a receiver gets to answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Look for due retries at least this often even when nothing new was queued.
const POLL: Duration = Duration::from_millis(500);
/// First retry after one second, doubling up to an hour.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(3600);
/// After this many failed attempts (about a day of retries) a delivery is dropped and logged.
const MAX_ATTEMPTS: i32 = 30;
/// Deliveries taken from the queue per round.
const BATCH: i64 = 64;

/// Starts delivering on the current runtime; runs until the process ends.
pub fn spawn_dispatcher(webhooks: Webhooks) {
    if !webhooks.enabled() {
        return;
    }
    let client = match reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build() {
        Ok(client) => client,
        Err(error) => return tracing::error!(%error, "webhooks disabled: no HTTP client"),
    };
    actix_web::rt::spawn(async move {
        loop {
            let due = webhooks.inner.store.due_deliveries(now_ms(), BATCH).await;
            match due {
                Ok(due) if !due.is_empty() => {
                    for delivery in due {
                        deliver(&webhooks, &client, delivery).await;
                    }
                    continue;
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "reading the webhook queue failed"),
            }
            let _ = tokio::time::timeout(POLL, webhooks.inner.queued.notified()).await;
        }
    });
}

async fn deliver(webhooks: &Webhooks, client: &reqwest::Client, delivery: PendingDelivery) {
    let mut request = client
        .post(&delivery.url)
        .header("content-type", "application/json")
        .header("x-tandem-event", &delivery.event)
        .header("x-tandem-delivery", delivery.id.to_string())
        .body(delivery.body.clone());
    if let Some(secret) = &webhooks.inner.secret {
        request = request.header(
            "x-tandem-signature",
            signature(secret, unix_now(), &delivery.body),
        );
    }
    let outcome = match request.send().await {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(response) => Err(format!("receiver answered {}", response.status())),
        Err(error) => Err(error.to_string()),
    };
    let store = &webhooks.inner.store;
    let recorded = match outcome {
        Ok(()) => store.finish_delivery(delivery.id).await,
        Err(why) if delivery.attempts + 1 >= MAX_ATTEMPTS => {
            tracing::error!(url = %delivery.url, delivery = delivery.id, %why, "webhook given up after {MAX_ATTEMPTS} attempts");
            store.finish_delivery(delivery.id).await
        }
        Err(why) => {
            let attempts = delivery.attempts + 1;
            // 1 s, 2 s, 4 s … doubling per failed attempt, at most an hour.
            let doublings = u32::try_from(attempts - 1).unwrap_or(0).min(20);
            let delay = FIRST_RETRY.saturating_mul(1 << doublings).min(MAX_RETRY);
            tracing::warn!(url = %delivery.url, delivery = delivery.id, attempts, %why, retry_in_s = delay.as_secs(), "webhook delivery failed");
            store
                .retry_delivery(delivery.id, attempts, now_ms() + delay.as_millis() as i64)
                .await
        }
    };
    if let Err(error) = recorded {
        tracing::warn!(%error, "recording a webhook outcome failed");
    }
}
