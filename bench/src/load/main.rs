//! `tandem-load`: a load generator for any y-websocket (or hocuspocus) server.
//!
//! D documents × W writers × K readers. Writers insert short strings into the Y.Text
//! `content` at a fixed rate and send them as sync Update messages; readers measure the
//! end-to-end latency (writer send → reader receive) of every update, matched by the writer's
//! (client id, clock). Everything runs in one process, so no clock synchronisation is needed.
//! Optionally measures the cold load of a large document first (`--cold-load-bytes`).
//!
//! For memory measurements, `--rate 0` makes every client idle (connect, sync, hold, close) and
//! `--fill-bytes N` has each writer load its document with N bytes of text before the run. The
//! line `tandem-load: holding` on stderr marks the start of the measured window, when every
//! client is set up.
//!
//! `--protocol hocuspocus` speaks the `@hocuspocus/server` framing instead: one endpoint for all
//! documents, every message prefixed with the document name and a hocuspocus message type, and
//! an Auth message before the sync.
//!
//! Prints a human-readable summary and then one JSON line with stable keys.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tokio::time::Interval;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use yrs::encoding::read::{Cursor, Read};
use yrs::encoding::write::Write;
use yrs::sync::{Message, SyncMessage};
use yrs::updates::decoder::{Decode, DecoderV1};
use yrs::updates::encoder::{Encode, Encoder, EncoderV1};
use yrs::{ClientID, Doc, ReadTxn, StateVector, Text, Transact, Update};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How often a hocuspocus client sends something of its own: the server closes a connection
/// that has sent nothing for its `timeout` (60 s by default), and the stock provider renews its
/// awareness every 15 s. Readers and idle clients would otherwise be closed in long runs.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// Read buffer of each load client's socket. tungstenite's default (128 KiB) is zero-filled on
/// every read, so 10,000 idle clients would hold 1.3 GB; load clients get small frames, and a
/// larger one still arrives whole (the buffer grows to it, in reads of this size). The cold
/// load keeps the default, so its timing of one large SyncStep2 is unchanged.
const CLIENT_READ_BUFFER: usize = 8 * 1024;

/// Longest wait for the server to confirm the cold-load document.
const COLD_ACK_TIMEOUT: Duration = Duration::from_secs(120);

/// Wire protocol spoken to the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Protocol {
    /// y-websocket: one WebSocket per document at `{url}/{doc}`, bare y-protocol messages.
    YWebsocket,
    /// `@hocuspocus/server`: one endpoint at `{url}`; every message starts with the document
    /// name and a hocuspocus message type, and the client authenticates before it syncs.
    Hocuspocus,
}

/// The hocuspocus framing, as read in `@hocuspocus/server` 4.7.0 (`src/types.ts`
/// `MessageType`, `src/OutgoingMessage.ts`, `src/ClientConnection.ts`) and
/// `@hocuspocus/common` (`src/auth.ts` `AuthMessageType`). A message is
/// `varString(document name) varUint(type) payload`; the payload of Sync (and SyncReply) is a
/// y-protocol sync message, the same bytes as after y-websocket's own `0` tag.
mod hocuspocus {
    pub const SYNC: u32 = 0;
    pub const AUTH: u32 = 2;
    pub const QUERY_AWARENESS: u32 = 3;
    /// A Sync message that must not trigger another SyncStep1 (server to server, but harmless).
    pub const SYNC_REPLY: u32 = 4;
    /// The server closed this document's session; a varString reason follows.
    pub const CLOSE: u32 = 7;
    /// A connection-level ping is this single byte, without a document name (the 4.x provider
    /// answers it with Pong = 10; server 4.7.0 sends none, and tandem-load ignores it).
    pub const PING: u8 = 9;
    /// Auth sub-types: the client sends `Token varString(token) varString(provider version)`;
    /// the server answers `Authenticated varString(scope)` or `PermissionDenied varString(why)`.
    pub const AUTH_TOKEN: u32 = 0;
    pub const AUTH_PERMISSION_DENIED: u32 = 1;
}

