//! `/api/docs/{id}/versions`: saved states of a document, readable and restorable.

use actix_web::{HttpResponse, get, post, web};
use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::auth::middleware::ApiKey;
use crate::collab::document::build_doc;
use crate::collab::messages::{Restore, SaveVersion};
use crate::domain::DocId;
use crate::error::{ApiError, Problem};
use crate::routes::doc_calls::{DURABLE_DEADLINE, DocClient};
use crate::routes::rfc3339;
use crate::state::AppState;
use crate::store::{StoredDoc, VersionSummary};
use crate::sync::content;

/// Longest version name accepted, in bytes.
const MAX_NAME_LEN: usize = 200;

/// A version as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct VersionView {
    pub id: i64,
    pub name: Option<String>,
    /// `manual` or `auto`.
    pub kind: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// Bytes of the saved state.
    pub size: i64,
}

impl From<VersionSummary> for VersionView {
    fn from(v: VersionSummary) -> Self {
        Self {
            id: v.id,
            name: v.name,
            kind: v.kind,
            created_at: rfc3339(v.created_at),
            size: v.size,
        }
    }
}

/// A document's versions, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct VersionList {
    versions: Vec<VersionView>,
}

/// A version with the document's content as it was, as `/content` shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct VersionWithContent {
    #[serde(flatten)]
    pub version: VersionView,
    pub content: serde_json::Value,
}

#[utoipa::path(
    tag = "versions",
    params(("id" = String, Path, description = "Document name")),
    responses(
        (status = 200, description = "Versions, newest first", body = VersionList),
        (status = 400, description = "Invalid name", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such document", body = Problem, content_type = "application/problem+json")
    )
)]
/// A document's versions, newest first.
#[get("/api/docs/{id}/versions")]
pub(crate) async fn list(
    _key: ApiKey,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = DocId::parse(&path)?;
    DocClient::existing(&state, &id).await?;
    let versions = state
        .store
        .list_versions(&id)
        .await
        .context("Failed to list versions")?;
    Ok(HttpResponse::Ok().json(VersionList {
        versions: versions.into_iter().map(VersionView::from).collect(),
    }))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateVersion {
    name: Option<String>,
}

#[utoipa::path(
    tag = "versions",
    params(("id" = String, Path, description = "Document name")),
    request_body(content = Option<CreateVersion>, description = "Optional; a version may have a name"),
    responses(
        (status = 201, description = "Saved", body = VersionView),
        (status = 400, description = "Invalid name or body", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such document", body = Problem, content_type = "application/problem+json")
    )
)]
/// Saves the current state as a version: 201 with its location.
#[post("/api/docs/{id}/versions")]
pub(crate) async fn create(
    _key: ApiKey,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = DocId::parse(&path)?;
    // The body is optional: none at all means a version without a name.
    let name = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        serde_json::from_slice::<CreateVersion>(&body)
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?
            .name
    };
    if name.as_ref().is_some_and(|n| n.len() > MAX_NAME_LEN) {
        return Err(ApiError::BadRequest(format!(
            "a version name is at most {MAX_NAME_LEN} bytes"
        )));
    }
    let version = DocClient::existing(&state, &id)
        .await?
        .call(|| SaveVersion {
            name: name.clone(),
            durable_within: DURABLE_DEADLINE,
        })
        .await?;
    Ok(HttpResponse::Created()
        .insert_header((
            "Location",
            format!("/api/docs/{id}/versions/{}", version.id),
        ))
        .json(VersionView::from(version)))
}

#[utoipa::path(
    tag = "versions",
    params(("id" = String, Path, description = "Document name"), ("version" = i64, Path, description = "Version id")),
    responses(
        (status = 200, description = "The version with its content", body = VersionWithContent),
        (status = 400, description = "Invalid name or version id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such document or version", body = Problem, content_type = "application/problem+json")
    )
)]
/// One version: its metadata and its content as JSON (every root type, as `/content`).
#[get("/api/docs/{id}/versions/{version}")]
pub(crate) async fn get_one(
    _key: ApiKey,
    path: web::Path<(String, i64)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (id, version) = path.into_inner();
    let id = DocId::parse(&id)?;
    let (summary, saved) = find(&state, &id, version).await?;
    let doc = build_doc(&StoredDoc {
        snapshot: Some(saved),
        ..StoredDoc::default()
    })
    .context("A saved version does not decode")?;
    let content = content::to_json(&doc, None).context("Failed to render the version")?;
    let mut view =
        serde_json::to_value(VersionView::from(summary)).context("Failed to render the version")?;
    view["content"] = content;
    Ok(HttpResponse::Ok().json(view))
}

#[utoipa::path(
    tag = "versions",
    params(("id" = String, Path, description = "Document name"), ("version" = i64, Path, description = "Version id")),
    responses(
        (status = 204, description = "Restored; editors received the change"),
        (status = 400, description = "Invalid name or version id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such document or version", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A root changed kind, or holds XML other than a fragment of elements and text", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Restoring would grow the document beyond its size limit", body = Problem, content_type = "application/problem+json")
    )
)]
/// Makes the document's content equal to the version's through new edits, which reach every
/// editor at once and can themselves be undone by restoring the version before.
#[post("/api/docs/{id}/versions/{version}/restore")]
pub(crate) async fn restore(
    _key: ApiKey,
    path: web::Path<(String, i64)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (id, version) = path.into_inner();
    let id = DocId::parse(&id)?;
    let (_, saved) = find(&state, &id, version).await?;
    DocClient::new(&state, &id)
        .call(|| Restore {
            target: saved.clone(),
        })
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn find(
    state: &AppState,
    id: &DocId,
    version: i64,
) -> Result<(VersionSummary, Vec<u8>), ApiError> {
    DocClient::existing(state, id).await?;
    state
        .store
        .get_version(id, version)
        .await
        .context("Failed to read the version")?
        .ok_or_else(|| ApiError::VersionNotFound(version))
}
