//! A reader: holds a connection to one document and matches every update it receives against
//! the writers' send logs, for the end-to-end latency of each delivery.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use yrs::sync::SyncMessage;
use yrs::updates::decoder::Decode;
use yrs::{ClientID, Update};

use crate::client::{close, connect_and_sync, keepalive_due, send_keepalive};
use crate::protocol::{Endpoint, Incoming, close_kind};
use crate::state::{Phase, ReaderResult, Shared, Window, WriterLog};

/// Clocks (per writer client) already counted by one reader, so duplicates are ignored.
struct ReaderState<'a> {
    writers: &'a HashMap<ClientID, Arc<WriterLog>>,
    seen: HashMap<ClientID, u32>,
    setup_at: Instant,
    window: Option<Window>,
    latencies_us: Vec<u32>,
}

impl<'a> ReaderState<'a> {
    /// A reader set up at `setup_at`, before the measured window is known.
    fn new(writers: &'a HashMap<ClientID, Arc<WriterLog>>, setup_at: Instant) -> Self {
        Self {
            writers,
            seen: HashMap::new(),
            setup_at,
            window: None,
            latencies_us: Vec::new(),
        }
    }

    fn on_update(&mut self, bytes: &[u8], now: Instant, shared: &Shared) {
        // The clock ranges this update inserts, per client (a relayed or merged update may
        // carry several of a writer's inserts, or start anywhere in its history). Decoding
        // a hostile update may panic inside yrs: that is a decode error here too.
        let decoded = catch_unwind(AssertUnwindSafe(|| {
            Update::decode_v1(bytes).map(|u| u.insertions(true))
        }));
        let Ok(Ok(insertions)) = decoded else {
            shared.error("decode_update");
            return;
        };
        for (client, ranges) in insertions.iter() {
            let Some(log) = self.writers.get(client) else {
                continue;
            };
            let seen = self.seen.entry(*client).or_default();
            let log = log.read().unwrap_or_else(|e| e.into_inner());
            let mut delivered = 0;
            for range in ranges.iter() {
                // A writer's fill (clocks before its first logged send) ends below every
                // logged end clock, so it matches no entry here.
                let lo = range.start.max(*seen);
                let hi = range.end;
                if hi <= lo {
                    continue;
                }
                *seen = hi;
                let from = log.partition_point(|&(end, _)| end <= lo);
                let to = log.partition_point(|&(end, _)| end <= hi);
                for &(_, sent) in &log[from..to] {
                    if sent <= self.setup_at {
                        continue;
                    }
                    delivered += 1;
                    if self.window.is_some_and(|w| w.contains(sent)) {
                        let us = now.saturating_duration_since(sent).as_micros();
                        self.latencies_us.push(us.min(u32::MAX as u128) as u32);
                    }
                }
            }
            shared.delivered.fetch_add(delivered, Ordering::Relaxed);
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn run_reader(
    doc_index: usize,
    endpoint: Endpoint,
    writers: Arc<HashMap<ClientID, Arc<WriterLog>>>,
    shared: Arc<Shared>,
    sem: Arc<Semaphore>,
    setup_timeout: Duration,
    mut phase: watch::Receiver<Phase>,
    window_rx: watch::Receiver<Option<Window>>,
) -> ReaderResult {
    let setup = connect_and_sync(&endpoint, setup_timeout, &sem).await;
    shared.settled.fetch_add(1, Ordering::SeqCst);
    if setup.is_ok() {
        shared.connected.fetch_add(1, Ordering::SeqCst);
    }
    let (mut ws, setup_time) = match setup {
        Ok((ws, d, _)) => (ws, d),
        Err(kind) => {
            shared.error(kind);
            return ReaderResult {
                latencies_us: Vec::new(),
                setup: None,
            };
        }
    };
    let setup_at = Instant::now();
    shared
        .reader_setups
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((doc_index, setup_at));
    let mut state = ReaderState::new(&writers, setup_at);
    let mut keepalive = endpoint.keepalive_timer();
    loop {
        if phase.borrow().stop {
            break;
        }
        tokio::select! {
            msg = ws.next() => {
                let now = Instant::now();
                match msg {
                    None => { shared.error("unexpected_eof"); break; }
                    Some(Err(_)) => { shared.error("ws_read"); break; }
                    Some(Ok(WsMessage::Binary(data))) => match endpoint.decode(&data) {
                        Ok(Incoming::Sync(SyncMessage::Update(u)))
                        | Ok(Incoming::Sync(SyncMessage::SyncStep2(u))) => {
                            if state.window.is_none() {
                                state.window = *window_rx.borrow();
                            }
                            state.on_update(&u, now, &shared);
                        }
                        Ok(Incoming::Denied) => { shared.error("permission_denied"); break; }
                        Ok(Incoming::Closed) => { shared.error("close_message"); break; }
                        Ok(_) => {}
                        Err(()) => shared.error("decode"),
                    },
                    Some(Ok(WsMessage::Close(frame))) => {
                        shared.error(close_kind("", frame));
                        break;
                    }
                    Some(Ok(_)) => {}
                }
            }
            changed = phase.changed() => {
                if changed.is_err() { break; }
            }
            () = keepalive_due(&mut keepalive) => {
                if !send_keepalive(&mut ws, &endpoint, &shared).await { break; }
            }
        }
    }
    close(ws).await;
    ReaderResult {
        latencies_us: state.latencies_us,
        setup: Some(setup_time),
    }
}

#[cfg(test)]
mod tests {
    use yrs::{Doc, ReadTxn, Text, Transact};

    use super::*;
    use crate::client::filler;

    #[test]
    fn a_hostile_update_is_a_counted_error_not_a_panic() {
        let huge = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        let shared = Shared::default();
        let writers = HashMap::new();
        let mut state = ReaderState::new(&writers, Instant::now());
        state.on_update(&huge, Instant::now(), &shared);
        assert_eq!(
            shared.errors.lock().expect("not poisoned")["decode_update"],
            1
        );
    }

    #[test]
    fn readers_skip_a_writers_fill_and_count_its_logged_sends() {
        let doc = Doc::with_client_id(7);
        let client = ClientID::new(7);
        let text = doc.get_or_insert_text("content");
        let update = |s: &str| {
            let mut txn = doc.transact_mut();
            text.push(&mut txn, s);
            (txn.encode_update_v1(), txn.state_vector().get(&client))
        };
        let setup_at = Instant::now();
        let (fill, _) = update(&filler(1000));
        let log = Arc::new(WriterLog::default());
        let mut updates = Vec::new();
        for s in ["a ", "bc "] {
            let (bytes, clock) = update(s);
            log.write()
                .expect("not poisoned")
                .push((clock, Instant::now()));
            updates.push(bytes);
        }
        let writers = HashMap::from([(client, log)]);
        let shared = Shared::default();
        let mut state = ReaderState::new(&writers, setup_at);
        state.on_update(&fill, Instant::now(), &shared);
        assert_eq!(shared.delivered.load(Ordering::SeqCst), 0);
        // The two sends, once merged with the fill (as in a late joiner's SyncStep2) and once
        // more on their own: counted once each.
        let merged = yrs::merge_updates_v1([&fill, &updates[0], &updates[1]]).expect("valid");
        state.on_update(&merged, Instant::now(), &shared);
        for u in &updates {
            state.on_update(u, Instant::now(), &shared);
        }
        assert_eq!(shared.delivered.load(Ordering::SeqCst), 2);
        assert!(shared.errors.lock().expect("not poisoned").is_empty());
    }
}
