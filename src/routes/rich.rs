//! `PUT /api/docs/{id}/content?format=prosemirror`: a rich-text fragment's content replaced by
//! ProseMirror JSON, reaching connected editors at once (reading it is `GET` on the same path,
//! in `updates.rs`).

use std::sync::Arc;

use actix_web::{HttpResponse, put, web};
use serde::Deserialize;

use crate::auth::middleware::ApiKey;
use crate::collab::messages::ReplaceFragment;
use crate::domain::DocId;
use crate::error::{ApiError, Problem};
use crate::routes::doc_calls::DocClient;
use crate::state::AppState;
use crate::sync::prosemirror::{self, DEFAULT_FRAGMENT_KEY};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PutContentQuery {
    /// `prosemirror`: the only format written here.
    format: Option<String>,
    /// The fragment root; `default` (Tiptap's) by default.
    key: Option<String>,
}

/// A ProseMirror document, as Tiptap's `editor.getJSON()` gives it.
#[derive(utoipa::ToSchema)]
#[schema(value_type = Object, example = json!({"type": "doc", "content": [
    {"type": "paragraph", "content": [{"type": "text", "text": "Hello", "marks": [{"type": "bold"}]}]}
]}))]
pub(crate) struct ProsemirrorDoc(#[allow(dead_code)] serde_json::Value);

#[utoipa::path(
    tag = "content",
    params(("id" = String, Path, description = "Document name"), PutContentQuery),
    request_body(content = ProsemirrorDoc, description = "The fragment's new content"),
    responses(
        (status = 204, description = "Stored and relayed to editors"),
        (status = 400, description = "Invalid name, format, ProseMirror JSON, or a root that is not an XML fragment", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such document", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The root's structure cannot be read", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large, or the document would grow beyond its size limit", body = Problem, content_type = "application/problem+json")
    )
)]
/// Replaces the content of a rich-text fragment (`?key=`, default `default`) with a ProseMirror
/// document, as one change: the top-level nodes it shares with the fragment at its start and
/// end are kept, the rest rewritten. A root that does not exist yet is created. 204 once
/// durable and relayed to editors.
#[put("/api/docs/{id}/content")]
pub(crate) async fn put_content(
    _key: ApiKey,
    path: web::Path<String>,
    query: web::Query<PutContentQuery>,
    body: web::Json<serde_json::Value>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = DocId::parse(&path)?;
    match query.format.as_deref() {
        Some("prosemirror") => {}
        other => {
            return Err(ApiError::BadRequest(format!(
                "content is written as format=prosemirror, not {other:?}"
            )));
        }
    }
    let key = query
        .key
        .clone()
        .unwrap_or_else(|| DEFAULT_FRAGMENT_KEY.to_string());
    let json = body.into_inner();
    let nodes = Arc::new(
        prosemirror::parse_doc(&json).map_err(|error| ApiError::BadRequest(error.to_string()))?,
    );
    // What the document may grow by: about what the JSON holds.
    let bytes = json.to_string().len();
    DocClient::existing(&state, &id)
        .await?
        .call(|| ReplaceFragment {
            key: key.clone(),
            nodes: nodes.clone(),
            bytes,
        })
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
