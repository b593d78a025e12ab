//! The shipped load balancer: `deploy/haproxy.cfg`, run as it is by Debian's haproxy, in front
//! of two `tandem` processes on one fresh Postgres database and a Redis of the test's own.
//! Clients through it land on both nodes and converge; a node that dies is taken out and
//! newcomers still get in; the per-address limit counts the client the balancer names in
//! `X-Forwarded-For`, not the balancer.
//!
//! Needs Postgres (`TEST_DATABASE_URL`) and `haproxy` (scripts/test installs it). Without
//! haproxy these tests fail, as the browser tests do without chromium.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use futures_util::StreamExt;
use nix::sys::signal::Signal;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::helpers::{
    Backend, OwnRedis, ServerProcess, TestDb, WAIT, YClient, doc_name, metric_at, node_scenario,
    postgres_configured,
};

/// How often the balancer's view of its nodes is looked at while waiting for it to change.
const POLL: Duration = Duration::from_millis(100);

/// The names `deploy/haproxy.cfg` gives its two servers, in the order of `TANDEM_NODE_A/B`.
const SERVERS: [&str; 2] = ["a", "b"];

/// `N` distinct free loopback ports (all held at once while choosing, so none repeats).
fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<std::net::TcpListener> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().expect("bound").port())
}

/// Waits until something accepts connections on `port`, or `child` exits (a failed start).
async fn await_listening(child: &mut Child, port: u16, what: &str) {
    tokio::time::timeout(WAIT, async {
        while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if let Some(status) = child.try_wait().expect("poll child") {
                panic!("{what} exited before listening: {status}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what} never listened on {port}"));
}

/// The haproxy program: on the `PATH`, or in `/usr/sbin` where Debian puts it (and which a
/// user's `PATH` may lack). Its absence fails the test, with what to do about it.
fn haproxy_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("haproxy"))
        .find(|program| program.is_file())
        .unwrap_or_else(|| {
            panic!(
                "haproxy is not installed; these tests run deploy/haproxy.cfg with Debian's \
                 haproxy: sudo apt-get install haproxy (scripts/test installs it)"
            )
        })
}

/// What the balancer says of one server: its state (`UP`, `DOWN`, `UP 1/3` while going down…)
/// and how its last health check went (`L7OK`, `L4CON`, `L7STS`…).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ServerState {
    status: String,
    check: String,
}

impl ServerState {
    /// Up, and known to be so from a passing `/readyz` check (not just the state at start).
    fn is_up(&self) -> bool {
        self.status == "UP" && self.check == "L7OK"
    }

    fn is_down(&self) -> bool {
        self.status == "DOWN"
    }
}

/// haproxy running `deploy/haproxy.cfg` in the foreground, pointed at `nodes` through the
/// variables the config reads; killed when dropped.
struct Balancer {
    child: Child,
    port: u16,
    admin_port: u16,
    http: reqwest::Client,
}

impl Balancer {
    async fn start(nodes: &[ServerProcess]) -> Balancer {
        assert_eq!(nodes.len(), SERVERS.len(), "the config names two nodes");
        let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/haproxy.cfg");
        let [port, admin_port] = free_ports();
        let spawned = Command::new(haproxy_binary())
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .env("TANDEM_LB_BIND", format!("127.0.0.1:{port}"))
            .env("TANDEM_LB_ADMIN_BIND", format!("127.0.0.1:{admin_port}"))
            .env("TANDEM_NODE_A", format!("127.0.0.1:{}", nodes[0].port))
            .env("TANDEM_NODE_B", format!("127.0.0.1:{}", nodes[1].port))
            // Its request log; start-up errors go to stderr.
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn();
        let mut child = spawned.expect("haproxy starts");
        await_listening(&mut child, admin_port, "haproxy").await;
        Balancer {
            child,
            port,
            admin_port,
            http: reqwest::Client::new(),
        }
    }