/// Load generator for y-websocket (and hocuspocus) servers.
#[derive(Debug, Parser)]
#[command(name = "tandem-load", version)]
struct Args {
    /// Base WebSocket URL; document `d` is served at `{url}/{d}` (with `--protocol hocuspocus`,
    /// every client connects to `{url}` itself).
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    url: String,
    /// Wire protocol of the server.
    #[arg(long, value_enum, default_value_t = Protocol::YWebsocket)]
    protocol: Protocol,
    /// Number of documents.
    #[arg(long, default_value_t = 1)]
    docs: usize,
    /// Writers per document.
    #[arg(long, default_value_t = 1)]
    writers: usize,
    /// Readers per document.
    #[arg(long, default_value_t = 10)]
    readers: usize,
    /// Updates per second per writer; 0 makes every client idle: it connects, syncs and holds
    /// its connection for the warmup and the window without sending updates.
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
    /// Token sent as `?token=` on every connection (with hocuspocus, in its Auth message).
    #[arg(long)]
    token: Option<String>,
    /// Right after its set-up, each writer inserts about this many bytes of text in one update
    /// and waits until the server has it; not counted as sent or delivered (for measuring the
    /// memory of loaded documents).
    #[arg(long, default_value_t = 0)]
    fill_bytes: usize,
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

fn ws_config(read_buffer_size: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(None)
        .max_frame_size(None)
        .read_buffer_size(read_buffer_size)
}

/// What a client makes of one frame from the server.
#[derive(Debug)]
enum Incoming {
    Sync(SyncMessage),
    /// Hocuspocus: the server refused the token for this document.
    Denied,
    /// Hocuspocus: the server ended this document's session.
    Closed,
    /// Anything else: awareness, a successful auth, sync status acks, pings, other documents.
    Other,
}

/// One client's way to one document: where to connect and how to frame messages.
#[derive(Clone, Debug)]
struct Endpoint {
    protocol: Protocol,
    /// The WebSocket URL to connect to.
    url: String,
    /// The document name, sent in every hocuspocus message.
    doc: String,
    /// The token of the hocuspocus Auth message (y-websocket sends it in the URL).
    token: Option<String>,
    /// The socket's read buffer size.
    read_buffer: usize,
}

impl Endpoint {
    fn new(args: &Args, doc: &str) -> Self {
        let url = match args.protocol {
            Protocol::YWebsocket => doc_url(&args.url, doc, args.token.as_deref()),
            Protocol::Hocuspocus => args.url.clone(),
        };
        Endpoint {
            protocol: args.protocol,
            url,
            doc: doc.to_string(),
            token: args.token.clone(),
            read_buffer: CLIENT_READ_BUFFER,
        }
    }

    /// One frame: bare for y-websocket, after the document name for hocuspocus.
    fn frame(&self, write: impl FnOnce(&mut EncoderV1)) -> WsMessage {
        let mut enc = EncoderV1::new();
        if self.protocol == Protocol::Hocuspocus {
            enc.write_string(&self.doc);
        }
        write(&mut enc);
        WsMessage::Binary(enc.to_vec().into())
    }

    /// A sync message (y-websocket's message tag 0 and hocuspocus's Sync type are the same).
    fn sync(&self, msg: SyncMessage) -> WsMessage {
        self.frame(|enc| {
            enc.write_var(hocuspocus::SYNC);
            msg.encode(enc);
        })
    }

    /// What a client sends first: hocuspocus handles nothing else for a document before a
    /// token (empty when there is none) has been accepted.
    fn hello(&self) -> Option<WsMessage> {
        (self.protocol == Protocol::Hocuspocus).then(|| {
            self.frame(|enc| {
                enc.write_var(hocuspocus::AUTH);
                enc.write_var(hocuspocus::AUTH_TOKEN);
                enc.write_string(self.token.as_deref().unwrap_or(""));
                enc.write_string(concat!("tandem-load/", env!("CARGO_PKG_VERSION")));
            })
        })
    }

    /// A message that keeps a silent client's connection open, where the protocol needs one:
    /// hocuspocus answers a client's QueryAwareness with nothing and keeps no state for it.
    fn keepalive(&self) -> Option<WsMessage> {
        (self.protocol == Protocol::Hocuspocus)
            .then(|| self.frame(|enc| enc.write_var(hocuspocus::QUERY_AWARENESS)))
    }

    /// Ticks every [`KEEPALIVE`] when the protocol needs keepalives.
    fn keepalive_timer(&self) -> Option<Interval> {
        (self.protocol == Protocol::Hocuspocus).then(|| {
            let mut timer =
                tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE);
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            timer
        })
    }

