//! Several nodes on one Postgres database: each follows what the others append to the logs of
//! the documents it holds, so their clients see one document. These tests run without Redis:
//! the nodes converge through the log watch alone.

use crate::helpers::{Backend, TestApp, TestDb, YClient, doc_name, postgres_configured};

/// `count` nodes on one fresh Postgres database, with `tune` applied to each one's settings.
async fn nodes(
    count: usize,
    tune: impl Fn(&mut tandem::config::Settings),
) -> (TestDb, Vec<TestApp>) {
    let db = TestDb::new(Backend::Postgres).await;
    let mut apps = Vec::new();
    for _ in 0..count {
        let mut settings = db.settings();
        tune(&mut settings);
        apps.push(TestApp::spawn(settings).await);
    }
    (db, apps)
}

/// Waits until every client's text is `expected`.
async fn all_read(clients: &mut [YClient], expected: &str) {
    for client in clients.iter_mut() {
        client.wait_for_text(expected).await;
    }
}

#[actix_web::test]
async fn edits_on_each_node_reach_the_clients_of_the_others() {
    if !postgres_configured() {
        return;
    }
    let (_db, apps) = nodes(3, |_| {}).await;
    let doc = doc_name("cluster-edits");
    let mut clients = Vec::new();
    for app in &apps {
        clients.push(app.connect(&doc).await);
    }
    clients[0].append("one ").await;
    all_read(&mut clients, "one ").await;
    // Concurrent edits on every node converge to one text holding all of them.
    for (i, client) in clients.iter_mut().enumerate() {
        client.append(&format!("[{i}]")).await;
    }
    let mut texts = Vec::new();
    for client in clients.iter_mut() {
        client
            .recv_until(|c| (0..3).all(|i| c.text().contains(&format!("[{i}]"))))
            .await;
        texts.push(client.text());
    }
    let expected = texts[0].clone();
    all_read(&mut clients, &expected).await;
    for app in &apps {
        assert_eq!(
            app.text(&doc).await,
            expected,
            "every node serves the same text"
        );
    }
    for app in apps {
        app.stop().await;
    }
}

#[actix_web::test]
async fn a_document_opened_on_another_node_while_one_writes_arrives_whole() {
    if !postgres_configured() {
        return;
    }
    let (_db, apps) = nodes(2, |_| {}).await;
    let doc = doc_name("cluster-late");
    let mut writer = apps[0].connect(&doc).await;
    let mut expected = String::new();
    for i in 0..60 {
        let chunk = format!("{i},");
        writer.append(&chunk).await;
        expected.push_str(&chunk);
        if i == 30 {
            // Node 1 loads the document halfway through.
            let mut late = apps[1].connect(&doc).await;
            late.recv_until(|c| c.text().starts_with("0,1,")).await;
        }
    }
    writer.recv_echo().await;
    let mut reader = apps[1].connect(&doc).await;
    reader.wait_for_text(&expected).await;
    assert_eq!(apps[1].text(&doc).await, expected);
    for app in apps {
        app.stop().await;
    }
}

#[actix_web::test]
async fn two_writers_on_two_nodes_with_compaction_lose_nothing_across_a_restart() {
    if !postgres_configured() {
        return;
    }
    let (db, apps) = nodes(2, |settings| settings.compact_after_updates = 2).await;
    let doc = doc_name("cluster-compact");
    let mut a = apps[0].connect(&doc).await;
    let mut b = apps[1].connect(&doc).await;
    for i in 0..40 {
        a.append(&format!("a{i} ")).await;
        b.append(&format!("b{i} ")).await;
    }
    let has_all = |c: &YClient| {
        (0..40).all(|i| {
            let text = c.text();
            text.contains(&format!("a{i} ")) && text.contains(&format!("b{i} "))
        })
    };
    a.recv_until(has_all).await;
    b.recv_until(has_all).await;
    let expected = a.text();
    b.wait_for_text(&expected).await;
    drop((a, b));
    for app in apps {
        app.stop().await;
    }
    // Every node is gone; a new one loads the document from what the two left.
    let fresh = TestApp::spawn(db.settings()).await;
    let reader = fresh.connect(&doc).await;
    assert_eq!(reader.text(), expected);
    fresh.stop().await;
}

#[actix_web::test]
async fn a_delete_on_one_node_closes_the_documents_editors_on_every_node() {
    if !postgres_configured() {
        return;
    }
    let (_db, apps) = nodes(2, |_| {}).await;
    let doc = doc_name("cluster-delete");
    let mut here = apps[0].connect(&doc).await;
    let mut there = apps[1].connect(&doc).await;
    here.append("soon gone").await;
    there.wait_for_text("soon gone").await;
    let deleted = apps[1].delete_doc(&doc).await;
    assert!(deleted.status().is_success(), "{}", deleted.status());
    for client in [&mut here, &mut there] {
        let (code, reason) = client.expect_close().await;
        assert_eq!(code, 4404, "{reason}");
    }
    // Whichever node serves it next serves what the store holds: nothing.
    let fresh = apps[0].connect(&doc).await;
    assert_eq!(fresh.text(), "");
    for app in apps {
        app.stop().await;
    }
}

