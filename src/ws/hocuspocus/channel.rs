//! One document's channel on a Hocuspocus connection, as a subscriber of that document's relay:
//! every message goes out after the document's name, on the connection's one send queue.

use actix::Addr;
use actix_http::ws::CloseCode;
use bytes::Bytes;

use super::HocuspocusSession;
use crate::collab::core::{SubscriberId, close};
use crate::collab::relay::{Outgoing, Peer, PeerError};
use crate::sync::hocuspocus;
use crate::ws::outbound::{Outbound, QueueError, binary_frame};

/// The peer kind whose framing a broadcast shares: every Hocuspocus channel of one document
/// names it alike.
struct Hocuspocus;

/// Session ← channel: the document closed this channel (the core has forgotten it already).
#[derive(actix::Message)]
#[rtype(result = "()")]
pub(crate) struct ChannelEnded {
    pub id: SubscriberId,
    pub code: u16,
    pub reason: String,
    /// The whole connection was closed already, not only this document's channel.
    pub socket: bool,
}

/// One document's channel as its relay sees it.
#[derive(Clone)]
pub(crate) struct ChannelPeer {
    pub(super) outbound: Outbound,
    /// `varString(document name)`.
    pub(super) prefix: Bytes,
    pub(super) id: SubscriberId,
    pub(super) session: Addr<HocuspocusSession>,
}

fn queue_error(error: QueueError) -> PeerError {
    match error {
        QueueError::Full => PeerError::Full,
        QueueError::Closed => PeerError::Closed,
    }
}

/// Whether a close with `code` asks the client to reconnect (the server is going away, the
/// document failed in memory, the client could not keep up): then the whole connection is
/// closed, which makes the provider reconnect and sync every document again. A close for this
/// document alone (revoked, deleted, a rule broken) ends only its channel.
fn closes_connection(code: u16) -> bool {
    matches!(code, close::AWAY | close::ERROR | close::AGAIN)
}

impl ChannelPeer {
    fn frame(&self, message: &Outgoing) -> Bytes {
        message.framed::<Hocuspocus>(|m| binary_frame(&hocuspocus::wrap(&self.prefix, m)))
    }
}

impl Peer for ChannelPeer {
    fn send(&self, message: &Outgoing) -> Result<(), PeerError> {
        self.outbound
            .send_frame(self.frame(message))
            .map_err(queue_error)
    }

    fn send_now(&self, message: &Outgoing) -> Result<(), PeerError> {
        let message = hocuspocus::wrap(&self.prefix, message.message());
        self.outbound.send_message(&message).map_err(queue_error)
    }

    fn offer(&self, message: &Outgoing) -> Result<(), PeerError> {
        self.outbound
            .offer_frame(self.frame(message))
            .map_err(queue_error)
    }

    /// The session tells the provider (see `HocuspocusSession`'s `ChannelEnded`); a close that
    /// asks the client to reconnect closes the whole connection at once.
    fn close(&self, code: u16, reason: &str) {
        let socket = closes_connection(code);
        if socket {
            self.outbound.close(CloseCode::from(code), reason);
        }
        self.session.do_send(ChannelEnded {
            id: self.id,
            code,
            reason: reason.to_owned(),
            socket,
        });
    }
    // No keepalive: the connection pings for all its channels (`HocuspocusSession`).
}
