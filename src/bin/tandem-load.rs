//! `tandem-load`: a load generator for any y-websocket server.
//!
//! D documents × W writers × K readers. Writers insert short strings into the Y.Text
//! `content` at a fixed rate and send them as sync Update messages; readers measure the
//! end-to-end latency (writer send → reader receive) of every update, matched by the writer's
//! (client id, clock). Everything runs in one process, so no clock synchronisation is needed.
//! Optionally measures the cold load of a large document first (`--cold-load-bytes`).
//!
//! Prints a human-readable summary and then one JSON line with stable keys.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use yrs::sync::{Message, SyncMessage};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{ClientID, Doc, ReadTxn, StateVector, Text, Transact, Update};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Load generator for y-websocket servers.
#[derive(Debug, Parser)]
#[command(name = "tandem-load", version)]
struct Args {
    /// Base WebSocket URL; document `d` is served at `{url}/{d}`.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    url: String,
    /// Number of documents.
    #[arg(long, default_value_t = 1)]
    docs: usize,
    /// Writers per document.
    #[arg(long, default_value_t = 1)]
    writers: usize,
    /// Readers per document.
    #[arg(long, default_value_t = 10)]
    readers: usize,
    /// Updates per second per writer.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Measured window (e.g. `15s`).
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Writing before the measured window, not counted in latency or throughput.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Prefix of document names; a random suffix is added per run.
    #[arg(long, default_value = "load")]
    doc_prefix: String,
    /// Token sent as `?token=` on every connection.
    #[arg(long)]
    token: Option<String>,
    /// Before the run, build a document of about this many bytes and time its load.
    #[arg(long)]
    cold_load_bytes: Option<usize>,
    /// Pause between building the cold-load document and loading it (use more than the
    /// server's idle-unload delay to measure a load from storage).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    cold_wait: Duration,
    /// Give up on a client that is not set up (connected and synced) after this long.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    setup_timeout: Duration,
    /// Longest wait for in-flight updates after the writers stop.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    drain: Duration,
    /// Connection attempts in flight at once.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// Print only the JSON line.
    #[arg(long)]
    json_only: bool,
}

/// The sends of one writer: (end clock after the insert, send time), in clock order.
type WriterLog = RwLock<Vec<(u32, Instant)>>;

#[derive(Default)]
struct Shared {
    errors: Mutex<BTreeMap<String, u64>>,
    /// Deliveries to readers of updates sent after that reader was set up.
    delivered: AtomicU64,
    /// Clients whose set-up finished (successfully or not).
    settled: AtomicUsize,
    /// Clients set up successfully.
    connected: AtomicUsize,
    /// Writers that stopped sending.
    writers_done: AtomicUsize,
    /// (doc index, set-up instant) of every reader that was set up.
    reader_setups: Mutex<Vec<(usize, Instant)>>,
}

impl Shared {
    fn error(&self, kind: impl Into<String>) {
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        *errors.entry(kind.into()).or_default() += 1;
    }
}

/// The run's phases, as watched by the client tasks.
#[derive(Clone, Copy, Debug)]
struct Phase {
    /// Writers start sending at this instant (None: not yet).
    start: Option<Instant>,
    /// Clients close their connections.
    stop: bool,
}

#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    end: Instant,
}

impl Window {
    fn contains(&self, t: Instant) -> bool {
        t >= self.start && t < self.end
    }
}

struct ReaderResult {
    latencies_us: Vec<u32>,
    setup: Option<Duration>,
}

struct WriterResult {
    setup: Option<Duration>,
}

/// Appends `s` percent-encoded (unreserved characters and those in `keep` stay as they are).
fn push_encoded(url: &mut String, s: &str, keep: &[u8]) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || keep.contains(&b) {
            url.push(b as char);
        } else {
            url.push_str(&format!("%{b:02X}"));
        }
    }
}

fn doc_url(base: &str, doc: &str, token: Option<&str>) -> String {
    let mut url = format!("{}/", base.trim_end_matches('/'));
    push_encoded(&mut url, doc, b"/");
    if let Some(token) = token {
        url.push_str("?token=");
        push_encoded(&mut url, token, b"");
    }
    url
}

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(None)
        .max_frame_size(None)
}

fn encode(msg: Message) -> WsMessage {
    WsMessage::Binary(msg.encode_v1().into())
}