/// A write token of `doc` for the user Bob, issued by `app`.
async fn bob_token(app: &TestApp, doc: &str) -> String {
    let body = serde_json::json!({ "access": "write", "user": { "name": "Bob" } });
    let response = app.issue_token(doc, body).await;
    assert_eq!(response.status(), reqwest::StatusCode::CREATED);
    let issued: serde_json::Value = response.json().await.expect("json");
    issued["token"].as_str().expect("a token").to_string()
}

#[actix_web::test]
async fn a_revocation_on_one_node_closes_the_sessions_it_covers_on_every_node() {
    if !postgres_configured() {
        return;
    }
    const SECRET: &str = "an operator secret of more than thirty-two characters";
    const KEY: &str = "cluster-api-key";
    let (_db, apps) = nodes(2, |settings| {
        settings.auth_secret = Some(SECRET.into());
        settings.api_keys = vec![KEY.into()];
    })
    .await;
    let apps: Vec<TestApp> = apps.into_iter().map(|app| app.with_key(KEY)).collect();
    let doc = doc_name("cluster-revoke");
    let old = bob_token(&apps[0], &doc).await;
    let mut bob = YClient::connect_authorized(&apps[1].ws_base(), &doc, &old).await;
    let revoked = apps[0]
        .disconnect(&doc, Some(serde_json::json!({ "user": "Bob" })))
        .await;
    assert!(revoked.status().is_success(), "{}", revoked.status());
    let (code, reason) = bob.expect_close().await;
    assert_eq!(code, 4403, "{reason}");
    // A token issued after the revocation admits Bob on either node, and stays admitted.
    let fresh = bob_token(&apps[0], &doc).await;
    let mut again = YClient::connect_authorized(&apps[1].ws_base(), &doc, &fresh).await;
    again.append("back").await;
    again.recv_echo().await;
    let mut here = YClient::connect_authorized(&apps[0].ws_base(), &doc, &fresh).await;
    here.wait_for_text("back").await;
    for app in apps {
        app.stop().await;
    }
}

#[actix_web::test]
async fn a_change_is_announced_once_for_the_whole_service() {
    if !postgres_configured() {
        return;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    // A slow receiver: each node's dispatcher looks at the queue while the other delivers.
    let mut events =
        crate::webhooks::slow_receiver(listener, 0, std::time::Duration::from_millis(1500)).await;
    let (_db, apps) = nodes(2, |settings| {
        settings.webhook_urls = vec![url.clone()];
        settings.webhook_secret = Some("a webhook secret".into());
    })
    .await;
    let doc = doc_name("cluster-hooks");
    let mut writer = apps[0].connect(&doc).await;
    let mut reader = apps[1].connect(&doc).await;
    writer.append("announced once").await;
    reader.wait_for_text("announced once").await;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let event = tokio::time::timeout(crate::helpers::WAIT, events.recv())
            .await
            .expect("the events arrive")
            .expect("the receiver runs");
        seen.push(event.json()["event"].as_str().unwrap_or("").to_string());
    }
    seen.sort();
    assert_eq!(seen, ["document.changed", "document.created"]);
    // Both nodes deliver from the queue, and neither delivers an event twice, nor announces the
    // change the other made.
    let extra = tokio::time::timeout(std::time::Duration::from_secs(3), events.recv()).await;
    assert!(
        extra.is_err(),
        "one event too many: {:?}",
        extra.map(|e| e.map(|e| e.json()))
    );
    for app in apps {
        app.stop().await;
    }
}

#[actix_web::test]
async fn two_nodes_compacting_a_large_document_at_once_leave_it_whole() {
    if !postgres_configured() {
        return;
    }
    let (db, apps) = nodes(2, |settings| settings.compact_after_updates = 1).await;
    let doc = doc_name("cluster-large");
    // A snapshot of about 200 KB is written in parts.
    let base = "p".repeat(200 * 1024);
    let created = apps[0]
        .post_doc(serde_json::json!({ "id": doc, "text": base }))
        .await;
    assert_eq!(created.status(), reqwest::StatusCode::CREATED);
    let mut a = apps[0].connect(&doc).await;
    let mut b = apps[1].connect(&doc).await;
    for i in 0..30 {
        a.insert(0, &format!("a{i} ")).await;
        b.insert(0, &format!("b{i} ")).await;
    }
    let has_all = |c: &YClient| {
        let text = c.text();
        (0..30).all(|i| text.contains(&format!("a{i} ")) && text.contains(&format!("b{i} ")))
    };
    a.recv_until(has_all).await;
    b.recv_until(has_all).await;
    let expected = a.text();
    b.wait_for_text(&expected).await;
    drop((a, b));
    for app in apps {
        app.stop().await;
    }
    let fresh = TestApp::spawn(db.settings()).await;
    assert_eq!(fresh.text(&doc).await, expected);
    fresh.stop().await;
}