    fn ws_base(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    /// Each server's state, from the stats page in CSV.
    async fn servers(&self) -> HashMap<String, ServerState> {
        let csv = self
            .http
            .get(self.admin_url("/stats;csv"))
            .send()
            .await
            .expect("the stats page answers")
            .text()
            .await
            .expect("stats text");
        let mut lines = csv.lines();
        let header: Vec<&str> = lines
            .next()
            .and_then(|line| line.strip_prefix("# "))
            .expect("a CSV header line")
            .split(',')
            .collect();
        let column = |name: &str| {
            header
                .iter()
                .position(|c| *c == name)
                .unwrap_or_else(|| panic!("no {name} column in {header:?}"))
        };
        let (proxy, server, status, check) = (
            column("pxname"),
            column("svname"),
            column("status"),
            column("check_status"),
        );
        lines
            .map(|line| line.split(',').collect::<Vec<_>>())
            .filter(|row| row.len() == header.len() && row[proxy] == "tandem_nodes")
            .filter(|row| SERVERS.contains(&row[server]))
            .map(|row| {
                let state = ServerState {
                    status: row[status].to_string(),
                    // A check under way is marked with a leading "* ".
                    check: row[check].trim_start_matches("* ").to_string(),
                };
                (row[server].to_string(), state)
            })
            .collect()
    }

    /// Waits until the balancer holds each of `servers` to be as `wanted` says.
    async fn await_servers(&mut self, servers: &[&str], wanted: fn(&ServerState) -> bool) {
        let mut last = HashMap::new();
        let reached = tokio::time::timeout(WAIT, async {
            loop {
                last = self.servers().await;
                if servers.iter().all(|s| last.get(*s).is_some_and(wanted)) {
                    return;
                }
                if let Some(status) = self.child.try_wait().expect("poll haproxy") {
                    panic!("haproxy exited: {status}");
                }
                tokio::time::sleep(POLL).await;
            }
        })
        .await;
        assert!(
            reached.is_ok(),
            "servers {servers:?} never changed so: {last:?}"
        );
    }

    /// The status of the balancer's own probe, `/ready` on the admin port.
    async fn ready(&self) -> u16 {
        self.http
            .get(self.admin_url("/ready"))
            .send()
            .await
            .expect("the probe answers")
            .status()
            .as_u16()
    }
}

/// Two nodes on one fresh Postgres database with a Redis of their own, both trusting the
/// balancer's address (loopback) for `X-Forwarded-For`, and haproxy in front once its health
/// checks have seen both ready.
struct Cluster {
    // Fields drop in order: the nodes go first, then the balancer, Redis, the database.
    nodes: Vec<ServerProcess>,
    balancer: Balancer,
    _redis: OwnRedis,
    _db: TestDb,
}

impl Cluster {
    async fn start(extra_env: &[(&str, &str)]) -> Cluster {
        let db = TestDb::new(Backend::Postgres).await;
        let redis = OwnRedis::start();
        let redis_url = redis.url();
        let mut env = vec![
            ("TANDEM_REDIS_URL", redis_url.as_str()),
            ("TANDEM_TRUSTED_PROXIES", "127.0.0.1"),
        ];
        env.extend_from_slice(extra_env);
        let mut nodes = Vec::new();
        for _ in SERVERS {
            nodes.push(ServerProcess::start(&db.url, &env).await);
        }
        let mut balancer = Balancer::start(&nodes).await;
        balancer.await_servers(&SERVERS, ServerState::is_up).await;
        Cluster {
            nodes,
            balancer,
            _redis: redis,
            _db: db,
        }
    }

    /// A metric of node `i` (0 when absent).
    async fn metric(&self, i: usize, name: &str) -> f64 {
        let url = format!("http://127.0.0.1:{}/metrics", self.nodes[i].port);
        metric_at(&url, name).await.unwrap_or(0.0)
    }

    /// The WebSockets open on each node now.
    async fn open_per_node(&self) -> Vec<f64> {
        let mut open = Vec::new();
        for i in 0..self.nodes.len() {
            open.push(self.metric(i, "tandem_connections").await);
        }
        open
    }

