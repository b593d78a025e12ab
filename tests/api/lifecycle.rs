//! Documents and connections over time: slow readers, presence expiry, idle unloading.

use std::time::{Duration, Instant};

use crate::helpers::{Backend, TestApp, TestDb, WAIT, doc_name, on_both_stores, stored_text};

#[actix_web::test]
async fn a_reader_that_falls_behind_is_closed_with_1013_and_slows_nobody() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut settings = db.settings();
    settings.outbound_queue_bytes = 512 * 1024;
    let app = TestApp::spawn(settings).await;
    let doc = doc_name("slow");
    let mut writer = app.connect(&doc).await;
    let mut reader = app.connect(&doc).await;
    // Connected and synced, then never reads again.
    let mut stalled = app.connect(&doc).await;

    // 1,000 updates of 8 KiB: far more than the stalled client's queue and socket buffers hold.
    let chunk = "x".repeat(8 * 1024);
    const UPDATES: usize = 1000;
    let writing = async {
        for sent in 1..=UPDATES {
            writer.append(&chunk).await;
            if sent % 20 == 0 {
                // Read our own echoes so the writer is never the slow one.
                writer.recv_echo().await;
            }
        }
        writer.recv_echo().await;
    };
    let reading = reader.recv_until(|c| c.text().len() >= UPDATES * chunk.len());
    tokio::join!(writing, reading);
    assert_eq!(reader.text().len(), UPDATES * chunk.len());
    assert_eq!(reader.text(), writer.text());

    // What was queued before the server gave up arrives, then the close frame.
    let (code, reason) = stalled.expect_close().await;
    assert_eq!(code, 1013, "{reason}");
    app.stop().await;
}

#[actix_web::test]
async fn presence_that_is_not_renewed_expires() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut settings = db.settings();
    settings.awareness_timeout = Duration::from_millis(600);
    let app = TestApp::spawn(settings).await;
    let doc = doc_name("expiry");
    let mut a = app.connect(&doc).await;
    let mut b = app.connect(&doc).await;
    let a_id = a.client_id();

    a.set_awareness(r#"{"user":{"name":"quiet"}}"#).await;
    b.recv_until(|c| c.awareness.contains_key(&a_id)).await;
    let seen = Instant::now();
    // A stays connected but never renews its state.
    b.recv_until(|c| !c.awareness.contains_key(&a_id)).await;
    assert!(
        seen.elapsed() >= Duration::from_millis(300),
        "removed too early"
    );
    a.recv_until(|c| !c.awareness.contains_key(&a_id)).await;
    app.stop().await;
}

on_both_stores! {
    async fn an_idle_document_is_compacted_and_unloaded(backend: Backend) {
        let db = TestDb::new(backend).await;
        let mut settings = db.settings();
        settings.idle_unload_delay = Duration::from_millis(200);
        let app = TestApp::spawn(settings).await;
        let doc = doc_name("idle");
        let mut client = app.connect(&doc).await;
        for i in 0..5 {
            client.append(&format!("line {i}\n")).await;
        }
        client.recv_echo().await;
        let expected = client.text();
        let (_, log_len) = stored_text(&db.url, &doc).await;
        // Updates committed together share a row, so there are 1 to 5 of them.
        assert!(
            (1..=5).contains(&log_len),
            "{backend:?}: {log_len} log rows while loaded"
        );
        client.close().await;

        // Unloading compacts: the log empties once the idle delay has passed.
        let deadline = Instant::now() + WAIT;
        loop {
            let (text, log_len) = stored_text(&db.url, &doc).await;
            assert_eq!(text, expected, "{backend:?}");
            if log_len == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "{backend:?}: never unloaded");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Reloading on the next connection brings back the same content.
        let again = app.connect(&doc).await;
        assert_eq!(again.text(), expected, "{backend:?}");
        app.stop().await;
    }
}
