//! The gate every request passes before it is routed, against web pages that turn the user's
//! browser on Tandem.
//!
//! **Cross-site writes.** A page of another origin may send "simple" requests (a form post,
//! `fetch` with `text/plain`) without a CORS preflight; the browser only hides the answer. So a
//! request that changes something and comes from a page the origin rule does not allow is
//! refused with 403 (see [`crate::auth::middleware::foreign_write`]), with access control on
//! or off.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web;

use crate::auth::middleware::foreign_write;
use crate::error::ApiError;
use crate::startup::AppState;

/// The middleware: refuses writes from foreign pages (403) with problem JSON, before any route
/// sees them. Registered on the application itself, so WebSocket upgrades, answered by a
/// second instance of it, pass it too.
pub async fn guard(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .expect("AppState is registered on the app")
        .clone();
    if foreign_write(req.request(), &state.settings.allowed_origins) {
        return Err(ApiError::Forbidden(
            "pages of this origin may not change anything here: see --allowed-origin".into(),
        )
        .into());
    }
    next.call(req).await
}
