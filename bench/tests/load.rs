//! The load generator (`tandem-load`) against a real Tandem server: every update it sends
//! reaches every reader, and its JSON line says so.
//!
//! The server runs inside the test process on a temporary SQLite database and a free port; the
//! load generator is this crate's binary, run as a child process.

use std::time::Duration;

use serde_json::Value;
use tandem::config::Settings;
use tandem::startup::Application;

/// Longest wait for the server to stop once asked.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

#[actix_web::test]
async fn the_load_generator_measures_a_small_run_with_nothing_missing() {
    // Arrange: a server on a database of its own.
    let dir = tempfile::tempdir().expect("temp dir");
    let mut settings = Settings::with_database(format!(
        "sqlite://{}",
        dir.path().join("tandem.db").display()
    ));
    settings.bind = "127.0.0.1:0".parse().expect("loopback address");
    let app = Application::build(settings).await.expect("server builds");
    let ws_base = format!("ws://127.0.0.1:{}/ws", app.port());
    let trigger = app.shutdown_trigger();
    let server = actix_web::rt::spawn(app.run_until_stopped());

    // Act
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_tandem-load"))
        .args([
            "--url",
            &ws_base,
            "--docs",
            "2",
            "--writers",
            "1",
            "--readers",
            "3",
            "--rate",
            "20",
            "--duration",
            "2s",
            "--warmup",
            "500ms",
            "--cold-load-bytes",
            "200000",
            "--json-only",
        ])
        .output()
        .await
        .expect("tandem-load runs");

    // Assert
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    let line = stdout.lines().last().expect("a JSON line");
    let run: Value = serde_json::from_str(line).expect("JSON");
    assert_eq!(run["clients_connected"], 8, "{run}");
    assert_eq!(run["errors"], 0, "{run}");
    assert_eq!(run["missing"], 0, "{run}");
    let sent = run["updates_sent"].as_u64().expect("count");
    assert!(sent > 0, "{run}");
    assert_eq!(run["updates_delivered"], run["updates_expected"], "{run}");
    assert!(run["latency_ms_p99"].as_f64().expect("p99") > 0.0, "{run}");
    assert!(
        run["cold_load_sync_bytes"].as_u64().expect("bytes") >= 200_000,
        "{run}"
    );
    trigger.trigger();
    tokio::time::timeout(STOP_TIMEOUT, server)
        .await
        .expect("server stops in time")
        .expect("server task joins")
        .expect("server stops cleanly");
}
