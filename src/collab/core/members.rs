//! Serving subscribers: greeting them, answering their sync requests, relaying their presence,
//! and forgetting them (and the presence they set) when they go.

use std::net::IpAddr;
use std::time::Instant;

use bytes::Bytes;
use yrs::{ReadTxn, StateVector, Transact};

use super::cost::CostBudget;
use super::durability::Delivery;
use super::integrate::{Origin, Work};
use super::{DocCore, EMPTY_UPDATE, Effect, Gone, SubscriberId, close};
use crate::sync::hocuspocus::sync_status;
use crate::sync::protocol::{
    ClientMessage, encode_permission_denied, encode_sync_step1, encode_sync_step2,
};

/// Most presence bytes in one message of a newcomer's greeting or an awareness answer: each is
/// offered to the subscriber's queue on its own.
const PRESENCE_FRAME_BYTES: usize = 64 * 1024;

/// The owner of presence states set on other nodes: no subscriber of this node has this id.
const PEERS: crate::sync::presence::OwnerId = u64::MAX;

/// Who subscribes.
#[derive(Debug, Clone)]
pub struct MemberInfo {
    /// False for read-only subscribers: their document changes are dropped.
    pub can_write: bool,
    /// The user named by the subscriber's token, matched by revocations.
    pub user: Option<String>,
    /// Where it connects from, for the logs.
    pub client_ip: Option<IpAddr>,
    /// When its token was issued (epoch ms); `None` without a token.
    pub issued_at: Option<i64>,
    /// Whether it is told of each of its updates (SyncStep2 or Update) once it is stored: a
    /// sync status of 1, or 0 for a change it may not make (the Hocuspocus protocol).
    pub acks: bool,
}

/// One subscriber, as the core knows it.
pub(super) struct Member {
    pub(super) info: MemberInfo,
    /// A read-only subscriber was already told that its changes are dropped.
    told_read_only: bool,
    /// The state vector the subscriber's last sync answer was computed against, once it was
    /// answered: from then on it is sent every update, so it has everything past this.
    synced: Option<StateVector>,
    /// Time its updates may still take to apply.
    pub(super) cost: CostBudget,
}

/// Whether state vector `sv` has every clock of `answered`: a peer at `sv` lacks nothing that a
/// peer at `answered` has.
fn covers(sv: &StateVector, answered: &StateVector) -> bool {
    answered
        .iter()
        .all(|(client, clock)| sv.get(client) >= *clock)
}

impl DocCore {
    /// Adds a subscriber and greets it with the document's state vector and the presence
    /// states held now.
    pub fn subscribe(
        &mut self,
        id: SubscriberId,
        info: MemberInfo,
        now: Instant,
    ) -> Result<(), Gone> {
        self.at(now);
        if self.closing {
            return Err(Gone);
        }
        let step1 = encode_sync_step1(&self.doc.transact().state_vector());
        self.effects.push(Effect::Send(id, step1));
        let presence = self.presence.encode_all_chunked(PRESENCE_FRAME_BYTES);
        if !presence.is_empty() {
            self.effects.push(Effect::Offer(id, presence));
        }
        let cost = CostBudget::new(self.settings.update_cost_budget, now);
        self.members.insert(
            id,
            Member {
                info,
                told_read_only: false,
                synced: None,
                cost,
            },
        );
        self.policy.in_use();
        Ok(())
    }

    /// The messages of one frame of a subscriber, handled in order; the first refused one
    /// closes the subscriber and drops the rest.
    pub fn receive(&mut self, id: SubscriberId, messages: Vec<ClientMessage>, now: Instant) {
        self.at(now);
        if !self.members.contains_key(&id) {
            return;
        }
        self.backlog.extend(
            messages
                .into_iter()
                .map(|message| Work::Client(id, message)),
        );
        self.drain();
    }

    /// A subscriber is gone (closed, or dropped by the relay): forget it and clear, for
    /// everybody else, the presence states it set.
    pub fn unsubscribe(&mut self, id: SubscriberId, now: Instant) {
        self.at(now);
        if self.members.remove(&id).is_some() {
            self.forget(id);
        }
    }

    /// Access was revoked: closes the subscribers of `user` (all of them, for `None`) with
    /// 4403, or with `issued_before` only those whose token was issued by then (and those with
    /// none); answers how many.
    pub(crate) fn revoke(
        &mut self,
        user: Option<&str>,
        issued_before: Option<i64>,
        now: Instant,
    ) -> usize {
        self.at(now);
        let matching: Vec<SubscriberId> = self
            .members
            .iter()
            .filter(|(_, m)| user.is_none() || m.info.user.as_deref() == user)
            .filter(|(_, m)| {
                issued_before.is_none_or(|at| m.info.issued_at.is_none_or(|iat| iat <= at))
            })
            .map(|(&id, _)| id)
            .collect();
        for &id in &matching {
            self.effects
                .push(Effect::Close(id, close::REVOKED, "access revoked".into()));
            self.members.remove(&id);
            self.forget(id);
        }
        matching.len()
    }

    /// Clears the presence of a subscriber that is gone.
    fn forget(&mut self, id: SubscriberId) {
        self.forget_backlog_of(id);
        let cleared = self.presence.remove_owner(id);
        if let Some(message) = self.presence.encode(&cleared) {
            self.presence_changed(message);
        }
        if self.members.is_empty() {
            self.policy.unused(self.now);
        }
    }