/// Connects and performs the initial sync of an empty client: sends SyncStep1 (empty state
/// vector), answers the server's SyncStep1 with an empty SyncStep2, and waits for the server's
/// SyncStep2. Returns the socket, the set-up time and the SyncStep2 payload.
async fn connect_and_sync(
    url: &str,
    timeout: Duration,
    sem: &Semaphore,
) -> Result<(Ws, Duration, Vec<u8>), String> {
    let _permit = sem.acquire().await.map_err(|_| "semaphore".to_string())?;
    let t0 = Instant::now();
    let fut = async {
        let (mut ws, _resp) =
            tokio_tungstenite::connect_async_with_config(url, Some(ws_config()), true)
                .await
                .map_err(|e| match e {
                    tokio_tungstenite::tungstenite::Error::Http(resp) => {
                        format!("connect_http_{}", resp.status().as_u16())
                    }
                    tokio_tungstenite::tungstenite::Error::Io(_) => "connect_io".to_string(),
                    _ => "connect_other".to_string(),
                })?;
        ws.send(encode(Message::Sync(SyncMessage::SyncStep1(
            StateVector::default(),
        ))))
        .await
        .map_err(|_| "ws_write".to_string())?;
        loop {
            match ws.next().await {
                None => return Err("closed_during_setup".to_string()),
                Some(Err(_)) => return Err("ws_read".to_string()),
                Some(Ok(WsMessage::Binary(data))) => match Message::decode_v1(&data) {
                    Ok(Message::Sync(SyncMessage::SyncStep1(_))) => {
                        let empty = Update::new().encode_v1();
                        ws.send(encode(Message::Sync(SyncMessage::SyncStep2(empty))))
                            .await
                            .map_err(|_| "ws_write".to_string())?;
                    }
                    Ok(Message::Sync(SyncMessage::SyncStep2(payload))) => {
                        return Ok((ws, t0.elapsed(), payload));
                    }
                    Ok(_) => {}
                    Err(_) => return Err("decode".to_string()),
                },
                Some(Ok(WsMessage::Close(frame))) => {
                    return Err(match frame {
                        Some(f) => format!("close_{}", u16::from(f.code)),
                        None => "close".to_string(),
                    });
                }
                Some(Ok(_)) => {}
            }
        }
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err("setup_timeout".to_string()),
    }
}

async fn close(mut ws: Ws) {
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
}

/// Clocks (per writer client) already counted by one reader, so duplicates are ignored.
struct ReaderState<'a> {
    writers: &'a HashMap<ClientID, Arc<WriterLog>>,
    seen: HashMap<ClientID, u32>,
    setup_at: Instant,
    window: Option<Window>,
    latencies_us: Vec<u32>,
}

