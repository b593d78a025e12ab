//! A writer: sets up (and optionally fills) its document, then inserts short strings at a fixed
//! rate during the run, logging the clock and send time of every update.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use yrs::sync::SyncMessage;
use yrs::{Doc, ReadTxn, Text, Transact};

use crate::cli::Protocol;
use crate::client::{close, connect_and_sync, fill, keepalive_due, send_keepalive};
use crate::protocol::{Endpoint, Incoming, close_kind};
use crate::state::{Phase, Shared, WriterLog, WriterResult};

#[allow(clippy::too_many_arguments)]
pub(crate) async fn run_writer(
    endpoint: Endpoint,
    doc: Doc,
    log: Arc<WriterLog>,
    shared: Arc<Shared>,
    sem: Arc<Semaphore>,
    setup_timeout: Duration,
    fill_bytes: usize,
    mut phase: watch::Receiver<Phase>,
    period: Option<Duration>,
    offset: Duration,
    send_until: watch::Receiver<Option<Instant>>,
) -> WriterResult {
    // Set-up: connect and sync, then the fill (a writer whose fill failed counts as not set up).
    let setup = async {
        let (mut ws, setup_time, _) = connect_and_sync(&endpoint, setup_timeout, &sem).await?;
        if fill_bytes > 0
            && let Err(kind) = fill(&mut ws, &endpoint, &doc, fill_bytes, setup_timeout).await
        {
            close(ws).await;
            return Err(kind);
        }
        Ok((ws, setup_time))
    }
    .await;
    shared.settled.fetch_add(1, Ordering::SeqCst);
    if setup.is_ok() {
        shared.connected.fetch_add(1, Ordering::SeqCst);
    }
    let (ws, setup_time) = match setup {
        Ok(ok) => ok,
        Err(kind) => {
            shared.error(kind);
            shared.writers_done.fetch_add(1, Ordering::SeqCst);
            return WriterResult { setup: None };
        }
    };
    let (mut sink, mut stream) = ws.split();
    // Keep reading so the server never has to queue for this client; count what goes wrong.
    let reader_shared = shared.clone();
    let reader_endpoint = endpoint.clone();
    let read_task = tokio::spawn(async move {
        while let Some(msg) = stream.next().await {
            match msg {
                Err(_) => {
                    reader_shared.error("ws_read");
                    return;
                }
                Ok(WsMessage::Close(frame)) => {
                    reader_shared.error(close_kind("", frame));
                    return;
                }
                // Only hocuspocus says "closed" inside a message; y-websocket frames are not
                // decoded here (nothing in them concerns a writer).
                Ok(WsMessage::Binary(data)) if reader_endpoint.protocol == Protocol::Hocuspocus => {
                    if let Ok(Incoming::Closed) = reader_endpoint.decode(&data) {
                        reader_shared.error("close_message");
                        return;
                    }
                }
                Ok(_) => {}
            }
        }
    });
    let mut keepalive = endpoint.keepalive_timer();
    let mut broken = false;
    // Wait for the start.
    let start = loop {
        let p = *phase.borrow_and_update();
        if p.stop {
            break None;
        }
        if let Some(start) = p.start {
            break Some(start);
        }
        tokio::select! {
            changed = phase.changed() => {
                if changed.is_err() { break None; }
            }
            () = keepalive_due(&mut keepalive) => {
                if !send_keepalive(&mut sink, &endpoint, &shared).await {
                    broken = true;
                    break None;
                }
            }
        }
    };
    let client = doc.client_id();
    let text = doc.get_or_insert_text("content");
    if let (Some(start), Some(period)) = (start, period) {
        let end = send_until.borrow().unwrap_or(start);
        // Updates are due every `period` from `first`; the timer wakes at most every
        // millisecond, and each wake sends every update due by then (rates above 1,000/s are
        // sent in small bursts, each update still its own message, stamped when it is sent).
        let first = start + offset;
        let mut ticker =
            tokio::time::interval_at(first.into(), period.max(Duration::from_millis(1)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seq: u64 = 0;
        'sending: loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = keepalive_due(&mut keepalive) => {
                    if send_keepalive(&mut sink, &endpoint, &shared).await {
                        continue;
                    }
                    broken = true;
                    break;
                }
            };
            let now = Instant::now();
            if now >= end || phase.borrow().stop {
                break;
            }
            let due = (now.duration_since(first).as_secs_f64() / period.as_secs_f64()) as u64 + 1;
            let mut queued = false;
            while seq < due {
                seq += 1;
                let (bytes, clock) = {
                    let mut txn = doc.transact_mut();
                    text.push(&mut txn, &format!("{client}:{seq} "));
                    let bytes = txn.encode_update_v1();
                    let clock = txn.state_vector().get(&client);
                    (bytes, clock)
                };
                log.write()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((clock, Instant::now()));
                if sink
                    .feed(endpoint.sync(SyncMessage::Update(bytes)))
                    .await
                    .is_err()
                {
                    shared.error("ws_write");
                    broken = true;
                    break 'sending;
                }
                queued = true;
            }
            if queued && sink.flush().await.is_err() {
                shared.error("ws_write");
                broken = true;
                break;
            }
        }
    }
    shared.writers_done.fetch_add(1, Ordering::SeqCst);
    // Hold the connection until the run stops.
    while !phase.borrow_and_update().stop {
        tokio::select! {
            changed = phase.changed() => {
                if changed.is_err() { break; }
            }
            () = keepalive_due(&mut keepalive), if !broken => {
                if !send_keepalive(&mut sink, &endpoint, &shared).await {
                    broken = true;
                }
            }
        }
    }
    read_task.abort();
    let _ = tokio::time::timeout(Duration::from_secs(2), sink.close()).await;
    WriterResult {
        setup: Some(setup_time),
    }
}