    /// The WebSockets each node has admitted so far.
    async fn accepted_per_node(&self) -> Vec<f64> {
        let mut accepted = Vec::new();
        for i in 0..self.nodes.len() {
            accepted.push(self.metric(i, "tandem_connections_total").await);
        }
        accepted
    }
}

/// Waits until every client holds every marker, then checks they hold the very same text.
async fn converge(clients: &mut [YClient], markers: &[String]) -> String {
    for client in clients.iter_mut() {
        client
            .recv_until(|c| markers.iter().all(|m| c.text().contains(m.as_str())))
            .await;
    }
    let text = clients[0].text();
    for client in clients.iter() {
        assert_eq!(client.text(), text, "every client ends with the same text");
    }
    text
}

#[actix_web::test]
async fn clients_through_the_balancer_land_on_both_nodes_and_converge() {
    if !postgres_configured() {
        return;
    }
    let cluster = Cluster::start(&[]).await;
    let doc = doc_name("balanced");

    // Each joins when the one before is connected: the balancer sends it to the emptier node.
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(YClient::connect(&cluster.balancer.ws_base(), &doc).await);
    }
    assert_eq!(
        cluster.open_per_node().await,
        [2.0, 2.0],
        "four clients through the balancer are spread over both nodes"
    );
    let markers: Vec<String> = (0..clients.len()).map(|i| format!("<y{i}>")).collect();
    for (client, marker) in clients.iter_mut().zip(&markers) {
        client.insert(0, marker).await;
    }
    let text = converge(&mut clients, &markers).await;
    assert_eq!(text.len(), markers.iter().map(String::len).sum::<usize>());

    // Stock y-websocket clients through the balancer, on the same document, join the edit.
    let before = cluster.accepted_per_node().await;
    let url = cluster.balancer.ws_base();
    let result = node_scenario(
        "interop",
        "y-websocket",
        "converge",
        &["--url", &url, "--doc", &doc, "--clients", "4"],
        WAIT,
    )
    .await;
    let after = cluster.accepted_per_node().await;
    for (node, (b, a)) in before.iter().zip(&after).enumerate() {
        assert!(
            a > b,
            "node {node} took none of the stock clients: {before:?} -> {after:?}"
        );
    }
    let stock_text = result["text"].as_str().expect("the stock clients' text");
    for marker in &markers {
        assert!(
            stock_text.contains(marker.as_str()),
            "{marker} in {stock_text}"
        );
    }
    // And the Rust clients, on both nodes, end with what the stock clients agreed on.
    for client in &mut clients {
        client.wait_for_text(stock_text).await;
    }
}

#[actix_web::test]
async fn when_a_node_dies_the_balancer_sends_newcomers_to_the_other() {
    if !postgres_configured() {
        return;
    }
    let mut cluster = Cluster::start(&[]).await;
    let doc = doc_name("failover");

    let mut doomed = YClient::connect(&cluster.balancer.ws_base(), &doc).await;
    let open = cluster.open_per_node().await;
    let dying = open
        .iter()
        .position(|&n| n == 1.0)
        .expect("the first client is on one node");
    let surviving = 1 - dying;
    let mut stayer = YClient::connect(&cluster.balancer.ws_base(), &doc).await;
    assert_eq!(
        cluster.open_per_node().await[surviving],
        1.0,
        "the second client is on the other node"
    );
    doomed.insert(0, "written before the crash. ").await;
    doomed.recv_echo().await;
    stayer.wait_for_text("written before the crash. ").await;

    cluster.nodes[dying].signal(Signal::SIGKILL);
    cluster
        .balancer
        .await_servers(&[SERVERS[dying]], ServerState::is_down)
        .await;
    drop(doomed);
    assert_eq!(
        cluster.balancer.ready().await,
        200,
        "the balancer is still ready with one node"
    );

    let mut clients = vec![stayer];
    for _ in 0..3 {
        let newcomer = YClient::connect(&cluster.balancer.ws_base(), &doc).await;
        assert_eq!(newcomer.text(), "written before the crash. ");
        clients.push(newcomer);
    }
    assert_eq!(
        cluster.metric(surviving, "tandem_connections").await,
        4.0,
        "every newcomer is on the surviving node"
    );
    let markers: Vec<String> = (0..clients.len()).map(|i| format!("<n{i}>")).collect();
    for (client, marker) in clients.iter_mut().zip(&markers) {
        client.append(marker).await;
    }
    let text = converge(&mut clients, &markers).await;
    assert!(text.starts_with("written before the crash. "), "{text}");

    // With the last node shutting down (it reports not ready, then stops), nothing is left.
    cluster.nodes[surviving].signal(Signal::SIGTERM);
    cluster
        .balancer
        .await_servers(&SERVERS, ServerState::is_down)
        .await;
    assert_eq!(cluster.balancer.ready().await, 503);
    match tokio_tungstenite::connect_async(format!("{}/{doc}", cluster.balancer.ws_base())).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 503)
        }
        other => panic!("a WebSocket through a balancer with no node: {other:?}"),
    }
}

