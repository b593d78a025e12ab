//! HTTP errors as RFC 9457 problem details (`application/problem+json`).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::domain::InvalidDocId;

/// Every error an HTTP handler returns.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
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

impl From<crate::auth::Denied> for ApiError {
    fn from(denied: crate::auth::Denied) -> Self {
        match denied {
            crate::auth::Denied::Unauthenticated(why) => ApiError::Unauthorized(why),
            crate::auth::Denied::Forbidden(why) => ApiError::Forbidden(why),
        }
    }
}

/// An RFC 9457 problem document; `type` is stable and names the kind of error.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
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
