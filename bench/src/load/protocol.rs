//! The wire: how a load client frames its messages for the server's protocol (y-websocket or
//! hocuspocus) and what it makes of the server's frames. No sockets here beyond their settings,
//! so the framing is unit-tested on bytes.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use tokio::time::Interval;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use yrs::encoding::read::{Cursor, Read};
use yrs::encoding::write::Write;
use yrs::sync::{Message, SyncMessage};
use yrs::updates::decoder::{Decode, DecoderV1};
use yrs::updates::encoder::{Encode, Encoder, EncoderV1};

use crate::cli::{Args, Protocol};

/// How often a hocuspocus client sends something of its own: the server closes a connection
/// that has sent nothing for its `timeout` (60 s by default), and the stock provider renews its
/// awareness every 15 s. Readers and idle clients would otherwise be closed in long runs.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// Read buffer of each load client's socket. tungstenite's default (128 KiB) is zero-filled on
/// every read, so 10,000 idle clients would hold 1.3 GB; load clients get small frames, and a
/// larger one still arrives whole (the buffer grows to it, in reads of this size). The cold
/// load keeps the default, so its timing of one large SyncStep2 is unchanged.
pub(crate) const CLIENT_READ_BUFFER: usize = 8 * 1024;

/// The hocuspocus framing, as read in `@hocuspocus/server` 4.7.0 (`src/types.ts`
/// `MessageType`, `src/OutgoingMessage.ts`, `src/ClientConnection.ts`) and
/// `@hocuspocus/common` (`src/auth.ts` `AuthMessageType`). A message is
/// `varString(document name) varUint(type) payload`; the payload of Sync (and SyncReply) is a
/// y-protocol sync message, the same bytes as after y-websocket's own `0` tag.
mod hocuspocus {
    pub const SYNC: u32 = 0;
    pub const AUTH: u32 = 2;
    pub const QUERY_AWARENESS: u32 = 3;
    /// A Sync message that must not trigger another SyncStep1 (server to server, but harmless).
    pub const SYNC_REPLY: u32 = 4;
    /// The server closed this document's session; a varString reason follows.
    pub const CLOSE: u32 = 7;
    /// A connection-level ping is this single byte, without a document name (the 4.x provider
    /// answers it with Pong = 10; server 4.7.0 sends none, and tandem-load ignores it).
    pub const PING: u8 = 9;
    /// Auth sub-types: the client sends `Token varString(token) varString(provider version)`;
    /// the server answers `Authenticated varString(scope)` or `PermissionDenied varString(why)`.
    pub const AUTH_TOKEN: u32 = 0;
    pub const AUTH_PERMISSION_DENIED: u32 = 1;
}

/// Appends `s` percent-encoded (unreserved characters and those in `keep` stay as they are).
fn push_encoded(url: &mut String, s: &str, keep: &[u8]) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || keep.contains(&b) {
            url.push(b as char);
        } else {
            url.push_str(&format!("%{b:02X}"));
        }
    }
}

fn doc_url(base: &str, doc: &str, token: Option<&str>) -> String {
    let mut url = format!("{}/", base.trim_end_matches('/'));
    push_encoded(&mut url, doc, b"/");
    if let Some(token) = token {
        url.push_str("?token=");
        push_encoded(&mut url, token, b"");
    }
    url
}

pub(crate) fn ws_config(read_buffer_size: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(None)
        .max_frame_size(None)
        .read_buffer_size(read_buffer_size)
}

/// What a client makes of one frame from the server.
#[derive(Debug)]
pub(crate) enum Incoming {
    Sync(SyncMessage),
    /// Hocuspocus: the server refused the token for this document.
    Denied,
    /// Hocuspocus: the server ended this document's session.
    Closed,
    /// Anything else: awareness, a successful auth, sync status acks, pings, other documents.
    Other,
}

/// One client's way to one document: where to connect and how to frame messages.
#[derive(Clone, Debug)]
pub(crate) struct Endpoint {
    pub(crate) protocol: Protocol,
    /// The WebSocket URL to connect to.
    pub(crate) url: String,
    /// The document name, sent in every hocuspocus message.
    pub(crate) doc: String,
    /// The token of the hocuspocus Auth message (y-websocket sends it in the URL).
    pub(crate) token: Option<String>,
    /// The socket's read buffer size.
    pub(crate) read_buffer: usize,
}

