//! The relay seam: where a document's messages leave it for its subscribers, whatever carries
//! them.
//!
//! A subscriber is a [`Peer`] under a [`SubscriberId`]: a WebSocket connection speaking
//! y-websocket (`ws::Outbound`), or one document's channel on a Hocuspocus connection, which
//! holds several documents. Every message is handed out once, as an [`Outgoing`] that peers of
//! one kind frame once and share. A peer that cannot take a message it must get
//! is closed with 1013 and dropped, so it never slows the others; presence is only offered, and
//! left out for a peer whose queue is half full.

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;

use super::core::{SubscriberId, close};

/// Why a peer did not take a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PeerError {
    /// It is too slow: its queue is full.
    Full,
    /// It is gone.
    Closed,
}

/// Kinds of peer whose framings one message keeps: y-websocket and Hocuspocus connections.
const FRAMINGS: usize = 2;

/// One message for subscribers, with its framing made once per kind of peer.
pub(crate) struct Outgoing {
    message: Bytes,
    framed: [OnceLock<(TypeId, Bytes)>; FRAMINGS],
}

impl Outgoing {
    pub(crate) fn new(message: Bytes) -> Self {
        Self {
            message,
            framed: Default::default(),
        }
    }

    /// The message as the document made it (a y-protocols sync or awareness message).
    pub(crate) fn message(&self) -> &Bytes {
        &self.message
    }

    /// The message framed for peers of kind `K` by `frame`: made by the first peer of that kind
    /// that asks and shared by the rest (beyond two kinds, a peer of another kind frames its
    /// own). Every peer of one kind must frame a message of one document alike.
    pub(crate) fn framed<K: 'static>(&self, frame: impl FnOnce(&[u8]) -> Bytes) -> Bytes {
        let kind = TypeId::of::<K>();
        for slot in &self.framed {
            match slot.get() {
                Some((cached, bytes)) if *cached == kind => return bytes.clone(),
                Some(_) => continue,
                None => {
                    let bytes = frame(&self.message);
                    let _ = slot.set((kind, bytes.clone()));
                    return bytes;
                }
            }
        }
        frame(&self.message)
    }
}

/// The sending side of one subscriber.
pub(crate) trait Peer: Send {
    /// Queues a message the subscriber must get (a durable update, a sync answer).
    fn send(&self, message: &Outgoing) -> Result<(), PeerError>;
    /// Sends a message meant for this subscriber alone, written at once if nothing is queued
    /// ahead of it.
    fn send_now(&self, message: &Outgoing) -> Result<(), PeerError> {
        self.send(message)
    }
    /// Offers a message the subscriber may miss (presence).
    fn offer(&self, message: &Outgoing) -> Result<(), PeerError>;
    /// Closes the subscriber with a code and a reason.
    fn close(&self, code: u16, reason: &str);
    /// Keeps the subscriber alive (a ping), and answers how long it has been silent; `None`
    /// for a peer that keeps itself alive.
    fn keepalive(&self) -> Option<Duration> {
        None
    }
}

/// The subscribers of one document.
#[derive(Default)]
pub(crate) struct Relay {
    peers: HashMap<SubscriberId, Box<dyn Peer>>,
}

impl Relay {
    pub(crate) fn insert(&mut self, id: SubscriberId, peer: Box<dyn Peer>) {
        self.peers.insert(id, peer);
    }

    pub(crate) fn remove(&mut self, id: SubscriberId) -> Option<Box<dyn Peer>> {
        self.peers.remove(&id)
    }

    /// Sends a message to every peer; returns those dropped because they could not take it.
    #[must_use = "dropped subscribers must be reported to the document"]
    pub(crate) fn broadcast(&mut self, message: Bytes) -> Vec<SubscriberId> {
        let out = Outgoing::new(message);
        let failed: Vec<(SubscriberId, PeerError)> = self
            .peers
            .iter()
            .filter_map(|(&id, peer)| peer.send(&out).err().map(|e| (id, e)))
            .collect();
        failed
            .into_iter()
            .map(|(id, error)| self.drop_peer(id, error))
            .collect()
    }

    /// Offers presence to every peer: one whose queue is half full does not get it (it learns
    /// the state at its next renewal) and is not closed for it, so no subscriber can get
    /// others closed by what it sends. Returns those found closed.
    #[must_use = "dropped subscribers must be reported to the document"]
    pub(crate) fn broadcast_lossy(&mut self, message: Bytes) -> Vec<SubscriberId> {
        let out = Outgoing::new(message);
        let closed: Vec<SubscriberId> = self
            .peers
            .iter()
            .filter(|(_, peer)| peer.offer(&out) == Err(PeerError::Closed))
            .map(|(&id, _)| id)
            .collect();
        for id in &closed {
            self.peers.remove(id);
        }
        closed
    }

    /// Sends one message to one peer; returns it if it was dropped.
    #[must_use = "a dropped subscriber must be reported to the document"]
    pub(crate) fn send(&mut self, id: SubscriberId, message: Bytes) -> Option<SubscriberId> {
        let error = self
            .peers
            .get(&id)?
            .send_now(&Outgoing::new(message))
            .err()?;
        Some(self.drop_peer(id, error))
    }

