//! The one writer of a WebSocket: a bounded queue of frames and an unbounded lane for control.
//!
//! Frames are `Bytes` shared by every recipient, so queueing a broadcast costs a reference count,
//! not a copy. The queue is bounded so a client that stops reading cannot grow the server's
//! memory: when it is full the sender learns it at once (`try_send`) and closes that client.

use std::time::Duration;

use actix_ws::{CloseCode, CloseReason};
use bytes::Bytes;
use tokio::sync::mpsc;

/// How long a close frame may take to reach a client that is not reading before we give up.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

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

/// Handle for sending to one client; cheap to clone.
#[derive(Debug, Clone)]
pub struct Outbound {
    frames: mpsc::Sender<Bytes>,
    control: mpsc::UnboundedSender<Control>,
}

impl Outbound {
    /// Starts the writer task for `session` on the current arbiter, with room for `capacity`
    /// queued frames.
    pub fn spawn(session: actix_ws::Session, capacity: usize) -> Self {
        let (frames, frames_rx) = mpsc::channel(capacity.max(1));
        let (control, control_rx) = mpsc::unbounded_channel();
        actix_web::rt::spawn(write_loop(session, frames_rx, control_rx));
        Self { frames, control }
    }

    /// Queues a frame without waiting.
    pub fn send(&self, frame: Bytes) -> Result<(), QueueError> {
        self.frames.try_send(frame).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => QueueError::Full,
            mpsc::error::TrySendError::Closed(_) => QueueError::Closed,
        })
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
    mut frames: mpsc::Receiver<Bytes>,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    loop {
        let next = tokio::select! {
            biased;
            ctl = control.recv() => ctl,
            frame = frames.recv() => match frame {
                Some(frame) => match write_frame(&mut session, frame, &mut control).await {
                    Written::Done => continue,
                    Written::CloseRequested(reason) => Some(Control::Close(reason)),
                    Written::Gone => return,
                },
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