    /// Decodes a frame from the server. Never panics: a panic inside yrs on hostile input becomes
    /// an error to count, like any malformed frame.
    fn decode(&self, data: &[u8]) -> Result<Incoming, ()> {
        match catch_unwind(AssertUnwindSafe(|| self.decode_frame(data))) {
            Ok(Ok(incoming)) => Ok(incoming),
            _ => Err(()),
        }
    }

    fn decode_frame(&self, data: &[u8]) -> Result<Incoming, yrs::encoding::read::Error> {
        if self.protocol == Protocol::YWebsocket {
            return Ok(match Message::decode_v1(data)? {
                Message::Sync(msg) => Incoming::Sync(msg),
                _ => Incoming::Other,
            });
        }
        if data == [hocuspocus::PING] {
            return Ok(Incoming::Other);
        }
        let mut dec = DecoderV1::new(Cursor::new(data));
        // A session-aware server addresses `name\0session`.
        let ours = dec.read_string()?.split('\0').next() == Some(self.doc.as_str());
        if !ours {
            return Ok(Incoming::Other);
        }
        Ok(match dec.read_var::<u32>()? {
            hocuspocus::SYNC | hocuspocus::SYNC_REPLY => {
                Incoming::Sync(SyncMessage::decode(&mut dec)?)
            }
            hocuspocus::AUTH => {
                if dec.read_var::<u32>()? == hocuspocus::AUTH_PERMISSION_DENIED {
                    Incoming::Denied
                } else {
                    Incoming::Other
                }
            }
            hocuspocus::CLOSE => Incoming::Closed,
            _ => Incoming::Other,
        })
    }
}

/// The error kind of a close frame: `{prefix}close_{code}`.
fn close_kind(prefix: &str, frame: Option<CloseFrame>) -> String {
    match frame {
        Some(f) => format!("{prefix}close_{}", u16::from(f.code)),
        None => format!("{prefix}close"),
    }
}

