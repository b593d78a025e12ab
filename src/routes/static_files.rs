//! The browser editor: the document list at `/`, the editor at `/d/{doc}`, and their assets.
//!
//! Files come from `static/dist/`, built from `static/src/` and committed; release builds embed
//! them, so the binary needs nothing beside it. Asset names carry a content hash and are cached
//! for good; the HTML is never cached, so a new release is picked up at once.

use actix_web::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use actix_web::{HttpResponse, route, web};
use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "static/dist/"]
struct Dist;

const IMMUTABLE: &str = "public, max-age=31536000, immutable";
const NO_CACHE: &str = "no-cache";
/// The pages load only their own assets and talk only to this server. CodeMirror injects its
/// styles at run time, and the favicon is a data URI.
const CSP: &str = "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

fn serve(path: &str, cache: &'static str) -> HttpResponse {
    match Dist::get(path) {
        Some(file) => {
            let mime = file.metadata.mimetype();
            let content_type = if mime.starts_with("text/") || mime.ends_with("javascript") {
                format!("{mime}; charset=utf-8")
            } else {
                mime.to_string()
            };
            let mut response = HttpResponse::Ok();
            response
                .insert_header((CONTENT_TYPE, content_type))
                .insert_header((CACHE_CONTROL, cache))
                .insert_header(("X-Content-Type-Options", "nosniff"));
            if path.ends_with(".html") {
                response.insert_header((CONTENT_SECURITY_POLICY, CSP));
            }
            response.body(file.data.into_owned())
        }
        None => HttpResponse::NotFound()
            .insert_header((CACHE_CONTROL, NO_CACHE))
            .content_type("text/plain; charset=utf-8")
            .body("not found"),
    }
}

/// The document list.
#[route("/", method = "GET", method = "HEAD")]
pub(crate) async fn index() -> HttpResponse {
    serve("index.html", NO_CACHE)
}

/// The editor; the page reads the document name from its own URL.
#[route("/d/{doc:.*}", method = "GET", method = "HEAD")]
pub(crate) async fn editor() -> HttpResponse {
    serve("editor.html", NO_CACHE)
}

/// Hashed bundles, styles and images (mounted under `/assets`, where responses are compressed).
#[route("/{file:.*}", method = "GET", method = "HEAD")]
pub(crate) async fn asset(file: web::Path<String>) -> HttpResponse {
    // The embedded set holds only what the build wrote; anything else is a 404.
    serve(&format!("assets/{file}"), IMMUTABLE)
}
