//! Access endpoints: issue document tokens, check one, and take access away.

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, get, post, web};
use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::auth::middleware::ApiKey;
use crate::auth::{self, Access, TokenUser};
use crate::collab::messages::Disconnect;
use crate::domain::DocId;
use crate::error::{ApiError, Problem};
use crate::state::AppState;

/// Longest user name a token may carry.
const MAX_USER_NAME: usize = 100;
/// Longest colour string a token may carry.
const MAX_COLOR: usize = 32;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenRequest {
    /// `read` (receives everything, its changes are dropped) or `write`.
    access: Access,
    /// Lifetime in seconds; the server's default (1 hour) when absent, at most its maximum.
    #[schema(minimum = 1)]
    expires_in: Option<u64>,
    /// Who the token is for: shown to others, and matched by `disconnect`.
    user: Option<TokenUser>,
}

/// A signed document token.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TokenIssued {
    /// Pass it to the WebSocket as `?token=` (`WebsocketProvider`'s `params: { token }`).
    token: String,
    doc: String,
    access: Access,
    /// RFC 3339, UTC.
    expires_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<TokenUser>,
}

#[utoipa::path(
    tag = "access",
    params(("id" = String, Path, description = "Document name")),
    request_body = TokenRequest,
    responses(
        (status = 201, description = "A signed token for the document", body = TokenIssued),
        (status = 400, description = "Bad name, body or lifetime", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Access control is off: no tokens are needed", body = Problem, content_type = "application/problem+json")
    )
)]
/// Issues a document token for a browser: read or write access to this document until it
/// expires or is revoked. Needs an API key.
#[post("/api/docs/{id}/tokens")]
pub(crate) async fn issue(
    _key: ApiKey,
    path: web::Path<String>,
    body: web::Json<TokenRequest>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let doc = DocId::parse(&path)?;
    let TokenRequest {
        access,
        expires_in,
        user,
    } = body.into_inner();
    let auth = &state.auth;
    let lifetime = expires_in.map_or(auth.token_lifetime, Duration::from_secs);
    if lifetime.is_zero() || lifetime > auth.max_token_lifetime {
        return Err(ApiError::BadRequest(format!(
            "expires_in must be between 1 and {} seconds",
            auth.max_token_lifetime.as_secs()
        )));
    }
    if let Some(user) = &user {
        check_user(user)?;
    }
    let (token, claims) = auth.issue(&doc, access, lifetime, user).ok_or_else(|| {
        ApiError::Conflict("access control is off (no --auth-secret): no token is needed".into())
    })?;
    Ok(HttpResponse::Created().json(TokenIssued {
        token,
        doc: claims.doc,
        access: claims.access,
        expires_at: super::rfc3339(claims.exp * 1000),
        user: claims.user,
    }))
}

fn check_user(user: &TokenUser) -> Result<(), ApiError> {
    let name = user.name.trim();
    if name.is_empty() || name.chars().count() > MAX_USER_NAME {
        return Err(ApiError::BadRequest(format!(
            "user.name must be 1 to {MAX_USER_NAME} characters"
        )));
    }
    if user
        .color
        .as_ref()
        .is_some_and(|c| c.len() > MAX_COLOR || c.chars().any(|ch| ch.is_control()))
    {
        return Err(ApiError::BadRequest(format!(
            "user.color must be a CSS colour of at most {MAX_COLOR} characters"
        )));
    }
    Ok(())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AccessQuery {
    /// A document token; `Authorization: Bearer <token>` works too.
    token: Option<String>,
}

/// What the presented credentials allow on a document.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct AccessView {
    doc: String,
    access: Access,
    /// Whether access control is on.
    auth: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<TokenUser>,
    /// RFC 3339, UTC; absent for credentials that do not expire.
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<String>,
}

#[utoipa::path(
    tag = "access",
    params(("id" = String, Path, description = "Document name"), AccessQuery),
    responses(
        (status = 200, description = "What the credentials allow", body = AccessView),
        (status = 400, description = "Bad name", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No credentials, or a malformed, forged or expired token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A token of another document, or a revoked one", body = Problem, content_type = "application/problem+json")
    )
)]
/// Checks a document token (or API key) before connecting: the browser editor asks this to show
/// read-only and access-denied states. Open servers answer `write` with `auth: false`.
#[get("/api/docs/{id}/access")]
pub(crate) async fn check(
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<AccessQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let doc = DocId::parse(&path)?;
    let grant = state
        .auth
        .authorize_doc(&doc, query.token.as_deref(), auth::bearer(&req))?;
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(AccessView {
            doc: doc.to_string(),
            access: grant.access,
            auth: state.auth.enabled(),
            user: grant.user,
            expires_at: grant.expires_at.map(|s| super::rfc3339(s * 1000)),
        }))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DisconnectRequest {
    /// Only this user's sessions (the `user.name` of their tokens); everyone's when absent.
    user: Option<String>,
}

/// What a disconnect did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Disconnected {
    /// Sessions closed now.
    disconnected: usize,
}

#[utoipa::path(
    tag = "access",
    params(("id" = String, Path, description = "Document name")),
    request_body(content = Option<DisconnectRequest>, description = "Whose sessions; everyone's when empty"),
    responses(
        (status = 200, description = "Matching sessions were closed with 4403; their tokens no longer admit them", body = Disconnected),
        (status = 400, description = "Bad name or body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json")
    )
)]
/// Takes access away at once: closes the matching sessions (close code 4403, "access revoked")
/// and refuses every token of this document (of that user, if named) issued before now. Give
/// a new token to those who keep access. Needs an API key.
#[post("/api/docs/{id}/disconnect")]
pub(crate) async fn disconnect(
    _key: ApiKey,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let doc = DocId::parse(&path)?;
    // An empty body means everyone; anything else must parse, so that a typo in the request
    // cannot widen a revocation to every user.
    let request: DisconnectRequest = if body.iter().all(u8::is_ascii_whitespace) {
        DisconnectRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?
    };
    let user = request.user;
    state
        .auth
        .revocations
        .revoke(&doc, user.as_deref())
        .await
        .context("Failed to record the revocation")?;
    let disconnected = state
        .registry
        .send(Disconnect {
            doc,
            user,
            issued_before: None,
        })
        .await
        .context("Failed to reach the registry")?;
    Ok(HttpResponse::Ok().json(Disconnected { disconnected }))
}
