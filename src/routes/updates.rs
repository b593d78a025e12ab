//! A document as Yjs updates over HTTP: read it whole or as a diff, and apply an update.
//!
//! An update applied here takes the same path as one from a WebSocket: it is durable before the
//! response, and connected editors receive it at once.

use actix::MailboxError;
use actix_web::{HttpResponse, get, post, web};
use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use futures_util::StreamExt;
use serde::Deserialize;

use crate::auth::middleware::ApiKey;
use crate::collab::document::DEFAULT_TEXT_KEY;
use crate::collab::document::IntegrateError;
use crate::collab::messages::{
    ApplyUpdate, ApplyUpdateError, DocPresence, EditText, EditTextError, EncodeState, ReadContent,
};
use crate::collab::registry::PresenceOf;
use crate::domain::DocId;
use crate::error::{ApiError, Problem};

/// Raw bytes in the body (a Yjs v1 update).
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct Binary(#[allow(dead_code)] Vec<u8>);
use crate::routes::doc_calls::{ATTEMPTS, DURABLE_DEADLINE, ensure_exists, open, store_down};
use crate::routes::docs::DocView;
use crate::state::AppState;
use crate::sync::content::ContentError;
use crate::sync::protocol::{decode_state_vector, decode_update};
use crate::sync::text_ops::TextOp;
use crate::sync::text_ops::TextOpError;

#[utoipa::path(
    tag = "documents",
    params(("id" = String, Path, description = "Document name")),
    responses(
        (status = 200, description = "The document", body = DocView),
        (status = 400, description = "Invalid name", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such document", body = Problem, content_type = "application/problem+json")
    )
)]
/// Metadata of one document.
#[get("/api/docs/{id}")]
pub async fn get_one(
    _key: ApiKey,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = DocId::parse(&path)?;
    let summary = state
        .store
        .get(&id)
        .await
        .context("Failed to read the document")?
        .ok_or_else(|| ApiError::NotFound(id.to_string()))?;
    let mut presence = state
        .registry
        .send(PresenceOf {
            docs: vec![id.clone()],
        })
        .await
        .context("Failed to ask who is connected")?;
    let here = presence.remove(&id).unwrap_or_else(DocPresence::default);
    Ok(HttpResponse::Ok().json(DocView::new(summary, here)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UpdateQuery {
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
pub async fn get_update(
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
    ensure_exists(&state, &id).await?;
    for _ in 0..ATTEMPTS {
        let doc = open(&state, &id).await?;
        match doc
            .send(EncodeState { sv: sv.clone() })
            .timeout(DURABLE_DEADLINE)
            .await
        {
            Ok(Ok(update)) => {
                return Ok(HttpResponse::Ok()
                    .content_type("application/octet-stream")
                    .body(update));
            }
            Err(MailboxError::Timeout) => return Err(store_down("nothing was changed")),
            _ => continue,
        }
    }
    Err(ApiError::Unavailable(
        "the document is reloading; try again".into(),
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ContentQuery {
    /// One root type by name; with `format=text` the default is `content`.
    key: Option<String>,
    /// `json` (default) or `text`.
    format: Option<String>,
}

#[utoipa::path(
    tag = "content",
    params(("id" = String, Path, description = "Document name"), ContentQuery),
    responses(
        (status = 200, description = "JSON: every root type by name, or one root's value; \
                                      with format=text, the plain text of a text root",
            content((serde_json::Value = "application/json"), (String = "text/plain"))),
        (status = 400, description = "Invalid name, format, or a root that is not text", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such document or root type", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The document's structure cannot be read", body = Problem, content_type = "application/problem+json")
    )
)]
/// The content as JSON (every root type, or `?key=` one), or with `?format=text` the plain text
/// of a text root (`?key=`, default `content`).
#[get("/api/docs/{id}/content")]
pub async fn get_content(
    _key: ApiKey,
    path: web::Path<String>,
    query: web::Query<ContentQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = DocId::parse(&path)?;
    let text = match query.format.as_deref() {
        None | Some("json") => false,
        Some("text") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "format must be json or text, not {other:?}"
            )));
        }
    };
    ensure_exists(&state, &id).await?;
    for _ in 0..ATTEMPTS {
        let doc = open(&state, &id).await?;
        let key = query.key.clone();
        match doc
            .send(ReadContent { key, text })
            .timeout(DURABLE_DEADLINE)
            .await
        {
            Ok(Ok(Ok(body))) => {
                let content_type = if text {
                    "text/plain; charset=utf-8"
                } else {
                    "application/json"
                };
                return Ok(HttpResponse::Ok().content_type(content_type).body(body));
            }
            Ok(Ok(Err(error @ ContentError::NoSuchKey(_)))) => {
                return Err(ApiError::KeyNotFound(error.to_string()));
            }
            Ok(Ok(Err(error @ ContentError::NotText(_)))) => {
                return Err(ApiError::BadRequest(error.to_string()));
            }
            Ok(Ok(Err(error @ ContentError::Unreadable))) => {
                return Err(ApiError::Conflict(error.to_string()));
            }
            Err(MailboxError::Timeout) => return Err(store_down("nothing was changed")),
            Ok(Err(_)) | Err(_) => continue,
        }
    }
    Err(ApiError::Unavailable(
        "the document is reloading; try again".into(),
    ))
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
pub async fn post_update(
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
    ensure_exists(&state, &id).await?;
    for _ in 0..ATTEMPTS {
        let update = decode_update(raw.clone())
            .map_err(|e| ApiError::BadRequest(format!("not a valid Yjs v1 update: {e}")))?;
        let doc = open(&state, &id).await?;
        match doc
            .send(ApplyUpdate { update })
            .timeout(DURABLE_DEADLINE)
            .await
        {
            Ok(Ok(())) => return Ok(HttpResponse::NoContent().finish()),
            Ok(Err(ApplyUpdateError::Refused(IntegrateError::DoesNotApply(why)))) => {
                return Err(ApiError::BadRequest(format!(
                    "update does not apply: {why}"
                )));
            }
            Ok(Err(ApplyUpdateError::Refused(IntegrateError::TooLarge(limit)))) => {
                return Err(ApiError::DocumentTooLarge(format!(
                    "the update would grow the document beyond its limit of {limit} bytes"
                )));
            }
            Ok(Err(ApplyUpdateError::Refused(IntegrateError::TooCostly(budget)))) => {
                return Err(ApiError::BadRequest(format!(
                    "applying the update took longer than the budget of {budget:?} \
                     (--update-cost-budget): it was stopped, and the part applied by then is \
                     stored; posting it again applies more of it"
                )));
            }
            Err(MailboxError::Timeout) => {
                return Err(store_down(
                    "the update is applied and will be stored when the store is back; \
                     posting it again is harmless",
                ));
            }
            // The document failed or unloaded meanwhile; applying again is harmless.
            Ok(Err(_)) | Err(_) => continue,
        }
    }
    Err(ApiError::Unavailable(
        "the document is reloading; try again".into(),
    ))
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
pub async fn post_text(
    _key: ApiKey,
    path: web::Path<String>,
    body: web::Json<TextEdit>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = DocId::parse(&path)?;
    let TextEdit { key, ops } = body.into_inner();
    let key = key.unwrap_or_else(|| DEFAULT_TEXT_KEY.to_string());
    ensure_exists(&state, &id).await?;
    edit_text(&state, &id, &key, ops).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Applies text operations to an existing document; returns once they are durable.
pub async fn edit_text(
    state: &AppState,
    id: &DocId,
    key: &str,
    ops: Vec<TextOp>,
) -> Result<(), ApiError> {
    for _ in 0..ATTEMPTS {
        let doc = open(state, id).await?;
        let edit = EditText {
            key: key.to_string(),
            ops: ops.clone(),
        };
        match doc.send(edit).timeout(DURABLE_DEADLINE).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(EditTextError::Content(error @ ContentError::Unreadable))) => {
                return Err(ApiError::Conflict(error.to_string()));
            }
            Ok(Err(EditTextError::Content(error))) => {
                return Err(ApiError::BadRequest(error.to_string()));
            }
            Ok(Err(EditTextError::Ops(error @ TextOpError::HoldsValues))) => {
                return Err(ApiError::Conflict(error.to_string()));
            }
            Ok(Err(EditTextError::Ops(error))) => {
                return Err(ApiError::BadRequest(error.to_string()));
            }
            // Nothing was applied: the document was unloading. Load it again and retry.
            Ok(Err(EditTextError::Gone)) => continue,
            Ok(Err(error @ EditTextError::TooLarge(_))) => {
                return Err(ApiError::DocumentTooLarge(error.to_string()));
            }
            Err(MailboxError::Timeout) => {
                return Err(store_down(
                    "the edit is applied and will be stored when the store is back; \
                     do not send it again",
                ));
            }
            // Applying an edit twice would duplicate it, so an unknown outcome is reported.
            Ok(Err(EditTextError::Unconfirmed)) | Err(_) => {
                return Err(ApiError::Unavailable(
                    "the document failed while storing the edit; read it before retrying".into(),
                ));
            }
        }
    }
    Err(ApiError::Unavailable(
        "the document is reloading; try again".into(),
    ))
}

/// Accepts standard and URL-safe base64, padded or not: callers build `?sv=` either way.
fn decode_base64(encoded: &str) -> Option<Vec<u8>> {
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(encoded).ok())
}
