//! Decoding client frames and encoding server frames.
//!
//! A frame holds one or more y-websocket messages (stock clients send exactly one). Everything a
//! client sends is checked here before yrs sees it: client ids must fit in 53 bits, nesting is
//! bounded, and a message cut short is an error rather than the end of the frame.

use std::sync::Arc;

use bytes::Bytes;
use yrs::encoding::read::{Cursor, Read};
use yrs::encoding::write::Write;
use yrs::sync::protocol::{
    MSG_AUTH, MSG_AWARENESS, MSG_QUERY_AWARENESS, MSG_SYNC, MSG_SYNC_STEP_1, MSG_SYNC_STEP_2,
    MSG_SYNC_UPDATE, PERMISSION_DENIED,
};
use yrs::updates::decoder::Decode;
use yrs::{StateVector, Update};

use crate::wire::{self, AwarenessEntry, Invalid};

/// A message from a client, checked and decoded.
#[derive(Debug)]
pub enum ClientMessage {
    /// The client's state vector: it wants what it lacks.
    SyncStep1(StateVector),
    /// Document changes, from a SyncStep2 (answer to our SyncStep1) or an Update message.
    Update(IncomingUpdate),
    /// Presence states the client sets or clears.
    Awareness(Vec<AwarenessEntry>),
    /// The client asks for every presence state we know.
    AwarenessQuery,
    /// An auth message; the server decides access at the upgrade, so this one is ignored.
    Auth,
}

/// A validated document update as received.
#[derive(Debug)]
pub struct IncomingUpdate {
    /// The decoded update, ready to apply.
    pub update: Update,
    /// The raw v1 update bytes: what is stored.
    pub raw: Bytes,
    /// The frame to relay to subscribers: an Update message carrying `raw`. When the client sent
    /// an Update message this is a slice of its own frame, so relaying copies nothing.
    pub relay: Bytes,
    /// How many structs it holds: what the cost of applying it grows with (from `index`).
    pub structs: usize,
    /// The index of `raw`, from the walk that validated it: what nesting, the split into parts
    /// and the writer's merge read instead of the bytes.
    pub index: Arc<wire::Index>,
}

/// Why a frame was refused, and so how the connection is closed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// A message type the server does not speak (close 1003).
    #[error("unsupported message type {0}")]
    Unsupported(u64),
    /// Undecodable, truncated, or unacceptable content (close 1007).
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The frame holds more messages (or presence bytes) than the sender's rate allows now
    /// (close 1008).
    #[error("message rate limit exceeded")]
    RateLimited,
    /// A presence state longer than the limit (close 1009).
    #[error("presence state too large: at most {0} bytes")]
    PresenceTooLarge(usize),
}

impl From<Invalid> for FrameError {
    fn from(e: Invalid) -> Self {
        FrameError::Malformed(e.to_string())
    }
}

impl From<yrs::encoding::read::Error> for FrameError {
    fn from(e: yrs::encoding::read::Error) -> Self {
        FrameError::Malformed(e.to_string())
    }
}

/// Presence bytes that cost one rate token beyond the message's own: presence is relayed to
/// every subscriber, so a sender pays for its size, not only for the message.
pub const PRESENCE_BYTES_PER_TOKEN: usize = 1024;

/// What one frame may carry, decided by the connection before decoding it.
#[derive(Debug, Clone, Copy)]
pub struct FrameRules {
    /// Rate tokens the frame may cost: one per message, and one per
    /// [`PRESENCE_BYTES_PER_TOKEN`] of presence. Decoding stops as soon as it is exceeded.
    pub budget: u64,
    /// Longest presence state (its JSON) a client may set.
    pub max_presence_state: usize,
}

impl FrameRules {
    /// No limits: for frames the server itself made.
    pub const UNLIMITED: FrameRules = FrameRules {
        budget: u64::MAX,
        max_presence_state: usize::MAX,
    };
}

/// The messages of one frame, and the rate tokens they cost.
#[derive(Debug)]
pub struct Decoded {
    pub messages: Vec<ClientMessage>,
    pub cost: u64,
}

/// Decodes every message in a binary frame. All or nothing: one bad message refuses the frame.
pub fn decode_frame(frame: &Bytes) -> Result<Vec<ClientMessage>, FrameError> {
    decode_frame_within(frame, &FrameRules::UNLIMITED).map(|decoded| decoded.messages)
}

