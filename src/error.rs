//! HTTP errors as RFC 9457 problem details (`application/problem+json`), and how each domain
//! error reads as one: routes answer with `?`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::collab::document::IntegrateError;
use crate::collab::messages::{
    ApplyUpdateError, EditTextError, Gone, RestoreFailure, SaveVersionError,
};
use crate::collab::registry::JoinError;
use crate::domain::InvalidDocId;
use crate::store::StoreError;
use crate::sync::content::ContentError;
use crate::sync::restore::RestoreError;
use crate::sync::text_ops::TextOpError;

/// Every error an HTTP handler returns.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("{0}")]
    InvalidDocId(#[from] InvalidDocId),
    #[error("expected a WebSocket upgrade request: {0}")]
    NotWebSocket(String),
    #[error("the store is not reachable")]
    NotReady,
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    /// The request names a host this server does not answer to (see `guard.rs`).
    #[error("{0}")]
    UnknownHost(String),
    #[error("{0}")]
    DocumentTooLarge(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("document {0:?} not found")]
    NotFound(String),
    #[error("document {0:?} already exists")]
    AlreadyExists(String),
    #[error("{0}")]
    KeyNotFound(String),
    #[error("version {0} not found")]
    VersionNotFound(i64),
    #[error("{0}")]
    Conflict(String),
    #[error("request body larger than {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    /// The answer when the store does not take writes in time: `what` says what became of the
    /// request.
    pub(crate) fn store_down(what: &str) -> Self {
        ApiError::Unavailable(format!("the store is not reachable: {what}"))
    }

    /// The answer when a document kept unloading under a request, which did nothing.
    fn reloading() -> Self {
        ApiError::Unavailable("the document is reloading; try again".into())
    }
}

impl From<crate::auth::Denied> for ApiError {
    fn from(denied: crate::auth::Denied) -> Self {
        match denied {
            crate::auth::Denied::Unauthenticated(why) => ApiError::Unauthorized(why),
            crate::auth::Denied::Forbidden(why) => ApiError::Forbidden(why),
        }
    }
}

impl From<JoinError> for ApiError {
    /// The registry could not hand out the document: both leave nothing changed.
    fn from(error: JoinError) -> Self {
        ApiError::Unavailable(error.to_string())
    }
}

impl From<Gone> for ApiError {
    fn from(Gone: Gone) -> Self {
        ApiError::reloading()
    }
}

impl From<StoreError> for ApiError {
    /// A store failure with no better answer: the details go to the log.
    fn from(error: StoreError) -> Self {
        ApiError::Internal(anyhow::Error::new(error))
    }
}

impl From<ContentError> for ApiError {
    fn from(error: ContentError) -> Self {
        match error {
            ContentError::NoSuchKey(_) => ApiError::KeyNotFound(error.to_string()),
            ContentError::NotText(_) | ContentError::NotXml(_) => {
                ApiError::BadRequest(error.to_string())
            }
            ContentError::Unreadable => ApiError::Conflict(error.to_string()),
        }
    }
}

impl From<TextOpError> for ApiError {
    fn from(error: TextOpError) -> Self {
        match error {
            TextOpError::HoldsValues => ApiError::Conflict(error.to_string()),
            TextOpError::OutOfRange { .. }
            | TextOpError::SplitsCharacter { .. }
            | TextOpError::TooManyOps(_) => ApiError::BadRequest(error.to_string()),
        }
    }
}

impl From<EditTextError> for ApiError {
    fn from(error: EditTextError) -> Self {
        match error {
            EditTextError::Content(error @ ContentError::Unreadable) => {
                ApiError::Conflict(error.to_string())
            }
            // A root to edit needs not exist yet, so every other reason is the caller's.
            EditTextError::Content(error) => ApiError::BadRequest(error.to_string()),
            EditTextError::Ops(error) => error.into(),
            EditTextError::Gone => ApiError::reloading(),
            error @ EditTextError::TooLarge(_) => ApiError::DocumentTooLarge(error.to_string()),
            // Applying an edit twice would duplicate it, so an unknown outcome is reported.
            EditTextError::Unconfirmed => ApiError::Unavailable(
                "the document failed while storing the edit; read it before retrying".into(),
            ),
        }
    }
}

impl From<IntegrateError> for ApiError {
    fn from(error: IntegrateError) -> Self {
        match error {
            IntegrateError::DoesNotApply(why) => {
                ApiError::BadRequest(format!("update does not apply: {why}"))
            }
            IntegrateError::TooLarge(limit) => ApiError::DocumentTooLarge(format!(
                "the update would grow the document beyond its limit of {limit} bytes"
            )),
            IntegrateError::TooCostly(budget) => ApiError::BadRequest(format!(
                "applying the update took longer than the budget of {budget:?} \
                 (--update-cost-budget): it was stopped, and the part applied by then is \
                 stored; posting it again applies more of it"
            )),
            IntegrateError::Failed => ApiError::reloading(),
        }
    }
}

