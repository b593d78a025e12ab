//! The dispatcher: one delivery lane per receiver, each sending its receiver's queued events in
//! order and retrying failures with backoff.
//!
//! Lanes share nothing but the HTTP client's connection pool and the store, so a receiver that
//! answers slowly, or not at all, delays only its own events.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Receiver, Webhooks, receiver_label, signature, unix_now};
use crate::backoff::Policy;
use crate::store::{PendingDelivery, now_ms};

/// How long a receiver gets to answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Look for due retries at least this often even when nothing new was queued.
const POLL: Duration = Duration::from_millis(500);
/// First retry after one second, doubling up to an hour.
const RETRY: Policy = Policy::new(Duration::from_secs(1), Duration::from_secs(3600));
/// After this many failed attempts (about a day of retries) a delivery is dropped and logged.
const MAX_ATTEMPTS: i32 = 30;
/// Deliveries one lane takes from the queue per round.
const BATCH: i64 = 64;

/// Drops what is queued for receivers no longer configured, then starts one delivery lane per
/// receiver on the current runtime; the lanes run until the process ends.
pub(crate) fn spawn_dispatcher(webhooks: Webhooks) {
    actix_web::rt::spawn(async move {
        drop_unconfigured(&webhooks).await;
        if !webhooks.enabled() {
            return;
        }
        let client = match reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build() {
            Ok(client) => client,
            Err(error) => return tracing::error!(%error, "webhooks disabled: no HTTP client"),
        };
        for lane in 0..webhooks.inner.receivers.len() {
            actix_web::rt::spawn(run_lane(webhooks.clone(), client.clone(), lane));
        }
    });
}

/// Deliveries queued for a URL that is no longer configured would never be sent, nor counted
/// against any backlog bound: they are dropped, with a warning per URL.
async fn drop_unconfigured(webhooks: &Webhooks) {
    let store = &webhooks.inner.store;
    let backlogs = match store.delivery_backlogs().await {
        Ok(backlogs) => backlogs,
        Err(error) => return tracing::warn!(%error, "reading the webhook queue failed"),
    };
    for (url, _) in backlogs {
        if webhooks.inner.urls.contains(&url) {
            continue;
        }
        match store.drop_deliveries(&url).await {
            Ok(dropped) => tracing::warn!(
                receiver = %receiver_label(&url),
                dropped,
                "dropped the webhook events queued for a receiver that is no longer configured"
            ),
            Err(error) => tracing::warn!(%error, "dropping stale webhook deliveries failed"),
        }
    }
}

/// Delivers the queue of receiver number `lane`, oldest first, one request at a time.
async fn run_lane(webhooks: Webhooks, client: reqwest::Client, lane: usize) {
    let receiver = &webhooks.inner.receivers[lane];
    loop {
        trim_if_due(&webhooks, receiver).await;
        let due = webhooks
            .inner
            .store
            .due_deliveries(&receiver.url, now_ms(), BATCH)
            .await;
        match due {
            Ok(due) if !due.is_empty() => {
                for delivery in due {
                    deliver(&webhooks, receiver, &client, delivery).await;
                }
                continue;
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(receiver = %receiver.label, %error, "reading the webhook queue failed")
            }
        }
        let _ = tokio::time::timeout(POLL, receiver.queued.notified()).await;
    }
}

/// Applies the backlog bound to what was queued without it (see `Receiver::untrimmed`),
/// counting what it drops like any other overflow.
pub(super) async fn trim_if_due(webhooks: &Webhooks, receiver: &Receiver) {
    let Some(max_backlog) = webhooks.inner.max_backlog else {
        return;
    };
    if !receiver.untrimmed.swap(false, Ordering::AcqRel) {
        return;
    }
    match webhooks
        .inner
        .store
        .trim_deliveries(&receiver.url, max_backlog)
        .await
    {
        Ok(0) => {}
        Ok(dropped) => webhooks.dropped(receiver, dropped),
        Err(error) => {
            // Tried again on the next round.
            receiver.untrimmed.store(true, Ordering::Release);
            tracing::warn!(receiver = %receiver.label, %error, "trimming the webhook backlog failed");
        }
    }
}

async fn deliver(
    webhooks: &Webhooks,
    receiver: &Receiver,
    client: &reqwest::Client,
    delivery: PendingDelivery,
) {
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
        // Without the URL: the error names it in full, with any credential it carries.
        Err(error) => Err(error.without_url().to_string()),
    };
    let store = &webhooks.inner.store;
    let recorded = match outcome {
        Ok(()) => store.finish_delivery(delivery.id).await,
        Err(why) if delivery.attempts + 1 >= MAX_ATTEMPTS => {
            tracing::error!(receiver = %receiver.label, delivery = delivery.id, %why, "webhook given up after {MAX_ATTEMPTS} attempts");
            store.finish_delivery(delivery.id).await
        }
        Err(why) => {
            let attempts = delivery.attempts + 1;
            let delay = RETRY.after(u32::try_from(attempts).unwrap_or(1));
            tracing::warn!(receiver = %receiver.label, delivery = delivery.id, attempts, %why, retry_in_s = delay.as_secs(), "webhook delivery failed");
            store
                .retry_delivery(delivery.id, attempts, now_ms() + delay.as_millis() as i64)
                .await
        }
    };
    if let Err(error) = recorded {
        tracing::warn!(receiver = %receiver.label, %error, "recording a webhook outcome failed");
    }
}
