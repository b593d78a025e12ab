//! The gate every request passes before it is routed, against web pages that turn the user's
//! browser on Tandem.
//!
//! - **DNS rebinding.** A page of `rebind.example` whose name is made to resolve to Tandem's
//!   address is, to the browser, of the same origin as Tandem: it can read every answer. Such a
//!   request still names `rebind.example` in `Host`. So a request whose `Host` (and, from a
//!   trusted proxy, `X-Forwarded-Host`) is not one of this server's names is refused with 421:
//!   see [`crate::domain::HostRule`] for which names are.
//! - **Cross-site writes.** A page of another origin may send "simple" requests (a form post,
//!   `fetch` with `text/plain`) without a CORS preflight; the browser only hides the answer. So
//!   a request that changes something and comes from a page the origin rule does not allow is
//!   refused with 403 (see [`crate::auth::middleware::foreign_write`]).
//!
//! The health probes are exempt from the host rule: orchestrators probe them under whatever
//! name or address they know, and they reveal nothing and change nothing.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::web;

use crate::auth::middleware::foreign_write;
use crate::error::ApiError;
use crate::state::AppState;

/// Paths answered whatever host they are asked under.
const ANY_HOST_PATHS: [&str; 2] = ["/healthz", "/readyz"];

/// The middleware: refuses requests under a foreign host name (421) and writes from foreign
/// pages (403) with problem JSON, before any route sees them. Registered on the application
/// itself, so WebSocket upgrades, answered by a second instance of it, pass it too.
pub(crate) async fn guard(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .expect("AppState is registered on the app")
        .clone();
    if !ANY_HOST_PATHS.contains(&req.path())
        && let Some(name) = foreign_host(&state, &req)
    {
        return Err(ApiError::UnknownHost(format!(
            "this server does not answer to the name {name:?}: see --public-host"
        ))
        .into());
    }
    if foreign_write(req.request(), &state.settings.allowed_origins) {
        return Err(ApiError::Forbidden(
            "pages of this origin may not change anything here: see --allowed-origin".into(),
        )
        .into());
    }
    next.call(req).await
}

/// The first name the request was addressed under that is not this server's: each `Host`
/// line, and the `X-Forwarded-Host` of a trusted proxy. Both are checked, so that a client
/// reaching Tandem straight through an address that is also a trusted proxy's (as Docker's
/// gateway is) cannot vouch for its own `Host` with a forged `X-Forwarded-Host`.
fn foreign_host(state: &AppState, req: &ServiceRequest) -> Option<String> {
    let rule = &state.hosts;
    if !rule.enforced() {
        return None;
    }
    let headers = req.headers();
    let mut claims: Vec<&str> = Vec::new();
    for value in headers.get_all(header::HOST) {
        match value.to_str() {
            Ok(value) => claims.push(value),
            Err(_) => return Some(String::from_utf8_lossy(value.as_bytes()).into_owned()),
        }
    }
    if claims.is_empty()
        && let Some(authority) = req.uri().authority()
    {
        claims.push(authority.as_str());
    }
    if let Some(peer) = req.peer_addr()
        && let Some(forwarded) = state.proxies.forwarded_host(peer.ip(), headers)
    {
        claims.push(forwarded);
    }
    claims
        .into_iter()
        .find(|claim| !rule.allows(claim))
        .map(str::to_string)
}
