//! The one writer of a WebSocket: a queue of encoded frames, bounded in bytes, written straight to
//! the socket.
//!
//! Frames are `Bytes` shared by every recipient, so queueing a broadcast costs a reference count,
//! not a copy: a server's frames are unmasked, so one encoding serves every client. The
//! connection's writer task, on the thread that owns the socket, writes everything queued in
//! vectored writes, waits while the socket is full, and ends when the queue is empty; the next
//! frame starts it again.
//!
//! The queue is bounded in bytes so a client that stops reading cannot grow the server's memory:
//! when it is full the sender learns it at once and closes that client. The bound is in bytes
//! rather than frames because a group commit releases many small frames at once, and a single
//! large frame (a late joiner's first sync) must still fit: an empty queue takes any one frame.
//!
//! An idle connection holds no buffer: the queue is empty and the socket's own kernel buffers
//! are all there is.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix::{Arbiter, ArbiterHandle};
use actix_http::ws::{CloseCode, CloseReason, OpCode, Parser};
use bytes::{Buf, Bytes, BytesMut};
use futures_util::task::AtomicWaker;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::collab::relay::{Outgoing, Peer, PeerError};
use crate::metrics::Metrics;

/// How long a close frame may wait behind what a slow client has yet to read before the
/// connection is dropped without it. Only the socket's own buffers are held meanwhile.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);
/// After the close frame, how long the client is given to close its side before the socket is
/// dropped. Reading until then keeps unread input from turning the close into a reset, which
/// could destroy the close frame before the client reads it.
const LINGER: Duration = Duration::from_secs(2);
/// A close frame's payload is at most 125 bytes, two of them the code.
const MAX_CLOSE_REASON: usize = 123;
/// Frames gathered into one vectored write.
const MAX_SLICES: usize = 64;

/// Why a frame could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueError {
    /// The client is too slow: its queue is full.
    Full,
    /// The connection is gone.
    Closed,
}

/// What a queued frame costs beyond its bytes (queue slot and handle), so that a flood of tiny
/// frames is bounded too.
const FRAME_OVERHEAD: usize = 64;

/// Encodes a binary WebSocket frame as a server sends it (unmasked). Encode once, send to many.
pub fn binary_frame(payload: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(payload.len() + 10);
    Parser::write_message(&mut frame, payload, OpCode::Binary, true, false);
    frame.freeze()
}

fn control_frame(op: OpCode, payload: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(payload.len() + 2);
    Parser::write_message(&mut frame, payload, op, true, false);
    frame.freeze()
}

