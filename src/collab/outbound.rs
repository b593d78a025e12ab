//! The one writer of a WebSocket: a bounded queue of frames and an unbounded lane for control.
//!
//! Frames are `Bytes` shared by every recipient, so queueing a broadcast costs a reference count,
//! not a copy. The queue is bounded in bytes so a client that stops reading cannot grow the
//! server's memory: when it is full the sender learns it at once and closes that client. The
//! bound is in bytes rather than frames because a group commit releases many small frames at
//! once, and a single large frame (a late joiner's first sync) must still fit: an empty queue
//! takes any one frame.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use actix_ws::{CloseCode, CloseReason};
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::metrics::Metrics;

/// How long a close frame may wait behind what a slow client has yet to read before the
/// connection is dropped without it. Only the socket's own buffers are held meanwhile.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a frame could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueError {
    /// The client is too slow: its queue is full.
    Full,
    /// The connection is gone.
    Closed,
}

/// Control messages overtake queued frames.
#[derive(Debug)]
enum Control {
    Ping,
    Pong(Bytes),
    Close(CloseReason),
}

/// What a queued frame costs beyond its bytes (queue node and handle), so that a flood of tiny
/// frames is bounded too.
const FRAME_OVERHEAD: usize = 64;

/// Handle for sending to one client; cheap to clone.
#[derive(Debug, Clone)]
pub struct Outbound {
    frames: mpsc::UnboundedSender<Bytes>,
    control: mpsc::UnboundedSender<Control>,
    /// Bytes queued and not yet handed to the socket, shared with the writer task.
    queued: Arc<AtomicUsize>,
    limit: usize,
    metrics: Arc<Metrics>,
}

impl Outbound {
    /// Starts the writer task for `session` on the current arbiter, with room for `limit` bytes
    /// of queued frames.
    pub fn spawn(session: actix_ws::Session, limit: usize, metrics: Arc<Metrics>) -> Self {
        let (frames, frames_rx) = mpsc::unbounded_channel();
        let (control, control_rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        actix_web::rt::spawn(write_loop(
            session,
            frames_rx,
            control_rx,
            queued.clone(),
            metrics.clone(),
        ));
        Self {
            frames,
            control,
            queued,
            limit,
            metrics,
        }
    }

    /// Queues a frame without waiting.
    pub fn send(&self, frame: Bytes) -> Result<(), QueueError> {
        let cost = frame.len() + FRAME_OVERHEAD;
        let before = self.queued.fetch_add(cost, Ordering::AcqRel);
        if before > 0 && before + cost > self.limit {
            self.queued.fetch_sub(cost, Ordering::AcqRel);
            self.metrics.outbound_drops.inc();
            return Err(QueueError::Full);
        }
        self.frames.send(frame).map_err(|_| QueueError::Closed)
    }

    /// Sends a close frame with `code` and `reason` ahead of anything queued, then ends the
    /// connection.
    pub fn close(&self, code: CloseCode, reason: impl Into<String>) {
        let reason = CloseReason {
            code,
            description: Some(reason.into()),
        };
        // An error means the writer has already finished: the socket is closed either way.
        let _ = self.control.send(Control::Close(reason));
    }

    /// Answers a client's ping.
    pub fn pong(&self, payload: Bytes) {
        let _ = self.control.send(Control::Pong(payload));
    }

    /// Pings the client, whose pong proves it is alive.
    pub fn ping(&self) {
        let _ = self.control.send(Control::Ping);
    }

    /// True once the writer has finished (the socket is closed or closing).
    pub fn is_closed(&self) -> bool {
        self.control.is_closed()
    }
}

async fn write_loop(
    mut session: actix_ws::Session,
    mut frames: mpsc::UnboundedReceiver<Bytes>,
    mut control: mpsc::UnboundedReceiver<Control>,
    queued: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
) {
    loop {
        let next = tokio::select! {
            biased;
            ctl = control.recv() => ctl,
            frame = frames.recv() => match frame {
                Some(frame) => {
                    let len = frame.len();
                    let written = write_frame(&mut session, frame, &mut control).await;
                    queued.fetch_sub(len + FRAME_OVERHEAD, Ordering::AcqRel);
                    match written {
                        Written::Done => {
                            metrics.frames_sent.inc();
                            metrics.bytes_sent.inc_by(len as u64);
                            continue;
                        }
                        Written::CloseRequested(reason) => Some(Control::Close(reason)),
                        Written::Gone => return,
                    }
                }
                // Every sender is gone: nobody will write again.
                None => return,
            },
        };
        match next {
            Some(Control::Ping) => {
                if session.ping(b"").await.is_err() {
                    return;
                }
            }
            Some(Control::Pong(payload)) => {
                if session.pong(&payload).await.is_err() {
                    return;
                }
            }
            Some(Control::Close(reason)) => {
                metrics
                    .connections_closed
                    .with_label_values(&[&u16::from(reason.code).to_string()])
                    .inc();
                // Frames still queued will never be sent: free them before waiting.
                frames.close();
                while let Ok(frame) = frames.try_recv() {
                    queued.fetch_sub(frame.len() + FRAME_OVERHEAD, Ordering::AcqRel);
                }
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, session.close(Some(reason))).await;
                return;
            }
            None => return,
        }
    }
}

enum Written {
    Done,
    CloseRequested(CloseReason),
    Gone,
}

/// Writes one frame. Writing waits while the client reads slowly; a close request must still get
/// through then, while pings and pongs are moot for a client that is not reading.
async fn write_frame(
    session: &mut actix_ws::Session,
    frame: Bytes,
    control: &mut mpsc::UnboundedReceiver<Control>,
) -> Written {
    let write = session.binary(frame);
    tokio::pin!(write);
    loop {
        tokio::select! {
            biased;
            ctl = control.recv() => match ctl {
                Some(Control::Close(reason)) => return Written::CloseRequested(reason),
                Some(Control::Ping | Control::Pong(_)) => continue,
                None => return Written::Gone,
            },
            sent = &mut write => return match sent {
                Ok(()) => Written::Done,
                Err(_) => Written::Gone,
            },
        }
    }
}
