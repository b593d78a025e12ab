//! The Hocuspocus protocol (what `@hocuspocus/provider` speaks), without any transport.
//!
//! Every message, both ways, is `varString(document name) varUint(type) body`, so one socket
//! carries many documents. Types 0 (sync), 1 (awareness) and 3 (query awareness) have the same
//! body as y-websocket's messages of the same number, so after the name a Hocuspocus message
//! *is* a y-websocket message, and is checked by the same decoder. The others:
//! - 2 auth: client → server `0 varString(token)`; server → client `1 varString(reason)`
//!   (permission denied) or `2 varString(scope)` (authenticated: `readonly` or `read-write`);
//! - 4 sync reply: a sync message that asks for no SyncStep1 in return (servers send it to each
//!   other; a client's is taken as sync);
//! - 5 stateless: `varString(payload)`; 6 broadcast stateless, the same;
//! - 7 close: client → server, detach this document; server → client `varString(reason)`;
//! - 8 sync status: server → client, `varInt(1)` once an update of the client is stored;
//! - a frame of the single byte 10 is the 4.x provider's answer to an application ping, with
//!   no document name.

use bytes::{BufMut, Bytes, BytesMut};
use yrs::encoding::read::{Cursor, Read};
use yrs::encoding::write::Write;

use super::protocol::{Decoded, FrameError, FrameRules, decode_frame_within};

/// Message types of the Hocuspocus protocol.
pub mod kind {
    pub const SYNC: u64 = 0;
    pub const AWARENESS: u64 = 1;
    pub const AUTH: u64 = 2;
    pub const QUERY_AWARENESS: u64 = 3;
    pub const SYNC_REPLY: u64 = 4;
    pub const STATELESS: u64 = 5;
    pub const BROADCAST_STATELESS: u64 = 6;
    pub const CLOSE: u64 = 7;
    pub const SYNC_STATUS: u64 = 8;
    /// The 4.x provider's application-level pong: a frame of this one byte.
    pub const PONG: u8 = 10;
}

/// Auth sub-types.
mod auth {
    pub(super) const TOKEN: u64 = 0;
    pub(super) const PERMISSION_DENIED: u64 = 1;
    pub(super) const AUTHENTICATED: u64 = 2;
}

/// Longest document name a frame may carry (document ids are far shorter; a longer one is
/// refused as the name of no document without being copied).
const MAX_NAME: usize = 1024;
/// Longest token an auth message may carry.
const MAX_TOKEN: usize = 8 * 1024;

/// What a client's frame carries.
#[derive(Debug)]
pub enum Frame {
    /// A message for one document, by the name the client gave it.
    Doc { name: String, message: DocMessage },
    /// The 4.x provider's pong: nothing to do.
    Pong,
}

/// One message for one document.
#[derive(Debug)]
pub enum DocMessage {
    /// The provider's token for this document (empty when it has none).
    Auth { token: String },
    /// Sync, awareness or query-awareness messages, checked as y-websocket's are.
    Doc(Decoded),
    /// A stateless message (or a request to broadcast one), with its payload's length.
    Stateless { len: usize },
    /// The provider detaches this document.
    Close,
}

/// Why a message for one document was refused: that document's channel is closed with the
/// reason; the socket stays open.
#[derive(Debug)]
pub struct Refused {
    pub name: String,
    pub error: FrameError,
}

/// Why a frame was refused.
#[derive(Debug)]
pub enum FrameRefusal {
    /// The frame cannot be read at all (no document name): the socket is closed.
    Unreadable(String),
    /// It names a document, but its message is bad.
    Message(Refused),
}

