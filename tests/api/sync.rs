//! Collaboration through the server with yrs clients, on every backend.

use std::time::Duration;

use crate::helpers::{Backend, TestApp, TestDb, YClient, doc_name, on_both_stores};

async fn app(backend: Backend) -> (TestApp, TestDb) {
    let db = TestDb::new(backend).await;
    (TestApp::spawn(db.settings()).await, db)
}

on_both_stores! {
    async fn two_clients_converge(backend: Backend) {
        let (app, _db) = app(backend).await;
        let doc = doc_name("two");
        let mut a = app.connect(&doc).await;
        let mut b = app.connect(&doc).await;

        a.append("hello").await;
        b.wait_for_text("hello").await;
        b.append(" world").await;
        a.wait_for_text("hello world").await;

        assert_eq!(a.text(), b.text(), "{backend:?}");
        app.stop().await;
    }
}

on_both_stores! {
    async fn concurrent_edits_converge(backend: Backend) {
        let (app, _db) = app(backend).await;
        let doc = doc_name("concurrent");
        let mut clients = Vec::new();
        for _ in 0..3 {
            clients.push(app.connect(&doc).await);
        }
        // Everyone types at position 0 without waiting for the others.
        for round in 0..20 {
            for (i, client) in clients.iter_mut().enumerate() {
                client.insert(0, &format!("<{i}:{round}>")).await;
            }
        }
        let total: usize = (0..3)
            .map(|i| (0..20).map(|r| format!("<{i}:{r}>").len()).sum::<usize>())
            .sum();
        for client in clients.iter_mut() {
            client.recv_until(|c| c.text().len() == total).await;
        }
        let first = clients[0].text();
        for client in &clients {
            assert_eq!(client.text(), first, "{backend:?}");
        }
        for i in 0..3 {
            for r in 0..20 {
                assert!(first.contains(&format!("<{i}:{r}>")), "{backend:?}");
            }
        }
        app.stop().await;
    }
}

on_both_stores! {
    async fn a_late_joiner_receives_a_1mb_document(backend: Backend) {
        let (app, _db) = app(backend).await;
        let doc = doc_name("big");
        let mut writer = app.connect(&doc).await;
        let chunk: String = "0123456789abcdef".repeat(64 * 1024); // 1 MiB
        writer.append(&chunk).await;
        // The server echoes an update only once it is stored.
        writer.recv_until(|c| c.updates_received >= 1).await;

        let late = app.connect(&doc).await;
        assert_eq!(late.text().len(), chunk.len(), "{backend:?}");
        assert_eq!(late.text(), chunk, "{backend:?}");
        app.stop().await;
    }
}

#[actix_web::test]
async fn rooms_are_isolated() {
    let (app, _db) = app(Backend::Sqlite).await;
    let (room_a, room_b) = (doc_name("room-a"), doc_name("room-b"));
    let mut a1 = app.connect(&room_a).await;
    let mut a2 = app.connect(&room_a).await;
    let mut b1 = app.connect(&room_b).await;

    a1.append("only in A").await;
    b1.append("only in B").await;
    a2.wait_for_text("only in A").await;
    b1.recv_until(|c| c.updates_received >= 1).await;

    // b1 got its own echo and nothing from room A.
    assert_eq!(b1.text(), "only in B");
    let fresh_b = app.connect(&room_b).await;
    assert_eq!(fresh_b.text(), "only in B");
    app.stop().await;
}

#[actix_web::test]
async fn awareness_appears_is_echoed_and_disappears_on_disconnect() {
    let (app, _db) = app(Backend::Sqlite).await;
    let doc = doc_name("presence");
    let mut a = app.connect(&doc).await;
    let mut b = app.connect(&doc).await;
    let a_id = a.client_id();

    a.set_awareness(r#"{"user":{"name":"alice"}}"#).await;
    b.recv_until(|c| c.awareness.contains_key(&a_id)).await;
    a.recv_until(|c| c.awareness.contains_key(&a_id)).await;
    assert!(b.awareness[&a_id].contains("alice"));

    // A newcomer is told about alice at once.
    let c = app.connect(&doc).await;
    let mut c = c;
    c.recv_until(|c| c.awareness.contains_key(&a_id)).await;

    // Dropping the socket without any goodbye still clears alice for the others.
    drop(a);
    b.recv_until(|c| !c.awareness.contains_key(&a_id)).await;
    c.recv_until(|c| !c.awareness.contains_key(&a_id)).await;
    app.stop().await;
}

on_both_stores! {
    async fn offline_edits_merge_on_reconnect(backend: Backend) {
        let (app, _db) = app(backend).await;
        let doc = doc_name("offline");
        let mut a = app.connect(&doc).await;
        let mut b = app.connect(&doc).await;
        a.append("base.").await;
        b.wait_for_text("base.").await;

        // A goes offline and keeps its document; both edit meanwhile.
        let a_doc = a.doc.clone();
        a.close().await;
        {
            let text = a_doc.get_or_insert_text("content");
            let mut txn = yrs::Transact::transact_mut(&a_doc);
            yrs::Text::push(&text, &mut txn, " offline-A");
        }
        b.append(" online-B").await;
        b.recv_echo().await;

        let mut a = YClient::connect_with(&app.ws_base(), &doc, a_doc).await;
        b.recv_until(|c| c.text().contains("offline-A")).await;
        a.recv_until(|c| c.text().contains("online-B")).await;
        assert_eq!(a.text(), b.text(), "{backend:?}");
        app.stop().await;
    }
}

on_both_stores! {
    async fn a_thousand_small_updates_arrive_in_order(backend: Backend) {
        let (app, _db) = app(backend).await;
        let doc = doc_name("order");
        let mut writer = app.connect(&doc).await;
        let mut reader = app.connect(&doc).await;
        let writer_id = yrs::ClientID::new(writer.client_id());

        for i in 0..1000 {
            writer.append(&format!("{},", i % 10)).await;
        }
        // Each relayed message (one update, or several merged) must extend the writer's clock
        // by whole updates and leave nothing pending: an update out of order would leave a gap.
        let mut clock = 0;
        tokio::time::timeout(Duration::from_secs(60), async {
            while clock < 2000 {
                let before = reader.updates_received;
                reader.recv_until(|c| c.updates_received > before).await;
                let sv = yrs::ReadTxn::state_vector(&yrs::Transact::transact(&reader.doc));
                let now = sv.get(&writer_id);
                assert!(now > clock, "{backend:?}: a message added nothing");
                assert_eq!(now % 2, 0, "{backend:?}: part of an update");
                assert_eq!(
                    now,
                    reader.relayed.get(&writer_id),
                    "{backend:?}: update out of order (a gap is pending)"
                );
                clock = now;
            }
        })
        .await
        .expect("all updates arrive");
        assert_eq!(reader.text(), writer.text(), "{backend:?}");
        app.stop().await;
    }
}

#[actix_web::test]
async fn health_answers_while_serving() {
    let (app, _db) = app(Backend::Sqlite).await;
    for path in ["healthz", "readyz"] {
        let response = reqwest::get(format!("http://127.0.0.1:{}/{path}", app.port))
            .await
            .expect("request succeeds");
        assert_eq!(response.status(), 200, "{path}");
    }
    app.stop().await;
}
