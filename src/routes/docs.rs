//! `/api/docs`: list, create, describe and delete documents.

use actix_web::{HttpResponse, delete, get, post, web};
use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::auth::middleware::ApiKey;
use crate::collab::document::{DEFAULT_TEXT_KEY, build_doc};
use crate::collab::messages::{CreateWith, DocPresence};
use crate::collab::registry::{DeleteDoc, PresenceOf};
use crate::domain::DocId;
use crate::error::{ApiError, Problem};
use crate::routes::doc_calls::DocClient;
use crate::routes::rfc3339;
use crate::state::AppState;
use crate::store::{DocSummary, StoreError, StoredDoc};
use crate::sync::prosemirror::{self, DEFAULT_FRAGMENT_KEY};
use crate::sync::text_ops::{self, TextOp};

/// Page size when the caller names none, and the most a caller may ask for.
const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 500;

/// A document as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct DocView {
    pub id: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub updated_at: String,
    /// Stored bytes (snapshot plus log).
    pub size: i64,
    /// Connections open to it now.
    pub clients: usize,
    /// Names of the people connected (from their presence), sorted.
    pub people: Vec<String>,
}

impl DocView {
    pub(crate) fn new(summary: DocSummary, presence: DocPresence) -> Self {
        Self {
            id: summary.id.to_string(),
            created_at: rfc3339(summary.created_at),
            updated_at: rfc3339(summary.updated_at),
            size: summary.size,
            clients: presence.clients,
            people: presence.people,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Page size, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// A page of documents.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct DocList {
    docs: Vec<DocView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    next_cursor: Option<String>,
}

#[utoipa::path(
    tag = "documents",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of documents", body = DocList),
        (status = 400, description = "Bad limit or cursor", body = Problem, content_type = "application/problem+json")
    )
)]
/// Lists documents in id order, a page at a time.
#[get("/api/docs")]
pub(crate) async fn list(
    _key: ApiKey,
    query: web::Query<ListQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        )));
    }
    let after = match query.cursor.as_deref() {
        Some(cursor) => {
            Some(DocId::parse(cursor).map_err(|_| ApiError::BadRequest("invalid cursor".into()))?)
        }
        None => None,
    };
    // One more than asked tells whether another page follows.
    let mut page = state
        .store
        .list(after.as_ref(), limit + 1)
        .await
        .context("Failed to list documents")?;
    let more = page.len() as i64 > limit;
    page.truncate(limit as usize);
    let next_cursor = more
        .then(|| page.last().map(|d| d.id.to_string()))
        .flatten();
    let mut presence = state
        .registry
        .send(PresenceOf {
            docs: page.iter().map(|d| d.id.clone()).collect(),
        })
        .await
        .context("Failed to ask who is connected")?;
    let docs = page
        .into_iter()
        .map(|summary| {
            let here = presence.remove(&summary.id).unwrap_or_default();
            DocView::new(summary, here)
        })
        .collect();
    Ok(HttpResponse::Ok().json(DocList { docs, next_cursor }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateDoc {
    /// Generated when absent.
    id: Option<String>,
    /// Initial text of the `content` root.
    text: Option<String>,
    /// Initial rich text instead: a ProseMirror document (Tiptap's `editor.getJSON()`),
    /// written into the XML fragment `key`.
    #[schema(value_type = Option<Object>)]
    prosemirror: Option<serde_json::Value>,
    /// The fragment `prosemirror` goes into; `default` (Tiptap's) by default.
    key: Option<String>,
}

#[utoipa::path(
    tag = "documents",
    request_body = CreateDoc,
    responses(
        (status = 201, description = "Created", body = DocView),
        (status = 400, description = "Invalid name or body (both text and prosemirror, or invalid ProseMirror JSON)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The name is taken", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large, or the content is beyond the document size limit", body = Problem, content_type = "application/problem+json")
    )
)]
/// Creates a document, empty, with initial text, or with initial rich text (`prosemirror`):
/// 201 with its location, 409 if the id is taken. All or nothing: a refused or failed request
/// leaves no document behind.
#[post("/api/docs")]
pub(crate) async fn create(
    _key: ApiKey,
    body: web::Json<CreateDoc>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let CreateDoc {
        id,
        text,
        prosemirror,
        key,
    } = body.into_inner();
    let id = match id {
        Some(id) => DocId::parse(&id)?,
        None => generated_id(),
    };
    let initial = text.unwrap_or_default();
    let update = match (prosemirror, initial.is_empty()) {
        (Some(_), false) => {
            return Err(ApiError::BadRequest(
                "give text or prosemirror, not both".into(),
            ));
        }
        (Some(json), true) => {
            let key = key.unwrap_or_else(|| DEFAULT_FRAGMENT_KEY.to_string());
            initial_rich_update(&json, &key)?
        }
        (None, _) if key.is_some() => {
            return Err(ApiError::BadRequest(
                "key names the fragment for prosemirror; text goes into content".into(),
            ));
        }
        (None, true) => None,
        (None, false) => Some(initial_update(&initial)?),
    };
    let summary = match update {
        None => match state.store.create(&id).await {
            // The answer names the document, which the store's error does not carry.
            Err(StoreError::AlreadyExists) => return Err(ApiError::AlreadyExists(id.to_string())),
            created => created.context("Failed to create a document")?,
        },
        Some(update) => create_with(&state, &id, update).await?,
    };
    state
        .webhooks
        .emit(&id, "document.created", &[], &initial)
        .await;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/docs/{id}")))
        .json(DocView::new(summary, DocPresence::default())))
}

