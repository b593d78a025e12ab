//! `GET /ws/{doc}`: the y-websocket endpoint. Checks the name, the page's origin and the
//! client's credentials, upgrades, and starts a session if the connection limits allow.

use actix::Actor;
use actix_web::{HttpRequest, HttpResponse, get, web};
use actix_ws::{CloseCode, CloseReason};
use serde::Deserialize;

use crate::auth::middleware::origin_allowed;
use crate::auth::{self};
use crate::collab::limits::RateLimiter;
use crate::collab::outbound::Outbound;
use crate::collab::session::{Connection, SessionActor};
use crate::domain::DocId;
use crate::error::ApiError;
use crate::startup::AppState;

#[derive(Debug, Deserialize)]
pub struct WsQuery {
    /// A document token (or an API key), as `WebsocketProvider`'s `params: { token }` sends it.
    token: Option<String>,
}

/// Upgrades to a WebSocket bound to one document. A bad name, a foreign page or missing or
/// invalid credentials are refused before the upgrade with problem JSON; a full server closes
/// the new socket at once with 1013 and the reason.
#[get("/ws/{doc:.*}")]
#[tracing::instrument(skip_all, fields(doc = %path.as_str()))]
pub async fn connect(
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<WsQuery>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let doc = DocId::parse(&path)?;
    if !origin_allowed(&req, &state.settings.allowed_origins) {
        return Err(ApiError::Forbidden(
            "this page's origin may not connect: see --allowed-origin".into(),
        ));
    }
    let grant = state
        .auth
        .authorize_doc(&doc, query.token.as_deref(), auth::bearer(&req))?;
    let (response, session, stream) =
        actix_ws::handle(&req, payload).map_err(|e| ApiError::NotWebSocket(e.to_string()))?;
    let settings = &state.settings;
    let ip = req.peer_addr().map(|a| a.ip());
    match state.limits.admit(&doc, ip) {
        Ok(permit) => {
            state.metrics.connections_total.inc();
            let outbound = Outbound::spawn(
                session,
                settings.outbound_queue_bytes,
                state.metrics.clone(),
            );
            let connection = Connection {
                id: state.next_session_id(),
                doc,
                registry: state.registry.clone(),
                outbound,
                grant,
                permit,
                auth: state.auth.clone(),
                max_message_size: settings.max_message_size,
                rate: RateLimiter::new(settings.message_rate, settings.message_burst),
                metrics: state.metrics.clone(),
            };
            SessionActor::new(connection, stream).start();
        }
        Err(full) => {
            tracing::warn!(%full, "connection refused");
            state
                .metrics
                .connections_closed
                .with_label_values(&["1013"])
                .inc();
            actix_web::rt::spawn(async move {
                let reason = CloseReason {
                    code: CloseCode::Again,
                    description: Some(full.to_string()),
                };
                let _ = session.close(Some(reason)).await;
                drop(stream);
            });
        }
    }
    Ok(response)
}