/// Decodes every message in a binary frame from a client, within `rules`: a frame that would
/// cost more than its budget is refused before the rest of it is decoded, so the work spent on
/// it is bounded by what the client may send.
pub fn decode_frame_within(frame: &Bytes, rules: &FrameRules) -> Result<Decoded, FrameError> {
    let mut cursor = Cursor::new(frame);
    let mut messages = Vec::with_capacity(1);
    let mut cost: u64 = 0;
    if !cursor.has_content() {
        return Err(FrameError::Malformed("empty frame".into()));
    }
    while cursor.has_content() {
        cost += 1;
        if cost > rules.budget {
            return Err(FrameError::RateLimited);
        }
        let start = cursor.next;
        let tag: u64 = cursor.read_var()?;
        let message = match tag {
            t if t == u64::from(MSG_SYNC) => decode_sync(&mut cursor, frame, start)?,
            t if t == u64::from(MSG_AWARENESS) => {
                let payload = cursor.read_buf()?;
                cost = cost.saturating_add((payload.len() / PRESENCE_BYTES_PER_TOKEN) as u64);
                if cost > rules.budget {
                    return Err(FrameError::RateLimited);
                }
                let entries = wire::parse_awareness_v1(payload)?;
                for entry in &entries {
                    if entry.json.len() > rules.max_presence_state {
                        return Err(FrameError::PresenceTooLarge(rules.max_presence_state));
                    }
                    // Every peer parses these states as JSON: relaying one that does not parse
                    // would break the stock clients of everybody else in the document.
                    if serde_json::from_str::<serde::de::IgnoredAny>(&entry.json).is_err() {
                        return Err(FrameError::Malformed(format!(
                            "awareness state of client {} is not JSON",
                            entry.client
                        )));
                    }
                }
                ClientMessage::Awareness(entries)
            }
            t if t == u64::from(MSG_AUTH) => {
                // Body: a permission varUint and, for a denial, a reason string.
                let permission: u64 = cursor.read_var()?;
                if permission == u64::from(PERMISSION_DENIED) {
                    cursor.read_string()?;
                }
                ClientMessage::Auth
            }
            t if t == u64::from(MSG_QUERY_AWARENESS) => ClientMessage::AwarenessQuery,
            other => return Err(FrameError::Unsupported(other)),
        };
        messages.push(message);
    }
    Ok(Decoded { messages, cost })
}

fn decode_sync(
    cursor: &mut Cursor<'_>,
    frame: &Bytes,
    start: usize,
) -> Result<ClientMessage, FrameError> {
    let kind: u64 = cursor.read_var()?;
    // The payload's position in the frame is needed to relay it without copying.
    let len = usize::try_from(cursor.read_var::<u32>()?).unwrap_or(usize::MAX);
    let payload_start = cursor.next;
    let end = payload_start
        .checked_add(len)
        .filter(|&end| end <= frame.len())
        .ok_or_else(|| FrameError::Malformed("message truncated".into()))?;
    cursor.next = end;
    let payload = &frame[payload_start..end];
    match kind {
        k if k == u64::from(MSG_SYNC_STEP_1) => {
            Ok(ClientMessage::SyncStep1(decode_state_vector(payload)?))
        }
        k if k == u64::from(MSG_SYNC_UPDATE) => {
            let (update, index) = checked_update(payload)?;
            let raw = frame.slice(payload_start..end);
            let relay = frame.slice(start..end);
            Ok(ClientMessage::Update(IncomingUpdate {
                update,
                raw,
                relay,
                structs: index.structs(),
                index,
            }))
        }
        k if k == u64::from(MSG_SYNC_STEP_2) => Ok(ClientMessage::Update(decode_update(
            frame.slice(payload_start..end),
        )?)),
        other => Err(FrameError::Malformed(format!(
            "unknown sync message type {other}"
        ))),
    }
}

/// Checks, indexes and decodes a raw v1 update (from a SyncStep2, from the HTTP API, or cut
/// by yrs from one of those).
pub fn decode_update(raw: Bytes) -> Result<IncomingUpdate, FrameError> {
    let (update, index) = checked_update(&raw)?;
    let relay = encode_update(&raw);
    Ok(IncomingUpdate {
        update,
        raw,
        relay,
        structs: index.structs(),
        index,
    })
}

