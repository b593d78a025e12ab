//! Log output: human-readable lines or JSON, filtered by `--log` / `RUST_LOG`.

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, Settings};

/// Installs the global subscriber. Call once, from `main`.
pub fn init(settings: &Settings) {
    let filter = settings
        .log
        .as_deref()
        .map(EnvFilter::new)
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match settings.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// The span of each HTTP request, as tracing-actix-web's default but with the query string's
/// `token` value blanked: WebSocket clients pass their document token there, and log lines
/// inside a request carry its span's fields.
pub struct RedactedRootSpan;

impl tracing_actix_web::RootSpanBuilder for RedactedRootSpan {
    fn on_request_start(request: &actix_web::dev::ServiceRequest) -> tracing::Span {
        use tracing::field::Empty;
        let target = redact_query(request.uri());
        let route = request.match_pattern().unwrap_or_default();
        // The client as the limits count it: a forwarded address only from a trusted proxy.
        let client_ip = request
            .app_data::<actix_web::web::Data<crate::state::AppState>>()
            .and_then(|state| state.client_ip(request.peer_addr(), request.headers()))
            .map(|ip| ip.to_string())
            .unwrap_or_default();
        tracing::info_span!(
            "HTTP request",
            http.method = %request.method(),
            http.route = %route,
            http.target = %target,
            http.client_ip = %client_ip,
            http.status_code = Empty,
            otel.kind = "server",
            otel.status_code = Empty,
            exception.message = Empty,
            exception.details = Empty,
        )
    }

    fn on_request_end<B: actix_web::body::MessageBody>(
        span: tracing::Span,
        outcome: &Result<actix_web::dev::ServiceResponse<B>, actix_web::Error>,
    ) {
        tracing_actix_web::DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}

/// The path and query of `uri` with the value of every `token` parameter replaced.
///
/// A parameter is a token when the query parser would read its name as `token`: each name is
/// decoded as `web::Query` decodes it (`%74oken` and `t%6Fken` are `token` too), and compared
/// ignoring case, which is wider than the parser. A name that does not decode to UTF-8 is
/// taken for one as well, since what it means cannot be told.
fn redact_query(uri: &actix_web::http::Uri) -> String {
    let Some(query) = uri.query() else {
        return uri.path().to_string();
    };
    let redacted: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if may_name_a_token(key) => format!("{key}=REDACTED"),
            _ => pair.to_string(),
        })
        .collect();
    format!("{}?{}", uri.path(), redacted.join("&"))
}

/// Whether a query parameter's name, as written in the URL, may be read as `token`.
fn may_name_a_token(raw_key: &str) -> bool {
    // The parser behind `web::Query` (serde_urlencoded) decodes names with form_urlencoded:
    // `+` is a space, `%XX` a byte, and bytes that are not UTF-8 become U+FFFD.
    let decoded: String = form_urlencoded::parse(raw_key.as_bytes())
        .map(|(key, _)| key.into_owned())
        .collect();
    decoded.eq_ignore_ascii_case("token") || decoded.contains(char::REPLACEMENT_CHARACTER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_blanked_from_logged_targets() {
        let uri: actix_web::http::Uri = "/ws/doc?token=v1.secret.sig&x=1".parse().expect("uri");
        assert_eq!(redact_query(&uri), "/ws/doc?token=REDACTED&x=1");
        let plain: actix_web::http::Uri = "/api/docs".parse().expect("uri");
        assert_eq!(redact_query(&plain), "/api/docs");
    }

    #[test]
    fn tokens_are_blanked_however_their_name_is_spelt() {
        for (target, logged) in [
            ("/ws/d?%74oken=v1.a.b", "/ws/d?%74oken=REDACTED"),
            (
                "/ws/d?t%6F%6B%65%6E=v1.a.b&x=1",
                "/ws/d?t%6F%6B%65%6E=REDACTED&x=1",
            ),
            ("/ws/d?TOKEN=v1.a.b", "/ws/d?TOKEN=REDACTED"),
            ("/ws/d?tok%FFen=v1.a.b", "/ws/d?tok%FFen=REDACTED"),
            (
                "/ws/d?x=1&token=a&%74oken=b",
                "/ws/d?x=1&token=REDACTED&%74oken=REDACTED",
            ),
            (
                "/ws/d?tokens=kept&to+ken=kept",
                "/ws/d?tokens=kept&to+ken=kept",
            ),
        ] {
            let uri: actix_web::http::Uri = target.parse().expect("uri");
            assert_eq!(redact_query(&uri), logged, "{target}");
        }
    }
}
