//! Several nodes with Redis as the fast path between them: edits cross through it, and nodes
//! keep converging through the log while it is down, and use it again once it is back, with no
//! restart and no client reconnecting. Tests that stop Redis start a `redis-server` of their
//! own on a free port; the others share the one at 127.0.0.1:6379, each on a database of its
//! own, whose service id names its channel.

use std::time::Duration;

use crate::helpers::{
    Backend, OwnRedis, TestApp, TestDb, WAIT, YClient, doc_name, postgres_configured,
};

const SHARED_REDIS: &str = "redis://127.0.0.1:6379";

/// Two nodes on one fresh database, both with `redis`.
async fn two_nodes(redis: &str) -> (TestDb, Vec<TestApp>) {
    let db = TestDb::new(Backend::Postgres).await;
    let mut apps = Vec::new();
    for _ in 0..2 {
        let mut settings = db.settings();
        settings.redis_url = Some(redis.to_string());
        apps.push(TestApp::spawn(settings).await);
    }
    (db, apps)
}

/// A counter or gauge on a node's `/metrics` (0 when absent).
async fn metric(app: &TestApp, name: &str) -> f64 {
    app.metric(name).await.unwrap_or(0.0)
}

/// What `/readyz` says of the bus.
async fn bus_state(app: &TestApp) -> String {
    let body: serde_json::Value = reqwest::get(app.url("/readyz"))
        .await
        .expect("readyz")
        .json()
        .await
        .expect("json");
    body["bus"].as_str().unwrap_or("none").to_string()
}

/// Waits until `/readyz` of every node says the bus is `state`.
async fn bus_becomes(apps: &[TestApp], state: &str) {
    tokio::time::timeout(WAIT, async {
        for app in apps {
            while bus_state(app).await != state {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the bus never became {state}"));
}

#[actix_web::test]
async fn edits_cross_nodes_through_redis() {
    if !postgres_configured() {
        return;
    }
    let (_db, apps) = two_nodes(SHARED_REDIS).await;
    bus_becomes(&apps, "up").await;
    let doc = doc_name("bus-edits");
    let mut writer = apps[0].connect(&doc).await;
    let mut reader = apps[1].connect(&doc).await;
    let mut expected = String::new();
    for i in 0..20 {
        let chunk = format!("{i} ");
        writer.append(&chunk).await;
        expected.push_str(&chunk);
        reader.wait_for_text(&expected).await;
    }
    assert!(metric(&apps[0], "tandem_bus_published_total").await >= 20.0);
    assert!(metric(&apps[1], "tandem_bus_received_total").await >= 20.0);
    assert_eq!(metric(&apps[1], "tandem_bus_up").await, 1.0);
    assert_eq!(apps[1].text(&doc).await, expected);
    for app in apps {
        app.stop().await;
    }
}

#[actix_web::test]
async fn nodes_converge_while_redis_is_down_and_use_it_again_once_it_is_back() {
    if !postgres_configured() {
        return;
    }
    let mut redis = OwnRedis::start();
    let (_db, apps) = two_nodes(&redis.url()).await;
    bus_becomes(&apps, "up").await;
    let doc = doc_name("bus-outage");
    let mut writer = apps[0].connect(&doc).await;
    let mut reader = apps[1].connect(&doc).await;
    writer.append("before ").await;
    reader.wait_for_text("before ").await;

    redis.stop();
    bus_becomes(&apps, "down").await;
    writer.append("during ").await;
    reader.wait_for_text("before during ").await;

    redis.restart();
    bus_becomes(&apps, "up").await;
    let heard = metric(&apps[1], "tandem_bus_received_total").await;
    writer.append("after").await;
    reader.wait_for_text("before during after").await;
    // The same sockets, no restart: and the last edit came through Redis again.
    tokio::time::timeout(WAIT, async {
        while metric(&apps[1], "tandem_bus_received_total").await <= heard {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the bus carries edits again");
    for app in apps {
        app.stop().await;
    }
}

#[actix_web::test]
async fn a_redis_that_cannot_be_reached_at_start_leaves_the_nodes_serving_through_the_log() {
    if !postgres_configured() {
        return;
    }
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        listener.local_addr().expect("address").port()
    };
    let (_db, apps) = two_nodes(&format!("redis://127.0.0.1:{closed}")).await;
    assert_eq!(bus_state(&apps[0]).await, "down");
    let ready = reqwest::get(apps[0].url("/readyz")).await.expect("readyz");
    assert_eq!(ready.status(), reqwest::StatusCode::OK);
    let doc = doc_name("bus-absent");
    let mut writer = apps[0].connect(&doc).await;
    let mut reader: YClient = apps[1].connect(&doc).await;
    writer.append("through the log").await;
    reader.wait_for_text("through the log").await;
    for app in apps {
        app.stop().await;
    }
}

#[actix_web::test]
async fn redis_with_sqlite_refuses_to_start_and_says_why() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut settings = db.settings();
    settings.redis_url = Some(SHARED_REDIS.into());
    let refused = tandem::startup::Application::build(settings).await;
    let error = format!("{:#}", refused.err().expect("refused"));
    assert!(error.contains("needs Postgres"), "{error}");
}

#[actix_web::test]
async fn presence_crosses_nodes_and_leaves_every_node_when_its_socket_drops() {
    if !postgres_configured() {
        return;
    }
    let (_db, apps) = two_nodes(SHARED_REDIS).await;
    bus_becomes(&apps, "up").await;
    let doc = doc_name("bus-presence");
    let mut here = apps[0].connect(&doc).await;
    let mut there = apps[1].connect(&doc).await;
    here.set_awareness(r#"{"user":{"name":"Ada"}}"#).await;
    let id = here.client_id();
    there
        .recv_until(|c| c.awareness.get(&id).is_some_and(|s| s.contains("Ada")))
        .await;
    // And back the other way.
    there.set_awareness(r#"{"user":{"name":"Grace"}}"#).await;
    let other = there.client_id();
    here.recv_until(|c| c.awareness.get(&other).is_some_and(|s| s.contains("Grace")))
        .await;
    // The socket drops: its presence goes on the other node too, well before any timeout.
    drop(here);
    there.recv_until(|c| !c.awareness.contains_key(&id)).await;
    for app in apps {
        app.stop().await;
    }
}

#[actix_web::test]
async fn a_node_that_loads_a_document_learns_the_presence_the_others_hold() {
    if !postgres_configured() {
        return;
    }
    let (_db, apps) = two_nodes(SHARED_REDIS).await;
    bus_becomes(&apps, "up").await;
    let doc = doc_name("bus-presence-late");
    let mut here = apps[0].connect(&doc).await;
    here.set_awareness(r#"{"user":{"name":"Ada"}}"#).await;
    let id = here.client_id();
    here.recv_until(|c| c.awareness.contains_key(&id)).await;
    // Node 1 loads the document only now, long before Ada's client renews its state.
    let mut late = apps[1].connect(&doc).await;
    late.recv_until(|c| c.awareness.get(&id).is_some_and(|s| s.contains("Ada")))
        .await;
    for app in apps {
        app.stop().await;
    }
}
