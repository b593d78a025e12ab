//! The REST API's gate (an extractor on each route that wants an API key), and the origin
//! rule: which pages may open WebSockets (`ws/upgrade.rs`) and change anything (`guard.rs`).

use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::http::{Method, header};
use actix_web::{FromRequest, HttpRequest, web};

use super::bearer_of;
use crate::client_addr::addressed_host;
use crate::error::ApiError;
use crate::state::AppState;

/// Proof that a request carries a valid API key (or that access control is off).
///
/// Every REST handler that wants a key takes one as its first argument, so the decision is
/// made on the route the router actually matched, whatever spelling of the path reached it
/// (`/%61pi/docs`, a document named `access`, ...). Routes open without a key (the API
/// description, the access check that takes a document token) simply do not ask for it.
/// `tests/api/access.rs` walks the OpenAPI description to check that every other route does.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ApiKey;

impl FromRequest for ApiKey {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req
            .app_data::<web::Data<AppState>>()
            .expect("AppState is registered on the app");
        ready(
            state
                .auth
                .check_api(bearer_of(req.headers()))
                .map(|()| ApiKey)
                .map_err(ApiError::from),
        )
    }
}

/// Whether the page that opened this request may: requests without `Origin` (not from a
/// browser) may, pages of this very server (the origin's host equals the host the request was
/// addressed to, see [`addressed_host`]) may, and so may the origins on the allow-list (any,
/// for `*`).
pub(crate) fn origin_allowed(req: &HttpRequest, allowed: &[String]) -> bool {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let listed = allowed
        .iter()
        .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin));
    let proxies = req
        .app_data::<web::Data<AppState>>()
        .map(|state| &state.proxies);
    let same_origin = addressed_host(req, proxies).is_some_and(|host| {
        origin
            .split_once("://")
            .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host))
    });
    listed || same_origin
}

/// Whether this request would change something on behalf of a page the origin rule does not
/// allow. Browsers send `Origin` with every POST, PUT, PATCH and DELETE, so that decides; a
/// request without it is not from a browser, unless it says through `Sec-Fetch-Site` (which
/// only browsers send) that another site made it. Methods that change nothing are never
/// foreign writes: their answers are what CORS protects.
pub(crate) fn foreign_write(req: &HttpRequest, allowed: &[String]) -> bool {
    if matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    ) {
        return false;
    }
    if req.headers().contains_key(header::ORIGIN) {
        return !origin_allowed(req, allowed);
    }
    let any_origin = allowed.iter().any(|a| a == "*");
    let site = req
        .headers()
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok());
    !any_origin && matches!(site, Some("cross-site" | "same-site"))
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
    fn x_forwarded_host_from_an_unknown_peer_does_not_make_a_page_same_origin() {
        let req = TestRequest::default()
            .insert_header((header::HOST, "tandem.example:8080"))
            .insert_header(("x-forwarded-host", "evil.example"))
            .insert_header((header::ORIGIN, "http://evil.example"))
            .to_http_request();
        assert!(!origin_allowed(&req, &[]));
    }

    #[test]
    fn writes_from_foreign_pages_are_told_apart() {
        let write = |origin: Option<&str>, site: Option<&str>| {
            let mut req = TestRequest::post().insert_header((header::HOST, "tandem.example"));
            if let Some(origin) = origin {
                req = req.insert_header((header::ORIGIN, origin));
            }
            if let Some(site) = site {
                req = req.insert_header(("sec-fetch-site", site));
            }
            req.to_http_request()
        };
        assert!(foreign_write(
            &write(Some("http://evil.example"), None),
            &[]
        ));
        assert!(!foreign_write(
            &write(Some("http://tandem.example"), None),
            &[]
        ));
        assert!(!foreign_write(&write(None, None), &[]));
        assert!(!foreign_write(&write(None, Some("same-origin")), &[]));
        assert!(!foreign_write(&write(None, Some("none")), &[]));
        assert!(foreign_write(&write(None, Some("cross-site")), &[]));
        assert!(foreign_write(&write(None, Some("same-site")), &[]));
        assert!(!foreign_write(
            &write(Some("http://evil.example"), None),
            &["*".into()]
        ));
        let read = TestRequest::get()
            .insert_header((header::ORIGIN, "http://evil.example"))
            .to_http_request();
        assert!(!foreign_write(&read, &[]));
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
}
