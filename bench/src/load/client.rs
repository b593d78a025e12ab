//! One load client's connection: set-up (connect and the initial sync), keepalives, pushing an
//! update and waiting until the server has it, and closing.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::Interval;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use yrs::sync::SyncMessage;
use yrs::updates::encoder::Encode;
use yrs::{Doc, ReadTxn, StateVector, Text, Transact, Update};

use crate::protocol::{Endpoint, Incoming, close_kind, ws_config};
use crate::state::Shared;

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Waits for the next keepalive tick; never, without a timer.
pub(crate) async fn keepalive_due(timer: &mut Option<Interval>) {
    match timer {
        Some(timer) => {
            timer.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Sends the protocol's keepalive, if it has one; false (and a counted error) if that failed.
pub(crate) async fn send_keepalive<S>(sink: &mut S, endpoint: &Endpoint, shared: &Shared) -> bool
where
    S: futures_util::Sink<WsMessage> + Unpin,
{
    let Some(msg) = endpoint.keepalive() else {
        return true;
    };
    if sink.send(msg).await.is_err() {
        shared.error("ws_write");
        return false;
    }
    true
}

/// Connects and performs the initial sync of an empty client: sends SyncStep1 (empty state
/// vector; for hocuspocus an Auth message first), answers the server's SyncStep1 with an empty
/// SyncStep2, and waits for the server's SyncStep2. Returns the socket, the set-up time and the
/// SyncStep2 payload.
pub(crate) async fn connect_and_sync(
    endpoint: &Endpoint,
    timeout: Duration,
    sem: &Semaphore,
) -> Result<(Ws, Duration, Vec<u8>), String> {
    let _permit = sem.acquire().await.map_err(|_| "semaphore".to_string())?;
    let t0 = Instant::now();
    let fut = async {
        let (mut ws, _resp) = tokio_tungstenite::connect_async_with_config(
            &endpoint.url,
            Some(ws_config(endpoint.read_buffer)),
            true,
        )
        .await
        .map_err(|e| match e {
            tokio_tungstenite::tungstenite::Error::Http(resp) => {
                format!("connect_http_{}", resp.status().as_u16())
            }
            tokio_tungstenite::tungstenite::Error::Io(_) => "connect_io".to_string(),
            _ => "connect_other".to_string(),
        })?;
        if let Some(hello) = endpoint.hello() {
            ws.send(hello).await.map_err(|_| "ws_write".to_string())?;
        }
        ws.send(endpoint.sync(SyncMessage::SyncStep1(StateVector::default())))
            .await
            .map_err(|_| "ws_write".to_string())?;
        loop {
            match ws.next().await {
                None => return Err("closed_during_setup".to_string()),
                Some(Err(_)) => return Err("ws_read".to_string()),
                Some(Ok(WsMessage::Binary(data))) => match endpoint.decode(&data) {
                    Ok(Incoming::Sync(SyncMessage::SyncStep1(_))) => {
                        let empty = Update::new().encode_v1();
                        ws.send(endpoint.sync(SyncMessage::SyncStep2(empty)))
                            .await
                            .map_err(|_| "ws_write".to_string())?;
                    }
                    Ok(Incoming::Sync(SyncMessage::SyncStep2(payload))) => {
                        return Ok((ws, t0.elapsed(), payload));
                    }
                    Ok(Incoming::Denied) => return Err("permission_denied".to_string()),
                    Ok(Incoming::Closed) => return Err("close_message".to_string()),
                    Ok(_) => {}
                    Err(()) => return Err("decode".to_string()),
                },
                Some(Ok(WsMessage::Close(frame))) => return Err(close_kind("", frame)),
                Some(Ok(_)) => {}
            }
        }
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err("setup_timeout".to_string()),
    }
}

pub(crate) async fn close(mut ws: Ws) {
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
}

/// About `bytes` bytes of text.
pub(crate) fn filler(bytes: usize) -> String {
    let alphabet = b"abcdefghijklmnopqrstuvwxyz \n";
    (0..bytes)
        .map(|i| alphabet[i % alphabet.len()] as char)
        .collect()
}

/// Sends `update`, then a SyncStep1 with the state after it, and waits for the server's
/// SyncStep2: the server answers in order, so its (small) answer means it has applied the
/// update. Error kinds start with `prefix`.
pub(crate) async fn push_and_confirm(
    ws: &mut Ws,
    endpoint: &Endpoint,
    update: Vec<u8>,
    sv: StateVector,
    timeout: Duration,
    prefix: &str,
) -> Result<(), String> {
    ws.send(endpoint.sync(SyncMessage::Update(update)))
        .await
        .map_err(|_| format!("{prefix}_write"))?;
    ws.send(endpoint.sync(SyncMessage::SyncStep1(sv)))
        .await
        .map_err(|_| format!("{prefix}_write"))?;
    let acked = async {
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(WsMessage::Binary(data)) => match endpoint.decode(&data) {
                    Ok(Incoming::Sync(SyncMessage::SyncStep2(_))) => return Ok(()),
                    Ok(Incoming::Denied) => return Err(format!("{prefix}_permission_denied")),
                    Ok(Incoming::Closed) => return Err(format!("{prefix}_close_message")),
                    _ => {}
                },
                Ok(WsMessage::Close(frame)) => {
                    return Err(close_kind(&format!("{prefix}_"), frame));
                }
                Ok(_) => {}
                Err(_) => return Err(format!("{prefix}_ws_read")),
            }
        }
        Err(format!("{prefix}_eof"))
    };
    tokio::time::timeout(timeout, acked)
        .await
        .unwrap_or_else(|_| Err(format!("{prefix}_not_acknowledged")))
}

/// Inserts about `bytes` bytes of text into `doc` in one update and waits until the server has
/// it. The update is in no writer log, so readers skip its clock range.
pub(crate) async fn fill(
    ws: &mut Ws,
    endpoint: &Endpoint,
    doc: &Doc,
    bytes: usize,
    timeout: Duration,
) -> Result<(), String> {
    let text = doc.get_or_insert_text("content");
    let (update, sv) = {
        let mut txn = doc.transact_mut();
        text.push(&mut txn, &filler(bytes));
        (txn.encode_update_v1(), txn.state_vector())
    };
    push_and_confirm(ws, endpoint, update, sv, timeout, "fill").await
}