    /// Offers presence messages to one peer.
    pub(crate) fn offer(&self, id: SubscriberId, messages: Vec<Bytes>) {
        if let Some(peer) = self.peers.get(&id) {
            for message in messages {
                let _ = peer.offer(&Outgoing::new(message));
            }
        }
    }

    /// Closes one peer and forgets it.
    pub(crate) fn close(&mut self, id: SubscriberId, code: u16, reason: &str) {
        if let Some(peer) = self.peers.remove(&id) {
            peer.close(code, reason);
        }
    }

    /// Closes every peer and forgets them all.
    pub(crate) fn close_all(&mut self, code: u16, reason: &str) {
        for (_, peer) in self.peers.drain() {
            peer.close(code, reason);
        }
    }

    /// Keeps every peer alive, and closes (1001) and forgets those silent for longer than
    /// `timeout`; returns them.
    #[must_use = "dropped subscribers must be reported to the document"]
    pub(crate) fn heartbeat(&mut self, timeout: Duration) -> Vec<SubscriberId> {
        let silent: Vec<SubscriberId> = self
            .peers
            .iter()
            .filter(|(_, peer)| peer.keepalive().is_some_and(|quiet| quiet > timeout))
            .map(|(&id, _)| id)
            .collect();
        for &id in &silent {
            tracing::debug!(session = id, "no response to pings");
            self.close(id, close::AWAY, "no response to pings");
        }
        silent
    }

    fn drop_peer(&mut self, id: SubscriberId, error: PeerError) -> SubscriberId {
        if let Some(peer) = self.peers.remove(&id)
            && error == PeerError::Full
        {
            tracing::warn!(session = id, "client too slow: outbound queue full");
            peer.close(close::AGAIN, "too slow: outbound queue full");
        }
        id
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A peer that keeps what it is sent, with room for `room` messages.
    struct Kept {
        got: Arc<Mutex<Vec<Bytes>>>,
        closed: Arc<Mutex<Option<u16>>>,
        room: usize,
    }

    impl Peer for Kept {
        fn send(&self, message: &Outgoing) -> Result<(), PeerError> {
            let mut got = self.got.lock().expect("lock");
            if got.len() >= self.room {
                return Err(PeerError::Full);
            }
            got.push(message.framed::<Self>(Bytes::copy_from_slice));
            Ok(())
        }
        fn offer(&self, message: &Outgoing) -> Result<(), PeerError> {
            let mut got = self.got.lock().expect("lock");
            if got.len() * 2 >= self.room {
                return Ok(());
            }
            got.push(message.message().clone());
            Ok(())
        }
        fn close(&self, code: u16, _: &str) {
            *self.closed.lock().expect("lock") = Some(code);
        }
    }

    type Seen = (Arc<Mutex<Vec<Bytes>>>, Arc<Mutex<Option<u16>>>);

    fn kept(room: usize) -> (Box<dyn Peer>, Seen) {
        let got = Arc::new(Mutex::new(Vec::new()));
        let closed = Arc::new(Mutex::new(None));
        let peer = Kept {
            got: got.clone(),
            closed: closed.clone(),
            room,
        };
        (Box::new(peer), (got, closed))
    }

    #[test]
    fn a_full_peer_is_closed_with_1013_and_dropped_while_the_others_get_the_message() {
        let mut relay = Relay::default();
        let (fast, (fast_got, _)) = kept(10);
        let (slow, (_, slow_closed)) = kept(0);
        relay.insert(1, fast);
        relay.insert(2, slow);
        let dropped = relay.broadcast(Bytes::from_static(b"update"));
        assert_eq!(dropped, vec![2]);
        assert_eq!(*slow_closed.lock().expect("lock"), Some(close::AGAIN));
        assert_eq!(fast_got.lock().expect("lock").len(), 1);
        assert!(relay.broadcast(Bytes::from_static(b"again")).is_empty());
    }

    #[test]
    fn presence_is_left_out_for_a_busy_peer_without_closing_it() {
        let mut relay = Relay::default();
        let (busy, (got, closed)) = kept(2);
        relay.insert(1, busy);
        assert!(relay.send(1, Bytes::from_static(b"sync")).is_none());
        assert!(
            relay
                .broadcast_lossy(Bytes::from_static(b"presence"))
                .is_empty()
        );
        assert_eq!(got.lock().expect("lock").len(), 1);
        assert_eq!(*closed.lock().expect("lock"), None);
    }

    #[test]
    fn peers_of_one_kind_share_one_framing() {
        let out = Outgoing::new(Bytes::from_static(b"m"));
        let mut made = 0;
        for _ in 0..3 {
            let _ = out.framed::<Kept>(|m| {
                made += 1;
                Bytes::copy_from_slice(m)
            });
        }
        assert_eq!(made, 1);
        let other = out.framed::<Relay>(|_| Bytes::from_static(b"other"));
        assert_eq!(other, Bytes::from_static(b"other"));
        // Both kinds keep their framing.
        let again = out.framed::<Relay>(|_| Bytes::from_static(b"made twice"));
        assert_eq!(again, Bytes::from_static(b"other"));
        let _ = out.framed::<Kept>(|m| {
            made += 1;
            Bytes::copy_from_slice(m)
        });
        assert_eq!(made, 1);
    }
}
