//! The `tandem` binary: parse settings, set up logging, build and run the application.

use clap::Parser;
use tandem::config::Settings;
use tandem::startup::Application;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::parse();
    tandem::telemetry::init(&settings);
    tracing::info!(
        bind = %settings.bind,
        database = %tandem::store::redact(&settings.database_url),
        "starting tandem"
    );
    let app = Application::build(settings).await?;
    tracing::info!(port = app.port(), "serving");
    app.run_until_stopped().await
}
