//! Opening a channel on a Hocuspocus connection: the name and token are checked, the limits
//! admit it, and its document is joined while what the client sends for it waits.

use std::time::Duration;

use actix::prelude::*;
use actix_http::ws::CloseCode;

use super::channel::ChannelPeer;
use super::{Channel, HocuspocusSession, Stage};
use crate::auth::{Access, Denied};
use crate::collab::core::{MemberInfo, SubscriberId, close};
use crate::collab::document::DocumentActor;
use crate::collab::messages::{Inbound, Subscribe, Unsubscribe};
use crate::collab::registry::JoinError;
use crate::domain::DocId;
use crate::store::now_ms;
use crate::sync::hocuspocus;
use crate::ws::session::SessionActor;

impl HocuspocusSession {
    /// Opens a channel for `name` with `token`: refused with a reason, or authenticated and
    /// joining its document.
    pub(super) fn open_channel(
        &mut self,
        ctx: &mut Context<Self>,
        name: String,
        token: Option<String>,
    ) {
        let prefix = hocuspocus::name_prefix(&name);
        let doc = match DocId::parse(&name) {
            Ok(doc) => doc,
            Err(invalid) => {
                let reason = format!("invalid document name: {invalid}");
                return self.refuse(ctx, &name, hocuspocus::permission_denied(&prefix, &reason));
            }
        };
        let settings = &self.state.settings;
        let most = settings.max_documents_per_connection;
        if most > 0 && self.channels.len() >= most {
            let reason = format!(
                "too many documents on one connection: at most {most} (--max-documents-per-connection)"
            );
            return self.refuse(ctx, &name, hocuspocus::permission_denied(&prefix, &reason));
        }
        let token = token
            .filter(|t| !t.is_empty())
            .or_else(|| self.handshake_token.clone());
        let grant = match self.state.auth.authorize_doc(&doc, token.as_deref(), None) {
            Ok(grant) => grant,
            Err(denied) => {
                let reason = match (&denied, &token) {
                    (Denied::Unauthenticated(_), None) => {
                        "a document token is required: give the provider a token".to_string()
                    }
                    _ => denied.to_string(),
                };
                tracing::info!(parent: &self.span, doc = %doc, client_ip = self.client_ip.map(tracing::field::display), %reason, "hocuspocus channel refused");
                return self.refuse(ctx, &name, hocuspocus::permission_denied(&prefix, &reason));
            }
        };
        let permit = match self.state.limits.admit_doc(&doc) {
            Ok(permit) => permit,
            Err(full) => {
                tracing::warn!(parent: &self.span, doc = %doc, %full, "hocuspocus channel refused");
                return self.tell_closed(ctx, &name, close::AGAIN, &full.to_string());
            }
        };
        self.refused.remove(&name);
        self.send(&hocuspocus::authenticated(
            &prefix,
            grant.access != Access::Write,
        ));
        let id = self.state.next_session_id();
        let peer = ChannelPeer {
            outbound: self.outbound.clone(),
            prefix,
            id,
            session: ctx.address(),
        };
        let info = MemberInfo {
            can_write: grant.access == Access::Write,
            user: grant.user.as_ref().map(|u| u.name.clone()),
            client_ip: self.client_ip,
            issued_at: grant.issued_at,
            acks: true,
        };
        if let Some(expires_at) = grant.expires_at {
            let left = u64::try_from(expires_at * 1000 - now_ms()).unwrap_or(0);
            let name = name.clone();
            ctx.run_later(Duration::from_millis(left), move |act, ctx| {
                if act.channels.get(&name).is_some_and(|c| c.id == id) {
                    act.end_channel(ctx, &name, close::POLICY, "token expired");
                }
            });
        }
        self.names.insert(id, name.clone());
        self.channels.insert(
            name.clone(),
            Channel {
                id,
                grant,
                stage: Stage::Joining(Vec::new()),
                _permit: permit,
            },
        );
        let join = SessionActor::join(self.state.registry.clone(), doc.clone(), move || {
            Subscribe {
                subscriber: id,
                peer: Box::new(peer.clone()),
                info: info.clone(),
            }
        });
        ctx.spawn(
            join.into_actor(self)
                .map(move |joined, act, ctx| act.joined(ctx, &name, id, doc, joined)),
        );
    }

    /// A channel's document was joined (or not).
    fn joined(
        &mut self,
        ctx: &mut Context<Self>,
        name: &str,
        id: SubscriberId,
        doc: DocId,
        joined: Result<Addr<DocumentActor>, JoinError>,
    ) {
        let current = self.channels.get(name).is_some_and(|c| c.id == id);
        let addr = match joined {
            Ok(addr) if !current => {
                // Closed while it joined.
                return addr.do_send(Unsubscribe { subscriber: id });
            }
            Ok(addr) => addr,
            Err(_) if !current => return,
            Err(JoinError::LoadFailed) => {
                let reason = "the document could not be loaded";
                return self.end_channel(ctx, name, close::ERROR, reason);
            }
            Err(JoinError::ShuttingDown) => {
                return self.close(ctx, CloseCode::Away, "server shutting down");
            }
        };
        let Some(channel) = self.channels.get_mut(name) else {
            return;
        };
        // Access may have been revoked while the document loaded.
        if !self.state.auth.still_valid(&doc, &channel.grant) {
            addr.do_send(Unsubscribe { subscriber: id });
            self.forget_channel(name);
            return self.tell_closed(ctx, name, close::REVOKED, "access revoked");
        }
        let waiting = match std::mem::replace(&mut channel.stage, Stage::Open(addr.clone())) {
            Stage::Joining(waiting) => waiting,
            Stage::Open(_) => Vec::new(),
        };
        if !waiting.is_empty() {
            addr.do_send(Inbound {
                subscriber: id,
                messages: waiting,
            });
        }
    }
}
