//! Three real nodes: `tandem` processes on one Postgres database and a Redis of the test's own,
//! with stock Yjs clients spread over them. A node is killed with SIGKILL, Redis stops and
//! comes back mid-stream, and a node turned away by Redis serves through the log.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::helpers::{
    Backend, OwnRedis, ServerProcess, TestDb, WAIT, YClient, doc_name, metric_at, node_scenario,
    postgres_configured, stored_text,
};

/// Presence of a silent client (or of a dead node's) expires this soon on these nodes.
const AWARENESS_TIMEOUT: &str = "4s";

/// Nodes on one fresh database with one Redis. Fields drop in order: nodes, then Redis, then
/// the database.
struct Service {
    nodes: Vec<Option<ServerProcess>>,
    redis: OwnRedis,
    db: TestDb,
}

impl Service {
    async fn start(count: usize) -> Service {
        let db = TestDb::new(Backend::Postgres).await;
        let redis = OwnRedis::start();
        let mut service = Service {
            nodes: Vec::new(),
            redis,
            db,
        };
        for _ in 0..count {
            let node = service.spawn_node(&service.redis.url()).await;
            service.nodes.push(Some(node));
        }
        service
    }

    async fn spawn_node(&self, redis_url: &str) -> ServerProcess {
        ServerProcess::start(
            &self.db.url,
            &[
                ("TANDEM_REDIS_URL", redis_url),
                ("TANDEM_AWARENESS_TIMEOUT", AWARENESS_TIMEOUT),
            ],
        )
        .await
    }

    fn node(&self, i: usize) -> &ServerProcess {
        self.nodes[i].as_ref().expect("the node runs")
    }

    fn ws(&self, i: usize) -> String {
        self.node(i).ws_base()
    }

