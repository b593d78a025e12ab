//! Liveness and readiness probes, and the Prometheus metrics.

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, route, web};
use serde_json::json;

use crate::error::ApiError;
use crate::state::AppState;

/// Liveness: the process is up and serving HTTP.
#[route("/healthz", method = "GET", method = "HEAD")]
pub(crate) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// A store that takes longer than this to answer a ping counts as unreachable.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Readiness: the store answers and takes writes, and the server is not shutting down.
#[route("/readyz", method = "GET", method = "HEAD")]
pub(crate) async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if state.is_shutting_down() || state.store_health.is_failing() {
        return Err(ApiError::NotReady);
    }
    let ping = tokio::time::timeout(PING_TIMEOUT, state.store.ping()).await;
    if !matches!(ping, Ok(Ok(()))) {
        return Err(ApiError::NotReady);
    }
    // Without the bus the node still serves, through the log: ready, and it says so.
    Ok(HttpResponse::Ok().json(match &state.bus {
        None => json!({ "status": "ready" }),
        Some(bus) if bus.is_up() => json!({ "status": "ready", "bus": "up" }),
        Some(_) => json!({ "status": "ready", "bus": "down" }),
    }))
}

/// Prometheus metrics in the text format; behind the metrics token or an API key when access
/// control is on.
#[route("/metrics", method = "GET")]
pub(crate) async fn metrics(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.auth.check_metrics(crate::auth::bearer(&req))?;
    let metrics = &state.metrics;
    metrics.connections.set(state.limits.open() as i64);
    if let Ok(loaded) = state
        .registry
        .send(crate::collab::registry::LoadedCount)
        .await
    {
        metrics.documents_loaded.set(loaded as i64);
    }
    metrics
        .store_failing
        .set(i64::from(state.store_health.is_failing()));
    metrics
        .bus_up
        .set(i64::from(state.bus.as_ref().is_some_and(|bus| bus.is_up())));
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(metrics.render()))
}
