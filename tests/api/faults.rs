//! Injected failures: a panic inside one document stops only that document, and so does an
//! update yrs refuses after taking part of it.

use yrs::sync::{Message, SyncMessage};

use crate::helpers::{Backend, TestApp, TestDb, doc_name, item_inside};

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

#[actix_web::test]
async fn an_update_yrs_refuses_part_way_through_reloads_the_document_from_the_store() {
    let db = TestDb::new(Backend::Sqlite).await;
    let app = TestApp::spawn(db.settings()).await;
    let doc = doc_name("half-applied");
    let mut victim = app.connect(&doc).await;
    let mut witness = app.connect(&doc).await;
    victim.append("stored ").await;
    witness.wait_for_text("stored ").await;

    // An update the checks refuse, let through: yrs takes its first string into root `other`,
    // then refuses the item placed inside a character.
    tandem::faults::unscreened_next_update(&doc);
    let mut attacker = app.connect(&doc).await;
    let update = item_inside(77, (victim.client_id(), 2));
    attacker
        .send(Message::Sync(SyncMessage::Update(update)))
        .await;
    // The document held what was neither stored nor relayed, so it reloads: every session is
    // closed with 1011 …
    for client in [&mut victim, &mut witness, &mut attacker] {
        let (code, reason) = client.expect_close().await;
        assert_eq!(code, 1011, "{reason}");
    }
    // … and the reloaded document lacks the half of the update it had taken.
    let content = reqwest::get(app.url(&format!("/api/docs/{doc}/content")))
        .await
        .expect("answered");
    assert_eq!(content.status(), 200);
    let body: serde_json::Value = content.json().await.expect("JSON");
    assert_eq!(body, serde_json::json!({ "content": "stored " }));
    let mut back = app.connect(&doc).await;
    assert_eq!(back.text(), "stored ");
    back.append("again").await;
    back.recv_echo().await;
    app.stop().await;
}