/// The automatic versions every node has saved, and those it did not save because another node
/// had saved that state, summed over `apps`.
async fn auto_versions(apps: &[TestApp]) -> (f64, f64) {
    let (mut saved, mut elsewhere) = (0.0, 0.0);
    for app in apps {
        saved += app
            .metric("tandem_auto_versions_saved_total")
            .await
            .unwrap_or(0.0);
        elsewhere += app
            .metric("tandem_auto_versions_held_elsewhere_total")
            .await
            .unwrap_or(0.0);
    }
    (saved, elsewhere)
}

#[actix_web::test]
async fn a_pause_in_editing_on_two_nodes_saves_one_version() {
    if !postgres_configured() {
        return;
    }
    // The pause is long beside the time a change takes to cross to the other node and back, so
    // that both nodes' pauses follow the same last edit.
    let (_db, apps) = nodes(2, |settings| {
        settings.auto_version_after = std::time::Duration::from_secs(2);
    })
    .await;
    let doc = doc_name("cluster-versions");
    let mut a = apps[0].connect(&doc).await;
    let mut b = apps[1].connect(&doc).await;
    let mut expected = String::new();
    for (round, (chunk_a, chunk_b)) in [("one ", "two "), ("three ", "four ")]
        .into_iter()
        .enumerate()
    {
        // Each pause follows edits made on both nodes; both see them, and both take a version.
        expected.push_str(chunk_a);
        a.append(chunk_a).await;
        b.wait_for_text(&expected).await;
        expected.push_str(chunk_b);
        b.append(chunk_b).await;
        a.wait_for_text(&expected).await;
        let taken = 2.0 * (round + 1) as f64;
        let deadline = std::time::Instant::now() + crate::helpers::WAIT;
        let (saved, elsewhere) = loop {
            let (saved, elsewhere) = auto_versions(&apps).await;
            if saved + elsewhere >= taken {
                break (saved, elsewhere);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the nodes took {saved} + {elsewhere} versions, not {taken}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        // One node saved the pause's version; the other found it saved.
        assert_eq!((saved, elsewhere), ((round + 1) as f64, (round + 1) as f64));
        let list: serde_json::Value = apps[1]
            .list_versions(&doc)
            .await
            .json()
            .await
            .expect("JSON");
        let autos: Vec<&serde_json::Value> = list["versions"]
            .as_array()
            .expect("an array")
            .iter()
            .filter(|v| v["kind"] == "auto")
            .collect();
        assert_eq!(autos.len(), round + 1, "{list}");
        let newest: serde_json::Value = apps[0]
            .get_version(&doc, &autos[0]["id"])
            .await
            .json()
            .await
            .expect("JSON");
        assert_eq!(newest["content"]["content"], expected.as_str());
    }
    for app in apps {
        app.stop().await;
    }
}

#[actix_web::test]
async fn a_rest_edit_or_restore_on_one_node_reaches_the_editors_of_another_durable_first() {
    if !postgres_configured() {
        return;
    }
    let (db, apps) = nodes(3, |_| {}).await;
    let doc = doc_name("cluster-rest");
    let created = apps[1]
        .post_doc(serde_json::json!({ "id": doc, "text": "first draft" }))
        .await;
    assert_eq!(created.status(), reqwest::StatusCode::CREATED);
    let mut editor = apps[0].connect(&doc).await;
    editor.wait_for_text("first draft").await;
    let saved = apps[2].save_version(&doc, None).await;
    assert_eq!(saved.status(), reqwest::StatusCode::CREATED);
    let draft: serde_json::Value = saved.json().await.expect("JSON");

    // An edit through the API of a node the editor is not on: stored before the answer, then
    // relayed to the editor.
    let edited = apps[1]
        .post_text(
            &doc,
            serde_json::json!({ "ops": [{ "insert": ", then more", "at": 11 }] }),
        )
        .await;
    assert_eq!(edited.status(), reqwest::StatusCode::NO_CONTENT);
    assert_eq!(
        crate::helpers::stored_text(&db.url, &doc).await.0,
        "first draft, then more"
    );
    editor.wait_for_text("first draft, then more").await;

    // A restore on the third node likewise.
    let restored = apps[2].restore_version(&doc, &draft["id"]).await;
    assert_eq!(restored.status(), reqwest::StatusCode::NO_CONTENT);
    assert_eq!(
        crate::helpers::stored_text(&db.url, &doc).await.0,
        "first draft"
    );
    editor.wait_for_text("first draft").await;
    assert_eq!(apps[1].text(&doc).await, "first draft");
    for app in apps {
        app.stop().await;
    }
}
