//! `GET /ws/{doc}`: the y-websocket endpoint. Checks the name, upgrades, starts a session.

use actix::Actor;
use actix_web::{HttpRequest, HttpResponse, get, web};

use crate::collab::outbound::Outbound;
use crate::collab::session::SessionActor;
use crate::domain::DocId;
use crate::error::ApiError;
use crate::startup::AppState;

/// Upgrades to a WebSocket bound to one document. A bad name is refused before the upgrade.
#[get("/ws/{doc:.*}")]
#[tracing::instrument(skip_all, fields(doc = %path.as_str()))]
pub async fn connect(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let doc = DocId::parse(&path)?;
    let (response, session, stream) =
        actix_ws::handle(&req, payload).map_err(|e| ApiError::NotWebSocket(e.to_string()))?;
    let outbound = Outbound::spawn(session, state.settings.outbound_queue_bytes);
    SessionActor::new(
        state.next_session_id(),
        doc,
        state.registry.clone(),
        outbound,
        stream,
        state.settings.max_message_size,
    )
    .start();
    Ok(response)
}