impl ReaderState<'_> {
    fn on_update(&mut self, bytes: &[u8], now: Instant, shared: &Shared) {
        let update = match Update::decode_v1(bytes) {
            Ok(u) => u,
            Err(_) => {
                shared.error("decode_update");
                return;
            }
        };
        // The clock ranges this update inserts, per client (a relayed or merged update may
        // carry several of a writer's inserts, or start anywhere in its history).
        let insertions = update.insertions(true);
        for (client, ranges) in insertions.iter() {
            let Some(log) = self.writers.get(client) else {
                continue;
            };
            let seen = self.seen.entry(*client).or_default();
            let log = log.read().unwrap_or_else(|e| e.into_inner());
            let mut delivered = 0;
            for range in ranges.iter() {
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
async fn run_reader(
    doc_index: usize,
    url: String,
    writers: Arc<HashMap<ClientID, Arc<WriterLog>>>,
    shared: Arc<Shared>,
    sem: Arc<Semaphore>,
    setup_timeout: Duration,
    mut phase: watch::Receiver<Phase>,
    window_rx: watch::Receiver<Option<Window>>,
) -> ReaderResult {
    let setup = connect_and_sync(&url, setup_timeout, &sem).await;
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
    let mut state = ReaderState {
        writers: &writers,
        seen: HashMap::new(),
        setup_at,
        window: None,
        latencies_us: Vec::new(),
    };
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
                    Some(Ok(WsMessage::Binary(data))) => match Message::decode_v1(&data) {
                        Ok(Message::Sync(SyncMessage::Update(u)))
                        | Ok(Message::Sync(SyncMessage::SyncStep2(u))) => {
                            if state.window.is_none() {
                                state.window = *window_rx.borrow();
                            }
                            state.on_update(&u, now, &shared);
                        }
                        Ok(_) => {}
                        Err(_) => shared.error("decode"),
                    },
                    Some(Ok(WsMessage::Close(frame))) => {
                        shared.error(match frame {
                            Some(f) => format!("close_{}", u16::from(f.code)),
                            None => "close".to_string(),
                        });
                        break;
                    }
                    Some(Ok(_)) => {}
                }
            }
            changed = phase.changed() => {
                if changed.is_err() { break; }
            }
        }
    }
    close(ws).await;
    ReaderResult {
        latencies_us: state.latencies_us,
        setup: Some(setup_time),
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_writer(
    url: String,
    doc: Doc,
    log: Arc<WriterLog>,
    shared: Arc<Shared>,
    sem: Arc<Semaphore>,
    setup_timeout: Duration,
    mut phase: watch::Receiver<Phase>,
    period: Duration,
    offset: Duration,
    send_until: watch::Receiver<Option<Instant>>,
) -> WriterResult {
    let setup = connect_and_sync(&url, setup_timeout, &sem).await;
    shared.settled.fetch_add(1, Ordering::SeqCst);
    if setup.is_ok() {
        shared.connected.fetch_add(1, Ordering::SeqCst);
    }
    let (ws, setup_time) = match setup {
        Ok((ws, d, _)) => (ws, d),
        Err(kind) => {
            shared.error(kind);
            shared.writers_done.fetch_add(1, Ordering::SeqCst);
            return WriterResult { setup: None };
        }
    };
    let (mut sink, mut stream) = ws.split();
    // Keep reading so the server never has to queue for this client; count what goes wrong.
    let reader_shared = shared.clone();
    let read_task = tokio::spawn(async move {
        while let Some(msg) = stream.next().await {
            match msg {
                Err(_) => {
                    reader_shared.error("ws_read");
                    return;
                }
                Ok(WsMessage::Close(frame)) => {
                    reader_shared.error(match frame {
                        Some(f) => format!("close_{}", u16::from(f.code)),
                        None => "close".to_string(),
                    });
                    return;
                }
                Ok(_) => {}
            }
        }
    });
    // Wait for the start.
    let start = loop {
        let p = *phase.borrow_and_update();
        if p.stop {
            break None;
        }
        if let Some(start) = p.start {
            break Some(start);
        }
        if phase.changed().await.is_err() {
            break None;
        }
    };
    let client = doc.client_id();
    let text = doc.get_or_insert_text("content");
    if let Some(start) = start {
        let end = send_until.borrow().unwrap_or(start);
        let mut ticker = tokio::time::interval_at((start + offset).into(), period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut seq: u64 = 0;
        loop {
            let tick = ticker.tick().await;
            if tick.into_std() >= end || phase.borrow().stop {
                break;
            }
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
                .send(encode(Message::Sync(SyncMessage::Update(bytes))))
                .await
                .is_err()
            {
                shared.error("ws_write");
                break;
            }
        }
    }
    shared.writers_done.fetch_add(1, Ordering::SeqCst);
    while !phase.borrow_and_update().stop {
        if phase.changed().await.is_err() {
            break;
        }
    }
    read_task.abort();
    let _ = tokio::time::timeout(Duration::from_secs(2), sink.close()).await;
    WriterResult {
        setup: Some(setup_time),
    }
}

/// Builds a document of about `bytes` bytes of text in one update, then times a new client's
/// connect → SyncStep2. Returns (milliseconds, SyncStep2 size in bytes).
async fn cold_load(
    args: &Args,
    doc_name: &str,
    client: u64,
    sem: &Semaphore,
) -> Result<(f64, usize), String> {
    let url = doc_url(&args.url, doc_name, args.token.as_deref());
    let (mut ws, _, _) = connect_and_sync(&url, args.setup_timeout, sem).await?;
    let doc = Doc::with_client_id(client);
    let client = ClientID::new(client);
    let text = doc.get_or_insert_text("content");
    let (bytes, clock) = {
        let mut txn = doc.transact_mut();
        let alphabet = b"abcdefghijklmnopqrstuvwxyz \n";
        let chunk: String = (0..args.cold_load_bytes.unwrap_or(0))
            .map(|i| alphabet[i % alphabet.len()] as char)
            .collect();
        text.push(&mut txn, &chunk);
        let bytes = txn.encode_update_v1();
        let clock = txn.state_vector().get(&client);
        (bytes, clock)
    };
    let contains = |payload: &[u8]| {
        Update::decode_v1(payload).is_ok_and(|u| u.state_vector().get(&client) >= clock)
    };
    ws.send(encode(Message::Sync(SyncMessage::Update(bytes))))
        .await
        .map_err(|_| "cold_write".to_string())?;
    // Ask for what we lack (nothing): the server answers after it has processed the update,
    // so its (small) SyncStep2 acknowledges it. The loader below checks the content.
    let sv = doc.transact().state_vector();
    ws.send(encode(Message::Sync(SyncMessage::SyncStep1(sv))))
        .await
        .map_err(|_| "cold_write".to_string())?;
    let acked = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(WsMessage::Binary(data)) => {
                    if let Ok(Message::Sync(SyncMessage::SyncStep2(_))) = Message::decode_v1(&data)
                    {
                        return Ok(());
                    }
                }
                Ok(WsMessage::Close(frame)) => {
                    return Err(match frame {
                        Some(f) => format!("cold_close_{}", u16::from(f.code)),
                        None => "cold_close".to_string(),
                    });
                }
                Ok(_) => {}
                Err(_) => return Err("cold_ws_read".to_string()),
            }
        }
        Err("cold_eof".to_string())
    })
    .await
    .unwrap_or_else(|_| Err("cold_not_acknowledged".to_string()));
    close(ws).await;
    acked?;
    tokio::time::sleep(args.cold_wait).await;
    let (ws, elapsed, payload) = connect_and_sync(&url, args.setup_timeout, sem).await?;
    close(ws).await;
    if !contains(&payload) {
        return Err("cold_load_incomplete".to_string());
    }
    Ok((elapsed.as_secs_f64() * 1e3, payload.len()))
}

