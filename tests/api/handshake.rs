//! The WebSocket handshake on the wire, byte by byte: what a stock client library never sends
//! (a body, another path, frames in the same packet as the request) is still answered properly.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{Backend, TestApp, TestDb, doc_name};

const WAIT: Duration = Duration::from_secs(10);
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn handshake(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n{extra}\r\n"
    )
}

/// Sends `bytes` and reads everything until the server closes the connection.
async fn exchange(app: &TestApp, bytes: &[u8]) -> String {
    let mut socket = TcpStream::connect(("127.0.0.1", app.port))
        .await
        .expect("connect");
    socket.write_all(bytes).await.expect("request sent");
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, socket.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection")
        .expect("read");
    String::from_utf8_lossy(&answer).into_owned()
}

/// A client frame: binary, final, masked.
fn masked_binary(payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x82, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// Reads one unmasked server frame: (opcode, payload).
async fn read_frame(socket: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 2];
    socket.read_exact(&mut head).await.expect("frame head");
    let len = match head[1] & 0x7f {
        126 => u64::from(socket.read_u16().await.expect("length")),
        127 => socket.read_u64().await.expect("length"),
        n => u64::from(n),
    };
    let mut payload = vec![0; usize::try_from(len).expect("length")];
    socket.read_exact(&mut payload).await.expect("payload");
    (head[0] & 0x0f, payload)
}

#[actix_web::test]
async fn a_handshake_with_a_body_is_refused_with_problem_json() {
    let db = TestDb::new(Backend::Sqlite).await;
    let app = TestApp::spawn(db.settings()).await;
    let request = handshake(
        &format!("/ws/{}", doc_name("chunked")),
        "Transfer-Encoding: chunked\r\n",
    ) + "0\r\n\r\n";
    let answer = exchange(&app, request.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains("/problems/not-a-websocket-request"),
        "{answer}"
    );
    app.stop().await;
}

#[actix_web::test]
async fn an_upgrade_to_another_path_gets_that_paths_answer_and_the_connection_closes() {
    let db = TestDb::new(Backend::Sqlite).await;
    let app = TestApp::spawn(db.settings()).await;
    let answer = exchange(&app, handshake("/healthz", "").as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    let answer = exchange(&app, handshake("/no/such/page", "").as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    app.stop().await;
}

#[actix_web::test]
async fn frames_sent_in_the_same_packet_as_the_handshake_are_read() {
    let db = TestDb::new(Backend::Sqlite).await;
    let app = TestApp::spawn(db.settings()).await;
    let name = doc_name("pipelined");
    let mut writer = app.connect(&name).await;
    writer.append("already here").await;
    writer.recv_echo().await;
    // SyncStep1 with an empty state vector, right behind the request.
    let mut bytes = handshake(&format!("/ws/{name}"), "").into_bytes();
    bytes.extend(masked_binary(&[0, 0, 1, 0]));
    let mut socket = TcpStream::connect(("127.0.0.1", app.port))
        .await
        .expect("connect");
    socket.write_all(&bytes).await.expect("sent");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = tokio::time::timeout(WAIT, socket.read_u8())
            .await
            .expect("101 in time")
            .expect("read");
        head.push(byte);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{head:?}");
    let step2 = tokio::time::timeout(WAIT, async {
        loop {
            let (opcode, payload) = read_frame(&mut socket).await;
            if opcode == 2 && payload.starts_with(&[0, 1]) {
                return payload;
            }
        }
    })
    .await
    .expect("the server answers the pipelined SyncStep1");
    let text = "already here".as_bytes();
    assert!(
        step2.windows(text.len()).any(|w| w == text),
        "SyncStep2 carries the document: {step2:?}"
    );
    app.stop().await;
}
