//! The reading half of a WebSocket: frames decoded straight off the socket.
//!
//! Bytes are read into a buffer on the stack and copied out only while a frame is incomplete or
//! not yet handed on, so a connection waiting for its client holds no read buffer at all.
//!
//! Every frame already read is handed on at once, as one batch: a client that sends faster than
//! its document answers gets its frames taken many at a time, not one per round trip.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use actix_codec::Decoder;
use actix_http::ws::{CloseCode, Codec, Frame, Item, ProtocolError};
use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use tokio::net::TcpStream;

/// How much one read takes off the socket.
const READ_CHUNK: usize = 8 * 1024;

/// Frames from a client, in batches of those read so far, as a stream that ends when the client
/// closes the connection. An error ends the stream after the frames read before it.
pub(crate) struct FrameReader {
    socket: Arc<TcpStream>,
    codec: Codec,
    /// Bytes read and not yet decoded into a frame: empty, without an allocation, between frames.
    buffer: BytesMut,
    eof: bool,
    /// An error met after some frames of a batch: reported with the next poll.
    failed: Option<ProtocolError>,
}

impl FrameReader {
    /// Reads frames of at most `max_frame_size` bytes from `socket`, starting with `pending`
    /// (whatever arrived with the handshake).
    pub(crate) fn new(socket: Arc<TcpStream>, pending: BytesMut, max_frame_size: usize) -> Self {
        Self {
            socket,
            codec: Codec::new().max_size(max_frame_size),
            buffer: pending,
            eof: false,
            failed: None,
        }
    }

    fn decode(&mut self) -> Option<Result<Frame, ProtocolError>> {
        if self.buffer.is_empty() {
            return None;
        }
        let decoded = self.codec.decode(&mut self.buffer).transpose();
        if self.buffer.is_empty() {
            // Frames decoded so far keep their part of the allocation; drop the rest.
            self.buffer = BytesMut::new();
        }
        decoded
    }
}

impl Stream for FrameReader {
    type Item = Result<Vec<Frame>, ProtocolError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(error) = this.failed.take() {
                return Poll::Ready(Some(Err(error)));
            }
            let mut frames = Vec::new();
            while !this.eof {
                match this.decode() {
                    Some(Ok(frame)) => frames.push(frame),
                    Some(Err(error)) => {
                        // The codec's state is unknown after an error: nothing more is read.
                        this.eof = true;
                        this.buffer = BytesMut::new();
                        if frames.is_empty() {
                            return Poll::Ready(Some(Err(error)));
                        }
                        this.failed = Some(error);
                    }
                    None => break,
                }
            }
            if !frames.is_empty() {
                return Poll::Ready(Some(Ok(frames)));
            }
            if this.eof {
                return Poll::Ready(None);
            }
            match this.socket.poll_read_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => {
                    this.eof = true;
                    return Poll::Ready(Some(Err(ProtocolError::Io(e))));
                }
                Poll::Ready(Ok(())) => {}
            }
            let mut chunk = [0u8; READ_CHUNK];
            match this.socket.try_read(&mut chunk) {
                Ok(0) => {
                    this.eof = true;
                    if !this.buffer.is_empty() {
                        return Poll::Ready(Some(Err(ProtocolError::Io(
                            io::ErrorKind::UnexpectedEof.into(),
                        ))));
                    }
                }
                Ok(n) => this.buffer.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    this.eof = true;
                    return Poll::Ready(Some(Err(ProtocolError::Io(e))));
                }
            }
        }
    }
}

/// Why a client's frames were refused, as the close code and reason to answer with.
pub(crate) type Refusal = (actix_http::ws::CloseCode, &'static str);

/// Gathers a binary message that arrives in continuation frames, within the size limit.
#[derive(Debug, Default)]
pub(crate) struct Reassembly {
    partial: Option<BytesMut>,
    max_message_size: usize,
}

impl Reassembly {
    pub(crate) fn new(max_message_size: usize) -> Self {
        Self {
            partial: None,
            max_message_size,
        }
    }

    /// A whole binary frame: refused while a fragmented message is unfinished.
    pub(crate) fn whole(&self) -> Result<(), Refusal> {
        match self.partial {
            Some(_) => Err((CloseCode::Protocol, "unfinished fragmented message")),
            None => Ok(()),
        }
    }

    /// One continuation frame: the whole message once its last frame is in.
    pub(crate) fn push(&mut self, item: Item) -> Result<Option<Bytes>, Refusal> {
        let (chunk, last) = match item {
            Item::FirstText(_) => {
                return Err((CloseCode::Unsupported, "text messages are not supported"));
            }
            Item::FirstBinary(chunk) => {
                self.whole()?;
                self.partial = Some(BytesMut::new());
                (chunk, false)
            }
            Item::Continue(chunk) => (chunk, false),
            Item::Last(chunk) => (chunk, true),
        };
        let Some(partial) = self.partial.as_mut() else {
            return Err((CloseCode::Protocol, "continuation without a first frame"));
        };
        if partial.len() + chunk.len() > self.max_message_size {
            return Err((CloseCode::Size, "message too big"));
        }
        partial.extend_from_slice(&chunk);
        Ok(if last {
            self.partial.take().map(BytesMut::freeze)
        } else {
            None
        })
    }
}