/// Opens a WebSocket to `doc` through the balancer from the loopback address `source` (all of
/// 127.0.0.0/8 is this host), with `headers`, and returns it if Tandem admitted it: a session
/// is greeted with the document's SyncStep1, a refused one closed at once with 1013.
async fn open_from(
    balancer: &Balancer,
    source: Ipv4Addr,
    doc: &str,
    headers: &[(&'static str, &str)],
) -> Option<WebSocketStream<TcpStream>> {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .bind(SocketAddr::from((source, 0)))
        .expect("bind the client's address");
    let stream = socket
        .connect(SocketAddr::from((Ipv4Addr::LOCALHOST, balancer.port)))
        .await
        .expect("connect to the balancer");
    let mut request = format!("{}/{doc}", balancer.ws_base())
        .into_client_request()
        .expect("request");
    for (name, value) in headers {
        request
            .headers_mut()
            .append(*name, value.parse().expect("header"));
    }
    let (mut ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(request, stream))
        .await
        .expect("handshake in time")
        .expect("the balancer upgrades");
    let first = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("the server speaks first");
    match first {
        Some(Ok(WsMessage::Binary(_))) => Some(ws),
        Some(Ok(WsMessage::Close(Some(frame)))) if u16::from(frame.code) == 1013 => None,
        other => panic!("neither a greeting nor a refusal: {other:?}"),
    }
}

#[actix_web::test]
async fn the_per_address_limit_counts_the_client_the_balancer_names() {
    if !postgres_configured() {
        return;
    }
    let cluster = Cluster::start(&[("TANDEM_MAX_CONNECTIONS_PER_IP", "1")]).await;
    let balancer = &cluster.balancer;
    let doc = doc_name("per-address");
    let (alice, bob) = (Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3));

    // One connection from alice per node: the second goes to the node without one.
    let mut open = Vec::new();
    for _ in SERVERS {
        let ws = open_from(balancer, alice, &doc, &[]).await;
        open.push(ws.expect("alice's first connection to each node is admitted"));
    }
    assert_eq!(cluster.open_per_node().await, [1.0, 1.0]);
    assert!(
        open_from(balancer, alice, &doc, &[]).await.is_none(),
        "a third from alice is over her limit on either node"
    );
    // Claiming to be someone else changes nothing: the balancer appends the real address.
    let forged = [("X-Forwarded-For", "198.51.100.7")];
    assert!(open_from(balancer, alice, &doc, &forged).await.is_none());
    // Bob shares the balancer's socket address on the nodes, but not alice's limit.
    let ws = open_from(balancer, bob, &doc, &[]).await;
    open.push(ws.expect("bob is admitted"));
    let total: f64 = cluster.open_per_node().await.iter().sum();
    assert_eq!(total, 3.0);
}
