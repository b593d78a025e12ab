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
            .app_data::<actix_web::web::Data<crate::startup::AppState>>()
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
fn redact_query(uri: &actix_web::http::Uri) -> String {
    let Some(query) = uri.query() else {
        return uri.path().to_string();
    };
    let redacted: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("token") => format!("{key}=REDACTED"),
            _ => pair.to_string(),
        })
        .collect();
    format!("{}?{}", uri.path(), redacted.join("&"))
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
}