    fn http(&self, i: usize, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.node(i).port)
    }

    async fn metric(&self, i: usize, name: &str) -> f64 {
        metric_at(&self.http(i, "/metrics"), name)
            .await
            .unwrap_or(0.0)
    }

    /// The document's text as node `i` serves it over REST.
    async fn text(&self, i: usize, doc: &str) -> String {
        let response = reqwest::get(self.http(i, &format!("/api/docs/{doc}/content?format=text")))
            .await
            .expect("the node answers");
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        response.text().await.expect("a text body")
    }

    /// Waits until every running node's `/readyz` says the bus is `state`.
    async fn bus_becomes(&self, state: &str) {
        for node in self.nodes.iter().flatten() {
            let url = format!("http://127.0.0.1:{}/readyz", node.port);
            let deadline = std::time::Instant::now() + WAIT;
            loop {
                let ready: serde_json::Value = reqwest::get(&url)
                    .await
                    .expect("the node answers")
                    .json()
                    .await
                    .expect("JSON");
                if ready["bus"] == state {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "the bus of :{} never became {state}: {ready}",
                    node.port
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// SIGKILL of node `i`.
    async fn kill(&mut self, i: usize) {
        let node = self.nodes[i].take().expect("the node runs");
        node.signal(Signal::SIGKILL);
        node.wait().await;
    }
}

#[actix_web::test]
async fn stock_clients_on_three_nodes_converge_and_see_presence_come_and_go() {
    if !postgres_configured() {
        return;
    }
    let mut service = Service::start(3).await;
    service.bus_becomes("up").await;
    let all = (0..3).map(|i| service.ws(i)).collect::<Vec<_>>().join(",");

    // Six stock clients, two on each node, edit one document at once.
    let doc = doc_name("nodes-converge");
    let result = node_scenario(
        "interop",
        "y-websocket",
        "converge",
        &["--urls", &all, "--doc", &doc, "--clients", "6"],
        WAIT,
    )
    .await;
    let text = result["text"].as_str().expect("the text they agreed on");
    assert_eq!(result["markers"], 6 * 20, "{result}");
    for i in 0..3 {
        assert_eq!(service.text(i, &doc).await, text, "node {i}");
    }

    // Presence from node 0 reaches node 2, and leaves it when the socket drops.
    let presence = format!("{},{}", service.ws(0), service.ws(2));
    node_scenario(
        "interop",
        "y-websocket",
        "awareness",
        &["--urls", &presence, "--doc", &doc, "--abrupt"],
        WAIT,
    )
    .await;

    // A node dies: the presence of its clients expires on the others.
    let doc = doc_name("nodes-presence");
    let mut doomed = YClient::connect(&service.ws(0), &doc).await;
    let mut watcher = YClient::connect(&service.ws(1), &doc).await;
    doomed.set_awareness(r#"{"user":{"name":"Ada"}}"#).await;
    let id = doomed.client_id();
    watcher
        .recv_until(|c| c.awareness.get(&id).is_some_and(|s| s.contains("Ada")))
        .await;
    service.kill(0).await;
    watcher.recv_until(|c| !c.awareness.contains_key(&id)).await;
}

#[actix_web::test]
async fn a_writer_on_one_node_loses_nothing_its_readers_saw_through_a_redis_restart_and_a_kill() {
    if !postgres_configured() {
        return;
    }
    let mut service = Service::start(3).await;
    service.bus_becomes("up").await;
    let doc = doc_name("nodes-writer");
    let mut writer = YClient::connect(&service.ws(0), &doc).await;
    let mut expected = String::new();
    // Node 2 opens the document while node 0 commits a burst of edits.
    for i in 0..20 {
        let chunk = format!("a{i};");
        writer.append(&chunk).await;
        expected.push_str(&chunk);
    }
    let mut readers = vec![
        YClient::connect(&service.ws(2), &doc).await,
        YClient::connect(&service.ws(1), &doc).await,
    ];
    for reader in &mut readers {
        reader.wait_for_text(&expected).await;
    }
    assert!(service.metric(1, "tandem_bus_received_total").await > 0.0);

    // Redis stops mid-stream: the readers keep up through the log.
    service.redis.stop();
    service.bus_becomes("down").await;
    assert_eq!(service.metric(2, "tandem_bus_up").await, 0.0);
    for i in 0..10 {
        let chunk = format!("b{i};");
        writer.append(&chunk).await;
        expected.push_str(&chunk);
    }
    for reader in &mut readers {
        reader.wait_for_text(&expected).await;
    }

    // It comes back: the nodes use it again, with no restart and nobody reconnecting.
    service.redis.restart();
    service.bus_becomes("up").await;
    let heard = service.metric(1, "tandem_bus_received_total").await;
    for i in 0..10 {
        let chunk = format!("c{i};");
        writer.append(&chunk).await;
        expected.push_str(&chunk);
    }
    for reader in &mut readers {
        reader.wait_for_text(&expected).await;
    }
    assert!(service.metric(1, "tandem_bus_received_total").await > heard);

    // The writer's node is killed while edits are in flight, once the readers saw some.
    for i in 0..40 {
        writer.append(&format!("d{i};")).await;
    }
    readers[1].recv_until(|c| c.text().contains("d3;")).await;
    service.kill(0).await;
    drop(writer);

    // Whatever a reader was shown is stored, and the readers converge on what is.
    let (stored, _) = stored_text(&service.db.url, &doc).await;
    for reader in &mut readers {
        let shown = reader.text();
        assert!(
            stored.starts_with(&shown),
            "shown {shown:?}, stored {stored:?}"
        );
        reader.wait_for_text(&stored).await;
    }
    assert!(stored.starts_with(&expected) && stored.contains("d3;"));

    // A late opener on another node, and one on the writer's node restarted, get all of it.
    for i in [1, 2] {
        let read = node_scenario(
            "interop",
            "y-websocket",
            "read",
            &["--url", &service.ws(i), "--doc", &doc, "--text", &stored],
            WAIT,
        )
        .await;
        assert_eq!(read["text"], stored.as_str());
    }
    let restarted = service.spawn_node(&service.redis.url()).await;
    service.nodes[0] = Some(restarted);
    assert_eq!(service.text(0, &doc).await, stored);
}

#[actix_web::test]
async fn a_node_redis_turns_away_for_want_of_a_password_says_so_and_serves_through_the_log() {
    if !postgres_configured() {
        return;
    }
    let db = TestDb::new(Backend::Postgres).await;
    let redis = OwnRedis::start_with(&["--requirepass", "s3cret"]);
    let with_password = format!("redis://:s3cret@127.0.0.1:{}", redis.port);
    let admitted = ServerProcess::start(&db.url, &[("TANDEM_REDIS_URL", &with_password)]).await;
    let mut refused = ServerProcess::start(&db.url, &[("TANDEM_REDIS_URL", &redis.url())]).await;
    let said = refused
        .log_line(|e| {
            e["fields"]["message"]
                .as_str()
                .or(e["message"].as_str())
                .is_some_and(|m| m.contains("refused this node's credentials"))
        })
        .await;
    assert!(said.to_string().contains("--redis-url"), "{said}");
    let ready = |port: u16| async move {
        let ready: serde_json::Value = reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
            .await
            .expect("the node answers")
            .json()
            .await
            .expect("JSON");
        ready
    };
    assert_eq!(ready(refused.port).await["bus"], "down");
    let deadline = std::time::Instant::now() + WAIT;
    while ready(admitted.port).await["bus"] != "up" {
        assert!(
            std::time::Instant::now() < deadline,
            "the admitted node's bus never came up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Edits cross both ways all the same, through the log.
    let doc = doc_name("nodes-noauth");
    let mut here = YClient::connect(&admitted.ws_base(), &doc).await;
    let mut there = YClient::connect(&refused.ws_base(), &doc).await;
    here.append("from the admitted node; ").await;
    there.wait_for_text("from the admitted node; ").await;
    there.append("from the refused one").await;
    here.wait_for_text("from the admitted node; from the refused one")
        .await;
}
