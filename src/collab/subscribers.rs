//! The relay step: a document's subscribers and the sending of frames to them.
//!
//! Every frame handed in here is already encoded; each subscriber gets the same `Bytes`. A
//! subscriber whose queue is full of document updates is closed with 1013 and dropped, so it
//! never slows the others; presence is only offered, and dropped for a subscriber whose queue is
//! half full.
//! This is the one place where a document's frames leave it, so a relay to other nodes can be
//! added beside the local fan-out.

use std::collections::HashMap;
use std::time::Duration;

use actix_http::ws::CloseCode;

use super::messages::SessionId;
use super::outbound::{Outbound, QueueError, binary_frame};

/// One connection subscribed to a document.
pub struct Subscriber {
    pub outbound: Outbound,
    /// False for read-only connections.
    pub can_write: bool,
    /// The user named by its token.
    pub user: Option<String>,
    /// Where it connects from, for the logs.
    pub client_ip: Option<std::net::IpAddr>,
    /// A read-only client was already told that its changes are dropped.
    pub told_read_only: bool,
    /// The state vector the connection's last sync answer was computed against, once it was
    /// answered: from then on it is sent every update, so it has everything past this.
    pub synced: Option<yrs::StateVector>,
    /// Time its updates may still take to apply.
    pub cost: super::limits::CostBudget,
}

/// The subscribers of one document.
#[derive(Default)]
pub struct Subscribers {
    map: HashMap<SessionId, Subscriber>,
}

impl Subscribers {
    pub fn insert(&mut self, session: SessionId, subscriber: Subscriber) {
        self.map.insert(session, subscriber);
    }

    /// Forgets a subscriber; false if it was not there.
    pub fn remove(&mut self, session: SessionId) -> bool {
        self.map.remove(&session).is_some()
    }

    pub fn get(&self, session: SessionId) -> Option<&Subscriber> {
        self.map.get(&session)
    }

    pub fn get_mut(&mut self, session: SessionId) -> Option<&mut Subscriber> {
        self.map.get_mut(&session)
    }

    /// Closes the connections of `user` (every one, for `None`) and forgets them; returns them.
    pub fn close_matching(
        &mut self,
        user: Option<&str>,
        code: CloseCode,
        reason: &str,
    ) -> Vec<SessionId> {
        let matching: Vec<SessionId> = self
            .map
            .iter()
            .filter(|(_, sub)| user.is_none() || sub.user.as_deref() == user)
            .map(|(&session, _)| session)
            .collect();
        for session in &matching {
            if let Some(sub) = self.map.remove(session) {
                sub.outbound.close(code, reason);
            }
        }
        matching
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Sends one message to every subscriber, encoded once as a WebSocket frame for all; returns
    /// those dropped because they could not take it.
    #[must_use = "dropped subscribers must be forgotten by the document"]
    pub fn broadcast(&mut self, message: &[u8]) -> Vec<SessionId> {
        let frame = binary_frame(message);
        let failed: Vec<(SessionId, QueueError)> = self
            .map
            .iter()
            .filter_map(|(&session, sub)| {
                sub.outbound
                    .send_frame(frame.clone())
                    .err()
                    .map(|e| (session, e))
            })
            .collect();
        failed
            .into_iter()
            .map(|(session, error)| self.drop(session, error))
            .collect()
    }

    /// Offers one presence message to every subscriber: one whose queue is half full does not
    /// get it (it learns the state at its next renewal) and is not closed for it, so no client
    /// can get others closed by what it sends. Returns those found closed.
    #[must_use = "dropped subscribers must be forgotten by the document"]
    pub fn broadcast_lossy(&mut self, message: &[u8]) -> Vec<SessionId> {
        let frame = binary_frame(message);
        let closed: Vec<SessionId> = self
            .map
            .iter()
            .filter(|(_, sub)| sub.outbound.offer_frame(frame.clone()) == Err(QueueError::Closed))
            .map(|(&session, _)| session)
            .collect();
        for session in &closed {
            self.map.remove(session);
        }
        closed
    }

    /// Offers presence messages to one subscriber, as [`Subscribers::broadcast_lossy`] does.
    pub fn offer_to(&self, session: SessionId, messages: &[bytes::Bytes]) {
        if let Some(sub) = self.map.get(&session) {
            for message in messages {
                let _ = sub.outbound.offer_frame(binary_frame(message));
            }
        }
    }

    /// Sends one message to one subscriber; returns it if it was dropped.
    #[must_use = "a dropped subscriber must be forgotten by the document"]
    pub fn send_to(&mut self, session: SessionId, message: &[u8]) -> Option<SessionId> {
        let error = self
            .map
            .get(&session)?
            .outbound
            .send_message(message)
            .err()?;
        Some(self.drop(session, error))
    }

    /// Pings every subscriber, and closes (1001) and forgets those not heard from for
    /// `timeout`; returns them.
    #[must_use = "dropped subscribers must be forgotten by the document"]
    pub fn heartbeat(&mut self, timeout: Duration) -> Vec<SessionId> {
        let silent: Vec<SessionId> = self
            .map
            .iter()
            .filter(|(_, sub)| sub.outbound.silent_for() > timeout)
            .map(|(&session, _)| session)
            .collect();
        for session in &silent {
            if let Some(sub) = self.map.remove(session) {
                tracing::debug!(session, "no response to pings");
                sub.outbound.close(CloseCode::Away, "no response to pings");
            }
        }
        for sub in self.map.values() {
            sub.outbound.ping();
        }
        silent
    }

    /// Closes every connection with `code` and `reason`, and forgets them all.
    pub fn close_all(&mut self, code: CloseCode, reason: &str) {
        for sub in self.map.values() {
            sub.outbound.close(code, reason);
        }
        self.map.clear();
    }

    fn drop(&mut self, session: SessionId, error: QueueError) -> SessionId {
        if let Some(sub) = self.map.remove(&session)
            && error == QueueError::Full
        {
            tracing::warn!(session, "client too slow: outbound queue full");
            sub.outbound
                .close(CloseCode::Again, "too slow: outbound queue full");
        }
        session
    }
}
