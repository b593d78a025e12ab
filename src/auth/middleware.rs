//! The REST API's gate, and the origin rule shared with WebSocket upgrades.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{HttpRequest, ResponseError, web};

use super::bearer_of;
use crate::error::ApiError;
use crate::startup::AppState;

/// API paths open without an API key: the API description, and the access check that takes a
/// document token instead.
fn is_public(path: &str) -> bool {
    path == "/api/openapi.json"
        || path.starts_with("/api/reference")
        || (path.starts_with("/api/docs/") && path.ends_with("/access"))
}

/// Wants an API key on every `/api` request but the public ones, when auth is on.
pub async fn require_api_key(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    let path = req.path();
    if path.starts_with("/api/") && !is_public(path) {
        let state = req
            .app_data::<web::Data<AppState>>()
            .expect("AppState is registered on the app");
        if let Err(denied) = state.auth.check_api(bearer_of(req.headers())) {
            let response = ApiError::from(denied).error_response();
            return Ok(req.into_response(response));
        }
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

/// Whether the page that opened this request may: requests without `Origin` (not from a
/// browser) may, pages of this very server (the origin's host equals `Host`) may, and so may
/// the origins on the allow-list (any, for `*`).
pub fn origin_allowed(req: &HttpRequest, allowed: &[String]) -> bool {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let listed = allowed
        .iter()
        .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin));
    let host = req.connection_info().host().to_ascii_lowercase();
    let same_origin = origin
        .split_once("://")
        .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(&host));
    listed || same_origin
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn request(origin: Option<&str>) -> HttpRequest {
        let mut req = TestRequest::default().insert_header((header::HOST, "tandem.example:8080"));
        if let Some(origin) = origin {
            req = req.insert_header((header::ORIGIN, origin));
        }
        req.to_http_request()
    }

    #[test]
    fn without_a_list_only_same_origin_pages_and_non_browsers_may_connect() {
        assert!(origin_allowed(&request(None), &[]));
        assert!(origin_allowed(
            &request(Some("http://tandem.example:8080")),
            &[]
        ));
        assert!(!origin_allowed(&request(Some("http://evil.example")), &[]));
        assert!(!origin_allowed(
            &request(Some("http://tandem.example")),
            &[]
        ));
    }

    #[test]
    fn a_list_names_the_origins_that_may() {
        let list = vec!["https://app.example".to_string()];
        assert!(origin_allowed(&request(Some("https://app.example")), &list));
        assert!(!origin_allowed(
            &request(Some("https://other.example")),
            &list
        ));
        assert!(origin_allowed(
            &request(Some("http://tandem.example:8080")),
            &list
        ));
        assert!(origin_allowed(
            &request(Some("https://x.example")),
            &["*".into()]
        ));
    }

    #[test]
    fn public_paths_are_the_description_and_the_access_check() {
        assert!(is_public("/api/openapi.json"));
        assert!(is_public("/api/reference/"));
        assert!(is_public("/api/docs/a/access"));
        assert!(!is_public("/api/docs"));
        assert!(!is_public("/api/docs/a/tokens"));
    }
}