fn close_frame(code: CloseCode, reason: &str) -> Bytes {
    let mut end = reason.len().min(MAX_CLOSE_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = CloseReason {
        code,
        description: (end > 0).then(|| reason[..end].to_owned()),
    };
    let mut frame = BytesMut::new();
    Parser::write_close(&mut frame, Some(reason), false);
    frame.freeze()
}

/// Counts the sockets with a writer task at work, so that shutdown can wait for their close
/// frames to be written.
#[derive(Debug, Default)]
pub struct OpenSockets {
    count: AtomicUsize,
    idle: Notify,
}

impl OpenSockets {
    fn enter(self: &Arc<Self>) -> SocketGuard {
        self.count.fetch_add(1, Ordering::AcqRel);
        SocketGuard(self.clone())
    }

    /// How many sockets are open now.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Returns once every socket's writer has finished.
    pub async fn wait_idle(&self) {
        loop {
            let idle = self.idle.notified();
            if self.count() == 0 {
                return;
            }
            idle.await;
        }
    }
}

struct SocketGuard(Arc<OpenSockets>);

impl Drop for SocketGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Handle for sending to one client; cheap to clone. The connection ends, once everything
/// queued is written, when the last handle is dropped or a close is sent.
#[derive(Debug)]
pub struct Outbound {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    socket: Arc<TcpStream>,
    state: Mutex<State>,
    /// Bytes queued and not yet written to the socket.
    queued: AtomicUsize,
    limit: usize,
    /// Live `Outbound` handles; the writer ends when none is left.
    handles: AtomicUsize,
    writer: AtomicWaker,
    metrics: Arc<Metrics>,
    /// When the client was last heard from, in milliseconds of [`clock`].
    heard: AtomicU64,
    /// Where the writer task runs: the thread that owns the socket.
    arbiter: ArbiterHandle,
    open: Arc<OpenSockets>,
}

/// Milliseconds since the process's first use of it: a cheap, shared, monotonic clock.
fn clock() -> u64 {
    static START: LazyLock<Instant> = LazyLock::new(Instant::now);
    u64::try_from(START.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[derive(Debug, Default)]
struct State {
    /// The rest of a frame the socket took only part of: it goes first, whatever comes.
    partial: Option<Bytes>,
    /// The answer to the latest ping not yet answered; control frames overtake queued frames.
    pong: Option<Bytes>,
    ping: bool,
    frames: VecDeque<Bytes>,
    /// The close frame, once requested: it follows `partial` and nothing else.
    close: Option<Bytes>,
    /// The socket failed or the close frame is written: nothing more is sent.
    done: bool,
    close_sent: bool,
    /// A writer task is running: it writes what is queued.
    writer_running: bool,
}

impl State {
    fn is_empty(&self) -> bool {
        self.partial.is_none() && self.pong.is_none() && !self.ping && self.frames.is_empty()
    }

    fn has_work(&self) -> bool {
        !self.is_empty() || self.close.is_some()
    }
}

/// A ping's encoding never changes.
static PING: [u8; 2] = [0x89, 0x00];

impl Outbound {
    /// The sending side of `socket`, with room for `limit` bytes of queued frames. Call it on the
    /// arbiter that owns the socket: its writer task, when one is needed, runs there. The socket
    /// counts in `open` while a writer task runs.
    pub fn new(
        socket: Arc<TcpStream>,
        limit: usize,
        metrics: Arc<Metrics>,
        open: &Arc<OpenSockets>,
    ) -> Self {
        let shared = Arc::new(Shared {
            socket,
            state: Mutex::new(State::default()),
            queued: AtomicUsize::new(0),
            limit,
            handles: AtomicUsize::new(1),
            writer: AtomicWaker::new(),
            metrics,
            heard: AtomicU64::new(clock()),
            arbiter: Arbiter::current(),
            open: open.clone(),
        });
        Self { shared }
    }

    /// Sends one y-websocket message, meant for this client alone, as a binary frame. If nothing
    /// is queued ahead of it, the caller writes it to the socket at once (one non-blocking write,
    /// no task woken); whatever the socket does not take is queued.
    pub fn send_message(&self, message: &[u8]) -> Result<(), QueueError> {
        self.send(binary_frame(message), true, false)
    }

    /// Queues an encoded frame (see [`binary_frame`]) without waiting, for the socket's own
    /// thread to write: a document relaying to many clients only queues, and the writing is
    /// spread over the threads that own the sockets.
    pub fn send_frame(&self, frame: Bytes) -> Result<(), QueueError> {
        self.send(frame, false, false)
    }

    /// Queues a frame that may be lost, such as presence (every client renews its own state
    /// every 15 s, and a missed removal expires on the client's side): only while the queue is
    /// at most half full, so that what others send never takes the room the document's updates
    /// need, and never gets this client closed as a slow reader. `Full` means it was dropped.
    pub fn offer_frame(&self, frame: Bytes) -> Result<(), QueueError> {
        self.send(frame, false, true)
    }

    fn send(&self, mut frame: Bytes, write_now: bool, lossy: bool) -> Result<(), QueueError> {
        let shared = &*self.shared;
        let mut state = shared.lock();
        if state.done || state.close.is_some() {
            return Err(QueueError::Closed);
        }
        if write_now && state.is_empty() {
            match shared.socket.try_write(&frame) {
                Ok(n) => {
                    shared.metrics.bytes_sent.inc_by(n as u64);
                    if n == frame.len() {
                        shared.metrics.frames_sent.inc();
                        return Ok(());
                    }
                    // The rest is on its way, outside the queue's bound like any partial frame.
                    state.partial = Some(frame.split_off(n));
                    self.shared.kick(state);
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => {
                    state.done = true;
                    self.shared.kick(state);
                    return Err(QueueError::Closed);
                }
            }
        }
        let cost = frame.len() + FRAME_OVERHEAD;
        let before = shared.queued.fetch_add(cost, Ordering::AcqRel);
        if lossy && before + cost > shared.limit / 2 {
            shared.queued.fetch_sub(cost, Ordering::AcqRel);
            shared.metrics.presence_drops.inc();
            return Err(QueueError::Full);
        }
        if before > 0 && before + cost > shared.limit {
            shared.queued.fetch_sub(cost, Ordering::AcqRel);
            shared.metrics.outbound_drops.inc();
            return Err(QueueError::Full);
        }
        state.frames.push_back(frame);
        self.shared.kick(state);
        Ok(())
    }

    /// Sends a close frame with `code` and `reason` ahead of anything queued, then ends the
    /// connection.
    pub fn close(&self, code: CloseCode, reason: impl AsRef<str>) {
        let shared = &*self.shared;
        let mut state = shared.lock();
        if state.done || state.close.is_some() {
            return;
        }
        shared
            .metrics
            .connections_closed
            .with_label_values(&[&u16::from(code).to_string()])
            .inc();
        // Frames still queued will never be sent: free them now.
        let dropped: usize = state
            .frames
            .drain(..)
            .map(|f| f.len() + FRAME_OVERHEAD)
            .sum();
        shared.queued.fetch_sub(dropped, Ordering::AcqRel);
        state.pong = None;
        state.ping = false;
        state.close = Some(close_frame(code, reason.as_ref()));
        self.shared.kick(state);
    }

    /// Answers a client's ping (only the latest one, if the client pings faster than it reads).
    pub fn pong(&self, payload: &[u8]) {
        self.control(|state| state.pong = Some(control_frame(OpCode::Pong, payload)));
    }

    /// Pings the client, whose pong proves it is alive.
    pub fn ping(&self) {
        self.control(|state| state.ping = true);
    }

    /// Notes that the client was heard from (any frame, a pong included).
    pub fn heard(&self) {
        self.shared.heard.store(clock(), Ordering::Relaxed);
    }

    /// How long since the client was last heard from.
    pub fn silent_for(&self) -> Duration {
        let heard = self.shared.heard.load(Ordering::Relaxed);
        Duration::from_millis(clock().saturating_sub(heard))
    }

    fn control(&self, set: impl FnOnce(&mut State)) {
        let mut state = self.shared.lock();
        if state.done || state.close.is_some() {
            return;
        }
        set(&mut state);
        self.shared.kick(state);
    }
}

/// The peer kind whose framing a broadcast shares: a y-websocket message as one binary frame.
struct YWebsocket;

fn queue_error(error: QueueError) -> PeerError {
    match error {
        QueueError::Full => PeerError::Full,
        QueueError::Closed => PeerError::Closed,
    }
}

/// A y-websocket connection as a subscriber of its document: every message goes out as one
/// binary frame, encoded once for all the document's connections.
impl Peer for Outbound {
    fn send(&self, message: &Outgoing) -> Result<(), PeerError> {
        self.send_frame(message.framed::<YWebsocket>(binary_frame))
            .map_err(queue_error)
    }

    fn send_now(&self, message: &Outgoing) -> Result<(), PeerError> {
        self.send_message(message.message()).map_err(queue_error)
    }

    fn offer(&self, message: &Outgoing) -> Result<(), PeerError> {
        self.offer_frame(message.framed::<YWebsocket>(binary_frame))
            .map_err(queue_error)
    }

    fn close(&self, code: u16, reason: &str) {
        Outbound::close(self, CloseCode::from(code), reason);
    }

    fn keepalive(&self) -> Option<Duration> {
        let quiet = self.silent_for();
        self.ping();
        Some(quiet)
    }
}

impl Clone for Outbound {
    fn clone(&self) -> Self {
        self.shared.handles.fetch_add(1, Ordering::AcqRel);
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Outbound {
    fn drop(&mut self) {
        if self.shared.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Nobody will send again: a running writer finishes what is queued and ends the
            // connection; without one, end it here.
            let mut state = self.shared.lock();
            if state.writer_running {
                drop(state);
                self.shared.writer.wake();
            } else if !state.done {
                state.done = true;
                drop(state);
                self.shared.end_socket();
            }
        }
    }
}

impl Shared {
    /// Gets what `state` holds written: wakes the writer task, or starts one if none runs.
    fn kick(self: &Arc<Self>, mut state: MutexGuard<'_, State>) {
        if state.writer_running {
            drop(state);
            self.writer.wake();
            return;
        }
        state.writer_running = true;
        drop(state);
        if !self
            .arbiter
            .spawn(write_loop(self.clone(), self.open.enter()))
        {
            // The socket's thread is gone (the server is stopping): so is the socket.
            let mut state = self.lock();
            state.writer_running = false;
            state.done = true;
        }
    }

    /// Ends both directions: the client gets a FIN, and the session reading the socket sees its
    /// end, even if the client never closes.
    fn end_socket(&self) {
        let socket = socket2::SockRef::from(&*self.socket);
        let _ = socket.shutdown(Shutdown::Both);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the queue half-changed in a way that
        // matters more than losing the connection: go on with what is there.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Writes as much of the queue as the socket takes now.
    fn write_some(&self, state: &mut State) -> io::Result<()> {
        let mut slices: [IoSlice<'_>; MAX_SLICES] = [IoSlice::new(&[]); MAX_SLICES];
        // The order here is the order `consume` takes them back in.
        let control: [Option<&[u8]>; 3] = match &state.close {
            Some(close) => [state.partial.as_deref(), Some(close), None],
            None => [
                state.partial.as_deref(),
                state.pong.as_deref(),
                state.ping.then_some(&PING[..]),
            ],
        };
        let frames = state.frames.iter().filter(|_| state.close.is_none());
        let mut n = 0;
        for (slot, bytes) in slices
            .iter_mut()
            .zip(control.into_iter().flatten().chain(frames.map(|f| &f[..])))
        {
            *slot = IoSlice::new(bytes);
            n += 1;
        }
        let written = self.socket.try_write_vectored(&slices[..n])?;
        self.consume(state, written);
        Ok(())
    }

    /// Takes `written` bytes off the front of the queue, in the order `write_some` wrote them.
    fn consume(&self, state: &mut State, mut written: usize) {
        self.metrics.bytes_sent.inc_by(written as u64);
        if let Some(partial) = state.partial.take() {
            state.partial = self.take(partial, &mut written, true);
            if state.partial.is_some() {
                return;
            }
        }
        if let Some(close) = state.close.take() {
            // A close written in part stays the close: the connection ends once all of it is.
            match self.take(close, &mut written, false) {
                None => {
                    state.done = true;
                    state.close_sent = true;
                }
                Some(rest) => state.close = Some(rest),
            }
            return;
        }
        if let Some(pong) = state.pong.take() {
            state.partial = self.take(pong, &mut written, false);
            if state.partial.is_some() {
                return;
            }
        }
        if std::mem::take(&mut state.ping) {
            state.partial = self.take(Bytes::from_static(&PING), &mut written, false);
            if state.partial.is_some() {
                return;
            }
        }
        while written > 0 {
            let Some(frame) = state.frames.pop_front() else {
                break;
            };
            // Once partly written, a frame is outside the queue's bound: it is on its way.
            self.queued
                .fetch_sub(frame.len() + FRAME_OVERHEAD, Ordering::AcqRel);
            state.partial = self.take(frame, &mut written, true);
            if state.partial.is_some() {
                return;
            }
        }
    }

    /// Takes what was written of `frame` off it: `None` if all of it was, else the rest.
    fn take(&self, mut frame: Bytes, written: &mut usize, counted: bool) -> Option<Bytes> {
        if *written >= frame.len() {
            *written -= frame.len();
            if counted {
                self.metrics.frames_sent.inc();
            }
            None
        } else {
            frame.advance(*written);
            *written = 0;
            Some(frame)
        }
    }

    /// Writes until the queue is empty (`Ready(true)`), the connection is over (`Ready(false)`)
    /// or the socket is full (`Pending`, woken when it drains or more is queued).
    fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<bool> {
        self.writer.register(cx.waker());
        let mut state = self.lock();
        loop {
            if state.done {
                return Poll::Ready(false);
            }
            if !state.has_work() {
                return Poll::Ready(true);
            }
            match self.write_some(&mut state) {
                Ok(()) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    match self.socket.poll_write_ready(cx) {
                        Poll::Ready(Ok(())) => continue,
                        Poll::Ready(Err(_)) => state.done = true,
                        Poll::Pending => return Poll::Pending,
                    }
                }
                Err(_) => state.done = true,
            }
        }
    }

    fn closing(&self) -> bool {
        self.lock().close.is_some()
    }
}

/// A connection's writer task, started when something is queued and ended when everything
/// queued is written: an idle connection has none.
async fn write_loop(shared: Arc<Shared>, _open: SocketGuard) {
    loop {
        let flushed = if shared.closing() {
            // A close must not wait forever behind a client that does not read. Boxed: the timer
            // is only needed then.
            Box::pin(tokio::time::timeout(
                CLOSE_TIMEOUT,
                poll_fn(|cx| shared.poll_flush(cx)),
            ))
            .await
            .unwrap_or(false)
        } else {
            poll_fn(|cx| shared.poll_flush(cx)).await
        };
        if !flushed {
            break;
        }
        let mut state = shared.lock();
        if state.has_work() {
            continue;
        }
        if shared.handles.load(Ordering::Acquire) > 0 {
            // All written, and more may come: the next sender starts a new writer if needed.
            state.writer_running = false;
            return;
        }
        break;
    }
    let close_sent = {
        let mut state = shared.lock();
        state.done = true;
        state.frames.clear();
        state.close_sent
    };
    shared.queued.store(0, Ordering::Release);
    if close_sent {
        let _ = socket2::SockRef::from(&*shared.socket).shutdown(Shutdown::Write);
        Box::pin(linger(&shared.socket)).await;
    }
    shared.end_socket();
}

/// Reads and discards what the client still sends until it closes its side, for at most
/// [`LINGER`].
async fn linger(socket: &TcpStream) {
    let drain = async {
        let mut scratch = vec![0u8; 2048];
        loop {
            if socket.readable().await.is_err() {
                return;
            }
            match socket.try_read(&mut scratch) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[actix_web::test]
    async fn an_idle_connection_has_no_writer_task_and_a_close_gets_through() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let socket = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut client, _) = listener.accept().await.unwrap();
        let open = Arc::new(OpenSockets::default());
        let outbound = Outbound::new(Arc::new(socket), 1024, Arc::new(Metrics::new()), &open);

        // A message for this client alone is written by the sender when nothing is queued.
        outbound.send_message(&[0, 0, 1, 0]).unwrap();
        assert_eq!(open.count(), 0);
        let mut frame = [0u8; 6];
        client.read_exact(&mut frame).await.unwrap();
        assert_eq!(frame, [0x82, 4, 0, 0, 1, 0]);

        // A relayed frame is queued for a writer task, which ends once it is written.
        outbound.send_frame(binary_frame(&[0, 2, 0])).unwrap();
        client.read_exact(&mut frame[..5]).await.unwrap();
        assert_eq!(frame[..5], [0x82, 3, 0, 2, 0]);
        tokio::time::timeout(Duration::from_secs(1), open.wait_idle())
            .await
            .expect("the writer ends once the queue is empty");

        // A close needs a writer, which waits for the client's side of the close and ends.
        outbound.close(CloseCode::Policy, "bye");
        let mut close = [0u8; 7];
        client.read_exact(&mut close).await.unwrap();
        assert_eq!(close, [0x88, 5, 0x03, 0xf0, b'b', b'y', b'e']);
        assert_eq!(open.count(), 1);
        drop(client);
        tokio::time::timeout(Duration::from_secs(1), open.wait_idle())
            .await
            .expect("the writer ends once the client has closed");
        assert!(outbound.send_message(&[0]).is_err());
    }
}
