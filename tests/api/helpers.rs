//! Test harness: servers on fresh databases, and a y-websocket client built on yrs.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tandem::config::Settings;
use tandem::startup::{Application, ShutdownTrigger};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use yrs::encoding::write::Write;
use yrs::sync::{Message, SyncMessage};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, TextRef, Transact, Update};

/// Upper bound on any single wait in a test.
pub const WAIT: Duration = Duration::from_secs(15);

/// Which database a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Whether the Postgres twin of a storage test runs: when `TEST_DATABASE_URL` names a server.
/// Without it the twin passes with a note, as storage tests ran on SQLite alone before; in CI
/// (`CI=true`) it fails instead, so that a missing database is never a silent skip.
pub fn postgres_configured() -> bool {
    if std::env::var("TEST_DATABASE_URL").is_ok_and(|u| !u.is_empty()) {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true but TEST_DATABASE_URL is not set: storage tests must run on Postgres too"
    );
    eprintln!("Postgres skipped: TEST_DATABASE_URL is not set");
    false
}

/// States once that a storage test runs on both stores: the test, written as
/// `async fn name(backend: Backend) { .. }`, becomes `name::sqlite` and `name::postgres`, each
/// on a database of its own (see [`TestDb`]). A plain `fn` (which drives its own runtime)
/// becomes two `#[test]`s the same way. Attributes (`#[ignore]`, docs) go to both.
macro_rules! on_both_stores {
    ($(#[$meta:meta])* async fn $name:ident($backend:ident: Backend) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn run($backend: $crate::helpers::Backend) $body

            $(#[$meta])*
            #[actix_web::test]
            async fn sqlite() {
                run($crate::helpers::Backend::Sqlite).await;
            }

            $(#[$meta])*
            #[actix_web::test]
            async fn postgres() {
                if $crate::helpers::postgres_configured() {
                    run($crate::helpers::Backend::Postgres).await;
                }
            }
        }
    };
    ($(#[$meta:meta])* fn $name:ident($backend:ident: Backend) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn run($backend: $crate::helpers::Backend) $body

            $(#[$meta])*
            #[test]
            fn sqlite() {
                run($crate::helpers::Backend::Sqlite);
            }

            $(#[$meta])*
            #[test]
            fn postgres() {
                if $crate::helpers::postgres_configured() {
                    run($crate::helpers::Backend::Postgres);
                }
            }
        }
    };
}
pub(crate) use on_both_stores;

/// A database of its own for one test: a temporary SQLite file, or a fresh Postgres database.
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("tandem.db").display());
                TestDb {
                    url,
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => {
                let admin = std::env::var("TEST_DATABASE_URL").expect("TEST_DATABASE_URL");
                let name = format!("tandem_test_{}", uuid::Uuid::new_v4().simple());
                let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
                    .await
                    .expect("TEST_DATABASE_URL must point at a reachable Postgres");
                sqlx::Executor::execute(
                    &mut conn,
                    sqlx::AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)),
                )
                .await
                .expect("create test database");
                let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
                TestDb {
                    url: format!("{base}/{name}"),
                    _dir: None,
                }
            }
        }
    }

    /// Settings for a server on this database, bound to a free loopback port.
    pub fn settings(&self) -> Settings {
        let mut settings = Settings::with_database(&self.url);
        settings.bind = "127.0.0.1:0".parse().expect("loopback address");
        settings
    }
}

/// A server running inside the test process, with one method per REST endpoint. Each sends a
/// well-formed request (with the API key, once [`TestApp::with_key`] set one) and returns the
/// response; tests that send something unusual build their request by hand.
pub struct TestApp {
    pub port: u16,
    trigger: ShutdownTrigger,
    running: tokio::task::JoinHandle<anyhow::Result<()>>,
    http: reqwest::Client,
    key: Option<String>,
}

