//! The API described as OpenAPI 3.1 (generated from the handlers), and a reference page for it.

use actix_web::{HttpResponse, get};
use utoipa::OpenApi;

use super::{access, docs, rich, updates, versions};
use crate::error::Problem;
use crate::sync::text_ops::TextOp;

/// The HTTP API of Tandem.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tandem",
        description = "Documents, their content and versions. Editors connect over WebSocket at \
                       /ws/{doc} with the y-websocket protocol; what is changed here reaches them \
                       at once, and every change is stored before it is answered. When the \
                       server runs with an auth secret, every endpoint but the access check \
                       wants `Authorization: Bearer <API key>`, and WebSockets want a document \
                       token (`?token=`) from POST /api/docs/{id}/tokens."
    ),
    paths(
        docs::list,
        docs::create,
        docs::remove,
        docs::get_one,
        updates::get_update,
        updates::get_content,
        updates::post_update,
        updates::post_text,
        rich::put_content,
        versions::list,
        versions::create,
        versions::get_one,
        versions::restore,
        access::issue,
        access::check,
        access::disconnect,
    ),
    components(schemas(Problem, TextOp)),
    tags(
        (name = "documents", description = "Create, list and delete documents"),
        (name = "content", description = "Read and change what a document holds"),
        (name = "versions", description = "Saved states of a document"),
        (name = "access", description = "Document tokens and revocation"),
    )
)]
pub(crate) struct ApiDoc;

/// `GET /api/openapi.json`.
#[get("/api/openapi.json")]
pub(crate) async fn spec() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}

/// The interactive reference page, served from the binary (no CDN): `/api/reference/`.
pub(crate) fn reference() -> utoipa_swagger_ui::SwaggerUi {
    utoipa_swagger_ui::SwaggerUi::new("/api/reference/{_:.*}")
        .url("/api/openapi.json", ApiDoc::openapi())
}
