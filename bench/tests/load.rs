//! The load generator (`tandem-load`) against a real Tandem server: every update it sends
//! reaches every reader, and its JSON line says so.
//!
//! The server runs inside the test process on a temporary SQLite database and a free port; the
//! load generator is this crate's binary, run as a child process.

use std::time::Duration;

use serde_json::Value;
use tandem::config::Settings;
use tandem::startup::{Application, ShutdownTrigger};

/// Longest wait for the server to stop once asked.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// A server on a database of its own in `dir`: its WebSocket base URL, the trigger that stops
/// it and its task.
async fn start_server(
    dir: &tempfile::TempDir,
) -> (
    String,
    ShutdownTrigger,
    actix_web::rt::task::JoinHandle<anyhow::Result<()>>,
) {
    let mut settings = Settings::with_database(format!(
        "sqlite://{}",
        dir.path().join("tandem.db").display()
    ));
    settings.bind = "127.0.0.1:0".parse().expect("loopback address");
    let app = Application::build(settings).await.expect("server builds");
    let ws_base = format!("ws://127.0.0.1:{}/ws", app.port());
    let trigger = app.shutdown_trigger();
    let server = actix_web::rt::spawn(app.run_until_stopped());
    (ws_base, trigger, server)
}

#[actix_web::test]
async fn the_load_generator_measures_a_small_run_with_nothing_missing() {
    // Arrange: a server on a database of its own.
    let dir = tempfile::tempdir().expect("temp dir");
    let (ws_base, trigger, server) = start_server(&dir).await;

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

#[actix_web::test]
async fn writers_and_readers_on_urls_of_their_own_are_reported_per_reader_url() {
    // Arrange: one server, named three ways (a trailing slash makes no other document URL), as
    // the nodes of a cluster would be.
    let dir = tempfile::tempdir().expect("temp dir");
    let (ws_base, trigger, server) = start_server(&dir).await;
    let second = format!("{ws_base}/");

    // Act: one writer; 5 readers per document, spread over the two reader URLs in turn.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_tandem-load"))
        .args([
            "--url",
            "ws://127.0.0.1:1/unused",
            "--writer-url",
            &ws_base,
            "--reader-url",
            &format!("{ws_base},{second}"),
            "--docs",
            "2",
            "--writers",
            "1",
            "--readers",
            "5",
            "--rate",
            "20",
            "--duration",
            "2s",
            "--warmup",
            "500ms",
            "--json-only",
        ])
        .output()
        .await
        .expect("tandem-load runs");

    // Assert: nothing went to --url, and each reader URL has its share and its figures.
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    let run: Value =
        serde_json::from_str(stdout.lines().last().expect("a JSON line")).expect("JSON");
    assert_eq!(run["clients_connected"], 12, "{run}");
    assert_eq!(run["errors"], 0, "{run}");
    assert_eq!(run["missing"], 0, "{run}");
    assert_eq!(run["writer_url"], ws_base.as_str(), "{run}");
    let urls = run["reader_urls"].as_array().expect("per reader URL");
    assert_eq!(urls.len(), 2, "{run}");
    assert_eq!(urls[0]["url"], ws_base.as_str(), "{run}");
    assert_eq!(urls[1]["url"], second.as_str(), "{run}");
    // Readers 0, 2, 4 of each document at the first URL, 1 and 3 at the second.
    assert_eq!(urls[0]["readers"], 6, "{run}");
    assert_eq!(urls[1]["readers"], 4, "{run}");
    let mut in_window = 0;
    for u in urls {
        assert_eq!(u["readers_connected"], u["readers"], "{run}");
        assert!(u["latency_ms_p99"].as_f64().expect("p99") > 0.0, "{run}");
        in_window += u["updates_delivered_in_window"].as_u64().expect("count");
    }
    assert_eq!(run["updates_delivered_in_window"], in_window, "{run}");
    trigger.trigger();
    tokio::time::timeout(STOP_TIMEOUT, server)
        .await
        .expect("server stops in time")
        .expect("server task joins")
        .expect("server stops cleanly");
}