impl TestApp {
    pub async fn spawn(settings: Settings) -> TestApp {
        let app = Application::build(settings).await.expect("server builds");
        let port = app.port();
        let trigger = app.shutdown_trigger();
        let running = actix_web::rt::spawn(app.run_until_stopped());
        TestApp {
            port,
            trigger,
            running,
            http: reqwest::Client::new(),
            key: None,
        }
    }

    /// Sends `Authorization: Bearer <key>` with every endpoint method from now on.
    pub fn with_key(mut self, key: &str) -> TestApp {
        self.key = Some(key.to_string());
        self
    }

    pub fn ws_base(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    /// The HTTP URL of `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// A request to `path` with the API key, if any.
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, self.url(path));
        match &self.key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    async fn send(request: reqwest::RequestBuilder) -> reqwest::Response {
        request.send().await.expect("the server answers")
    }

    /// `GET /api/docs?{query}` (`query` as in `limit=2&cursor=x`, or empty).
    pub async fn list_docs(&self, query: &str) -> reqwest::Response {
        Self::send(self.request(reqwest::Method::GET, &format!("/api/docs?{query}"))).await
    }

    /// `POST /api/docs` with `body` (`{"id": .., "text": ..}`, both optional).
    pub async fn post_doc(&self, body: serde_json::Value) -> reqwest::Response {
        Self::send(self.request(reqwest::Method::POST, "/api/docs").json(&body)).await
    }

    /// Creates an empty document `id` and checks it was created.
    pub async fn create_doc(&self, id: &str) {
        let response = self.post_doc(serde_json::json!({ "id": id })).await;
        assert_eq!(response.status(), reqwest::StatusCode::CREATED);
    }

    /// `GET /api/docs/{id}`.
    pub async fn get_doc(&self, id: &str) -> reqwest::Response {
        Self::send(self.request(reqwest::Method::GET, &format!("/api/docs/{id}"))).await
    }

    /// `DELETE /api/docs/{id}`.
    pub async fn delete_doc(&self, id: &str) -> reqwest::Response {
        Self::send(self.request(reqwest::Method::DELETE, &format!("/api/docs/{id}"))).await
    }

    /// `GET /api/docs/{id}/update`, with `?sv=` when given (already base64).
    pub async fn get_update(&self, id: &str, sv: Option<&str>) -> reqwest::Response {
        let path = match sv {
            Some(sv) => format!("/api/docs/{id}/update?sv={sv}"),
            None => format!("/api/docs/{id}/update"),
        };
        Self::send(self.request(reqwest::Method::GET, &path)).await
    }

    /// `POST /api/docs/{id}/update` with a binary v1 update.
    pub async fn post_update(&self, id: &str, update: Vec<u8>) -> reqwest::Response {
        let request = self
            .request(reqwest::Method::POST, &format!("/api/docs/{id}/update"))
            .header("content-type", "application/octet-stream")
            .body(update);
        Self::send(request).await
    }

    /// `GET /api/docs/{id}/content?{query}` (`format=text&key=notes`, or empty).
    pub async fn get_content(&self, id: &str, query: &str) -> reqwest::Response {
        let path = format!("/api/docs/{id}/content?{query}");
        Self::send(self.request(reqwest::Method::GET, &path)).await
    }

    /// `PUT /api/docs/{id}/content?{query}` with the JSON `body` (`format=prosemirror&key=..`).
    pub async fn put_content(
        &self,
        id: &str,
        query: &str,
        body: &serde_json::Value,
    ) -> reqwest::Response {
        let path = format!("/api/docs/{id}/content?{query}");
        Self::send(self.request(reqwest::Method::PUT, &path).json(body)).await
    }

    /// The plain text of the `content` root, checking the read succeeded.
    pub async fn text(&self, id: &str) -> String {
        let response = self.get_content(id, "format=text").await;
        assert_eq!(
            response.status(),
            reqwest::StatusCode::OK,
            "read {id} as text"
        );
        response.text().await.expect("text body")
    }