/// Creates `id` holding `update` (its first content), all or nothing: the document row and its
/// first log row are written in one transaction, through the document's actor so that anyone
/// connected to the name meanwhile sees the content. A refusal or a failure leaves no document
/// behind (a store that fails at the commit itself may leave either; the answer says so).
async fn create_with(
    state: &AppState,
    id: &DocId,
    update: Vec<u8>,
) -> Result<DocSummary, ApiError> {
    DocClient::new(state, id)
        .call(|| CreateWith {
            update: update.clone(),
        })
        .await
}

/// The v1 update that writes `text` into the `content` root of an empty document.
fn initial_update(text: &str) -> Result<Vec<u8>, ApiError> {
    let doc = build_doc(&StoredDoc::default()).context("Failed to start an empty document")?;
    let root = doc.get_or_insert_text(DEFAULT_TEXT_KEY);
    let insert = TextOp::Insert {
        insert: text.to_string(),
        at: 0,
    };
    let updates =
        text_ops::apply(&doc, &root, &[insert]).context("Failed to write the initial text")?;
    // One insert is one transaction: one update, none for an empty text.
    Ok(yrs::merge_updates_v1(updates).context("Failed to merge the initial text's updates")?)
}

/// The v1 update that writes the ProseMirror document `json` into fragment `key` of an empty
/// document; none for an empty one.
fn initial_rich_update(json: &serde_json::Value, key: &str) -> Result<Option<Vec<u8>>, ApiError> {
    let nodes = prosemirror::parse_doc(json).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let doc = build_doc(&StoredDoc::default()).context("Failed to start an empty document")?;
    let updates = prosemirror::replace_fragment(&doc, key, &nodes)
        .context("Failed to write the initial content")?;
    Ok(updates.into_iter().next())
}

/// A fresh document name: `doc-` and 16 random hex digits.
fn generated_id() -> DocId {
    let random = uuid::Uuid::new_v4().simple().to_string();
    DocId::parse(&format!("doc-{}", &random[..16]))
        .expect("'doc-' and hex digits are a valid document name")
}

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
pub(crate) async fn get_one(
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

#[utoipa::path(
    tag = "documents",
    params(("id" = String, Path, description = "Document name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Invalid name", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such document", body = Problem, content_type = "application/problem+json")
    )
)]
/// Deletes a document with its history; connected editors are closed with 4404.
#[delete("/api/docs/{id}")]
pub(crate) async fn remove(
    _key: ApiKey,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = DocId::parse(&path)?;
    let deleted = state
        .registry
        .send(DeleteDoc { doc: id.clone() })
        .await
        .context("Failed to reach the registry")?
        .context("Failed to delete the document")?;
    if deleted {
        state.webhooks.emit(&id, "document.deleted", &[], "").await;
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound(id.to_string()))
    }
}
