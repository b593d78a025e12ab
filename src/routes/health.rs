//! Liveness and readiness probes.

use actix_web::{HttpResponse, get, web};
use serde_json::json;

use crate::error::ApiError;
use crate::startup::AppState;

/// Liveness: the process is up and serving HTTP.
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Readiness: the store answers and the server is not shutting down.
#[get("/readyz")]
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if state.is_shutting_down() || state.store.ping().await.is_err() {
        return Err(ApiError::NotReady);
    }
    Ok(HttpResponse::Ok().json(json!({ "status": "ready" })))
}