    /// `POST /api/docs/{id}/text` with `body` (`{"key": .., "ops": [..]}`).
    pub async fn post_text(&self, id: &str, body: serde_json::Value) -> reqwest::Response {
        let path = format!("/api/docs/{id}/text");
        Self::send(self.request(reqwest::Method::POST, &path).json(&body)).await
    }

    /// `GET /api/docs/{id}/versions`.
    pub async fn list_versions(&self, id: &str) -> reqwest::Response {
        let path = format!("/api/docs/{id}/versions");
        Self::send(self.request(reqwest::Method::GET, &path)).await
    }

    /// `POST /api/docs/{id}/versions`, with no body at all when `body` is `None`.
    pub async fn save_version(
        &self,
        id: &str,
        body: Option<serde_json::Value>,
    ) -> reqwest::Response {
        let request = self.request(reqwest::Method::POST, &format!("/api/docs/{id}/versions"));
        let request = match body {
            Some(body) => request.json(&body),
            None => request,
        };
        Self::send(request).await
    }

    /// `GET /api/docs/{id}/versions/{version}` (any path segment, to test bad ones too).
    pub async fn get_version(
        &self,
        id: &str,
        version: impl std::fmt::Display,
    ) -> reqwest::Response {
        let path = format!("/api/docs/{id}/versions/{version}");
        Self::send(self.request(reqwest::Method::GET, &path)).await
    }

    /// `POST /api/docs/{id}/versions/{version}/restore`.
    pub async fn restore_version(
        &self,
        id: &str,
        version: impl std::fmt::Display,
    ) -> reqwest::Response {
        let path = format!("/api/docs/{id}/versions/{version}/restore");
        Self::send(self.request(reqwest::Method::POST, &path)).await
    }

    /// `POST /api/docs/{id}/tokens` with `body` (`{"access": .., "expires_in": .., "user": ..}`).
    pub async fn issue_token(&self, id: &str, body: serde_json::Value) -> reqwest::Response {
        let path = format!("/api/docs/{id}/tokens");
        Self::send(self.request(reqwest::Method::POST, &path).json(&body)).await
    }

    /// `GET /api/docs/{id}/access`, presenting `token` as `?token=` (and no API key).
    pub async fn check_access(&self, id: &str, token: Option<&str>) -> reqwest::Response {
        let path = match token {
            Some(token) => format!("/api/docs/{id}/access?token={token}"),
            None => format!("/api/docs/{id}/access"),
        };
        Self::send(self.http.get(self.url(&path))).await
    }

    /// `POST /api/docs/{id}/disconnect`, with no body at all (everyone) when `body` is `None`.
    pub async fn disconnect(&self, id: &str, body: Option<serde_json::Value>) -> reqwest::Response {
        let request = self.request(reqwest::Method::POST, &format!("/api/docs/{id}/disconnect"));
        let request = match body {
            Some(body) => request.json(&body),
            None => request,
        };
        Self::send(request).await
    }

    /// `GET /api/openapi.json`.
    pub async fn openapi(&self) -> reqwest::Response {
        Self::send(self.request(reqwest::Method::GET, "/api/openapi.json")).await
    }

    /// The value of the metric `name` (a counter or gauge without labels) on `/metrics`.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        metric_at(&self.url("/metrics"), name).await
    }

    pub async fn connect(&self, doc: &str) -> YClient {
        YClient::connect(&self.ws_base(), doc).await
    }

    /// Shuts down as SIGTERM would, and waits until it has.
    pub async fn stop(self) {
        self.trigger.trigger();
        tokio::time::timeout(WAIT, self.running)
            .await
            .expect("server stops in time")
            .expect("server task joins")
            .expect("server stops cleanly");
    }
}

/// The `tandem` binary running as a child process, for signals and `kill -9`.
pub struct ServerProcess {
    pub child: tokio::process::Child,
    pub port: u16,
    /// Every JSON log line the server printed after it started serving.
    pub logs: tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
}