impl From<ApplyUpdateError> for ApiError {
    fn from(error: ApplyUpdateError) -> Self {
        match error {
            ApplyUpdateError::Refused(error) => error.into(),
            ApplyUpdateError::Gone => ApiError::reloading(),
        }
    }
}

impl From<RestoreError> for ApiError {
    /// The live document cannot be edited back to the version.
    fn from(error: RestoreError) -> Self {
        ApiError::Conflict(error.to_string())
    }
}

impl From<RestoreFailure> for ApiError {
    fn from(error: RestoreFailure) -> Self {
        match error {
            RestoreFailure::Refused(error) => error.into(),
            RestoreFailure::Corrupt => {
                ApiError::Internal(anyhow::anyhow!("a saved version does not decode"))
            }
            RestoreFailure::Gone => ApiError::reloading(),
            error @ RestoreFailure::TooLarge(_) => ApiError::DocumentTooLarge(error.to_string()),
            RestoreFailure::Unconfirmed => ApiError::Unavailable(
                "the document failed while restoring; read it before retrying".into(),
            ),
        }
    }
}

impl From<SaveVersionError> for ApiError {
    fn from(error: SaveVersionError) -> Self {
        match error {
            SaveVersionError::Gone => ApiError::reloading(),
            SaveVersionError::NotDurable => ApiError::store_down("no version was saved"),
            SaveVersionError::Store(error) => {
                ApiError::Internal(anyhow::Error::new(error).context("Failed to save the version"))
            }
        }
    }
}

/// An RFC 9457 problem document; `type` is stable and names the kind of error.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Problem {
    /// A stable identifier of the kind of error, such as `/problems/document-not-found`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub title: &'static str,
    pub status: u16,
    /// What went wrong, for a person.
    pub detail: String,
}

impl ApiError {
    fn kind_and_title(&self) -> (&'static str, &'static str) {
        match self {
            ApiError::InvalidDocId(_) => {
                ("/problems/invalid-document-name", "Invalid document name")
            }
            ApiError::NotWebSocket(_) => (
                "/problems/not-a-websocket-request",
                "Not a WebSocket request",
            ),
            ApiError::NotReady => ("/problems/not-ready", "Not ready"),
            ApiError::Unauthorized(_) => ("/problems/unauthorized", "Unauthorized"),
            ApiError::Forbidden(_) => ("/problems/forbidden", "Forbidden"),
            ApiError::UnknownHost(_) => ("/problems/unknown-host", "Unknown host"),
            ApiError::DocumentTooLarge(_) => ("/problems/document-too-large", "Document too large"),
            ApiError::BadRequest(_) => ("/problems/bad-request", "Bad request"),
            ApiError::NotFound(_) => ("/problems/document-not-found", "Document not found"),
            ApiError::AlreadyExists(_) => ("/problems/document-exists", "Document already exists"),
            ApiError::KeyNotFound(_) => ("/problems/key-not-found", "No such root type"),
            ApiError::VersionNotFound(_) => ("/problems/version-not-found", "Version not found"),
            ApiError::Conflict(_) => ("/problems/conflict", "Conflict"),
            ApiError::TooLarge(_) => ("/problems/body-too-large", "Request body too large"),
            ApiError::Unavailable(_) => ("/problems/unavailable", "Temporarily unavailable"),
            ApiError::Internal(_) => ("/problems/internal", "Internal server error"),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::InvalidDocId(_) | ApiError::NotWebSocket(_) | ApiError::BadRequest(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::NotFound(_) | ApiError::KeyNotFound(_) | ApiError::VersionNotFound(_) => {
                StatusCode::NOT_FOUND
            }
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::UnknownHost(_) => StatusCode::MISDIRECTED_REQUEST,
            ApiError::DocumentTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::AlreadyExists(_) => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let (kind, title) = self.kind_and_title();
        let detail = match self {
            // Internal details go to the log, not to the client.
            ApiError::Internal(error) => {
                tracing::error!(error = ?error, "request failed");
                "the server could not complete the request".to_string()
            }
            other => other.to_string(),
        };
        let mut response = HttpResponse::build(status);
        if status == StatusCode::UNAUTHORIZED {
            response.insert_header(("WWW-Authenticate", "Bearer"));
        }
        response
            .content_type("application/problem+json")
            .json(Problem {
                kind,
                title,
                status: status.as_u16(),
                detail,
            })
    }
}
