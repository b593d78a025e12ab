//! A Hocuspocus connection (`GET /ws`): one socket carrying several documents, each named in
//! every message, each authorised and subscribed on its own as a channel.
//!
//! A channel opens with the provider's auth message (its token), or, from a provider that has
//! no token (2.x sends none then), with its first message. The token is checked as a
//! y-websocket connection's is, the document is joined, and what the client sent meanwhile is
//! handed on once it is subscribed. A bad message for one document closes that channel with a
//! reason; a frame that cannot be read at all, or a sender over its rate, closes the socket.
//! Messages for a channel the server closed or refused are dropped until the provider
//! authenticates it again.

mod channel;
mod open;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_http::ws::{CloseCode, Frame, ProtocolError};
use actix_web::web;
use bytes::Bytes;
use futures_util::future::join_all;

use self::channel::ChannelEnded;
use super::frames::{FrameSession, handle_batch};
use super::limits::{Permit, RateLimiter};
use super::outbound::Outbound;
use super::reader::{FrameReader, Reassembly};
use crate::auth::Grant;
use crate::collab::core::{SubscriberId, close};
use crate::collab::document::DocumentActor;
use crate::collab::messages::{Inbound, Unsubscribe};
use crate::state::AppState;
use crate::sync::hocuspocus::{self, DocMessage, FrameRefusal, Refused};
use crate::sync::protocol::{ClientMessage, FrameError, FrameRules};

/// How often the connection is pinged; one not heard from for [`CLIENT_TIMEOUT`] is closed.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(15);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
/// Most document names one connection may have had refused or closed and still send to: past
/// it, the connection is closed.
const MAX_REFUSED: usize = 1024;

/// Everything a Hocuspocus connection is started with.
pub(crate) struct HocuspocusConnection {
    pub state: web::Data<AppState>,
    /// Its slot under the connection limits (total and per address).
    pub permit: Permit,
    /// A token given with the handshake (`?token=` or a bearer header), for channels whose
    /// auth message carries none.
    pub handshake_token: Option<String>,
    pub client_ip: Option<IpAddr>,
}

/// Where a channel stands.
enum Stage {
    /// Joining its document: what the client sends meanwhile waits here.
    Joining(Vec<ClientMessage>),
    Open(Addr<DocumentActor>),
}

/// One document on the connection.
struct Channel {
    id: SubscriberId,
    grant: Grant,
    stage: Stage,
    /// Its slot under the per-document limit.
    _permit: Permit,
}

/// The session of one Hocuspocus connection.
pub(crate) struct HocuspocusSession {
    state: web::Data<AppState>,
    span: tracing::Span,
    client_ip: Option<IpAddr>,
    outbound: Outbound,
    stream: Option<FrameReader>,
    _permit: Permit,
    handshake_token: Option<String>,
    rate: RateLimiter,
    partial: Reassembly,
    /// Open and joining channels, by document name.
    channels: HashMap<String, Channel>,
    /// Document names by channel id.
    names: HashMap<SubscriberId, String>,
    /// Names refused or closed: their messages are dropped until an auth message.
    refused: HashSet<String>,
    /// Messages of the frames read in one batch, per open channel, not yet handed on.
    inbound: Vec<(SubscriberId, Addr<DocumentActor>, Vec<ClientMessage>)>,
}

impl HocuspocusSession {
    pub(crate) fn new(
        connection: HocuspocusConnection,
        outbound: Outbound,
        stream: FrameReader,
    ) -> Self {
        let HocuspocusConnection {
            state,
            permit,
            handshake_token,
            client_ip,
        } = connection;
        let settings = &state.settings;
        let rate = RateLimiter::new(settings.message_rate, settings.message_burst);
        let partial = Reassembly::new(settings.max_message_size);
        Self {
            span: tracing::debug_span!(
                parent: None,
                "hocuspocus",
                client_ip = client_ip.map(tracing::field::display),
            ),
            state,
            client_ip,
            outbound,
            stream: Some(stream),
            _permit: permit,
            handshake_token,
            rate,
            partial,
            channels: HashMap::new(),
            names: HashMap::new(),
            refused: HashSet::new(),
            inbound: Vec::new(),
        }
    }

    /// Closes the whole connection with a code and a reason, and stops.
    fn close(&mut self, ctx: &mut Context<Self>, code: CloseCode, reason: impl Into<String>) {
        let reason = reason.into();
        tracing::info!(
            parent: &self.span,
            client_ip = self.client_ip.map(tracing::field::display),
            ?code,
            %reason,
            "closing a hocuspocus connection"
        );
        self.outbound.close(code, reason);
        ctx.stop();
    }

