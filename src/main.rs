//! The `tandem` binary: parse settings, set up logging, build and run the application.

use clap::Parser;
use tandem::config::Settings;
use tandem::startup::Application;

/// Descriptors besides client sockets: the listener, the store's connections, logs, and so on.
const FD_MARGIN: u64 = 128;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::parse();
    tandem::telemetry::init(&settings);
    tracing::info!(
        bind = %settings.bind,
        database = %tandem::store::redact(&settings.database_url),
        "starting tandem"
    );
    // Each connection is a socket: raise the soft limit on open files (often 1024) as far as
    // the hard limit allows, and say so if it is still below the connection limit.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < settings.max_connections as u64 + FD_MARGIN => tracing::warn!(
            open_files = limit,
            max_connections = settings.max_connections,
            "the open-file limit is below --max-connections; raise it (ulimit -n) or lower that"
        ),
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "could not read or raise the open-file limit"),
    }
    let app = Application::build(settings).await?;
    tracing::info!(port = app.port(), "serving");
    app.run_until_stopped().await
}
