//! A document as Yjs updates over HTTP: read it whole or as a diff, and apply an update.
//!
//! An update applied here takes the same path as one from a WebSocket: it is durable before the
//! response, and connected editors receive it at once.

use actix_web::{HttpResponse, get, post, web};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use futures_util::StreamExt;
use serde::Deserialize;

use crate::auth::middleware::ApiKey;
use crate::collab::document::DEFAULT_TEXT_KEY;
use crate::collab::messages::{ApplyUpdate, EditText, EncodeState, ReadContent, ReadProsemirror};
use crate::domain::DocId;
use crate::error::{ApiError, Problem};
use crate::routes::doc_calls::DocClient;
use crate::state::AppState;
use crate::sync::prosemirror::DEFAULT_FRAGMENT_KEY;
use crate::sync::protocol::{decode_state_vector, decode_update};
use crate::sync::text_ops::TextOp;

/// Raw bytes in the body (a Yjs v1 update).
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
pub(crate) struct Binary(#[allow(dead_code)] Vec<u8>);

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct UpdateQuery {
    /// Base64 (standard or URL-safe) v1 state vector: return only what it lacks.
    sv: Option<String>,
}

#[utoipa::path(
    tag = "content",
    params(("id" = String, Path, description = "Document name"), UpdateQuery),
    responses(
        (status = 200, description = "A Yjs v1 update", body = Binary, content_type = "application/octet-stream"),
        (status = 400, description = "Invalid name or state vector", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such document", body = Problem, content_type = "application/problem+json")
    )
)]
/// The whole document as one v1 update, or with `?sv=` only what that state vector lacks.
#[get("/api/docs/{id}/update")]
pub(crate) async fn get_update(
    _key: ApiKey,
    path: web::Path<String>,
    query: web::Query<UpdateQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = DocId::parse(&path)?;
    let sv = match query.sv.as_deref() {
        Some(encoded) => {
            let bytes = decode_base64(encoded)
                .ok_or_else(|| ApiError::BadRequest("sv is not valid base64".into()))?;
            decode_state_vector(&bytes)
                .map_err(|e| ApiError::BadRequest(format!("sv is not a state vector: {e}")))?
        }
        None => yrs::StateVector::default(),
    };
    let update = DocClient::existing(&state, &id)
        .await?
        .call(|| EncodeState { sv: sv.clone() })
        .await?;
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .body(update))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ContentQuery {
    /// One root type by name; with `format=text` the default is `content`, with
    /// `format=prosemirror` `default`.
    key: Option<String>,
    /// `json` (default), `text` or `prosemirror`.
    format: Option<String>,
}

#[utoipa::path(
    tag = "content",
    params(("id" = String, Path, description = "Document name"), ContentQuery),
    responses(
        (status = 200, description = "JSON: every root type by name, or one root's value; \
                                      with format=text, the plain text of a text root; with \
                                      format=prosemirror, the ProseMirror JSON of an XML \
                                      fragment root as y-prosemirror renders it",
            content((serde_json::Value = "application/json"), (String = "text/plain"))),
        (status = 400, description = "Invalid name, format, or a root that is not text (format=text) or not an XML fragment (format=prosemirror)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such document or root type", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The document's structure cannot be read", body = Problem, content_type = "application/problem+json")
    )
)]
/// The content as JSON (every root type, or `?key=` one), with `?format=text` the plain text
/// of a text root (`?key=`, default `content`), or with `?format=prosemirror` the ProseMirror
/// JSON of a rich-text fragment (`?key=`, default `default`, Tiptap's), exactly as
/// y-prosemirror's `yXmlFragmentToProsemirrorJSON` gives it to a client.
#[get("/api/docs/{id}/content")]
pub(crate) async fn get_content(
    _key: ApiKey,
    path: web::Path<String>,
    query: web::Query<ContentQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = DocId::parse(&path)?;
    let text = match query.format.as_deref() {
        None | Some("json") => false,
        Some("text") => true,
        Some("prosemirror") => {
            let key = query.key.as_deref().unwrap_or(DEFAULT_FRAGMENT_KEY);
            let body = DocClient::existing(&state, &id)
                .await?
                .call(|| ReadProsemirror {
                    key: key.to_string(),
                })
                .await??;
            return Ok(HttpResponse::Ok()
                .content_type("application/json")
                .body(body));
        }
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "format must be json, text or prosemirror, not {other:?}"
            )));
        }
    };
    let body = DocClient::existing(&state, &id)
        .await?
        .call(|| ReadContent {
            key: query.key.clone(),
            text,
        })
        .await??;
    let content_type = if text {
        "text/plain; charset=utf-8"
    } else {
        "application/json"
    };
    Ok(HttpResponse::Ok().content_type(content_type).body(body))
}

#[utoipa::path(
    tag = "content",
    params(("id" = String, Path, description = "Document name")),
    request_body(content = Binary, content_type = "application/octet-stream", description = "A Yjs v1 update"),
    responses(
        (status = 204, description = "Stored and relayed to editors"),
        (status = 400, description = "Invalid name, not a valid update, or one that took longer than the update budget to apply (the part applied by then is stored)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such document", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large, or the document would grow beyond its size limit", body = Problem, content_type = "application/problem+json")
    )
)]
/// Applies one binary v1 update; answers 204 once it is stored and relayed to editors.
#[post("/api/docs/{id}/update")]
pub(crate) async fn post_update(
    _key: ApiKey,
    path: web::Path<String>,
    mut body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = DocId::parse(&path)?;
    let limit = state.settings.max_body_size;
    let mut raw = web::BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ApiError::BadRequest(e.to_string()))?;
        if raw.len() + chunk.len() > limit {
            return Err(ApiError::TooLarge(limit));
        }
        raw.extend_from_slice(&chunk);
    }
    let raw = raw.freeze();
    // Decoded for each attempt: a decoded update is handed over, and applying it again after
    // the document unloaded is harmless.
    DocClient::existing(&state, &id)
        .await?
        .try_call(|| {
            let update = decode_update(raw.clone())
                .map_err(|e| ApiError::BadRequest(format!("not a valid Yjs v1 update: {e}")))?;
            Ok(ApplyUpdate { update })
        })
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TextEdit {
    /// The text root to edit; `content` (the editor's) by default.
    key: Option<String>,
    /// Applied in order, as one change: all of them or none.
    ops: Vec<TextOp>,
}

#[utoipa::path(
    tag = "content",
    params(("id" = String, Path, description = "Document name")),
    request_body = TextEdit,
    responses(
        (status = 204, description = "Stored and relayed to editors"),
        (status = 400, description = "Invalid name, body, or an operation out of range", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such document", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The root holds list values among its text, or cannot be read", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large, or the document would grow beyond its size limit", body = Problem, content_type = "application/problem+json")
    )
)]
/// Edits a text root by position (UTF-16 units): `insert`, `delete`, or `replace` the whole
/// text (only the changed range is touched). 204 once durable and relayed to editors.
#[post("/api/docs/{id}/text")]
pub(crate) async fn post_text(
    _key: ApiKey,
    path: web::Path<String>,
    body: web::Json<TextEdit>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = DocId::parse(&path)?;
    let TextEdit { key, ops } = body.into_inner();
    let key = key.unwrap_or_else(|| DEFAULT_TEXT_KEY.to_string());
    DocClient::existing(&state, &id)
        .await?
        .call(|| EditText {
            key: key.clone(),
            ops: ops.clone(),
        })
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Accepts standard and URL-safe base64, padded or not: callers build `?sv=` either way.
fn decode_base64(encoded: &str) -> Option<Vec<u8>> {
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(encoded).ok())
}
