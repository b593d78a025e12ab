//! The connection's writer task: it runs on the thread that owns the socket while something is
//! queued, writes the queue in vectored writes, sends the close and lingers for the client's;
//! and the count of sockets with a writer at work, which shutdown waits on.

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::net::Shutdown;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::frame::PING;
use super::{FRAME_OVERHEAD, Shared, State};

/// How long a close frame may wait behind what a slow client has yet to read before the
/// connection is dropped without it. Only the socket's own buffers are held meanwhile.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);
/// After the close frame, how long the client is given to close its side before the socket is
/// dropped. Reading until then keeps unread input from turning the close into a reset, which
/// could destroy the close frame before the client reads it.
const LINGER: Duration = Duration::from_secs(2);
/// Frames gathered into one vectored write.
const MAX_SLICES: usize = 64;

/// Counts the sockets with a writer task at work, so that shutdown can wait for their close
/// frames to be written.
#[derive(Debug, Default)]
pub(crate) struct OpenSockets {
    count: AtomicUsize,
    idle: Notify,
}

impl OpenSockets {
    pub(super) fn enter(self: &Arc<Self>) -> SocketGuard {
        self.count.fetch_add(1, Ordering::AcqRel);
        SocketGuard(self.clone())
    }

    /// How many sockets are open now.
    pub(crate) fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Returns once every socket's writer has finished.
    pub(crate) async fn wait_idle(&self) {
        loop {
            let idle = self.idle.notified();
            if self.count() == 0 {
                return;
            }
            idle.await;
        }
    }
}

pub(super) struct SocketGuard(Arc<OpenSockets>);

impl Drop for SocketGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Shared {
    /// Gets what `state` holds written: wakes the writer task, or starts one if none runs.
    pub(super) fn kick(self: &Arc<Self>, mut state: MutexGuard<'_, State>) {
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
    pub(super) fn end_socket(&self) {
        let socket = socket2::SockRef::from(&*self.socket);
        let _ = socket.shutdown(Shutdown::Both);
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
