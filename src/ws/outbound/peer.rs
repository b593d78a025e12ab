//! The send queue as a subscriber of its document's relay: how a y-websocket connection takes
//! the relay's messages and reports a full queue or a closed connection.

use std::time::Duration;

use actix_http::ws::CloseCode;

use super::{Outbound, QueueError, binary_frame};
use crate::collab::relay::{Outgoing, Peer, PeerError};

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
