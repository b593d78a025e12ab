//! The one writer of a WebSocket: a queue of encoded frames, bounded in bytes, written straight to
//! the socket.
//!
//! Frames are `Bytes` shared by every recipient, so queueing a broadcast costs a reference count,
//! not a copy: a server's frames are unmasked, so one encoding serves every client. A sender whose
//! frame finds the queue empty writes it to the socket itself, without waking anyone; only what
//! the socket does not take at once is left to the connection's writer task, which waits for the
//! socket to drain and then writes everything queued in one vectored write.
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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use actix_http::ws::{CloseCode, CloseReason, OpCode, Parser};
use bytes::{Buf, Bytes, BytesMut};
use futures_util::task::AtomicWaker;
use tokio::net::TcpStream;
use tokio::sync::Notify;

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

/// Counts the sockets whose writer has not finished, so that shutdown can wait for their close
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
    /// Starts the writer task for `socket` on the current arbiter, with room for `limit` bytes of
    /// queued frames. The socket counts in `open` until the writer finishes.
    pub fn spawn(
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
        });
        let guard = open.enter();
        actix_web::rt::spawn(write_loop(shared.clone(), guard));
        Self { shared }
    }

    /// Sends one y-websocket message as a binary frame; see [`Outbound::send_frame`].
    pub fn send_message(&self, message: &[u8]) -> Result<(), QueueError> {
        self.send_frame(binary_frame(message))
    }

    /// Queues an encoded frame (see [`binary_frame`]) without waiting, writing it at once if
    /// nothing is ahead of it.
    pub fn send_frame(&self, frame: Bytes) -> Result<(), QueueError> {
        let shared = &*self.shared;
        let mut state = shared.lock();
        if state.done || state.close.is_some() {
            return Err(QueueError::Closed);
        }
        if state.is_empty() {
            // Nothing ahead of it: straight to the socket, if it takes it.
            match shared.socket.try_write(&frame) {
                Ok(n) if n == frame.len() => {
                    shared.sent(n, true);
                    return Ok(());
                }
                Ok(n) => {
                    shared.sent(n, false);
                    state.partial = Some(frame.slice(n..));
                    drop(state);
                    shared.writer.wake();
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => {
                    state.done = true;
                    drop(state);
                    shared.writer.wake();
                    return Err(QueueError::Closed);
                }
            }
        }
        let cost = frame.len() + FRAME_OVERHEAD;
        let before = shared.queued.fetch_add(cost, Ordering::AcqRel);
        if before > 0 && before + cost > shared.limit {
            shared.queued.fetch_sub(cost, Ordering::AcqRel);
            shared.metrics.outbound_drops.inc();
            return Err(QueueError::Full);
        }
        state.frames.push_back(frame);
        drop(state);
        shared.writer.wake();
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
        drop(state);
        shared.writer.wake();
    }

    /// Answers a client's ping (only the latest one, if the client pings faster than it reads).
    pub fn pong(&self, payload: &[u8]) {
        self.control(|state| state.pong = Some(control_frame(OpCode::Pong, payload)));
    }

    /// Pings the client, whose pong proves it is alive.
    pub fn ping(&self) {
        self.control(|state| state.ping = true);
    }

    fn control(&self, set: impl FnOnce(&mut State)) {
        let mut state = self.shared.lock();
        if state.done || state.close.is_some() {
            return;
        }
        set(&mut state);
        drop(state);
        self.shared.writer.wake();
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
            self.shared.writer.wake();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the queue half-changed in a way that
        // matters more than losing the connection: go on with what is there.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn sent(&self, bytes: usize, frame_done: bool) {
        self.metrics.bytes_sent.inc_by(bytes as u64);
        if frame_done {
            self.metrics.frames_sent.inc();
        }
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
            state.partial = self.take(close, &mut written, false);
            if state.partial.is_none() {
                state.done = true;
                state.close_sent = true;
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

    /// Waits for more to write; `false` once no handle is left to queue anything.
    fn poll_more(&self, cx: &mut Context<'_>) -> Poll<bool> {
        self.writer.register(cx.waker());
        let state = self.lock();
        if state.has_work() || state.done {
            Poll::Ready(true)
        } else if self.handles.load(Ordering::Acquire) == 0 {
            Poll::Ready(false)
        } else {
            Poll::Pending
        }
    }

    fn closing(&self) -> bool {
        self.lock().close.is_some()
    }
}

/// The connection's writer task. It lives as long as the connection, so what it holds while
/// waiting is held by every idle connection: the rarely needed parts (the close's timer, the
/// lingering read's buffer) are boxed, allocated only when they run.
async fn write_loop(shared: Arc<Shared>, _open: SocketGuard) {
    loop {
        if !poll_fn(|cx| shared.poll_more(cx)).await {
            break;
        }
        let flushed = if shared.closing() {
            // A close must not wait forever behind a client that does not read.
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
    }
    let close_sent = {
        let mut state = shared.lock();
        state.done = true;
        state.frames.clear();
        state.close_sent
    };
    shared.queued.store(0, Ordering::Release);
    let _ = socket2::SockRef::from(&*shared.socket).shutdown(Shutdown::Write);
    if close_sent {
        Box::pin(linger(&shared.socket)).await;
    }
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

    #[tokio::test]
    async fn an_idle_writer_task_is_small() {
        // Every open connection holds one writer task; keep its idle state to a few pointers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let socket = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let shared = Arc::new(Shared {
            socket: Arc::new(socket),
            state: Mutex::new(State::default()),
            queued: AtomicUsize::new(0),
            limit: 1024,
            handles: AtomicUsize::new(1),
            writer: AtomicWaker::new(),
            metrics: Arc::new(Metrics::new()),
        });
        let open = Arc::new(OpenSockets::default());
        let task = write_loop(shared, open.enter());
        let size = std::mem::size_of_val(&task);
        assert!(size <= 256, "an idle writer task holds {size} bytes");
    }
}