/// Decodes one frame from a client, within `rules` for the messages a document channel takes.
pub fn decode(frame: &Bytes, rules: &FrameRules) -> Result<Frame, FrameRefusal> {
    if frame.as_ref() == [kind::PONG] {
        return Ok(Frame::Pong);
    }
    let mut cursor = Cursor::new(frame);
    let name = read_name(&mut cursor).map_err(FrameRefusal::Unreadable)?;
    let refused = |error: FrameError| {
        FrameRefusal::Message(Refused {
            name: name.clone(),
            error,
        })
    };
    let start = cursor.next;
    let tag: u64 = cursor.read_var().map_err(|e| refused(e.into()))?;
    let message = match tag {
        kind::SYNC | kind::AWARENESS | kind::QUERY_AWARENESS => {
            DocMessage::Doc(decode_frame_within(&frame.slice(start..), rules).map_err(refused)?)
        }
        kind::SYNC_REPLY => {
            // The same body as a sync message, under another number.
            let mut body = BytesMut::with_capacity(frame.len() - cursor.next + 1);
            body.put_u8(kind::SYNC as u8);
            body.extend_from_slice(&frame[cursor.next..]);
            DocMessage::Doc(decode_frame_within(&body.freeze(), rules).map_err(refused)?)
        }
        kind::AUTH => {
            let sub: u64 = cursor.read_var().map_err(|e| refused(e.into()))?;
            if sub != auth::TOKEN {
                return Err(refused(FrameError::Malformed(format!(
                    "auth message of type {sub}: a client sends only a token (0)"
                ))));
            }
            let token = cursor
                .read_string()
                .map_err(|e| refused(FrameError::from(e)))?;
            if token.len() > MAX_TOKEN {
                return Err(refused(FrameError::Malformed("token too long".into())));
            }
            // The 4.x provider follows the token with its version; nothing else may follow.
            DocMessage::Auth {
                token: token.to_owned(),
            }
        }
        kind::STATELESS | kind::BROADCAST_STATELESS => {
            let payload = cursor
                .read_string()
                .map_err(|e| refused(FrameError::from(e)))?;
            DocMessage::Stateless { len: payload.len() }
        }
        kind::CLOSE => DocMessage::Close,
        other => return Err(refused(FrameError::Unsupported(other))),
    };
    Ok(Frame::Doc { name, message })
}

fn read_name(cursor: &mut Cursor<'_>) -> Result<String, String> {
    let unreadable = |e: yrs::encoding::read::Error| format!("no document name: {e}");
    let len = cursor.read_var::<u32>().map_err(unreadable)? as usize;
    if len > MAX_NAME {
        return Err(format!("document name longer than {MAX_NAME} bytes"));
    }
    let end = cursor
        .next
        .checked_add(len)
        .filter(|&end| end <= cursor.buf.len())
        .ok_or_else(|| "no document name: message truncated".to_string())?;
    let name = std::str::from_utf8(&cursor.buf[cursor.next..end])
        .map_err(|_| "the document name is not UTF-8".to_string())?
        .to_owned();
    cursor.next = end;
    Ok(name)
}

/// `varString(name)`: what every message for the document starts with.
pub fn name_prefix(name: &str) -> Bytes {
    let mut buf = Vec::with_capacity(name.len() + 5);
    buf.write_string(name);
    Bytes::from(buf)
}

/// A y-websocket-numbered message of the document core, for the document named by `prefix`.
pub fn wrap(prefix: &[u8], message: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(prefix.len() + message.len());
    buf.extend_from_slice(prefix);
    buf.extend_from_slice(message);
    buf
}

fn message(prefix: &[u8], kind: u64, write: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut buf = Vec::with_capacity(prefix.len() + 32);
    buf.extend_from_slice(prefix);
    buf.write_var(kind);
    write(&mut buf);
    buf
}

/// Auth: the token was accepted, with this access.
pub fn authenticated(prefix: &[u8], read_only: bool) -> Vec<u8> {
    message(prefix, kind::AUTH, |buf| {
        buf.write_var(auth::AUTHENTICATED);
        buf.write_string(if read_only { "readonly" } else { "read-write" });
    })
}

/// Auth: the token was refused, and why (the provider's `onAuthenticationFailed` gets it).
pub fn permission_denied(prefix: &[u8], reason: &str) -> Vec<u8> {
    message(prefix, kind::AUTH, |buf| {
        buf.write_var(auth::PERMISSION_DENIED);
        buf.write_string(reason);
    })
}

/// Close: the server ends this document's channel, and why.
pub fn close(prefix: &[u8], reason: &str) -> Vec<u8> {
    message(prefix, kind::CLOSE, |buf| buf.write_string(reason))
}