    /// Closes a subscriber that broke a rule, and forgets it.
    pub(super) fn refuse(&mut self, id: SubscriberId, code: u16, reason: String, what: &str) {
        if let Some(member) = self.members.remove(&id) {
            let client_ip = member.info.client_ip.map(tracing::field::display);
            tracing::info!(parent: &self.span, session = id, client_ip, %reason, "{what}");
            self.effects.push(Effect::Close(id, code, reason));
            self.forget(id);
        }
    }

    /// One message from a subscriber; `Err` when it was refused (and the subscriber closed).
    pub(super) fn handle_message(
        &mut self,
        id: SubscriberId,
        message: ClientMessage,
    ) -> Result<(), ()> {
        match message {
            ClientMessage::SyncStep1(sv) => {
                if let Some(answer) = self.answer_sync_step1(id, sv) {
                    self.deliver(Delivery::To(id, answer));
                }
            }
            ClientMessage::Update(update) => {
                let Some(member) = self.members.get_mut(&id) else {
                    return Ok(());
                };
                if member.info.can_write {
                    self.integrate(update, Origin::Client(id));
                } else if member.info.acks {
                    // Refused with a sync status of 0, which leaves the client's count of
                    // unsaved changes where it is; one that changes nothing is acknowledged.
                    if crate::wire::changes_anything(&self.doc, &update.update) {
                        self.effects.push(Effect::Send(id, sync_status(false)));
                    } else {
                        self.deliver(Delivery::Ack(id, sync_status(true)));
                    }
                } else if !member.told_read_only
                    && crate::wire::changes_anything(&self.doc, &update.update)
                {
                    // Dropped, and the subscriber told once (y-websocket's permission-denied
                    // message), if it tried to change anything: a stock client also sends
                    // harmless catch-up messages.
                    member.told_read_only = true;
                    let denied =
                        encode_permission_denied("read-only access: your changes are not saved");
                    self.effects.push(Effect::Send(id, denied));
                }
            }
            ClientMessage::Awareness(entries) => {
                let cap = self.settings.max_presence_states;
                match self.presence.apply(id, entries, self.now, cap) {
                    Ok(changed) => {
                        if let Some(message) = self.presence.encode(&changed) {
                            self.presence_changed(message);
                        }
                    }
                    Err(refused) => {
                        self.refuse(id, close::POLICY, refused.to_string(), "refused presence");
                        return Err(());
                    }
                }
            }
            ClientMessage::AwarenessQuery => {
                let messages = self.presence.encode_all_chunked(PRESENCE_FRAME_BYTES);
                if !messages.is_empty() {
                    self.effects.push(Effect::Offer(id, messages));
                }
            }
            ClientMessage::Auth => {}
        }
        Ok(())
    }

    /// The answer to a subscriber's SyncStep1. The first is what its state vector lacks. From
    /// then on the subscriber is sent every update, so a later request whose state vector
    /// covers the one answered is answered with an empty update, at no cost; one that claims
    /// less than that (no stock client does) gets the whole document once, and every later
    /// request is then covered. So however many requests a client sends, at most two answers
    /// encode the document, and answers waiting for durability hold at most that per subscriber.
    fn answer_sync_step1(&mut self, id: SubscriberId, sv: StateVector) -> Option<Bytes> {
        let member = self.members.get_mut(&id)?;
        let against = match &member.synced {
            None => sv,
            Some(answered) if covers(&sv, answered) => {
                return Some(encode_sync_step2(EMPTY_UPDATE));
            }
            Some(_) => StateVector::default(),
        };
        let diff = self.doc.transact().encode_state_as_update_v1(&against);
        member.synced = Some(against);
        Some(encode_sync_step2(&diff))
    }

    /// Presence changed here: every subscriber is told, and so are the other nodes.
    fn presence_changed(&mut self, message: Bytes) {
        if self.shared.is_some() {
            self.effects.push(Effect::PublishPresence(message.clone()));
        }
        self.effects.push(Effect::BroadcastPresence(message));
    }

    /// Presence another node's subscribers changed (heard on the bus): applied, and relayed to
    /// this node's subscribers. These states are renewed by their clients like any other, so
    /// those of a node that died expire after the awareness timeout.
    pub(crate) fn peer_presence(&mut self, frame: Bytes, now: Instant) {
        self.at(now);
        if self.closing {
            return;
        }
        let Ok(messages) = crate::sync::protocol::decode_frame(&frame) else {
            return;
        };
        for message in messages {
            match message {
                ClientMessage::Awareness(entries) => {
                    if let Ok(changed) = self.presence.apply(PEERS, entries, self.now, usize::MAX)
                        && let Some(message) = self.presence.encode(&changed)
                    {
                        self.effects.push(Effect::BroadcastPresence(message));
                    }
                }
                // A node that just loaded the document asks what presence there is.
                ClientMessage::AwarenessQuery => {
                    for frame in self.presence.encode_all_chunked(PRESENCE_FRAME_BYTES) {
                        self.effects.push(Effect::PublishPresence(frame));
                    }
                }
                _ => {}
            }
        }
    }

    /// Removes the presence states nobody renewed within the awareness timeout.
    pub(super) fn expire_presence(&mut self) {
        let expired = self
            .presence
            .expire(self.now, self.settings.awareness_timeout);
        if let Some(message) = self.presence.encode(&expired) {
            self.presence_changed(message);
        }
    }

    pub(super) fn has_presence(&self) -> bool {
        !self.presence.is_empty()
    }
}
