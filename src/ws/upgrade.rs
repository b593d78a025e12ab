//! `GET /ws/{doc}`: the y-websocket endpoint; `GET /ws` (no document in the path): the
//! Hocuspocus endpoint. Checks the name, the page's origin and the client's credentials,
//! upgrades, and starts a session if the connection limits allow. A Hocuspocus connection
//! names its documents in its messages, so they are authorised there (`hocuspocus/`).
//!
//! A WebSocket handshake reaches the application through [`upgrade`], the HTTP server's upgrade
//! service, which is handed the connection itself. The request is answered by the application as
//! any other (middleware, routing, problem JSON); when the handler below accepts it, the service
//! writes the `101` and keeps the bare socket. No HTTP buffers stay behind for the connection's
//! lifetime: an idle WebSocket holds only its socket and its session.

use std::rc::Rc;
use std::sync::Arc;

use actix_codec::Framed;
use actix_http::body::{BodySize, MessageBody};
use actix_http::ws::CloseCode;
use actix_http::{ConnectionType, Request, Response, h1};
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, get, web};
use futures_util::SinkExt;
use serde::Deserialize;
use tokio::net::TcpStream;

use super::hocuspocus::{HocuspocusConnection, HocuspocusSession};
use super::limits::RateLimiter;
use super::outbound::Outbound;
use super::reader::FrameReader;
use super::session::{Connection, SessionActor};
use crate::auth::middleware::origin_allowed;
use crate::auth::{self};
use crate::domain::DocId;
use crate::error::ApiError;
use crate::state::AppState;

/// Largest error body written on an upgrade connection (they are small problem JSON).
const MAX_ERROR_BODY: usize = 64 * 1024;

#[derive(Debug, Deserialize)]
pub(crate) struct WsQuery {
    /// A document token (or an API key), as `WebsocketProvider`'s `params: { token }` sends it.
    token: Option<String>,
    /// `acks=1`: the client wants each of its updates acknowledged once it is durable (a
    /// y-websocket message of type 8, `varUint(1)`; Tandem's editor asks for it, a stock
    /// client does not and never gets one).
    acks: Option<String>,
}

/// Marks a request that came through the upgrade service, which alone can take the socket.
#[derive(Clone, Copy)]
struct ViaUpgrade;

/// What the handler decided for an accepted handshake, for the upgrade service to carry out.
enum Accepted {
    /// Start a session.
    Session(Box<Connection>),
    /// Start a Hocuspocus session.
    Hocuspocus(Box<HocuspocusConnection>),
    /// Upgrade, then close at once with 1013 and this reason: the server is full.
    Refused(String),
}

/// Upgrades to a WebSocket bound to one document. A bad name, a foreign page or missing or
/// invalid credentials are refused before the upgrade with problem JSON; a full server closes
/// the new socket at once with 1013 and the reason.
#[get("/ws/{doc:.*}")]
#[tracing::instrument(skip_all, fields(doc = %path.as_str()))]
pub(crate) async fn connect(
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<WsQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if path.is_empty() {
        // `/ws/`: a Hocuspocus provider that keeps the trailing slash.
        return hocuspocus_handshake(req, query, state);
    }
    let doc = DocId::parse(&path)?;
    check_origin(&req, &state)?;
    let grant = state
        .auth
        .authorize_doc(&doc, query.token.as_deref(), auth::bearer(&req))?;
    let handshake = begin_handshake(&req)?;
    let settings = &state.settings;
    let ip = state.client_ip(req.peer_addr(), req.headers());
    let accepted = match state
        .limits
        .admit(&doc, ip.map(crate::client_addr::limit_key))
    {
        Ok(permit) => {
            state.metrics.connections_total.inc();
            Accepted::Session(Box::new(Connection {
                id: state.next_session_id(),
                doc,
                registry: state.registry.clone(),
                grant,
                permit,
                auth: state.auth.clone(),
                max_message_size: settings.max_message_size,
                rate: RateLimiter::new(settings.message_rate, settings.message_burst),
                max_presence_state: settings.max_presence_state_size,
                metrics: state.metrics.clone(),
                client_ip: ip,
                acks: query.acks.as_deref() == Some("1"),
            }))
        }
        Err(full) => {
            tracing::warn!(%full, "connection refused");
            Accepted::Refused(full.to_string())
        }
    };
    Ok(finish(handshake, accepted))
}

/// Upgrades to a Hocuspocus connection, which names its documents in its messages (see
/// `hocuspocus/`): only the page's origin and the connection limits are checked here.
#[get("/ws")]
#[tracing::instrument(skip_all)]
pub(crate) async fn connect_hocuspocus(
    req: HttpRequest,
    query: web::Query<WsQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    hocuspocus_handshake(req, query, state)
}

