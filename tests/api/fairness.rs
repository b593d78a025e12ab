//! A client that stops reading among many that keep up: it is dropped (1013) once its bounded
//! queue is full; what the server held for it stays within that bound and the socket's buffer;
//! and the others' latency does not suffer, compared with a first phase without a stalled
//! reader on the same server (not against a fixed number). It pushes about 600 MB through 49
//! sockets, so `scripts/test` runs it alone, after the rest of the suite.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use yrs::updates::decoder::Decode;
use yrs::{Doc, Text, Transact};

use crate::helpers::{Backend, ServerProcess, TestDb, WAIT, doc_name};

/// Readers that decode every frame and time it …
const TIMED_READERS: usize = 5;
/// … and readers that drain their socket as fast as it fills, without decoding, so that the
/// test process keeps up with the server: 49 readers in all.
const DRAINING_READERS: usize = 44;
const UPDATES: usize = 100;
const UPDATE_BYTES: usize = 64 * 1024;
const INTERVAL: Duration = Duration::from_millis(50);
/// The stalled client's queue bound, set on the server.
const QUEUE_BYTES: usize = 1024 * 1024;

/// `UPDATES` Update frames, each inserting `UPDATE_BYTES` characters, ready to send.
fn update_frames() -> Vec<Vec<u8>> {
    let doc = Doc::new();
    let text = doc.get_or_insert_text("content");
    (0..UPDATES)
        .map(|i| {
            let mut txn = doc.transact_mut();
            let chunk = char::from(b'a' + (i % 26) as u8)
                .to_string()
                .repeat(UPDATE_BYTES);
            text.push(&mut txn, &chunk);
            let update = txn.encode_update_v1();
            let mut frame = vec![0u8, 2u8];
            yrs::encoding::write::Write::write_buf(&mut frame, &update);
            frame
        })
        .collect()
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

async fn open(server: &ServerProcess, doc: &str) -> Ws {
    let url = format!("{}/{doc}", server.ws_base());
    tokio_tungstenite::connect_async(url.as_str())
        .await
        .expect("connects")
        .0
}

/// A client that completes the handshake on a socket with a tiny receive buffer and then never
/// reads again.
async fn stalled_client(
    server: &ServerProcess,
    doc: &str,
) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .set_recv_buffer_size(4096)
        .expect("small receive buffer");
    let stream = socket
        .connect(([127, 0, 0, 1], server.port).into())
        .await
        .expect("tcp connect");
    let url = format!("{}/{doc}", server.ws_base());
    tokio_tungstenite::client_async(url.as_str(), stream)
        .await
        .expect("handshake")
        .0
}

/// Reads until all `UPDATES` updates came; returns when each arrived. The server may merge
/// updates that became durable together into one frame: each update inserts `UPDATE_BYTES`
/// characters, so the clock a frame reaches tells how many updates it completes.
async fn receive_all(mut ws: Ws) -> Vec<Instant> {
    let mut arrivals = Vec::with_capacity(UPDATES);
    while arrivals.len() < UPDATES {
        match ws.next().await {
            Some(Ok(WsMessage::Binary(frame))) if frame.starts_with(&[0, 2]) => {
                let now = Instant::now();
                let message = yrs::sync::Message::decode_v1(&frame).expect("frames decode");
                let yrs::sync::Message::Sync(yrs::sync::SyncMessage::Update(update)) = message
                else {
                    panic!("an update frame that is not an update");
                };
                let update = yrs::Update::decode_v1(&update).expect("updates decode");
                let end = update
                    .insertions(true)
                    .iter()
                    .flat_map(|(_, ranges)| ranges.iter().map(|r| r.end))
                    .max()
                    .unwrap_or(0) as usize;
                while arrivals.len() < (end / UPDATE_BYTES).min(UPDATES) {
                    arrivals.push(now);
                }
            }
            Some(Ok(WsMessage::Close(frame))) => panic!("a reader was closed: {frame:?}"),
            Some(Ok(_)) => {}
            other => panic!("a reader's socket failed: {other:?}"),
        }
    }
    arrivals
}

