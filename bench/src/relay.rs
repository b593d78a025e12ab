//! `tandem-relay`: a raw WebSocket fan-out, the ceiling the benchmarks compare Tandem against.
//!
//! Every binary message a client sends is forwarded, byte for byte, to every other client
//! connected to the same room; the room is the request path (`/ws/doc-1`, `/doc-1`, …; the
//! query string is ignored). There is no CRDT, no document state, no store, no auth: it measures
//! what the machine can do moving WebSocket frames, so the real server's numbers can be read
//! against it.
//!
//! It knows just enough of the y-websocket protocol for stock clients and `tandem-load` to
//! finish their handshake:
//! - on connect it sends a SyncStep1 with an empty state vector, as y-websocket servers do;
//! - a client's SyncStep1 is answered (to that client alone) with a constant empty SyncStep2 and
//!   is not relayed;
//! - a client's SyncStep2 is dropped (it answers our empty SyncStep1 and means nothing to peers);
//! - everything else binary (sync updates, awareness, …) is relayed as is.
//!
//! It is **not** a server to use: a late joiner never sees what was written before it arrived,
//! and nothing survives a restart.
//!
//! Design, for speed: per client one reader (the connection task) and one writer task joined by
//! an unbounded channel of `Message`s whose payload is a shared `Bytes`, so a relayed message is
//! never copied per recipient. The room map is locked only on join and leave; relaying takes the
//! room's own read lock. The writer feeds everything that is already queued and flushes once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Largest message or frame accepted, the same as Tandem's default `max_message_size`.
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// A client with more than this queued but not yet written is too slow to keep up; it is dropped
/// rather than letting its queue grow without bound.
const MAX_PENDING_BYTES: usize = 64 * 1024 * 1024;
/// Messages fed to the socket before one flush; bounds the batch so latency stays even.
const MAX_BATCH: usize = 256;
/// A client that has not finished the WebSocket handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time given to a departing client's writer to flush and close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// y-websocket SyncStep1 with an empty state vector: sync, step1, length 1, zero entries.
const SYNC_STEP1_EMPTY: &[u8] = &[0, 0, 1, 0];
/// y-websocket SyncStep2 carrying an empty v1 update (no structs, empty delete set).
const SYNC_STEP2_EMPTY: &[u8] = &[0, 1, 2, 0, 0];

/// Raw WebSocket relay: a benchmark baseline, not a collaboration server.
#[derive(Debug, Parser)]
#[command(name = "tandem-relay", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    bind: SocketAddr,
}

/// What a room's other members (relaying to it) share with a client's connection task.
struct PeerState {
    /// Bytes queued for the writer and not yet flushed.
    pending: AtomicUsize,
    /// Signalled when the client fell too far behind and must be dropped.
    kick: Notify,
}

#[derive(Clone)]
struct Peer {
    id: u64,
    tx: mpsc::UnboundedSender<Message>,
    state: Arc<PeerState>,
}

impl Peer {
    /// Queues `msg` unless the client is too far behind, in which case it is kicked.
    fn push(&self, msg: Message, len: usize) {
        let pending = self.state.pending.fetch_add(len, Ordering::Relaxed) + len;
        if pending > MAX_PENDING_BYTES {
            self.state.pending.fetch_sub(len, Ordering::Relaxed);
            self.state.kick.notify_one();
            return;
        }
        // A send error means the writer is gone; the connection task is already leaving.
        let _ = self.tx.send(msg);
    }
}

/// The clients connected to one path. A read lock suffices to relay (senders take `&self`).
#[derive(Default)]
struct Room {
    peers: RwLock<Vec<Peer>>,
}

impl Room {
    fn relay(&self, from: u64, data: Bytes) {
        let len = data.len();
        let msg = Message::Binary(data);
        let peers = self.peers.read().unwrap_or_else(PoisonError::into_inner);
        for peer in peers.iter().filter(|p| p.id != from) {
            peer.push(msg.clone(), len);
        }
    }
}

/// All rooms. Locked only on join and leave, so the relay path never contends on it; leaving
/// removes an empty room under the same lock joining takes, so nobody joins a removed room.
#[derive(Default)]
struct Rooms {
    map: Mutex<HashMap<String, Arc<Room>>>,
    next_id: AtomicU64,
}