    fn send(&self, message: &[u8]) {
        // A connection that cannot take it is closing already.
        let _ = self.outbound.send_message(message);
    }

    /// Refuses a document name: the provider is told why, and what it sends for that name is
    /// dropped until it authenticates again.
    fn refuse(&mut self, ctx: &mut Context<Self>, name: &str, message: Vec<u8>) {
        self.send(&message);
        self.refused.insert(name.to_owned());
        if self.refused.len() > MAX_REFUSED {
            self.close(ctx, CloseCode::Policy, "too many refused documents");
        }
    }

    /// Ends a channel from this side: unsubscribes it and tells the provider why.
    fn end_channel(&mut self, ctx: &mut Context<Self>, name: &str, code: u16, reason: &str) {
        if let Some(channel) = self.forget_channel(name)
            && let Stage::Open(addr) = &channel.stage
        {
            addr.do_send(Unsubscribe {
                subscriber: channel.id,
            });
        }
        self.tell_closed(ctx, name, code, reason);
    }

    /// Tells the provider that the channel of `name` is closed, with the code and reason a
    /// y-websocket connection would be closed with. The Hocuspocus close message carries a
    /// reason and no code, so its reason starts with the code (`4403 access revoked`); and a
    /// 2.x provider has no handler for it. So when no other document is open on the
    /// connection, the connection itself is closed with that code and reason instead.
    fn tell_closed(&mut self, ctx: &mut Context<Self>, name: &str, code: u16, reason: &str) {
        tracing::debug!(parent: &self.span, doc = name, code, reason, "channel closed");
        if self.channels.is_empty() {
            return self.close(ctx, CloseCode::from(code), reason);
        }
        let prefix = hocuspocus::name_prefix(name);
        let message = hocuspocus::close(&prefix, &format!("{code} {reason}"));
        self.refuse(ctx, name, message);
    }

    fn forget_channel(&mut self, name: &str) -> Option<Channel> {
        let channel = self.channels.remove(name)?;
        self.names.remove(&channel.id);
        self.inbound.retain(|(id, ..)| *id != channel.id);
        Some(channel)
    }

    /// One whole binary frame from the client.
    fn handle_frame(&mut self, frame: Bytes, ctx: &mut Context<Self>) {
        self.state.metrics.bytes_received.inc_by(frame.len() as u64);
        let now = Instant::now();
        let rules = FrameRules {
            budget: self.rate.available(now),
            max_presence_state: self.state.settings.max_presence_state_size,
        };
        let (name, message) = match hocuspocus::decode(&frame, &rules) {
            Ok(hocuspocus::Frame::Pong) => return,
            Ok(hocuspocus::Frame::Doc { name, message }) => (name, message),
            Err(FrameRefusal::Unreadable(why)) => {
                return self.close(ctx, CloseCode::Invalid, format!("unreadable frame: {why}"));
            }
            Err(FrameRefusal::Message(Refused { name, error })) => {
                return self.refuse_message(ctx, &name, error);
            }
        };
        let cost = match &message {
            DocMessage::Doc(decoded) => decoded.cost,
            _ => 1,
        };
        if !self.rate.take(now, cost) {
            return self.close(ctx, CloseCode::Policy, "message rate limit exceeded");
        }
        match message {
            DocMessage::Auth { token } => {
                if !self.channels.contains_key(&name) {
                    self.open_channel(ctx, name, Some(token));
                }
            }
            DocMessage::Doc(decoded) => self.take(ctx, name, decoded.messages),
            DocMessage::Stateless { len } => {
                tracing::debug!(parent: &self.span, doc = name, len, "stateless message dropped");
            }
            DocMessage::Close => {
                if let Some(channel) = self.forget_channel(&name)
                    && let Stage::Open(addr) = channel.stage
                {
                    addr.do_send(Unsubscribe {
                        subscriber: channel.id,
                    });
                }
            }
        }
    }

    /// Messages for document `name`: handed to its channel, or opening one.
    fn take(&mut self, ctx: &mut Context<Self>, name: String, messages: Vec<ClientMessage>) {
        if !self.channels.contains_key(&name) {
            if self.refused.contains(&name) {
                return;
            }
            // A provider without a token sends no auth message.
            self.open_channel(ctx, name.clone(), None);
        }
        let Some(channel) = self.channels.get_mut(&name) else {
            return;
        };
        match &mut channel.stage {
            Stage::Joining(waiting) => waiting.extend(messages),
            Stage::Open(addr) => match self.inbound.iter_mut().find(|(id, ..)| *id == channel.id) {
                Some((_, _, pending)) => pending.extend(messages),
                None => self.inbound.push((channel.id, addr.clone(), messages)),
            },
        }
    }