/// Runs one phase on a fresh document: returns every reader's latencies in milliseconds.
async fn phase(
    server: &ServerProcess,
    frames: &[Vec<u8>],
    stalled: bool,
) -> (
    Vec<f64>,
    Option<tokio_tungstenite::WebSocketStream<TcpStream>>,
) {
    let doc = doc_name("fair");
    // The writer reads what the server sends it (its own updates, relayed back), as every
    // client must: one that does not is itself dropped as too slow.
    let (mut writer, mut echoes) = open(server, &doc).await.split();
    let echoes = tokio::spawn(async move { while let Some(Ok(_)) = echoes.next().await {} });
    let mut readers = Vec::new();
    for _ in 0..TIMED_READERS {
        readers.push(open(server, &doc).await);
    }
    let mut drainers = Vec::new();
    for _ in 0..DRAINING_READERS {
        drainers.push(drainer(open(server, &doc).await, UPDATES * UPDATE_BYTES));
    }
    let stall = if stalled {
        Some(stalled_client(server, &doc).await)
    } else {
        None
    };
    let receiving: Vec<_> = readers
        .into_iter()
        .map(|ws| tokio::spawn(receive_all(ws)))
        .collect();
    let mut sent = Vec::with_capacity(UPDATES);
    let mut pace = tokio::time::interval(INTERVAL);
    for frame in frames {
        pace.tick().await;
        sent.push(Instant::now());
        writer
            .send(WsMessage::Binary(frame.clone().into()))
            .await
            .expect("sent");
    }
    for drainer in drainers {
        let drained = tokio::time::timeout(WAIT * 4, drainer)
            .await
            .expect("draining readers get everything in time")
            .expect("drainer task");
        assert!(
            drained >= UPDATES * UPDATE_BYTES,
            "a reader was cut off after {drained} bytes (stalled client present: {stalled})"
        );
    }
    let mut latencies = Vec::new();
    for reader in receiving {
        let arrivals = tokio::time::timeout(WAIT * 4, reader)
            .await
            .expect("readers get every update in time")
            .expect("reader task");
        latencies.extend(
            arrivals
                .iter()
                .zip(&sent)
                .map(|(got, put)| got.saturating_duration_since(*put).as_secs_f64() * 1000.0),
        );
    }
    echoes.abort();
    (latencies, stall)
}

fn p99(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[(values.len() * 99 / 100).min(values.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing-sensitive: scripts/test runs it on its own after the rest of the suite"]
async fn one_stalled_reader_among_fifty_is_dropped_and_does_not_slow_the_others() {
    let db = TestDb::new(Backend::Sqlite).await;
    let queue = QUEUE_BYTES.to_string();
    let server = ServerProcess::start(
        &db.url,
        &[
            ("TANDEM_OUTBOUND_QUEUE_BYTES", queue.as_str()),
            ("TANDEM_MAX_CONNECTIONS_PER_IP", "0"),
            ("TANDEM_MESSAGE_RATE", "0"),
        ],
    )
    .await;
    let frames = update_frames();

    let (base, _) = phase(&server, &frames, false).await;
    let (with_stall, stall) = phase(&server, &frames, true).await;
    let (ended, delivered) = close_code(stall.expect("stalled client")).await;
    assert_eq!(
        ended,
        Some(1013),
        "the stalled client is closed as too slow"
    );
    // What it got before the close frame is what the server held for it: its queue, and the
    // socket's send buffer (which the kernel bounds by tcp_wmem's maximum). The rest of what
    // was sent was never kept for it.
    let sent = UPDATES * UPDATE_BYTES;
    let held_at_most = QUEUE_BYTES + max_send_buffer() + 2 * UPDATE_BYTES;
    eprintln!(
        "stalled reader: got {} KiB of {} KiB before being dropped (bound {} KiB)",
        delivered / 1024,
        sent / 1024,
        held_at_most / 1024
    );
    assert!(
        held_at_most < sent,
        "the load is too small to show the bound"
    );
    assert!(
        delivered <= held_at_most,
        "the server held {delivered} bytes for a client that did not read"
    );

    let (p99_base, p99_stalled) = (p99(base), p99(with_stall));
    eprintln!("stalled reader: p99 {p99_base:.1} ms without, {p99_stalled:.1} ms with");
    // Not a speed target: the same server and load, with and without the stalled client.
    assert!(
        p99_stalled <= p99_base * 3.0 + 25.0,
        "the stalled client slowed the others: p99 {p99_base:.1} ms → {p99_stalled:.1} ms"
    );
}

/// Reads the socket as fast as it fills, without decoding, until `bytes` came.
fn drainer(ws: Ws, bytes: usize) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let tokio_tungstenite::MaybeTlsStream::Plain(mut tcp) = ws.into_inner() else {
            unreachable!("plain TCP on loopback")
        };
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0usize;
        while total < bytes {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
        total
    })
}

/// Reads what a stalled client's socket still holds, and then the close frame: returns its
/// code (`None` if the connection ended without one) and the payload bytes read before it.
async fn close_code(mut ws: tokio_tungstenite::WebSocketStream<TcpStream>) -> (Option<u16>, usize) {
    tokio::time::timeout(WAIT, async {
        let mut delivered = 0;
        while let Some(message) = ws.next().await {
            match message {
                Ok(WsMessage::Close(Some(frame))) => {
                    return (Some(u16::from(frame.code)), delivered);
                }
                Ok(WsMessage::Binary(frame)) => delivered += frame.len(),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        (None, delivered)
    })
    .await
    .expect("the stalled client's socket ends")
}

/// The most a TCP socket's send buffer may hold on this machine.
fn max_send_buffer() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|v| v.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(4 * 1024 * 1024)
}
