//! The session actor: one per WebSocket connection.
//!
//! It joins the document (which is loaded before anything is answered), decodes and checks each
//! frame, forwards the messages to the document actor, and answers bad input with a close code
//! and a reason. It never writes document frames itself: the document actor does, through the
//! connection's bounded `Outbound` queue.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_http::ws::{CloseCode, Frame, ProtocolError};
use bytes::Bytes;

use super::frames::{FrameSession, handle_batch};
use super::limits::{Permit, RateLimiter};
use super::outbound::Outbound;
use super::reader::{FrameReader, Reassembly};
use crate::auth::{Access, Auth, Grant};
use crate::collab::Registry;
use crate::collab::core::MemberInfo;
use crate::collab::document::{DocumentActor, REVOKED_CLOSE_CODE};
use crate::collab::messages::{Inbound, Subscribe, Unsubscribe};
use crate::collab::registry::{Join, JoinError};
use crate::domain::DocId;
use crate::store::now_ms;
use crate::sync::protocol::{ClientMessage, Decoded, FrameError, FrameRules, decode_frame_within};

/// Identifies one WebSocket connection for the lifetime of the process; a y-websocket
/// connection holds one document, so it is also the connection's subscriber id there.
pub(crate) type SessionId = u64;

/// How many times a join is retried when it races with the document unloading.
const JOIN_ATTEMPTS: usize = 5;

/// Everything a session is started with.
pub(crate) struct Connection {
    pub id: SessionId,
    pub doc: DocId,
    pub registry: Addr<Registry>,
    /// What the client's credentials allow.
    pub grant: Grant,
    /// Its slot under the connection limits, given back when the session ends.
    pub permit: Permit,
    /// To check, once joined, that access was not revoked meanwhile.
    pub auth: Arc<Auth>,
    pub max_message_size: usize,
    pub rate: RateLimiter,
    /// Longest presence state the client may set.
    pub max_presence_state: usize,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Where the connection comes from (see `client_addr`), for the logs.
    pub client_ip: Option<IpAddr>,
    /// Whether its updates are acknowledged once durable (`?acks=1`).
    pub acks: bool,
}

/// One WebSocket connection to one document.
pub(crate) struct SessionActor {
    id: SessionId,
    /// Every log line about this session is emitted in this span (fields `session`, `doc`,
    /// `access`, `user`, `client_ip`).
    span: tracing::Span,
    doc_id: DocId,
    registry: Addr<Registry>,
    doc: Option<Addr<DocumentActor>>,
    outbound: Outbound,
    stream: Option<FrameReader>,
    grant: Grant,
    auth: Arc<Auth>,
    _permit: Permit,
    rate: RateLimiter,
    max_presence_state: usize,
    metrics: Arc<crate::metrics::Metrics>,
    /// A binary message arriving in continuation frames, gathered until its last frame.
    partial: Reassembly,
    /// Messages of the frames read in one batch, not yet handed to the document.
    inbound: Vec<ClientMessage>,
    client_ip: Option<IpAddr>,
    acks: bool,
}

impl SessionActor {
    pub(crate) fn new(connection: Connection, outbound: Outbound, stream: FrameReader) -> Self {
        let Connection {
            id,
            doc,
            registry,
            grant,
            permit,
            auth,
            max_message_size,
            rate,
            max_presence_state,
            metrics,
            client_ip,
            acks,
        } = connection;
        // At debug level, like every line logged in it: at the default level a session then
        // costs no span at all (about 0.4 KiB per connection, with the formatted fields).
        let span = tracing::debug_span!(
            parent: None,
            "session",
            session = id,
            doc = %doc,
            access = ?grant.access,
            user = grant.user.as_ref().map(|u| u.name.as_str()),
            client_ip = client_ip.map(tracing::field::display),
        );
        Self {
            span,
            id,
            doc_id: doc,
            registry,
            doc: None,
            outbound,
            stream: Some(stream),
            grant,
            auth,
            _permit: permit,
            rate,
            max_presence_state,
            metrics,
            partial: Reassembly::new(max_message_size),
            inbound: Vec::new(),
            client_ip,
            acks,
        }
    }

    /// Closes the connection with a code and a reason, and stops.
    fn close(&mut self, ctx: &mut Context<Self>, code: CloseCode, reason: impl Into<String>) {
        let reason = reason.into();
        if matches!(
            code,
            CloseCode::Policy
                | CloseCode::Invalid
                | CloseCode::Protocol
                | CloseCode::Size
                | CloseCode::Unsupported
        ) {
            // What the client sent broke a rule: logged at the default level (where the
            // session's span is off), with where it came from.
            tracing::info!(
                parent: &self.span,
                session = self.id,
                doc = %self.doc_id,
                client_ip = self.client_ip.map(tracing::field::display),
                ?code,
                %reason,
                "closing"
            );
        } else {
            tracing::debug!(parent: &self.span, ?code, %reason, "closing");
        }
        self.outbound.close(code, reason);
        ctx.stop();
    }

