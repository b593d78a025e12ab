//! The document actor's messages (from sessions, routes, the writer and the registry), one
//! struct each with its reply type; the registry's own messages live in `registry.rs`.

use actix::Message;

use super::core::{MemberInfo, SubscriberId};
use super::relay::Peer;
use crate::domain::DocId;
use crate::persist::Durable;
use crate::sync::protocol::{ClientMessage, IncomingUpdate};

pub(crate) use super::core::{DocPresence, Gone};

/// Session → Document: add `peer` as a subscriber. The document greets it with its SyncStep1
/// and the current presence states before it answers.
#[derive(Message)]
#[rtype(result = "Result<(), Gone>")]
pub(crate) struct Subscribe {
    pub subscriber: SubscriberId,
    pub peer: Box<dyn Peer>,
    pub info: MemberInfo,
}

/// Registry → Document, and API → Registry: close the sessions of a document (only those of
/// `user`, if given) with 4403 because access was revoked. Answers how many were closed.
#[derive(Message, Clone)]
#[rtype(result = "usize")]
pub(crate) struct Disconnect {
    pub doc: DocId,
    pub user: Option<String>,
    /// Only sessions whose token was issued at or before this time (epoch ms), and those with
    /// no token: a revocation made on another node, heard after it was made.
    pub issued_before: Option<i64>,
}

/// Session → Document: messages decoded from one frame of a subscriber, in order.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Inbound {
    pub subscriber: SubscriberId,
    pub messages: Vec<ClientMessage>,
}

/// Session → Document: the subscriber is gone.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Unsubscribe {
    pub subscriber: SubscriberId,
}

/// Writer → Document: a commit holds the document's updates up to `up_to_seq` (see
/// [`Durable`]).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Committed(pub Durable);

/// Registry → Document: the document's log reaches this position (other nodes may have
/// appended to it).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct LogHead(pub i64);

/// API → Document: answers once the document holds everything its log held when asked, so that
/// an API call on this node sees every change another node has confirmed.
#[derive(Message)]
#[rtype(result = "Result<(), Gone>")]
pub(crate) struct CatchUp;

/// Registry → Document: another node's subscribers changed presence (an awareness frame, heard
/// on the bus).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct PresenceHeard(pub bytes::Bytes);

/// Registry → Document: another node committed this row of the document's log (heard on the
/// bus).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct LogRowHeard {
    pub position: i64,
    pub data: bytes::Bytes,
}

/// Registry → Document: who is connected now.
#[derive(Message)]
#[rtype(result = "DocPresence")]
pub(crate) struct GetPresence;

/// Registry → Document: the document is being deleted; close every session with 4404 and stop
/// without writing anything.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Evict;

/// API → Document: encode what a peer with state vector `sv` lacks (everything, for an empty
/// one). Answered once everything in the answer is durable.
#[derive(Message)]
#[rtype(result = "Result<Vec<u8>, Gone>")]
pub(crate) struct EncodeState {
    pub sv: yrs::StateVector,
}

/// API → Document: the content as JSON (every root, or the root `key`) or as the plain text of
/// root `key`. Answered once everything in it is durable.
#[derive(Message)]
#[rtype(result = "Result<Result<Vec<u8>, crate::sync::content::ContentError>, Gone>")]
pub(crate) struct ReadContent {
    pub key: Option<String>,
    pub text: bool,
}

/// API → Document: edit the text root `key` (applied as one change); answered once durable.
#[derive(Message)]
#[rtype(result = "Result<(), EditTextError>")]
pub(crate) struct EditText {
    pub key: String,
    pub ops: Vec<crate::sync::text_ops::TextOp>,
}

/// API → Document: the ProseMirror JSON of fragment root `key`. Answered once everything in it
/// is durable.
#[derive(Message)]
#[rtype(result = "Result<Result<Vec<u8>, crate::sync::content::ContentError>, Gone>")]
pub(crate) struct ReadProsemirror {
    pub key: String,
}

/// API → Document: make fragment root `key` hold `nodes` (one change, creating the root if
/// need be); `bytes` is what the request weighed, for the size limit. Answered once durable
/// and relayed; refused as a text edit is.
#[derive(Message)]
#[rtype(result = "Result<(), EditTextError>")]
pub(crate) struct ReplaceFragment {
    pub key: String,
    pub nodes: std::sync::Arc<Vec<crate::sync::prosemirror::XmlNode>>,
    pub bytes: usize,
}

/// Why a text edit was not applied.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EditTextError {
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
pub(crate) struct CreateWith {
    pub update: Vec<u8>,
}

/// Why a document was not created with its content.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CreateError {
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
pub(crate) struct Restore {
    pub target: Vec<u8>,
}

/// Why a restore was not applied.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RestoreFailure {
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

/// API → Document: save the whole current state as a manual version named `name`. The version
/// is written once everything in it is durable, which may take at most `durable_within`; the
/// answer is what the store lists for it.
#[derive(Message)]
#[rtype(result = "Result<crate::store::VersionSummary, SaveVersionError>")]
pub(crate) struct SaveVersion {
    pub name: Option<String>,
    pub durable_within: std::time::Duration,
}

/// Why a manual version was not saved.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SaveVersionError {
    /// The document unloaded before its state was durable; nothing was saved, so asking again is
    /// safe.
    #[error("the document is unloading; try again")]
    Gone,
    /// The state did not become durable within the deadline; no version was saved.
    #[error("the state was not stored in time")]
    NotDurable,
    /// Writing the version failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// API → Document: apply a validated update; answered once it is durable and relayed.
#[derive(Message)]
#[rtype(result = "Result<(), ApplyUpdateError>")]
pub(crate) struct ApplyUpdate {
    pub update: IncomingUpdate,
}

/// Why an API update was not applied.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApplyUpdateError {
    #[error(transparent)]
    Refused(#[from] super::core::IntegrateError),
    /// The document unloaded or failed before the update was durable; try again.
    #[error("the document is unavailable; try again")]
    Gone,
}

/// Registry → Document: close every session with 1001, compact, and stop. Answers once the
/// document's writes are committed.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Shutdown;
