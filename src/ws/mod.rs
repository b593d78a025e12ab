//! The WebSocket transport: everything between a socket and a document.
//!
//! ```text
//! socket ─▶ upgrade ─▶ SessionActor ─▶ DocumentActor (collab)
//!   ▲          (FrameReader: frames in)        │
//!   └──────── Outbound (a bounded queue) ◀─────┘ relay
//! ```
//!
//! `upgrade` checks the handshake and admission (`limits`), `session` decodes and checks each
//! frame and hands its messages to the document, and `outbound` is the connection's one writer:
//! the document's relay queues messages there as a [`crate::collab::relay::Peer`].

pub(crate) mod frames;
pub(crate) mod hocuspocus;
pub(crate) mod limits;
pub(crate) mod outbound;
pub(crate) mod reader;
pub(crate) mod session;
pub(crate) mod upgrade;