fn percentile(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn ms(us: Option<u32>) -> Option<f64> {
    us.map(|v| v as f64 / 1000.0)
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.3}"))
}

/// Random client ids in JavaScript's safe range (Yjs uses 32-bit ids), all distinct.
fn client_ids(n: usize) -> Vec<u64> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let b = uuid::Uuid::new_v4().into_bytes();
        let id = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64;
        if id != 0 && seen.insert(id) {
            out.push(id);
        }
    }
    out
}

fn main() -> ExitCode {
    let args = Args::parse();
    let bad = if args.docs == 0 {
        Some("--docs must be at least 1")
    } else if !(args.rate.is_finite() && args.rate > 0.0) {
        Some("--rate must be a positive number")
    } else if args.duration.is_zero() {
        Some("--duration must be positive")
    } else if args.connect_concurrency == 0 {
        Some("--connect-concurrency must be at least 1")
    } else if !(args.url.starts_with("ws://") || args.url.starts_with("wss://")) {
        Some("--url must start with ws:// or wss://")
    } else {
        None
    };
    if let Some(msg) = bad {
        eprintln!("error: {msg}");
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(run(args));
    ExitCode::SUCCESS
}

async fn run(args: Args) {
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let shared = Arc::new(Shared::default());
    let sem = Arc::new(Semaphore::new(args.connect_concurrency));
    let total_writers = args.docs * args.writers;
    let ids = client_ids(total_writers + 1);

    // Cold load first, on its own document.
    let mut cold_ms = None;
    let mut cold_bytes = None;
    if args.cold_load_bytes.is_some() {
        let name = format!("{}-{}-cold", args.doc_prefix, run_id);
        match cold_load(&args, &name, ids[total_writers], &sem).await {
            Ok((ms, bytes)) => {
                cold_ms = Some((ms * 1000.0).round() / 1000.0);
                cold_bytes = Some(bytes);
            }
            Err(kind) => shared.error(kind),
        }
    }

    let (phase_tx, phase_rx) = watch::channel(Phase {
        start: None,
        stop: false,
    });
    let (window_tx, window_rx) = watch::channel(None::<Window>);
    let (until_tx, until_rx) = watch::channel(None::<Instant>);
    let period = Duration::from_secs_f64(1.0 / args.rate);

    let mut reader_tasks = Vec::new();
    let mut writer_tasks = Vec::new();
    let mut logs: Vec<Vec<Arc<WriterLog>>> = Vec::new();
    for d in 0..args.docs {
        let name = format!("{}-{}-{}", args.doc_prefix, run_id, d);
        let url = doc_url(&args.url, &name, args.token.as_deref());
        let mut map = HashMap::new();
        let mut docs = Vec::new();
        let mut doc_logs = Vec::new();
        for w in 0..args.writers {
            let id = ids[d * args.writers + w];
            let log = Arc::new(WriterLog::default());
            map.insert(ClientID::new(id), log.clone());
            doc_logs.push(log.clone());
            docs.push((Doc::with_client_id(id), log));
        }
        logs.push(doc_logs);
        let map = Arc::new(map);
        for _ in 0..args.readers {
            reader_tasks.push(tokio::spawn(run_reader(
                d,
                url.clone(),
                map.clone(),
                shared.clone(),
                sem.clone(),
                args.setup_timeout,
                phase_rx.clone(),
                window_rx.clone(),
            )));
        }
        for (w, (doc, log)) in docs.into_iter().enumerate() {
            let i = d * args.writers + w;
            let offset = period.mul_f64(i as f64 / total_writers.max(1) as f64);
            writer_tasks.push(tokio::spawn(run_writer(
                url.clone(),
                doc,
                log,
                shared.clone(),
                sem.clone(),
                args.setup_timeout,
                phase_rx.clone(),
                period,
                offset,
                until_rx.clone(),
            )));
        }
    }
    let total_clients = reader_tasks.len() + writer_tasks.len();

    // Wait until every client is set up (or gave up).
    let setup_deadline = Instant::now() + args.setup_timeout * 2 + Duration::from_secs(5);
    while shared.settled.load(Ordering::SeqCst) < total_clients && Instant::now() < setup_deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let start = Instant::now() + Duration::from_millis(50);
    let window = Window {
        start: start + args.warmup,
        end: start + args.warmup + args.duration,
    };
    let _ = window_tx.send(Some(window));
    let _ = until_tx.send(Some(window.end));
    let _ = phase_tx.send(Phase {
        start: Some(start),
        stop: false,
    });
    if !args.json_only {
        eprintln!(
            "tandem-load: {} of {} clients set up ({} docs × {}w + {}r), run {}: warmup {:?}, measuring {:?}",
            shared.connected.load(Ordering::SeqCst),
            total_clients,
            args.docs,
            args.writers,
            args.readers,
            run_id,
            args.warmup,
            args.duration
        );
    }
    tokio::time::sleep_until(window.end.into()).await;
    let done_deadline = Instant::now() + Duration::from_secs(5);
    while shared.writers_done.load(Ordering::SeqCst) < writer_tasks.len()
        && Instant::now() < done_deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Expected deliveries: every send after a reader's set-up, by every writer of its doc.
    let expected: u64 = {
        let setups = shared
            .reader_setups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        setups
            .iter()
            .map(|&(d, at)| {
                logs[d]
                    .iter()
                    .map(|log| {
                        let log = log.read().unwrap_or_else(|e| e.into_inner());
                        let mut times: Vec<Instant> = log.iter().map(|&(_, t)| t).collect();
                        times.sort();
                        (times.len() - times.partition_point(|&t| t <= at)) as u64
                    })
                    .sum::<u64>()
            })
            .sum()
    };
    // Drain: wait until everything arrived, progress stalls for a second, or the deadline.
    let drain_deadline = Instant::now() + args.drain;
    let mut last = shared.delivered.load(Ordering::SeqCst);
    let mut last_change = Instant::now();
    loop {
        let now = Instant::now();
        let cur = shared.delivered.load(Ordering::SeqCst);
        if cur != last {
            last = cur;
            last_change = now;
        }
        if cur >= expected
            || now >= drain_deadline
            || now.duration_since(last_change) > Duration::from_secs(1)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let delivered_total = shared.delivered.load(Ordering::SeqCst);
    let _ = phase_tx.send(Phase {
        start: Some(start),
        stop: true,
    });

    let mut latencies: Vec<u32> = Vec::new();
    let mut setups: Vec<u32> = Vec::new();
    let mut readers_ok = 0usize;
    let mut writers_ok = 0usize;
    for t in reader_tasks {
        match tokio::time::timeout(Duration::from_secs(10), t).await {
            Ok(Ok(r)) => {
                if let Some(s) = r.setup {
                    readers_ok += 1;
                    setups.push(s.as_micros().min(u32::MAX as u128) as u32);
                }
                latencies.extend(r.latencies_us);
            }
            Ok(Err(_)) => shared.error("task_panic"),
            Err(_) => shared.error("task_timeout"),
        }
    }
    for t in writer_tasks {
        match tokio::time::timeout(Duration::from_secs(10), t).await {
            Ok(Ok(r)) => {
                if let Some(s) = r.setup {
                    writers_ok += 1;
                    setups.push(s.as_micros().min(u32::MAX as u128) as u32);
                }
            }
            Ok(Err(_)) => shared.error("task_panic"),
            Err(_) => shared.error("task_timeout"),
        }
    }
    latencies.sort_unstable();
    setups.sort_unstable();

    let mut sent_total = 0u64;
    let mut sent_window = 0u64;
    for doc_logs in &logs {
        for log in doc_logs {
            let log = log.read().unwrap_or_else(|e| e.into_inner());
            sent_total += log.len() as u64;
            sent_window += log.iter().filter(|&&(_, t)| window.contains(t)).count() as u64;
        }
    }
    let window_secs = args.duration.as_secs_f64();
    let delivered_window = latencies.len() as u64;
    let errors = shared
        .errors
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let error_total: u64 = errors.values().sum();
    let missing = expected.saturating_sub(delivered_total);
    let round3 = |v: f64| (v * 1000.0).round() / 1000.0;

    let summary = serde_json::json!({
        "url": args.url,
        "run_id": run_id,
        "docs": args.docs,
        "writers_per_doc": args.writers,
        "readers_per_doc": args.readers,
        "rate_per_writer": args.rate,
        "duration_s": window_secs,
        "warmup_s": args.warmup.as_secs_f64(),
        "clients": total_clients,
        "clients_connected": readers_ok + writers_ok,
        "readers_connected": readers_ok,
        "writers_connected": writers_ok,
        "setup_ms_p50": ms(percentile(&setups, 50.0)),
        "setup_ms_p99": ms(percentile(&setups, 99.0)),
        "setup_ms_max": ms(setups.last().copied()),
        "updates_sent": sent_total,
        "updates_sent_in_window": sent_window,
        "sent_updates_per_s": round3(sent_window as f64 / window_secs),
        "updates_expected": expected,
        "updates_delivered": delivered_total,
        "updates_delivered_in_window": delivered_window,
        "delivered_updates_per_s": round3(delivered_window as f64 / window_secs),
        "latency_ms_p50": ms(percentile(&latencies, 50.0)),
        "latency_ms_p90": ms(percentile(&latencies, 90.0)),
        "latency_ms_p99": ms(percentile(&latencies, 99.0)),
        "latency_ms_max": ms(latencies.last().copied()),
        "missing": missing,
        "errors": error_total,
        "errors_by_kind": errors,
        "cold_load_bytes": args.cold_load_bytes,
        "cold_load_sync_bytes": cold_bytes,
        "cold_load_ms": cold_ms,
    });

    if !args.json_only {
        let s = &summary;
        let f = |k: &str| fmt_ms(s[k].as_f64());
        println!("tandem-load against {} (run {})", args.url, run_id);
        println!(
            "  clients:    {} set up of {} ({} docs × {} writers + {} readers)",
            readers_ok + writers_ok,
            total_clients,
            args.docs,
            args.writers,
            args.readers
        );
        println!(
            "  set-up ms:  p50 {}  p99 {}  max {}",
            f("setup_ms_p50"),
            f("setup_ms_p99"),
            f("setup_ms_max")
        );
        println!(
            "  sent:       {} updates ({} in the {:.1}s window, {:.1}/s)",
            sent_total,
            sent_window,
            window_secs,
            sent_window as f64 / window_secs
        );
        println!(
            "  delivered:  {} of {} expected; {} in window = {:.1} updates/s",
            delivered_total,
            expected,
            delivered_window,
            delivered_window as f64 / window_secs
        );
        println!(
            "  latency ms: p50 {}  p90 {}  p99 {}  max {}",
            f("latency_ms_p50"),
            f("latency_ms_p90"),
            f("latency_ms_p99"),
            f("latency_ms_max")
        );
        println!("  missing:    {missing}");
        println!("  errors:     {error_total} {errors:?}");
        if args.cold_load_bytes.is_some() {
            println!(
                "  cold load:  {} ms ({} bytes of text, SyncStep2 {} bytes)",
                fmt_ms(cold_ms),
                args.cold_load_bytes.unwrap_or(0),
                cold_bytes.map_or_else(|| "-".to_string(), |b| b.to_string())
            );
        }
    }
    println!("{summary}");
}