impl ServerProcess {
    pub async fn start(db_url: &str, extra_env: &[(&str, &str)]) -> ServerProcess {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
            .env("DATABASE_URL", db_url)
            .env("TANDEM_BIND", "127.0.0.1:0")
            .env("TANDEM_LOG_FORMAT", "json")
            .env("TANDEM_LOG", "info")
            .envs(extra_env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("tandem binary starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let port = tokio::time::timeout(WAIT, async {
            while let Some(line) = lines.next_line().await.expect("read server log") {
                let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if event["message"] == "serving" {
                    return event["port"].as_u64().expect("port in the log") as u16;
                }
            }
            panic!("server exited before serving");
        })
        .await
        .expect("server starts in time");
        // Keep draining the log so the server never blocks on a full pipe.
        let (log_tx, logs) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(event) = serde_json::from_str(&line) {
                    let _ = log_tx.send(event);
                }
            }
        });
        ServerProcess { child, port, logs }
    }

    pub fn ws_base(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    /// Waits for the first log line (after those already read) that `matches`.
    pub async fn log_line(
        &mut self,
        matches: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        tokio::time::timeout(WAIT, async {
            while let Some(event) = self.logs.recv().await {
                if matches(&event) {
                    return event;
                }
            }
            panic!("the server's log ended without a matching line");
        })
        .await
        .expect("a matching log line in time")
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = self.child.id().expect("server is running") as i32;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).expect("signal sent");
    }

    /// Waits for the process to exit and returns its exit code.
    pub async fn wait(mut self) -> Option<i32> {
        tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("server exits in time")
            .expect("wait for server")
            .code()
    }
}

