//! The cold load: the time a new client takes to receive a large document, measured once
//! before the run on a document of its own.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use yrs::updates::decoder::Decode;
use yrs::{ClientID, Doc, ReadTxn, Text, Transact, Update};

use crate::cli::Args;
use crate::client::{close, connect_and_sync, filler, push_and_confirm};
use crate::protocol::Endpoint;

/// Longest wait for the server to confirm the cold-load document.
const COLD_ACK_TIMEOUT: Duration = Duration::from_secs(120);

/// Builds a document of about `bytes` bytes of text in one update, then times a new client's
/// connect → SyncStep2. Returns (milliseconds, SyncStep2 size in bytes).
pub(crate) async fn cold_load(
    args: &Args,
    doc_name: &str,
    client: u64,
    sem: &Semaphore,
) -> Result<(f64, usize), String> {
    let endpoint = Endpoint {
        read_buffer: WebSocketConfig::default().read_buffer_size,
        ..Endpoint::new(args, doc_name)
    };
    let (mut ws, _, _) = connect_and_sync(&endpoint, args.setup_timeout, sem).await?;
    let doc = Doc::with_client_id(client);
    let client = ClientID::new(client);
    let text = doc.get_or_insert_text("content");
    let (bytes, clock, sv) = {
        let mut txn = doc.transact_mut();
        text.push(&mut txn, &filler(args.cold_load_bytes.unwrap_or(0)));
        let bytes = txn.encode_update_v1();
        let sv = txn.state_vector();
        let clock = sv.get(&client);
        (bytes, clock, sv)
    };
    let contains = |payload: &[u8]| {
        catch_unwind(AssertUnwindSafe(|| {
            Update::decode_v1(payload).is_ok_and(|u| u.state_vector().get(&client) >= clock)
        }))
        .unwrap_or(false)
    };
    // Ask for what we lack (nothing) after the update: the answer acknowledges it. The loader
    // below checks the content.
    let acked = push_and_confirm(&mut ws, &endpoint, bytes, sv, COLD_ACK_TIMEOUT, "cold").await;
    close(ws).await;
    acked?;
    tokio::time::sleep(args.cold_wait).await;
    let (ws, elapsed, payload) = connect_and_sync(&endpoint, args.setup_timeout, sem).await?;
    close(ws).await;
    if !contains(&payload) {
        return Err("cold_load_incomplete".to_string());
    }
    Ok((elapsed.as_secs_f64() * 1e3, payload.len()))
}
