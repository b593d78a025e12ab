//! The load generator (`tandem-load`) against a real server: every update it sends reaches every
//! reader, and its JSON line says so.

use serde_json::Value;

use crate::helpers::{Backend, TestApp, TestDb};

#[actix_web::test]
async fn the_load_generator_measures_a_small_run_with_nothing_missing() {
    let db = TestDb::new(Backend::Sqlite).await;
    let app = TestApp::spawn(db.settings()).await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_tandem-load"))
        .args([
            "--url",
            &app.ws_base(),
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
    app.stop().await;
}
