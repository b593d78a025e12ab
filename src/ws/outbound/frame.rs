//! Frame encoding for the send queue: binary, control and close frames as a server writes them
//! (unmasked, so one encoding serves every client).

use actix_http::ws::{CloseCode, CloseReason, OpCode, Parser};
use bytes::{Bytes, BytesMut};

/// A close frame's payload is at most 125 bytes, two of them the code.
const MAX_CLOSE_REASON: usize = 123;

/// Encodes a binary WebSocket frame as a server sends it (unmasked). Encode once, send to many.
pub(crate) fn binary_frame(payload: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(payload.len() + 10);
    Parser::write_message(&mut frame, payload, OpCode::Binary, true, false);
    frame.freeze()
}

pub(super) fn control_frame(op: OpCode, payload: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(payload.len() + 2);
    Parser::write_message(&mut frame, payload, op, true, false);
    frame.freeze()
}

pub(super) fn close_frame(code: CloseCode, reason: &str) -> Bytes {
    let mut end = reason.len().min(MAX_CLOSE_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = CloseReason {
        code,
        description: (end > 0).then(|| reason[..end].to_owned()),
    };
    let mut frame = BytesMut::new();
    Parser::write_close(&mut frame, Some(reason), false);
    frame.freeze()
}

/// A ping's encoding never changes.
pub(super) static PING: [u8; 2] = [0x89, 0x00];
