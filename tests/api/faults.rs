//! Injected failures: a panic inside one document stops only that document.

use crate::helpers::{Backend, TestApp, TestDb, doc_name};

#[actix_web::test]
async fn a_panic_while_applying_stops_only_that_document_which_reloads_from_the_store() {
    let db = TestDb::new(Backend::Sqlite).await;
    let app = TestApp::spawn(db.settings()).await;
    let (broken, healthy) = (doc_name("broken"), doc_name("healthy"));
    let mut victim = app.connect(&broken).await;
    let mut witness = app.connect(&broken).await;
    let mut bystander = app.connect(&healthy).await;
    victim.append("stored ").await;
    witness.wait_for_text("stored ").await;
    bystander.append("calm").await;
    bystander.recv_until(|c| c.updates_received >= 1).await;

    tandem::faults::panic_on_next_apply(&broken);
    victim.append("doomed").await;
    // Every session of that document is closed with 1011 …
    for client in [&mut victim, &mut witness] {
        let (code, reason) = client.expect_close().await;
        assert_eq!(code, 1011);
        assert!(reason.contains("reconnect"), "{reason}");
    }
    // … the other document never notices …
    bystander.append(" and carrying on").await;
    bystander.recv_until(|c| c.updates_received >= 2).await;
    assert_eq!(bystander.text(), "calm and carrying on");

    // … and reconnecting loads the document again from the store: the update that panicked
    // was never stored or relayed, what came before is intact, and editing works again.
    let mut back = app.connect(&broken).await;
    assert_eq!(back.text(), "stored ");
    back.append("again").await;
    back.recv_until(|c| c.updates_received >= 1).await;
    let probe = app.connect(&broken).await;
    assert_eq!(probe.text(), "stored again");
    app.stop().await;
}