impl Rooms {
    fn join(&self, key: String, tx: mpsc::UnboundedSender<Message>) -> (Arc<Room>, Peer) {
        let peer = Peer {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            tx,
            state: Arc::new(PeerState {
                pending: AtomicUsize::new(0),
                kick: Notify::new(),
            }),
        };
        // Queued before joining (and counted), so it is the first thing the client receives.
        peer.push(
            Message::Binary(Bytes::from_static(SYNC_STEP1_EMPTY)),
            SYNC_STEP1_EMPTY.len(),
        );
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let room = map.entry(key).or_default().clone();
        room.peers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(peer.clone());
        (room, peer)
    }

    fn leave(&self, key: &str, room: &Room, id: u64) {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let mut peers = room.peers.write().unwrap_or_else(PoisonError::into_inner);
        peers.retain(|p| p.id != id);
        if peers.is_empty() {
            map.remove(key);
        }
    }
}

/// Writes everything queued for one client: one message, then whatever else is ready, one flush.
async fn write_loop<S>(mut sink: S, mut rx: mpsc::UnboundedReceiver<Message>, state: Arc<PeerState>)
where
    S: futures_util::Sink<Message> + Unpin,
{
    while let Some(first) = rx.recv().await {
        let mut bytes = first.len();
        if sink.feed(first).await.is_err() {
            return;
        }
        for _ in 1..MAX_BATCH {
            let Ok(msg) = rx.try_recv() else { break };
            bytes += msg.len();
            if sink.feed(msg).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
        state.pending.fetch_sub(bytes, Ordering::Relaxed);
    }
    let _ = sink.close().await;
}

fn ws_config() -> WebSocketConfig {
    // tungstenite's default read buffer is 128 KiB per connection, allocated and zeroed up
    // front; 8 KiB holds any small message and grows for larger ones.
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES))
}

/// Serves one client from handshake to departure.
async fn serve(stream: TcpStream, rooms: Arc<Rooms>) {
    let _ = stream.set_nodelay(true);
    let mut path = String::new();
    // The signature, with its large `ErrorResponse`, is tungstenite's `Callback`; we never fail.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| {
        path = req.uri().path().to_owned();
        Ok(resp)
    };
    let handshake =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(ws_config()));
    let ws = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => return tracing::debug!(error = %e, "handshake failed"),
        Err(_) => return tracing::debug!("handshake timed out"),
    };
    let (sink, mut stream) = ws.split();
    let (tx, rx) = mpsc::unbounded_channel();
    let (room, me) = rooms.join(path.clone(), tx);
    let mut writer = tokio::spawn(write_loop(sink, rx, me.state.clone()));

    let read = async {
        while let Some(Ok(msg)) = stream.next().await {
            let data = match msg {
                Message::Binary(data) => data,
                Message::Close(_) => break,
                // Pings are answered by tungstenite; text has no meaning in y-websocket.
                _ => continue,
            };
            match data.as_ref() {
                [0, 0, ..] => me.push(
                    Message::Binary(Bytes::from_static(SYNC_STEP2_EMPTY)),
                    SYNC_STEP2_EMPTY.len(),
                ),
                [0, 1, ..] | [] => {}
                _ => room.relay(me.id, data),
            }
        }
    };
    let writer_done = tokio::select! {
        () = read => false,
        _ = &mut writer => true,
        () = me.state.kick.notified() => {
            tracing::debug!(room = %path, "dropping a client that fell behind");
            writer.abort();
            true
        }
    };
    rooms.leave(&path, &room, me.id);
    // With the room's copy gone, dropping ours closes the channel: the writer flushes what is
    // left, sends a close frame and ends.
    drop(me);
    if !writer_done
        && tokio::time::timeout(CLOSE_TIMEOUT, &mut writer)
            .await
            .is_err()
    {
        writer.abort();
    }
}

/// Registers the ctrl-c and SIGTERM handlers now (so a signal arriving right after the
/// "listening" line is not missed) and returns a future that resolves on either.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
    })
}

/// Resolves on ctrl-c.
#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();

    let shutdown = shutdown_signal()?;
    let listener = TcpListener::bind(args.bind).await?;
    println!("tandem-relay listening on {}", listener.local_addr()?);
    let rooms = Arc::new(Rooms::default());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(serve(stream, rooms.clone()));
                }
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    println!("tandem-relay stopped");
    Ok(())
}