impl Endpoint {
    /// Document `doc` on the server at `--url`.
    pub(crate) fn new(args: &Args, doc: &str) -> Self {
        Self::at(args, &args.url, doc)
    }

    /// Document `doc` on the server whose base URL is `base` (one of several nodes).
    pub(crate) fn at(args: &Args, base: &str, doc: &str) -> Self {
        let url = match args.protocol {
            Protocol::YWebsocket => doc_url(base, doc, args.token.as_deref()),
            Protocol::Hocuspocus => base.to_string(),
        };
        Endpoint {
            protocol: args.protocol,
            url,
            doc: doc.to_string(),
            token: args.token.clone(),
            read_buffer: CLIENT_READ_BUFFER,
        }
    }

    /// One frame: bare for y-websocket, after the document name for hocuspocus.
    fn frame(&self, write: impl FnOnce(&mut EncoderV1)) -> WsMessage {
        let mut enc = EncoderV1::new();
        if self.protocol == Protocol::Hocuspocus {
            enc.write_string(&self.doc);
        }
        write(&mut enc);
        WsMessage::Binary(enc.to_vec().into())
    }

    /// A sync message (y-websocket's message tag 0 and hocuspocus's Sync type are the same).
    pub(crate) fn sync(&self, msg: SyncMessage) -> WsMessage {
        self.frame(|enc| {
            enc.write_var(hocuspocus::SYNC);
            msg.encode(enc);
        })
    }

    /// What a client sends first: hocuspocus handles nothing else for a document before a
    /// token (empty when there is none) has been accepted.
    pub(crate) fn hello(&self) -> Option<WsMessage> {
        (self.protocol == Protocol::Hocuspocus).then(|| {
            self.frame(|enc| {
                enc.write_var(hocuspocus::AUTH);
                enc.write_var(hocuspocus::AUTH_TOKEN);
                enc.write_string(self.token.as_deref().unwrap_or(""));
                enc.write_string(concat!("tandem-load/", env!("CARGO_PKG_VERSION")));
            })
        })
    }

    /// A message that keeps a silent client's connection open, where the protocol needs one:
    /// hocuspocus answers a client's QueryAwareness with nothing and keeps no state for it.
    pub(crate) fn keepalive(&self) -> Option<WsMessage> {
        (self.protocol == Protocol::Hocuspocus)
            .then(|| self.frame(|enc| enc.write_var(hocuspocus::QUERY_AWARENESS)))
    }

    /// Ticks every [`KEEPALIVE`] when the protocol needs keepalives.
    pub(crate) fn keepalive_timer(&self) -> Option<Interval> {
        (self.protocol == Protocol::Hocuspocus).then(|| {
            let mut timer =
                tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE);
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            timer
        })
    }

    /// Decodes a frame from the server. Never panics: a panic inside yrs on hostile input becomes
    /// an error to count, like any malformed frame.
    pub(crate) fn decode(&self, data: &[u8]) -> Result<Incoming, ()> {
        match catch_unwind(AssertUnwindSafe(|| self.decode_frame(data))) {
            Ok(Ok(incoming)) => Ok(incoming),
            _ => Err(()),
        }
    }

    fn decode_frame(&self, data: &[u8]) -> Result<Incoming, yrs::encoding::read::Error> {
        if self.protocol == Protocol::YWebsocket {
            return Ok(match Message::decode_v1(data)? {
                Message::Sync(msg) => Incoming::Sync(msg),
                _ => Incoming::Other,
            });
        }
        if data == [hocuspocus::PING] {
            return Ok(Incoming::Other);
        }
        let mut dec = DecoderV1::new(Cursor::new(data));
        // A session-aware server addresses `name\0session`.
        let ours = dec.read_string()?.split('\0').next() == Some(self.doc.as_str());
        if !ours {
            return Ok(Incoming::Other);
        }
        Ok(match dec.read_var::<u32>()? {
            hocuspocus::SYNC | hocuspocus::SYNC_REPLY => {
                Incoming::Sync(SyncMessage::decode(&mut dec)?)
            }
            hocuspocus::AUTH => {
                if dec.read_var::<u32>()? == hocuspocus::AUTH_PERMISSION_DENIED {
                    Incoming::Denied
                } else {
                    Incoming::Other
                }
            }
            hocuspocus::CLOSE => Incoming::Closed,
            _ => Incoming::Other,
        })
    }
}

/// The error kind of a close frame: `{prefix}close_{code}`.
pub(crate) fn close_kind(prefix: &str, frame: Option<CloseFrame>) -> String {
    match frame {
        Some(f) => format!("{prefix}close_{}", u16::from(f.code)),
        None => format!("{prefix}close"),
    }
}

