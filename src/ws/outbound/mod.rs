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
//!
//! This file holds the queue and its bound; `writer` is the task that drains it, `frame` encodes
//! frames, and `peer` attaches the queue to its document's relay.

mod frame;
mod peer;
mod writer;

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix::{Arbiter, ArbiterHandle};
use actix_http::ws::{CloseCode, OpCode};
use bytes::Bytes;
use futures_util::task::AtomicWaker;
use tokio::net::TcpStream;

pub(crate) use frame::binary_frame;
use frame::{close_frame, control_frame};
pub(crate) use writer::OpenSockets;

use crate::metrics::Metrics;

/// Why a frame could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QueueError {
    /// The client is too slow: its queue is full.
    Full,
    /// The connection is gone.
    Closed,
}

/// What a queued frame costs beyond its bytes (queue slot and handle), so that a flood of tiny
/// frames is bounded too.
const FRAME_OVERHEAD: usize = 64;

/// Handle for sending to one client; cheap to clone. The connection ends, once everything
/// queued is written, when the last handle is dropped or a close is sent.
#[derive(Debug)]
pub(crate) struct Outbound {
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

impl Outbound {
    /// The sending side of `socket`, with room for `limit` bytes of queued frames. Call it on the
    /// arbiter that owns the socket: its writer task, when one is needed, runs there. The socket
    /// counts in `open` while a writer task runs.
    pub(crate) fn new(
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
    pub(crate) fn send_message(&self, message: &[u8]) -> Result<(), QueueError> {
        self.send(binary_frame(message), true, false)
    }

    /// Queues an encoded frame (see [`binary_frame`]) without waiting, for the socket's own
    /// thread to write: a document relaying to many clients only queues, and the writing is
    /// spread over the threads that own the sockets.
    pub(crate) fn send_frame(&self, frame: Bytes) -> Result<(), QueueError> {
        self.send(frame, false, false)
    }

    /// Queues a frame that may be lost, such as presence (every client renews its own state
    /// every 15 s, and a missed removal expires on the client's side): only while the queue is
    /// at most half full, so that what others send never takes the room the document's updates
    /// need, and never gets this client closed as a slow reader. `Full` means it was dropped.
    pub(crate) fn offer_frame(&self, frame: Bytes) -> Result<(), QueueError> {
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
    pub(crate) fn close(&self, code: CloseCode, reason: impl AsRef<str>) {
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
    pub(crate) fn pong(&self, payload: &[u8]) {
        self.control(|state| state.pong = Some(control_frame(OpCode::Pong, payload)));
    }

    /// Pings the client, whose pong proves it is alive.
    pub(crate) fn ping(&self) {
        self.control(|state| state.ping = true);
    }

    /// Notes that the client was heard from (any frame, a pong included).
    pub(crate) fn heard(&self) {
        self.shared.heard.store(clock(), Ordering::Relaxed);
    }

    /// How long since the client was last heard from.
    pub(crate) fn silent_for(&self) -> Duration {
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
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the queue half-changed in a way that
        // matters more than losing the connection: go on with what is there.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
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