    /// A message for document `name` was refused: its channel is closed with the reason, or
    /// the whole connection if the sender is over its rate.
    fn refuse_message(&mut self, ctx: &mut Context<Self>, name: &str, error: FrameError) {
        let code = match &error {
            FrameError::RateLimited => {
                return self.close(ctx, CloseCode::Policy, "message rate limit exceeded");
            }
            FrameError::Unsupported(_) => 1003,
            FrameError::Malformed(_) => close::INVALID,
            FrameError::PresenceTooLarge(_) => close::TOO_LARGE,
        };
        tracing::info!(parent: &self.span, doc = name, client_ip = self.client_ip.map(tracing::field::display), %error, "hocuspocus message refused");
        self.end_channel(ctx, name, code, &error.to_string());
    }

    /// Hands the messages of the frames just read to their documents, and reads on once they
    /// have all taken them: the socket's own flow control then bounds what a fast sender
    /// queues.
    /// A connection closing over a bad frame still hands on what came before it.
    fn forward(&mut self, ctx: &mut Context<Self>) {
        if self.inbound.is_empty() {
            return;
        }
        if !ctx.state().alive() {
            for (subscriber, addr, messages) in std::mem::take(&mut self.inbound) {
                addr.do_send(Inbound {
                    subscriber,
                    messages,
                });
            }
            return;
        }
        let sends: Vec<_> = std::mem::take(&mut self.inbound)
            .into_iter()
            .map(|(subscriber, addr, messages)| {
                addr.send(Inbound {
                    subscriber,
                    messages,
                })
            })
            .collect();
        ctx.wait(join_all(sends).into_actor(self).map(|results, act, ctx| {
            if results.iter().any(Result::is_err) {
                act.close(ctx, CloseCode::Error, "document unavailable; reconnect");
            }
        }));
    }
}

impl Actor for HocuspocusSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(stream) = self.stream.take() {
            ctx.add_stream(stream);
        }
        ctx.run_interval(HEARTBEAT_INTERVAL, |act, ctx| {
            if act.outbound.silent_for() > CLIENT_TIMEOUT {
                return act.close(ctx, CloseCode::Away, "no response to pings");
            }
            act.outbound.ping();
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        for channel in self.channels.values() {
            if let Stage::Open(addr) = &channel.stage {
                addr.do_send(Unsubscribe {
                    subscriber: channel.id,
                });
            }
        }
        tracing::debug!(parent: &self.span, "hocuspocus connection ended");
    }
}

impl Handler<ChannelEnded> for HocuspocusSession {
    type Result = ();

    /// The document closed a channel (revoked, deleted, a refused update), or the whole
    /// connection.
    fn handle(&mut self, msg: ChannelEnded, ctx: &mut Context<Self>) {
        if msg.socket {
            return ctx.stop();
        }
        let Some(name) = self.names.get(&msg.id).cloned() else {
            return;
        };
        self.forget_channel(&name);
        self.tell_closed(ctx, &name, msg.code, &msg.reason);
    }
}

impl FrameSession for HocuspocusSession {
    const TEXT_REFUSAL: &'static str =
        "text messages are not supported: send binary Hocuspocus messages";

    fn outbound(&self) -> &Outbound {
        &self.outbound
    }

    fn reassembly(&mut self) -> &mut Reassembly {
        &mut self.partial
    }

    fn span(&self) -> &tracing::Span {
        &self.span
    }

    fn close(&mut self, ctx: &mut Context<Self>, code: CloseCode, reason: String) {
        HocuspocusSession::close(self, ctx, code, reason);
    }

    fn message(&mut self, message: Bytes, ctx: &mut Context<Self>) {
        self.handle_frame(message, ctx);
    }

    fn forward(&mut self, ctx: &mut Context<Self>) {
        HocuspocusSession::forward(self, ctx);
    }
}

impl StreamHandler<Result<Vec<Frame>, ProtocolError>> for HocuspocusSession {
    fn handle(&mut self, item: Result<Vec<Frame>, ProtocolError>, ctx: &mut Context<Self>) {
        handle_batch(self, item, ctx);
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