#[cfg(test)]
mod tests {
    use yrs::StateVector;
    use yrs::encoding::read::Cursor;

    use super::*;

    fn endpoint(protocol: Protocol) -> Endpoint {
        Endpoint {
            protocol,
            url: "ws://127.0.0.1:1/".to_string(),
            doc: "d".to_string(),
            token: Some("t".to_string()),
            read_buffer: CLIENT_READ_BUFFER,
        }
    }

    fn bytes(msg: WsMessage) -> Vec<u8> {
        msg.into_data().to_vec()
    }

    #[test]
    fn y_websocket_frames_are_bare_y_protocol_messages() {
        let sync = SyncMessage::Update(vec![1, 2, 3]);
        let frame = endpoint(Protocol::YWebsocket).sync(sync.clone());
        assert_eq!(bytes(frame), Message::Sync(sync).encode_v1());
        assert!(endpoint(Protocol::YWebsocket).hello().is_none());
        assert!(endpoint(Protocol::YWebsocket).keepalive().is_none());
    }

    #[test]
    fn hocuspocus_frames_start_with_the_document_name_and_type() {
        let hp = endpoint(Protocol::Hocuspocus);
        let step1 = hp.sync(SyncMessage::SyncStep1(StateVector::default()));
        // varString "d", Sync, SyncStep1, varUint8Array(empty state vector).
        assert_eq!(bytes(step1), [1, b'd', 0, 0, 1, 0]);
        assert_eq!(bytes(hp.keepalive().expect("hocuspocus")), [1, b'd', 3]);
        let hello = bytes(hp.hello().expect("hocuspocus"));
        // varString "d", Auth, Token, varString "t", then the provider version.
        assert_eq!(hello[..6], [1, b'd', 2, 0, 1, b't']);
        let mut dec = DecoderV1::new(Cursor::new(&hello[6..]));
        assert!(
            dec.read_string()
                .expect("version")
                .starts_with("tandem-load/")
        );
    }

    #[test]
    fn hocuspocus_messages_are_decoded_by_document_and_type() {
        let hp = endpoint(Protocol::Hocuspocus);
        let step2 = [1, b'd', 0, 1, 2, 0, 0];
        assert!(matches!(
            hp.decode(&step2),
            Ok(Incoming::Sync(SyncMessage::SyncStep2(u))) if u == [0, 0]
        ));
        // SyncReply carries a sync message too; a session-aware address names the document.
        let reply = [3, b'd', 0, b's', 4, 2, 2, 0, 0];
        assert!(matches!(
            hp.decode(&reply),
            Ok(Incoming::Sync(SyncMessage::Update(_)))
        ));
        assert!(matches!(
            hp.decode(&[1, b'e', 0, 1, 2, 0, 0]),
            Ok(Incoming::Other)
        ));
        let denied = [1, b'd', 2, 1, 2, b'n', b'o'];
        assert!(matches!(hp.decode(&denied), Ok(Incoming::Denied)));
        let authenticated = [1, b'd', 2, 2, 1, b'x'];
        assert!(matches!(hp.decode(&authenticated), Ok(Incoming::Other)));
        assert!(matches!(hp.decode(&[1, b'd', 7, 0]), Ok(Incoming::Closed)));
        assert!(matches!(hp.decode(&[1, b'd', 8, 1]), Ok(Incoming::Other)));
        assert!(matches!(hp.decode(&[9]), Ok(Incoming::Other)));
        assert!(hp.decode(&[5, b'd']).is_err());
    }

    #[test]
    fn hostile_frames_are_errors_not_panics() {
        let huge = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        // Length prefixes far beyond the frame, where a string, a buffer or a message is due.
        let cases: [(Protocol, &[u8]); 6] = [
            (Protocol::YWebsocket, &[0, 0]),
            (Protocol::YWebsocket, &[0, 1]),
            (Protocol::YWebsocket, &[0, 2]),
            (Protocol::Hocuspocus, &[]),
            (Protocol::Hocuspocus, &[1, b'd', 0, 2]),
            (Protocol::Hocuspocus, &[1, b'd', 0, 1]),
        ];
        for (protocol, prefix) in cases {
            let frame = [prefix, &huge[..]].concat();
            assert!(endpoint(protocol).decode(&frame).is_err(), "{frame:?}");
        }
    }
}