/// The one walk over an update's bytes ([`wire::Index::parse`]), then yrs's decode.
fn checked_update(payload: &[u8]) -> Result<(Update, Arc<wire::Index>), FrameError> {
    let index = wire::Index::parse(payload)?;
    Ok((Update::decode_v1(payload)?, Arc::new(index)))
}

/// Checks and decodes a v1 state vector.
pub fn decode_state_vector(sv: &[u8]) -> Result<StateVector, FrameError> {
    wire::check_state_vector_v1(sv)?;
    Ok(StateVector::decode_v1(sv)?)
}

/// `[sync, step1, state vector]`: what the server has, so the client sends what it lacks.
pub fn encode_sync_step1(sv: &StateVector) -> Bytes {
    use yrs::updates::encoder::Encode;
    let sv = sv.encode_v1();
    sync_frame(MSG_SYNC_STEP_1, &sv)
}

/// `[sync, step2, update]`: the answer to a client's SyncStep1.
pub fn encode_sync_step2(update: &[u8]) -> Bytes {
    sync_frame(MSG_SYNC_STEP_2, update)
}

/// `[sync, update, update]`: a change relayed to subscribers.
pub fn encode_update(update: &[u8]) -> Bytes {
    sync_frame(MSG_SYNC_UPDATE, update)
}

/// `[awareness, payload]` where the payload is an encoded awareness update.
pub fn encode_awareness(payload: &[u8]) -> Bytes {
    let mut buf = Vec::with_capacity(payload.len() + 6);
    buf.write_var(MSG_AWARENESS);
    buf.write_buf(payload);
    Bytes::from(buf)
}

/// `[auth, permission denied, reason]`: y-websocket's way to tell a client it may not do
/// something; the stock client logs the reason.
/// A query for every presence state (y-websocket message 3).
pub fn encode_awareness_query() -> Bytes {
    Bytes::from_static(&[3])
}

pub fn encode_permission_denied(reason: &str) -> Bytes {
    let mut buf = Vec::with_capacity(reason.len() + 8);
    buf.write_var(MSG_AUTH);
    buf.write_var(PERMISSION_DENIED);
    buf.write_string(reason);
    Bytes::from(buf)
}