fn hocuspocus_handshake(
    req: HttpRequest,
    query: web::Query<WsQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    check_origin(&req, &state)?;
    let handshake = begin_handshake(&req)?;
    let ip = state.client_ip(req.peer_addr(), req.headers());
    let accepted = match state
        .limits
        .admit_socket(ip.map(crate::client_addr::limit_key))
    {
        Ok(permit) => {
            state.metrics.connections_total.inc();
            let handshake_token = query
                .into_inner()
                .token
                .or_else(|| auth::bearer(&req).map(str::to_owned));
            Accepted::Hocuspocus(Box::new(HocuspocusConnection {
                state: state.clone(),
                permit,
                handshake_token,
                client_ip: ip,
            }))
        }
        Err(full) => {
            tracing::warn!(%full, "connection refused");
            Accepted::Refused(full.to_string())
        }
    };
    Ok(finish(handshake, accepted))
}

fn check_origin(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    if !origin_allowed(req, &state.settings.allowed_origins) {
        return Err(ApiError::Forbidden(
            "this page's origin may not connect: see --allowed-origin".into(),
        ));
    }
    Ok(())
}

/// Checks that `req` is a WebSocket handshake the upgrade service can take.
fn begin_handshake(req: &HttpRequest) -> Result<actix_http::ResponseBuilder, ApiError> {
    let handshake =
        actix_http::ws::handshake(req.head()).map_err(|e| ApiError::NotWebSocket(e.to_string()))?;
    if req.extensions().get::<ViaUpgrade>().is_none() {
        // A handshake with a body (chunked) is not routed as an upgrade.
        return Err(ApiError::NotWebSocket(
            "a WebSocket handshake carries no body".into(),
        ));
    }
    Ok(handshake)
}

/// The `101` answer, carrying what the upgrade service is to start.
fn finish(mut handshake: actix_http::ResponseBuilder, accepted: Accepted) -> HttpResponse {
    let mut response = HttpResponse::from(handshake.finish()).map_into_boxed_body();
    response.extensions_mut().insert(accepted);
    response
}

/// The HTTP server's upgrade service: answers a WebSocket handshake with the application and, if
/// it accepts, keeps the socket for the session.
pub(crate) async fn upgrade<S, B>(
    app: Rc<S>,
    state: web::Data<AppState>,
    request: Request,
    mut framed: Framed<TcpStream, h1::Codec>,
) -> Result<(), actix_web::Error>
where
    S: Service<Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody + 'static,
{
    request.extensions_mut().insert(ViaUpgrade);
    let response: HttpResponse = match app.call(request).await {
        Ok(response) => response.into_parts().1.map_into_boxed_body(),
        Err(error) => error.error_response(),
    };
    let mut response: Response<_> = response.into();
    let accepted = response.extensions_mut().remove::<Accepted>();
    let Some(accepted) = accepted.filter(|_| response.status() == StatusCode::SWITCHING_PROTOCOLS)
    else {
        return answer_and_close(response, framed).await;
    };
    framed
        .send(h1::Message::Item((response.drop_body(), BodySize::None)))
        .await?;
    let parts = framed.into_parts();
    let socket = Arc::new(parts.io);
    let settings = &state.settings;
    let outbound = Outbound::new(
        socket.clone(),
        settings.outbound_queue_bytes,
        state.metrics.clone(),
        &state.sockets,
    );
    match accepted {
        Accepted::Session(connection) => {
            let reader = FrameReader::new(socket, parts.read_buf, settings.max_message_size);
            actix::Actor::start(SessionActor::new(*connection, outbound, reader));
        }
        Accepted::Hocuspocus(connection) => {
            let reader = FrameReader::new(socket, parts.read_buf, settings.max_message_size);
            actix::Actor::start(HocuspocusSession::new(*connection, outbound, reader));
        }
        Accepted::Refused(reason) => outbound.close(CloseCode::Again, reason),
    }
    Ok(())
}

/// Writes a refusal (problem JSON) on an upgrade connection, which then closes: what follows a
/// refused handshake is not HTTP the server can read.
async fn answer_and_close(
    response: Response<impl MessageBody>,
    mut framed: Framed<TcpStream, h1::Codec>,
) -> Result<(), actix_web::Error> {
    let (mut response, body) = response.into_parts();
    let body = match actix_http::body::to_bytes_limited(body, MAX_ERROR_BODY).await {
        Ok(Ok(body)) => body,
        _ => bytes::Bytes::new(),
    };
    response
        .head_mut()
        .set_connection_type(ConnectionType::Close);
    // One write for head and body: some clients read no further than the first segment.
    framed
        .feed(h1::Message::Item((
            response,
            BodySize::Sized(body.len() as u64),
        )))
        .await?;
    if !body.is_empty() {
        framed.feed(h1::Message::Chunk(Some(body))).await?;
    }
    framed.feed(h1::Message::Chunk(None)).await?;
    // `close` alone would not write what is buffered.
    framed.flush().await?;
    framed.close().await?;
    Ok(())
}