/// Sync status as the document core makes it, in y-websocket numbering (type 8, then
/// `varInt`: 1 for stored, 0 for refused): a Hocuspocus channel sends it after the name.
pub fn sync_status(stored: bool) -> Bytes {
    Bytes::from_static(if stored { &[8, 1] } else { &[8, 0] })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::protocol::ClientMessage;

    fn frame(name: &str, body: &[u8]) -> Bytes {
        Bytes::from(wrap(&name_prefix(name), body))
    }

    fn doc_message(frame: &Bytes) -> (String, DocMessage) {
        match decode(frame, &FrameRules::UNLIMITED) {
            Ok(Frame::Doc { name, message }) => (name, message),
            other => panic!("not a document message: {other:?}"),
        }
    }

    #[test]
    fn a_message_after_the_name_is_a_y_websocket_message() {
        // The provider's SyncStep1 for an empty document: sync, step 1, an empty state vector.
        let (name, message) = doc_message(&frame("notes", &[0, 0, 1, 0]));
        assert_eq!(name, "notes");
        let DocMessage::Doc(decoded) = message else {
            panic!("not a sync message")
        };
        assert!(matches!(
            decoded.messages[..],
            [ClientMessage::SyncStep1(_)]
        ));
        let (_, query) = doc_message(&frame("notes", &[3]));
        assert!(
            matches!(query, DocMessage::Doc(d) if matches!(d.messages[..], [ClientMessage::AwarenessQuery]))
        );
    }

    #[test]
    fn the_token_stateless_and_close_messages_are_read() {
        let mut auth = vec![2, 0];
        auth.write_string("tok.en");
        let (_, message) = doc_message(&frame("d", &auth));
        assert!(matches!(message, DocMessage::Auth { token } if token == "tok.en"));
        let mut stateless = vec![5];
        stateless.write_string("{\"x\":1}");
        assert!(matches!(
            doc_message(&frame("d", &stateless)).1,
            DocMessage::Stateless { len: 7 }
        ));
        assert!(matches!(
            doc_message(&frame("d", &[7])).1,
            DocMessage::Close
        ));
        assert!(matches!(
            decode(&Bytes::from_static(&[10]), &FrameRules::UNLIMITED),
            Ok(Frame::Pong)
        ));
    }

    #[test]
    fn a_bad_message_names_its_document_and_an_unreadable_frame_names_none() {
        for body in [&[9][..], &[0, 2, 50, 1], &[2, 1], &[0, 7, 0]] {
            match decode(&frame("d", body), &FrameRules::UNLIMITED) {
                Err(FrameRefusal::Message(Refused { name, .. })) => assert_eq!(name, "d"),
                other => panic!("{body:?} gave {other:?}"),
            }
        }
        for bytes in [
            &[][..],
            &[5, b'a'],
            &[2, 0xff, 0xfe],
            &[0xff, 0xff, 0xff, 0xff, 0x7f],
        ] {
            assert!(matches!(
                decode(&Bytes::copy_from_slice(bytes), &FrameRules::UNLIMITED),
                Err(FrameRefusal::Unreadable(_))
            ));
        }
        // A name and nothing else: the message is missing.
        assert!(matches!(
            decode(&frame("d", &[]), &FrameRules::UNLIMITED),
            Err(FrameRefusal::Message(_))
        ));
    }

    #[test]
    fn a_sync_reply_is_taken_as_sync() {
        let (_, message) = doc_message(&frame("d", &[4, 0, 1, 0]));
        assert!(
            matches!(message, DocMessage::Doc(d) if matches!(d.messages[..], [ClientMessage::SyncStep1(_)]))
        );
    }

    #[test]
    fn server_messages_carry_the_name_first() {
        let prefix = name_prefix("d");
        assert_eq!(
            authenticated(&prefix, true),
            [&[1, b'd', 2, 2, 8][..], b"readonly"].concat()
        );
        assert_eq!(
            permission_denied(&prefix, "no"),
            [1, b'd', 2, 1, 2, b'n', b'o']
        );
        assert_eq!(close(&prefix, "x"), [1, b'd', 7, 1, b'x']);
        assert_eq!(wrap(&prefix, &sync_status(true)), [1, b'd', 8, 1]);
    }
}
