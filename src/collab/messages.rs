//! Messages between the actors, one struct each.

use actix::{Addr, Message};

use super::document::DocumentActor;
use super::outbound::Outbound;
use crate::domain::DocId;
use crate::persist::{Durable, DurableSink};
use crate::sync::protocol::{ClientMessage, IncomingUpdate};

/// Identifies one WebSocket connection for the lifetime of the process.
pub type SessionId = u64;

/// Session → Registry: give me the actor of this document, loading it if needed.
#[derive(Message)]
#[rtype(result = "Result<Addr<DocumentActor>, JoinError>")]
pub struct Join {
    pub doc: DocId,
}

/// Why a session could not get a document.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JoinError {
    /// The store could not load it; nothing was created in its place.
    #[error("the document could not be loaded from the store")]
    LoadFailed,
    /// The server is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// Session → Document: add me as a subscriber. The document sends its SyncStep1 and the current
/// presence states through `outbound` before it answers.
#[derive(Message)]
#[rtype(result = "Result<(), Gone>")]
pub struct Subscribe {
    pub session: SessionId,
    pub outbound: Outbound,
    /// False for read-only connections: their document changes are dropped.
    pub can_write: bool,
    /// The user named by the connection's token, matched by revocations.
    pub user: Option<String>,
    /// Where the connection comes from, for the logs.
    pub client_ip: Option<std::net::IpAddr>,
}

/// Registry → Document, and API → Registry: close the sessions of a document (only those of
/// `user`, if given) with 4403 because access was revoked. Answers how many were closed.
#[derive(Message, Clone)]
#[rtype(result = "usize")]
pub struct Disconnect {
    pub doc: DocId,
    pub user: Option<String>,
}

/// The document actor is unloading; ask the registry again.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the document is unloading")]
pub struct Gone;

/// Session → Document: messages decoded from one client frame, in order.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Inbound {
    pub session: SessionId,
    pub messages: Vec<ClientMessage>,
}

/// Session → Document: the connection is gone.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unsubscribe {
    pub session: SessionId,
}

/// Writer → Document: a commit holds the document's updates up to `up_to_seq` (see
/// [`Durable`]), delivered through [`NotifyDocument`].
#[derive(Message)]
#[rtype(result = "()")]
pub struct Committed(pub Durable);

/// How the writer tells a document actor what became durable: each notice becomes a
/// [`Committed`] message in its mailbox, so it is handled in order with everything else.
pub struct NotifyDocument(pub Addr<DocumentActor>);

impl DurableSink for NotifyDocument {
    fn durable(&self, notice: Durable) {
        self.0.do_send(Committed(notice));
    }
}

/// Registry → Document: who is connected now.
#[derive(Message)]
#[rtype(result = "DocPresence")]
pub struct GetPresence;

/// Connected clients of a document and the names they go by.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DocPresence {
    pub clients: usize,
    pub people: Vec<String>,
}

/// Anyone → Registry: who is connected to each of these documents (absent when nobody is).
#[derive(Message)]
#[rtype(result = "std::collections::HashMap<DocId, DocPresence>")]
pub struct PresenceOf {
    pub docs: Vec<DocId>,
}

/// Registry → Document: the document is being deleted; close every session with 4404 and stop
/// without writing anything.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Evict;

/// Anyone → Registry: delete a document, closing its sessions first. Answers whether there was
/// anything to delete.
#[derive(Message)]
#[rtype(result = "Result<bool, crate::store::StoreError>")]
pub struct DeleteDoc {
    pub doc: DocId,
}

/// API → Document: encode what a peer with state vector `sv` lacks (everything, for an empty
/// one). Answered once everything in the answer is durable.
#[derive(Message)]
#[rtype(result = "Result<Vec<u8>, Gone>")]
pub struct EncodeState {
    pub sv: yrs::StateVector,
}

/// API → Document: the content as JSON (every root, or the root `key`) or as the plain text of
/// root `key`. Answered once everything in it is durable.
#[derive(Message)]
#[rtype(result = "Result<Result<Vec<u8>, crate::sync::content::ContentError>, Gone>")]
pub struct ReadContent {
    pub key: Option<String>,
    pub text: bool,
}

