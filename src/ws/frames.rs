//! What every WebSocket session does with the frames it reads, whatever protocol it speaks:
//! binary messages (whole, or gathered from continuation frames) go to the session, pings are
//! answered, and text, protocol errors and the client's close end the connection.

use actix::prelude::*;
use actix_http::ws::{CloseCode, Frame, ProtocolError};
use bytes::Bytes;

use super::outbound::Outbound;
use super::reader::Reassembly;

/// A session reading frames from its socket.
pub(crate) trait FrameSession: Actor<Context = Context<Self>> {
    /// What a text frame is answered with (1003).
    const TEXT_REFUSAL: &'static str;

    fn outbound(&self) -> &Outbound;
    fn reassembly(&mut self) -> &mut Reassembly;
    fn span(&self) -> &tracing::Span;
    /// Closes the connection with a code and a reason, and stops.
    fn close(&mut self, ctx: &mut Context<Self>, code: CloseCode, reason: String);
    /// One whole binary message.
    fn message(&mut self, message: Bytes, ctx: &mut Context<Self>);
    /// Hands on what the frames read in one batch carried.
    fn forward(&mut self, ctx: &mut Context<Self>);
}

/// Handles the frames read together, in order, then has the session hand on their messages.
pub(crate) fn handle_batch<S: FrameSession>(
    session: &mut S,
    item: Result<Vec<Frame>, ProtocolError>,
    ctx: &mut Context<S>,
) {
    session.outbound().heard();
    match item {
        Ok(frames) => {
            for frame in frames {
                if !ctx.state().alive() {
                    break;
                }
                handle_one(session, frame, ctx);
            }
        }
        Err(ProtocolError::Overflow) => {
            session.close(ctx, CloseCode::Size, "message too big".into())
        }
        Err(ProtocolError::Io(_)) => ctx.stop(),
        Err(error) => session.close(ctx, CloseCode::Protocol, error.to_string()),
    }
    session.forward(ctx);
}

fn handle_one<S: FrameSession>(session: &mut S, frame: Frame, ctx: &mut Context<S>) {
    let gathered = match frame {
        Frame::Binary(frame) => session.reassembly().whole().map(|()| Some(frame)),
        Frame::Continuation(item) => session.reassembly().push(item),
        Frame::Text(_) => Err((CloseCode::Unsupported, S::TEXT_REFUSAL)),
        Frame::Ping(payload) => {
            session.outbound().pong(&payload);
            Ok(None)
        }
        Frame::Pong(_) => Ok(None),
        Frame::Close(reason) => {
            tracing::debug!(parent: session.span(), ?reason, "client closed");
            session.outbound().close(CloseCode::Normal, "bye");
            ctx.stop();
            Ok(None)
        }
    };
    match gathered {
        Ok(Some(message)) => session.message(message, ctx),
        Ok(None) => {}
        Err((code, reason)) => session.close(ctx, code, reason.into()),
    }
}