    /// Joins the document, retrying if it was unloading at that very moment.
    pub(crate) async fn join(
        registry: Addr<Registry>,
        doc: DocId,
        subscribe: impl Fn() -> Subscribe,
    ) -> Result<Addr<DocumentActor>, JoinError> {
        for _ in 0..JOIN_ATTEMPTS {
            let addr = registry
                .send(Join { doc: doc.clone() })
                .await
                .map_err(|_| JoinError::ShuttingDown)??;
            if let Ok(Ok(())) = addr.send(subscribe()).await {
                return Ok(addr);
            }
        }
        Err(JoinError::LoadFailed)
    }

    /// Checks one binary message and adds what it carries to the messages for the document.
    /// The frame may cost what the rate bucket holds now: one token per message it carries and
    /// more for presence by its size, so packing messages into one frame buys nothing.
    fn handle_frame(&mut self, frame: Bytes, ctx: &mut Context<Self>) {
        self.metrics.bytes_received.inc_by(frame.len() as u64);
        let now = Instant::now();
        let rules = FrameRules {
            budget: self.rate.available(now),
            max_presence_state: self.max_presence_state,
        };
        match decode_frame_within(&frame, &rules) {
            Ok(Decoded { messages, cost }) => {
                // Decoded within what the bucket held at this same instant: always taken.
                self.rate.take(now, cost);
                self.inbound.extend(messages);
            }
            Err(FrameError::Unsupported(kind)) => self.close(
                ctx,
                CloseCode::Unsupported,
                format!("unsupported message type {kind}"),
            ),
            Err(FrameError::Malformed(why)) => self.close(ctx, CloseCode::Invalid, why),
            Err(FrameError::RateLimited) => {
                self.close(ctx, CloseCode::Policy, "message rate limit exceeded")
            }
            Err(error @ FrameError::PresenceTooLarge(_)) => {
                self.close(ctx, CloseCode::Size, error.to_string())
            }
        }
    }

    /// Hands the messages of the frames just read to the document. While the session runs, it
    /// waits for the document to take them before reading on: the socket's own flow control
    /// then bounds what a fast sender can queue. A session closing over a bad frame still hands
    /// on what came before it.
    fn forward(&mut self, ctx: &mut Context<Self>) {
        if self.inbound.is_empty() {
            return;
        }
        let Some(doc) = self.doc.clone() else {
            return;
        };
        let inbound = Inbound {
            subscriber: self.id,
            messages: std::mem::take(&mut self.inbound),
        };
        if !ctx.state().alive() {
            doc.do_send(inbound);
            return;
        }
        ctx.wait(doc.send(inbound).into_actor(self).map(|result, act, ctx| {
            if result.is_err() {
                act.close(ctx, CloseCode::Error, "document unavailable; reconnect");
            }
        }));
    }
}

impl Actor for SessionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let (outbound, session) = (self.outbound.clone(), self.id);
        let can_write = self.grant.access == Access::Write;
        let user = self.grant.user.as_ref().map(|u| u.name.clone());
        let (client_ip, issued_at, acks) = (self.client_ip, self.grant.issued_at, self.acks);
        let join = Self::join(self.registry.clone(), self.doc_id.clone(), move || {
            Subscribe {
                subscriber: session,
                peer: Box::new(outbound.clone()),
                info: MemberInfo {
                    can_write,
                    user: user.clone(),
                    client_ip,
                    issued_at,
                    acks,
                },
            }
        });
        if let Some(expires_at) = self.grant.expires_at {
            let left = u64::try_from(expires_at * 1000 - now_ms()).unwrap_or(0);
            ctx.run_later(Duration::from_millis(left), |act, ctx| {
                act.close(ctx, CloseCode::Policy, "token expired")
            });
        }
        // Nothing from the client is read until the document is loaded and subscribed.
        ctx.wait(join.into_actor(self).map(|joined, act, ctx| match joined {
            Ok(addr) => {
                // Access may have been revoked while the document loaded.
                if !act.auth.still_valid(&act.doc_id, &act.grant) {
                    addr.do_send(Unsubscribe { subscriber: act.id });
                    return act.close(ctx, CloseCode::Other(REVOKED_CLOSE_CODE), "access revoked");
                }
                act.doc = Some(addr);
                if let Some(stream) = act.stream.take() {
                    ctx.add_stream(stream);
                }
            }
            Err(JoinError::LoadFailed) => {
                act.close(ctx, CloseCode::Error, "the document could not be loaded")
            }
            Err(JoinError::ShuttingDown) => {
                act.close(ctx, CloseCode::Again, "server shutting down")
            }
        }));
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        if let Some(doc) = &self.doc {
            doc.do_send(Unsubscribe {
                subscriber: self.id,
            });
        }
        tracing::debug!(parent: &self.span, "session ended");
    }
}

impl FrameSession for SessionActor {
    const TEXT_REFUSAL: &'static str =
        "text messages are not supported: send binary y-websocket messages";

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
        SessionActor::close(self, ctx, code, reason);
    }

    fn message(&mut self, message: Bytes, ctx: &mut Context<Self>) {
        self.handle_frame(message, ctx);
    }

    fn forward(&mut self, ctx: &mut Context<Self>) {
        SessionActor::forward(self, ctx);
    }
}

impl StreamHandler<Result<Vec<Frame>, ProtocolError>> for SessionActor {
    /// Handles the frames read together, in order, then hands their messages to the document
    /// at once.
    fn handle(&mut self, item: Result<Vec<Frame>, ProtocolError>, ctx: &mut Context<Self>) {
        handle_batch(self, item, ctx);
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