/// Reads what the store holds for a document, as text of `content`, and its log length.
pub async fn stored_text(db_url: &str, doc: &str) -> (String, i64) {
    let store = tandem::store::connect(db_url).await.expect("store opens");
    let id = tandem::domain::DocId::parse(doc).expect("valid name");
    let stored = store.load(&id).await.expect("document loads");
    let log_len = store.log_len(&id).await.expect("log length");
    store.close().await;
    let doc = tandem::collab::document::build_doc(&stored).expect("stored data decodes");
    let text = doc.get_or_insert_text("content");
    let s = text.get_string(&doc.transact());
    (s, log_len)
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A y-websocket client over yrs, driven step by step by the test.
pub struct YClient {
    pub ws: Socket,
    pub doc: Doc,
    pub text: TextRef,
    /// Presence states heard from the server: client id → JSON (removed ones are dropped).
    pub awareness: HashMap<u64, String>,
    awareness_clock: u32,
    /// Number of document updates received after the initial sync.
    /// Sync Update messages received after the initial sync. The server merges updates that
    /// become durable together, so one message may carry several.
    pub updates_received: usize,
    /// Per client, the clock up to which the server's Update messages have carried its changes.
    pub relayed: StateVector,
    /// The update carried by the last Update message.
    pub last_update: Vec<u8>,
    pub synced: bool,
    /// The reason of a permission-denied message from the server, if one came.
    pub denied: Option<String>,
    /// The state vector the server greeted us with.
    server_sv: Option<StateVector>,
}

impl YClient {
    /// Connects, sends SyncStep1 and waits for the server's SyncStep2.
    pub async fn connect(ws_base: &str, doc_name: &str) -> YClient {
        Self::connect_with(ws_base, doc_name, Doc::new()).await
    }

    pub async fn connect_with(ws_base: &str, doc_name: &str, doc: Doc) -> YClient {
        let client = Self::open(ws_base, doc_name, doc).await;
        client.handshake().await
    }

    /// Connects with `Authorization: Bearer <credential>` (an API key or a document token).
    pub async fn connect_authorized(ws_base: &str, doc_name: &str, credential: &str) -> YClient {
        let bearer = format!("Bearer {credential}");
        let client =
            Self::open_with_headers(ws_base, doc_name, &[("Authorization", &bearer)]).await;
        client.handshake().await
    }

    /// Opens the socket with extra handshake headers, without any protocol exchange.
    pub async fn open_with_headers(
        ws_base: &str,
        doc_name: &str,
        headers: &[(&'static str, &str)],
    ) -> YClient {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = format!("{ws_base}/{doc_name}")
            .into_client_request()
            .expect("request");
        for (name, value) in headers {
            request
                .headers_mut()
                .append(*name, value.parse().expect("header"));
        }
        Self::open_request(request, Doc::new()).await
    }

    /// Sends SyncStep1, waits for the server's SyncStep2, and answers its SyncStep1.
    pub async fn handshake(self) -> YClient {
        let mut client = self;
        let sv = client.doc.transact().state_vector();
        client.send(Message::Sync(SyncMessage::SyncStep1(sv))).await;
        client
            .recv_until(|c| c.synced && c.server_sv.is_some())
            .await;
        // Like a stock client, answer the server's SyncStep1 with what it lacks.
        if let Some(server_sv) = client.server_sv.take() {
            client.push_state(&server_sv).await;
        }
        client
    }

    /// Opens the socket without any protocol exchange.
    pub async fn open(ws_base: &str, doc_name: &str, doc: Doc) -> YClient {
        Self::open_request(format!("{ws_base}/{doc_name}"), doc).await
    }

    async fn open_request(
        request: impl tokio_tungstenite::tungstenite::client::IntoClientRequest + Unpin,
        doc: Doc,
    ) -> YClient {
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
            .await
            .expect("connect in time")
            .expect("WebSocket connects");
        let text = doc.get_or_insert_text("content");
        YClient {
            ws,
            doc,
            text,
            awareness: HashMap::new(),
            awareness_clock: 0,
            updates_received: 0,
            relayed: StateVector::default(),
            last_update: Vec::new(),
            synced: false,
            denied: None,
            server_sv: None,
        }
    }

    pub fn client_id(&self) -> u64 {
        self.doc.client_id().get()
    }

    pub fn text(&self) -> String {
        self.text.get_string(&self.doc.transact())
    }

    pub async fn send(&mut self, message: Message) {
        self.send_raw(message.encode_v1()).await;
    }

    pub async fn send_raw(&mut self, bytes: Vec<u8>) {
        self.ws
            .send(WsMessage::Binary(bytes.into()))
            .await
            .expect("frame sent");
    }

    /// Inserts at `index` and sends the change as an Update message.
    pub async fn insert(&mut self, index: u32, chunk: &str) {
        let update = {
            let mut txn = self.doc.transact_mut();
            self.text.insert(&mut txn, index, chunk);
            txn.encode_update_v1()
        };
        self.send(Message::Sync(SyncMessage::Update(update))).await;
    }

    /// Deletes `len` units at `index` and sends the change as an Update message.
    pub async fn delete(&mut self, index: u32, len: u32) {
        let update = {
            let mut txn = self.doc.transact_mut();
            self.text.remove_range(&mut txn, index, len);
            txn.encode_update_v1()
        };
        self.send(Message::Sync(SyncMessage::Update(update))).await;
    }

    pub async fn append(&mut self, chunk: &str) {
        let len = self.text.len(&self.doc.transact());
        self.insert(len, chunk).await;
    }

    /// Sets this client's presence state (a JSON value, or `null` to clear it).
    pub async fn set_awareness(&mut self, json: &str) {
        self.awareness_clock += 1;
        let frame = awareness_frame(self.client_id(), self.awareness_clock, json);
        self.send_raw(frame).await;
    }

    /// Handles incoming frames until `done` holds; panics after `WAIT`.
    pub async fn recv_until(&mut self, mut done: impl FnMut(&YClient) -> bool) {
        tokio::time::timeout(WAIT, async {
            while !done(self) {
                match self.ws.next().await {
                    Some(Ok(WsMessage::Binary(frame))) => self.handle(&frame),
                    Some(Ok(WsMessage::Close(frame))) => {
                        panic!("server closed the connection: {frame:?}")
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => panic!("socket error: {e}"),
                    None => panic!("socket ended"),
                }
            }
        })
        .await
        .expect("condition reached in time");
    }

    /// Waits until the server has relayed back every change this client made.
    pub async fn recv_echo(&mut self) {
        let me = yrs::ClientID::new(self.client_id());
        self.recv_until(|c| c.relayed.get(&me) >= c.doc.transact().state_vector().get(&me))
            .await;
    }

    /// Waits until the text of `content` equals `expected`.
    pub async fn wait_for_text(&mut self, expected: &str) {
        let expected = expected.to_string();
        self.recv_until(|c| c.text() == expected).await;
    }

    /// Reads until the server closes; returns the close code and reason.
    pub async fn expect_close(&mut self) -> (u16, String) {
        tokio::time::timeout(WAIT, async {
            loop {
                match self.ws.next().await {
                    Some(Ok(WsMessage::Close(Some(CloseFrame { code, reason })))) => {
                        return (u16::from(code), reason.to_string());
                    }
                    Some(Ok(WsMessage::Close(None))) => return (1005, String::new()),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => panic!("socket error before the close frame: {e}"),
                    None => panic!("socket ended without a close frame"),
                }
            }
        })
        .await
        .expect("server closes in time")
    }

    fn handle(&mut self, frame: &[u8]) {
        let message = Message::decode_v1(frame).expect("server frames decode");
        match message {
            Message::Sync(SyncMessage::SyncStep1(sv)) => self.server_sv = Some(sv),
            Message::Sync(SyncMessage::SyncStep2(update)) => {
                self.apply(&update);
                self.synced = true;
            }
            Message::Sync(SyncMessage::Update(update)) => {
                if let Ok(decoded) = Update::decode_v1(&update) {
                    for (client, ranges) in decoded.insertions(true).iter() {
                        if let Some(end) = ranges.iter().map(|r| r.end).max() {
                            self.relayed.set_max(*client, end);
                        }
                    }
                }
                self.apply(&update);
                self.last_update = update;
                self.updates_received += 1;
            }
            Message::Awareness(update) => {
                for (client, entry) in update.clients {
                    if entry.json.as_ref() == "null" {
                        self.awareness.remove(&client.get());
                    } else {
                        self.awareness.insert(client.get(), entry.json.to_string());
                    }
                }
            }
            Message::Auth(reason) => self.denied = reason,
            other => panic!("unexpected message from server: {other:?}"),
        }
    }

    fn apply(&mut self, update: &[u8]) {
        let update = Update::decode_v1(update).expect("server updates decode");
        self.doc
            .transact_mut()
            .apply_update(update)
            .expect("server updates apply");
    }

    /// Sends everything the server lacks, as a SyncStep2 relative to `server_sv`.
    pub async fn push_state(&mut self, server_sv: &StateVector) {
        let diff = self.doc.transact().encode_state_as_update_v1(server_sv);
        self.send(Message::Sync(SyncMessage::SyncStep2(diff))).await;
    }

    /// Closes the socket politely.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// An awareness message setting one client's state (any client id, even an invalid one).
/// A v1 update from `client`: the text "taken first" in root `other`, then a string whose
/// parent is the item `parent`. Where that is not a shared type, yrs refuses the update after
/// taking the first string.
pub fn item_inside(client: u64, parent: (u64, u32)) -> Vec<u8> {
    use yrs::encoding::write::Write;
    let mut update = Vec::new();
    update.write_var(1u32);
    update.write_var(2u32);
    update.write_var(client);
    update.write_var(0u32);
    update.write_u8(4); // a string with no origins, in a root named next
    update.write_var(1u32);
    update.write_string("other");
    update.write_string("taken first");
    update.write_u8(4); // a string with no origins, whose parent is an item
    update.write_var(0u32);
    update.write_var(parent.0);
    update.write_var(parent.1);
    update.write_string("x");
    update.write_var(0u32); // no deletions
    update
}

pub fn awareness_frame(client: u64, clock: u32, json: &str) -> Vec<u8> {
    let mut payload = Vec::new();
    payload.write_var(1u32);
    payload.write_var(client);
    payload.write_var(clock);
    payload.write_string(json);
    let mut frame = Vec::new();
    frame.write_var(1u8);
    frame.write_buf(&payload);
    frame
}

/// Runs `node run.mjs <scenario> <args>` in `tests/<suite>` (whose `node_modules` must hold
/// `package`) and returns the JSON line it prints last, failing the test if the scenario failed.
pub async fn node_scenario(
    suite: &str,
    package: &str,
    scenario: &str,
    args: &[&str],
    timeout: Duration,
) -> serde_json::Value {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(suite);
    assert!(
        dir.join("node_modules").join(package).exists(),
        "{package} not installed: run `npm ci` in tests/{suite} (scripts/test does)"
    );
    let timeout_ms = timeout.as_millis().to_string();
    let output = tokio::process::Command::new("node")
        .current_dir(&dir)
        .arg("run.mjs")
        .arg(scenario)
        .args(args)
        .args(["--timeout-ms", &timeout_ms])
        .kill_on_drop(true)
        .output()
        .await
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stdout.lines().last().unwrap_or_default();
    let result: serde_json::Value = serde_json::from_str(last).unwrap_or_else(|_| {
        panic!("{scenario}: no JSON result; stdout: {stdout}; stderr: {stderr}")
    });
    assert!(
        output.status.success() && result["ok"] == true,
        "{scenario} failed: {result}; stderr: {stderr}"
    );
    result
}

/// The JSON body of `response`, which must have `status`.
pub async fn json_of(
    response: reqwest::Response,
    status: reqwest::StatusCode,
) -> serde_json::Value {
    assert_eq!(response.status(), status, "{}", response.url());
    response.json().await.expect("a JSON body")
}

/// A unique document name for a test.
pub fn doc_name(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Sends one HTTP/1.1 request exactly as written (no client normalises its path) and returns
/// the status and the body. `head` holds the request line and any headers, without the blank
/// line; `Content-Length`, `Connection: close` and, unless `head` has one, `Host` are added.
pub async fn raw_http(port: u16, head: &str, body: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let has_host = head
        .lines()
        .skip(1)
        .any(|line| line.to_ascii_lowercase().starts_with("host:"));
    let host = if has_host {
        String::new()
    } else {
        format!("\r\nHost: 127.0.0.1:{port}")
    };
    let mut request = format!(
        "{head}{host}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    stream.write_all(&request).await.expect("send request");
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .expect("response in time")
        .expect("read response");
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    (status, body)
}

/// The value of the metric `name` (a counter or gauge without labels) at the metrics URL `url`.
pub async fn metric_at(url: &str, name: &str) -> Option<f64> {
    let text = reqwest::get(url)
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|value| value.parse().ok())
}

/// A `redis-server` of the test's own, on a free port; stopped when dropped.
pub struct OwnRedis {
    pub port: u16,
    /// Further `redis-server` arguments (`--requirepass`, say).
    args: Vec<String>,
    child: Option<std::process::Child>,
}

impl OwnRedis {
    pub fn start() -> OwnRedis {
        Self::start_with(&[])
    }

    /// Started with further `redis-server` arguments.
    pub fn start_with(args: &[&str]) -> OwnRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let args = args.iter().map(|a| a.to_string()).collect();
        let mut redis = OwnRedis {
            port,
            args,
            child: None,
        };
        redis.restart();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (again) on its port and waits until it answers.
    pub fn restart(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(&self.args)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server starts (Debian's redis-server package)");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server never listened"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}