/// Waits for the next keepalive tick; never, without a timer.
async fn keepalive_due(timer: &mut Option<Interval>) {
    match timer {
        Some(timer) => {
            timer.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Sends the protocol's keepalive, if it has one; false (and a counted error) if that failed.
async fn send_keepalive<S>(sink: &mut S, endpoint: &Endpoint, shared: &Shared) -> bool
where
    S: futures_util::Sink<WsMessage> + Unpin,
{
    let Some(msg) = endpoint.keepalive() else {
        return true;
    };
    if sink.send(msg).await.is_err() {
        shared.error("ws_write");
        return false;
    }
    true
}

/// Connects and performs the initial sync of an empty client: sends SyncStep1 (empty state
/// vector; for hocuspocus an Auth message first), answers the server's SyncStep1 with an empty
/// SyncStep2, and waits for the server's SyncStep2. Returns the socket, the set-up time and the
/// SyncStep2 payload.
async fn connect_and_sync(
    endpoint: &Endpoint,
    timeout: Duration,
    sem: &Semaphore,
) -> Result<(Ws, Duration, Vec<u8>), String> {
    let _permit = sem.acquire().await.map_err(|_| "semaphore".to_string())?;
    let t0 = Instant::now();
    let fut = async {
        let (mut ws, _resp) = tokio_tungstenite::connect_async_with_config(
            &endpoint.url,
            Some(ws_config(endpoint.read_buffer)),
            true,
        )
        .await
        .map_err(|e| match e {
            tokio_tungstenite::tungstenite::Error::Http(resp) => {
                format!("connect_http_{}", resp.status().as_u16())
            }
            tokio_tungstenite::tungstenite::Error::Io(_) => "connect_io".to_string(),
            _ => "connect_other".to_string(),
        })?;
        if let Some(hello) = endpoint.hello() {
            ws.send(hello).await.map_err(|_| "ws_write".to_string())?;
        }
        ws.send(endpoint.sync(SyncMessage::SyncStep1(StateVector::default())))
            .await
            .map_err(|_| "ws_write".to_string())?;
        loop {
            match ws.next().await {
                None => return Err("closed_during_setup".to_string()),
                Some(Err(_)) => return Err("ws_read".to_string()),
                Some(Ok(WsMessage::Binary(data))) => match endpoint.decode(&data) {
                    Ok(Incoming::Sync(SyncMessage::SyncStep1(_))) => {
                        let empty = Update::new().encode_v1();
                        ws.send(endpoint.sync(SyncMessage::SyncStep2(empty)))
                            .await
                            .map_err(|_| "ws_write".to_string())?;
                    }
                    Ok(Incoming::Sync(SyncMessage::SyncStep2(payload))) => {
                        return Ok((ws, t0.elapsed(), payload));
                    }
                    Ok(Incoming::Denied) => return Err("permission_denied".to_string()),
                    Ok(Incoming::Closed) => return Err("close_message".to_string()),
                    Ok(_) => {}
                    Err(()) => return Err("decode".to_string()),
                },
                Some(Ok(WsMessage::Close(frame))) => return Err(close_kind("", frame)),
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

/// About `bytes` bytes of text.
fn filler(bytes: usize) -> String {
    let alphabet = b"abcdefghijklmnopqrstuvwxyz \n";
    (0..bytes)
        .map(|i| alphabet[i % alphabet.len()] as char)
        .collect()
}

/// Sends `update`, then a SyncStep1 with the state after it, and waits for the server's
/// SyncStep2: the server answers in order, so its (small) answer means it has applied the
/// update. Error kinds start with `prefix`.
async fn push_and_confirm(
    ws: &mut Ws,
    endpoint: &Endpoint,
    update: Vec<u8>,
    sv: StateVector,
    timeout: Duration,
    prefix: &str,
) -> Result<(), String> {
    ws.send(endpoint.sync(SyncMessage::Update(update)))
        .await
        .map_err(|_| format!("{prefix}_write"))?;
    ws.send(endpoint.sync(SyncMessage::SyncStep1(sv)))
        .await
        .map_err(|_| format!("{prefix}_write"))?;
    let acked = async {
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(WsMessage::Binary(data)) => match endpoint.decode(&data) {
                    Ok(Incoming::Sync(SyncMessage::SyncStep2(_))) => return Ok(()),
                    Ok(Incoming::Denied) => return Err(format!("{prefix}_permission_denied")),
                    Ok(Incoming::Closed) => return Err(format!("{prefix}_close_message")),
                    _ => {}
                },
                Ok(WsMessage::Close(frame)) => {
                    return Err(close_kind(&format!("{prefix}_"), frame));
                }
                Ok(_) => {}
                Err(_) => return Err(format!("{prefix}_ws_read")),
            }
        }
        Err(format!("{prefix}_eof"))
    };
    tokio::time::timeout(timeout, acked)
        .await
        .unwrap_or_else(|_| Err(format!("{prefix}_not_acknowledged")))
}

/// Inserts about `bytes` bytes of text into `doc` in one update and waits until the server has
/// it. The update is in no writer log, so readers skip its clock range.
async fn fill(
    ws: &mut Ws,
    endpoint: &Endpoint,
    doc: &Doc,
    bytes: usize,
    timeout: Duration,
) -> Result<(), String> {
    let text = doc.get_or_insert_text("content");
    let (update, sv) = {
        let mut txn = doc.transact_mut();
        text.push(&mut txn, &filler(bytes));
        (txn.encode_update_v1(), txn.state_vector())
    };
    push_and_confirm(ws, endpoint, update, sv, timeout, "fill").await
}

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
async fn run_reader(
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

#[allow(clippy::too_many_arguments)]
async fn run_writer(
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

/// Builds a document of about `bytes` bytes of text in one update, then times a new client's
/// connect → SyncStep2. Returns (milliseconds, SyncStep2 size in bytes).
async fn cold_load(
    args: &Args,
    doc_name: &str,
    client: u64,
    sem: &Semaphore,
) -> Result<(f64, usize), String> {
    let endpoint = Endpoint {
        read_buffer: WebSocketConfig::default().read_buffer_size,
        ..Endpoint::new(args, doc_name)
    };
    let (mut ws, _, _) = connect_and_sync(&endpoint, args.setup_timeout, sem).await?;
    let doc = Doc::with_client_id(client);
    let client = ClientID::new(client);
    let text = doc.get_or_insert_text("content");
    let (bytes, clock, sv) = {
        let mut txn = doc.transact_mut();
        text.push(&mut txn, &filler(args.cold_load_bytes.unwrap_or(0)));
        let bytes = txn.encode_update_v1();
        let sv = txn.state_vector();
        let clock = sv.get(&client);
        (bytes, clock, sv)
    };
    let contains = |payload: &[u8]| {
        catch_unwind(AssertUnwindSafe(|| {
            Update::decode_v1(payload).is_ok_and(|u| u.state_vector().get(&client) >= clock)
        }))
        .unwrap_or(false)
    };
    // Ask for what we lack (nothing) after the update: the answer acknowledges it. The loader
    // below checks the content.
    let acked = push_and_confirm(&mut ws, &endpoint, bytes, sv, COLD_ACK_TIMEOUT, "cold").await;
    close(ws).await;
    acked?;
    tokio::time::sleep(args.cold_wait).await;
    let (ws, elapsed, payload) = connect_and_sync(&endpoint, args.setup_timeout, sem).await?;
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

/// The interval between one writer's updates (None: idle clients), or why `rate` is unusable.
fn send_period(rate: f64) -> Result<Option<Duration>, &'static str> {
    if !(rate.is_finite() && rate >= 0.0) {
        return Err("--rate must be a number, 0 or more");
    }
    if rate == 0.0 {
        return Ok(None);
    }
    match Duration::try_from_secs_f64(1.0 / rate) {
        Ok(period) if !period.is_zero() => Ok(Some(period)),
        _ => Err("--rate is out of range"),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let bad = if args.docs == 0 {
        Some("--docs must be at least 1")
    } else if let Err(msg) = send_period(args.rate) {
        Some(msg)
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
    let clients = args.docs * (args.writers + args.readers);
    // Every client holds a socket, and the usual soft limit (1024) is far below the 10,000
    // connections of a memory measurement: raise it as far as the hard limit allows.
    match rlimit::increase_nofile_limit(u64::MAX) {
        // Sockets, plus a margin for the runtime's own descriptors.
        Ok(limit) if limit < clients as u64 + 64 => eprintln!(
            "tandem-load: warning: the open-file limit ({limit}) is below the {clients} connections asked for"
        ),
        _ => {}
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
    // Validated in `main`.
    let period = send_period(args.rate).unwrap_or(None);

    let mut reader_tasks = Vec::new();
    let mut writer_tasks = Vec::new();
    let mut logs: Vec<Vec<Arc<WriterLog>>> = Vec::new();
    for d in 0..args.docs {
        let name = format!("{}-{}-{}", args.doc_prefix, run_id, d);
        let endpoint = Endpoint::new(&args, &name);
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
                endpoint.clone(),
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
            let offset = period
                .unwrap_or_default()
                .mul_f64(i as f64 / total_writers.max(1) as f64);
            writer_tasks.push(tokio::spawn(run_writer(
                endpoint.clone(),
                doc,
                log,
                shared.clone(),
                sem.clone(),
                args.setup_timeout,
                args.fill_bytes,
                phase_rx.clone(),
                period,
                offset,
                until_rx.clone(),
            )));
        }
    }
    let total_clients = reader_tasks.len() + writer_tasks.len();

    // Wait until every client is set up (or gave up). Clients queue for a connection slot, so
    // many of them take long in total: give up only when set-ups stop finishing (each one ends
    // within --setup-timeout once it has a slot).
    let stall_limit = args.setup_timeout * 2 + Duration::from_secs(5);
    let mut settled = shared.settled.load(Ordering::SeqCst);
    let mut last_progress = Instant::now();
    while settled < total_clients && last_progress.elapsed() < stall_limit {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let now_settled = shared.settled.load(Ordering::SeqCst);
        if now_settled != settled {
            settled = now_settled;
            last_progress = Instant::now();
        }
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
    // The mark a benchmark script waits for to sample the server (memory per connection or per
    // document): every client is set up (and filled) and the window starts. Printed even with
    // --json-only.
    tokio::time::sleep_until(window.start.into()).await;
    eprintln!("tandem-load: holding");
    let _ = std::io::stderr().flush();
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

    let mut summary = serde_json::json!({
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
    // Keys for the newer options only when they are used, so default output keeps its keys.
    if args.protocol != Protocol::YWebsocket {
        summary["protocol"] = serde_json::json!("hocuspocus");
    }
    if args.fill_bytes > 0 {
        summary["fill_bytes"] = serde_json::json!(args.fill_bytes);
    }

    if !args.json_only {
        let s = &summary;
        let f = |k: &str| fmt_ms(s[k].as_f64());
        println!(
            "tandem-load against {}{} (run {})",
            args.url,
            if args.protocol == Protocol::Hocuspocus {
                " [hocuspocus]"
            } else {
                ""
            },
            run_id
        );
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
        if args.fill_bytes > 0 {
            println!(
                "  fill:       {} bytes of text per writer before the run",
                args.fill_bytes
            );
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(protocol: Protocol) -> Endpoint {
        Endpoint {
            protocol,
            url: "ws://127.0.0.1:1/".to_string(),
            doc: "d".to_string(),
            token: Some("t".to_string()),
            read_buffer: CLIENT_READ_BUFFER,
        }
    }

    fn bytes(msg: WsMessage) -> Vec<u8> {
        msg.into_data().to_vec()
    }

    #[test]
    fn y_websocket_frames_are_bare_y_protocol_messages() {
        let sync = SyncMessage::Update(vec![1, 2, 3]);
        let frame = endpoint(Protocol::YWebsocket).sync(sync.clone());
        assert_eq!(bytes(frame), Message::Sync(sync).encode_v1());
        assert!(endpoint(Protocol::YWebsocket).hello().is_none());
        assert!(endpoint(Protocol::YWebsocket).keepalive().is_none());
    }

    #[test]
    fn hocuspocus_frames_start_with_the_document_name_and_type() {
        let hp = endpoint(Protocol::Hocuspocus);
        let step1 = hp.sync(SyncMessage::SyncStep1(StateVector::default()));
        // varString "d", Sync, SyncStep1, varUint8Array(empty state vector).
        assert_eq!(bytes(step1), [1, b'd', 0, 0, 1, 0]);
        assert_eq!(bytes(hp.keepalive().expect("hocuspocus")), [1, b'd', 3]);
        let hello = bytes(hp.hello().expect("hocuspocus"));
        // varString "d", Auth, Token, varString "t", then the provider version.
        assert_eq!(hello[..6], [1, b'd', 2, 0, 1, b't']);
        let mut dec = DecoderV1::new(Cursor::new(&hello[6..]));
        assert!(
            dec.read_string()
                .expect("version")
                .starts_with("tandem-load/")
        );
    }

    #[test]
    fn hocuspocus_messages_are_decoded_by_document_and_type() {
        let hp = endpoint(Protocol::Hocuspocus);
        let step2 = [1, b'd', 0, 1, 2, 0, 0];
        assert!(matches!(
            hp.decode(&step2),
            Ok(Incoming::Sync(SyncMessage::SyncStep2(u))) if u == [0, 0]
        ));
        // SyncReply carries a sync message too; a session-aware address names the document.
        let reply = [3, b'd', 0, b's', 4, 2, 2, 0, 0];
        assert!(matches!(
            hp.decode(&reply),
            Ok(Incoming::Sync(SyncMessage::Update(_)))
        ));
        assert!(matches!(
            hp.decode(&[1, b'e', 0, 1, 2, 0, 0]),
            Ok(Incoming::Other)
        ));
        let denied = [1, b'd', 2, 1, 2, b'n', b'o'];
        assert!(matches!(hp.decode(&denied), Ok(Incoming::Denied)));
        let authenticated = [1, b'd', 2, 2, 1, b'x'];
        assert!(matches!(hp.decode(&authenticated), Ok(Incoming::Other)));
        assert!(matches!(hp.decode(&[1, b'd', 7, 0]), Ok(Incoming::Closed)));
        assert!(matches!(hp.decode(&[1, b'd', 8, 1]), Ok(Incoming::Other)));
        assert!(matches!(hp.decode(&[9]), Ok(Incoming::Other)));
        assert!(hp.decode(&[5, b'd']).is_err());
    }

    #[test]
    fn hostile_frames_are_errors_not_panics() {
        let huge = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        // Length prefixes far beyond the frame, where a string, a buffer or a message is due.
        let cases: [(Protocol, &[u8]); 6] = [
            (Protocol::YWebsocket, &[0, 0]),
            (Protocol::YWebsocket, &[0, 1]),
            (Protocol::YWebsocket, &[0, 2]),
            (Protocol::Hocuspocus, &[]),
            (Protocol::Hocuspocus, &[1, b'd', 0, 2]),
            (Protocol::Hocuspocus, &[1, b'd', 0, 1]),
        ];
        for (protocol, prefix) in cases {
            let frame = [prefix, &huge[..]].concat();
            assert!(endpoint(protocol).decode(&frame).is_err(), "{frame:?}");
        }
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

    #[test]
    fn rate_zero_means_idle_and_bad_rates_are_refused() {
        assert_eq!(send_period(0.0), Ok(None));
        assert_eq!(send_period(10.0), Ok(Some(Duration::from_millis(100))));
        for bad in [-1.0, f64::NAN, f64::INFINITY, 1e12] {
            assert!(send_period(bad).is_err(), "{bad}");
        }
    }
}