fn sync_frame(kind: u8, payload: &[u8]) -> Bytes {
    let mut buf = Vec::with_capacity(payload.len() + 8);
    buf.write_var(MSG_SYNC);
    buf.write_var(kind);
    buf.write_buf(payload);
    Bytes::from(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::updates::encoder::Encode;
    use yrs::{Doc, GetString, ReadTxn, Text, Transact};

    fn update_with_text(s: &str) -> Vec<u8> {
        let doc = Doc::new();
        let text = doc.get_or_insert_text("content");
        let mut txn = doc.transact_mut();
        text.insert(&mut txn, 0, s);
        txn.encode_update_v1()
    }

    #[test]
    fn an_update_message_is_relayed_as_the_same_bytes() {
        let update = update_with_text("hello");
        let frame = encode_update(&update);
        let messages = decode_frame(&frame).expect("valid frame");
        let [ClientMessage::Update(incoming)] = messages.as_slice() else {
            panic!("expected one update, got {messages:?}");
        };
        assert_eq!(incoming.raw.as_ref(), update.as_slice());
        assert_eq!(incoming.relay, frame);
    }

    #[test]
    fn a_sync_step2_is_relayed_as_an_update_message() {
        let update = update_with_text("hi");
        let messages = decode_frame(&encode_sync_step2(&update)).expect("valid frame");
        let [ClientMessage::Update(incoming)] = messages.as_slice() else {
            panic!("expected one update, got {messages:?}");
        };
        assert_eq!(incoming.relay, encode_update(&update));
        let doc = Doc::new();
        let text = doc.get_or_insert_text("content");
        doc.transact_mut()
            .apply_update(Update::decode_v1(&incoming.raw).expect("decodes"))
            .expect("applies");
        assert_eq!(text.get_string(&doc.transact()), "hi");
    }

    #[test]
    fn several_messages_in_one_frame_are_all_decoded() {
        let mut frame = encode_sync_step1(&Doc::new().transact().state_vector()).to_vec();
        frame.extend_from_slice(&[MSG_QUERY_AWARENESS]);
        let messages = decode_frame(&Bytes::from(frame)).expect("valid frame");
        assert!(matches!(
            messages.as_slice(),
            [ClientMessage::SyncStep1(_), ClientMessage::AwarenessQuery]
        ));
    }

    #[test]
    fn a_truncated_message_is_malformed() {
        let frame = encode_update(&update_with_text("truncate me"));
        for len in 1..frame.len() {
            let cut = frame.slice(..len);
            assert!(
                matches!(decode_frame(&cut), Err(FrameError::Malformed(_))),
                "prefix of {len} bytes was accepted"
            );
        }
        assert!(matches!(
            decode_frame(&Bytes::new()),
            Err(FrameError::Malformed(_))
        ));
    }

    /// An awareness message setting client 7's state to `json`.
    fn frame(json: &str) -> Bytes {
        let mut payload = Vec::new();
        payload.write_var(1u32);
        payload.write_var(7u64);
        payload.write_var(1u32);
        payload.write_string(json);
        encode_awareness(&payload)
    }

    #[test]
    fn an_awareness_state_that_is_not_json_is_malformed() {
        assert!(decode_frame(&frame(r#"{"user":{"name":"a"}}"#)).is_ok());
        assert!(decode_frame(&frame("null")).is_ok());
        for bad in ["{", "not json", "", &"[".repeat(10_000)] {
            assert!(
                matches!(decode_frame(&frame(bad)), Err(FrameError::Malformed(_))),
                "{bad:.20} was accepted"
            );
        }
    }

    #[test]
    fn a_frame_costs_a_token_per_message_and_stops_decoding_past_its_budget() {
        let step1 = encode_sync_step1(&StateVector::default());
        let many: Vec<u8> = step1
            .iter()
            .copied()
            .cycle()
            .take(step1.len() * 50)
            .collect();
        let many = Bytes::from(many);
        let rules = |budget| FrameRules {
            budget,
            max_presence_state: 1024,
        };
        let decoded = decode_frame_within(&many, &rules(50)).expect("within budget");
        assert_eq!((decoded.messages.len(), decoded.cost), (50, 50));
        assert_eq!(
            decode_frame_within(&many, &rules(49)).err(),
            Some(FrameError::RateLimited)
        );
    }

    #[test]
    fn presence_costs_by_its_size_and_a_state_has_a_longest_length() {
        let big = format!(
            r#"{{"pad":"{}"}}"#,
            "x".repeat(10 * PRESENCE_BYTES_PER_TOKEN)
        );
        let rules = |budget, max_presence_state| FrameRules {
            budget,
            max_presence_state,
        };
        let decoded = decode_frame_within(&frame(&big), &rules(100, 1 << 20)).expect("fits");
        assert_eq!(decoded.cost, 11);
        assert_eq!(
            decode_frame_within(&frame(&big), &rules(10, 1 << 20)).err(),
            Some(FrameError::RateLimited)
        );
        assert_eq!(
            decode_frame_within(&frame(&big), &rules(100, 4096)).err(),
            Some(FrameError::PresenceTooLarge(4096))
        );
        assert_eq!(
            decode_frame_within(&frame("{}"), &rules(1, 4096))
                .expect("small")
                .cost,
            1
        );
    }

    #[test]
    fn an_unknown_message_type_is_unsupported() {
        assert_eq!(
            decode_frame(&Bytes::from_static(&[7, 1, 2])).err(),
            Some(FrameError::Unsupported(7))
        );
    }

    #[test]
    fn a_client_id_beyond_53_bits_is_malformed() {
        // State vector with one entry: client 2^53, clock 1.
        let mut sv = Vec::new();
        sv.write_var(1u32);
        sv.write_var(1u64 << 53);
        sv.write_var(1u32);
        let frame = sync_frame(MSG_SYNC_STEP_1, &sv);
        assert!(matches!(
            decode_frame(&frame),
            Err(FrameError::Malformed(_))
        ));
        let ok = StateVector::default().encode_v1();
        assert!(decode_frame(&sync_frame(MSG_SYNC_STEP_1, &ok)).is_ok());
    }
}