/// API → Document: edit the text root `key` (applied as one change); answered once durable.
#[derive(Message)]
#[rtype(result = "Result<(), EditTextError>")]
pub struct EditText {
    pub key: String,
    pub ops: Vec<crate::sync::text_ops::TextOp>,
}

/// Why a text edit was not applied.
#[derive(Debug, thiserror::Error)]
pub enum EditTextError {
    #[error(transparent)]
    Content(#[from] crate::sync::content::ContentError),
    #[error(transparent)]
    Ops(#[from] crate::sync::text_ops::TextOpError),
    /// The document was unloading; nothing was applied, so asking again is safe.
    #[error("the document is unloading; try again")]
    Gone,
    /// The edit could grow the document beyond its size limit (in bytes); nothing was applied.
    #[error("the edit would grow the document beyond its limit of {0} bytes")]
    TooLarge(usize),
    /// The edit was applied, but the document failed before it was confirmed durable.
    #[error("the edit may not have been stored")]
    Unconfirmed,
}

/// API → Document: bring the document into existence in the store with `update` (a v1 update
/// of an empty document) as its content, in one transaction, then hold it. Answered once that
/// is committed, with what the store now lists.
#[derive(Message)]
#[rtype(result = "Result<crate::store::DocSummary, CreateError>")]
pub struct CreateWith {
    pub update: Vec<u8>,
}

/// Why a document was not created with its content.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The store holds the document already, or it is being written: nothing was changed.
    #[error("the document exists")]
    AlreadyExists,
    /// The content alone is larger than the size limit (in bytes): nothing was created.
    #[error("the text would make the document larger than its limit of {0} bytes")]
    TooLarge(usize),
    /// The document was unloading; nothing was created, so asking again is safe.
    #[error("the document is unloading; try again")]
    Gone,
    /// The store failed or did not answer in time; the document may or may not exist now. The
    /// in-memory copy was dropped, so the next use reads whichever it is.
    #[error("the store failed while creating the document: {0}")]
    Unconfirmed(String),
}

/// API → Document: make the content equal to `target` (a full v1 state) through new
/// operations; answered once they are durable and relayed.
#[derive(Message)]
#[rtype(result = "Result<(), RestoreFailure>")]
pub struct Restore {
    pub target: Vec<u8>,
}

/// Why a restore was not applied.
#[derive(Debug, thiserror::Error)]
pub enum RestoreFailure {
    #[error(transparent)]
    Refused(#[from] crate::sync::restore::RestoreError),
    #[error("the saved version does not decode")]
    Corrupt,
    /// The document was unloading; nothing was applied, so asking again is safe.
    #[error("the document is unloading; try again")]
    Gone,
    /// The restore could grow the document beyond its size limit (in bytes); nothing changed.
    #[error("restoring would grow the document beyond its limit of {0} bytes")]
    TooLarge(usize),
    /// Applied, but the document failed before it was confirmed durable.
    #[error("the restore may not have been stored")]
    Unconfirmed,
}

/// API → Document: apply a validated update; answered once it is durable and relayed.
#[derive(Message)]
#[rtype(result = "Result<(), ApplyUpdateError>")]
pub struct ApplyUpdate {
    pub update: IncomingUpdate,
}

/// Why an API update was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyUpdateError {
    #[error(transparent)]
    Refused(#[from] super::document::IntegrateError),
    /// The document unloaded or failed before the update was durable; try again.
    #[error("the document is unavailable; try again")]
    Gone,
}

/// Metrics → Registry: how many documents are loaded now.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct LoadedCount;

/// Document → Registry: I am unloading (idle, or stopped after a failure); forget me.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unloaded {
    pub doc: DocId,
    pub addr: Addr<DocumentActor>,
}

/// Registry → Document: close every session with 1001, compact, and stop. Answers once the
/// document's writes are committed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// Application → Registry: refuse new joins and shut every document down; answers once all are
/// flushed and compacted.
/// Answers the documents that did not finish within `deadline`, which shutdown skips.
#[derive(Message)]
#[rtype(result = "Vec<DocId>")]
pub struct ShutdownAll {
    pub deadline: std::time::Duration,
}
