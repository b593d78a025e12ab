//! How a route calls a document: [`DocClient`] owns everything around a request to a document's
//! actor, so that routes only build the request and answer with `?`.
//!
//! One call loads the actor if need be (a load failure or a shutdown is a 503), sends the
//! request, and waits at most [`DURABLE_DEADLINE`] for an answer that waits on the store (past
//! it the store counts as down, with a 503 that says what became of the request). A request
//! that raced with the document unloading did nothing, so it is built again and sent to the
//! reloaded actor, at most [`ATTEMPTS`] times. Every other refusal is answered through the
//! `From` impls in `error.rs`.

use std::time::Duration;

use actix::{Addr, Handler, MailboxError, Message};

use crate::collab::document::{DocumentActor, IntegrateError};
use crate::collab::messages::{
    ApplyUpdate, ApplyUpdateError, CatchUp, CreateError, CreateWith, EditText, EditTextError,
    EncodeState, Gone, ReadContent, ReadProsemirror, ReplaceFragment, Restore, RestoreFailure,
    SaveVersion, SaveVersionError,
};
use crate::collab::registry::Join;
use crate::domain::DocId;
use crate::error::ApiError;
use crate::state::AppState;

/// A request races with the document unloading at most this many times before giving up.
const ATTEMPTS: usize = 3;

/// How long an API call waits for what it read or changed to be durable; beyond it the store
/// counts as down and the caller gets 503.
pub(crate) const DURABLE_DEADLINE: Duration = Duration::from_secs(10);

/// A request a route makes of a document.
pub(crate) trait DocCall {
    /// What became of the request when its answer is not durable within [`DURABLE_DEADLINE`],
    /// for the 503. `None` for a request whose handler bounds its own wait on the store.
    const NOT_DURABLE: Option<&'static str>;
    /// Whether the document first catches up with what other nodes confirmed (see
    /// [`CatchUp`]): what the request reads or where it edits depends on the current state.
    const CATCH_UP: bool = true;
}

impl DocCall for EncodeState {
    const NOT_DURABLE: Option<&'static str> = Some("nothing was changed");
}

impl DocCall for ReadContent {
    const NOT_DURABLE: Option<&'static str> = Some("nothing was changed");
}

/// A CRDT update means the same whatever the document holds.
impl DocCall for ApplyUpdate {
    const CATCH_UP: bool = false;
    const NOT_DURABLE: Option<&'static str> = Some(
        "the update is applied and will be stored when the store is back; \
         posting it again is harmless",
    );
}

impl DocCall for ReadProsemirror {
    const NOT_DURABLE: Option<&'static str> = Some("nothing was changed");
}

impl DocCall for ReplaceFragment {
    const NOT_DURABLE: Option<&'static str> = Some(
        "the new content is applied and will be stored when the store is back; \
         writing it again changes nothing more",
    );
}

impl DocCall for EditText {
    const NOT_DURABLE: Option<&'static str> = Some(
        "the edit is applied and will be stored when the store is back; \
         do not send it again",
    );
}

impl DocCall for Restore {
    const NOT_DURABLE: Option<&'static str> = Some(
        "the restore is applied and will be stored when the store is back; \
         read the document before retrying",
    );
}

/// The document bounds the store's transaction itself (and answers why it failed); the store
/// tells whether another node created it first.
impl DocCall for CreateWith {
    const CATCH_UP: bool = false;
    const NOT_DURABLE: Option<&'static str> = None;
}

/// The document bounds its wait with `durable_within`, so that "no version was saved" stays
/// true: the version is written only after the wait.
impl DocCall for SaveVersion {
    const NOT_DURABLE: Option<&'static str> = None;
}

/// How a document's refusal reads for the client.
pub(crate) trait Refusal: Sized {
    /// Nothing was done because the document was unloading: the request may be sent again.
    fn is_gone(&self) -> bool;
    /// What it means for this request that the actor stopped before answering.
    fn stopped() -> Self;
    /// The answer to the caller about document `doc`.
    fn answer(self, doc: &DocId) -> ApiError;
}

impl Refusal for Gone {
    fn is_gone(&self) -> bool {
        true
    }
    fn stopped() -> Self {
        Gone
    }
    fn answer(self, _: &DocId) -> ApiError {
        self.into()
    }
}

impl Refusal for ApplyUpdateError {
    fn is_gone(&self) -> bool {
        // A document that failed while applying is reloaded; applying again is harmless.
        matches!(
            self,
            ApplyUpdateError::Gone | ApplyUpdateError::Refused(IntegrateError::Failed)
        )
    }
    fn stopped() -> Self {
        ApplyUpdateError::Gone
    }
    fn answer(self, _: &DocId) -> ApiError {
        self.into()
    }
}

impl Refusal for EditTextError {
    fn is_gone(&self) -> bool {
        matches!(self, EditTextError::Gone)
    }
    /// The edit may have been applied, and applying it twice would duplicate it.
    fn stopped() -> Self {
        EditTextError::Unconfirmed
    }
    fn answer(self, _: &DocId) -> ApiError {
        self.into()
    }
}

impl Refusal for RestoreFailure {
    fn is_gone(&self) -> bool {
        matches!(self, RestoreFailure::Gone)
    }
    /// The restore may have been applied: the caller reads the document before retrying.
    fn stopped() -> Self {
        RestoreFailure::Unconfirmed
    }
    fn answer(self, _: &DocId) -> ApiError {
        self.into()
    }
}

impl Refusal for CreateError {
    fn is_gone(&self) -> bool {
        matches!(self, CreateError::Gone)
    }
    /// The actor stops before it starts the transaction, or answers after it.
    fn stopped() -> Self {
        CreateError::Gone
    }
    /// Through the client rather than `From`: the answer names the document, which
    /// `CreateError` does not carry.
    fn answer(self, doc: &DocId) -> ApiError {
        match self {
            CreateError::AlreadyExists => ApiError::AlreadyExists(doc.to_string()),
            error @ CreateError::TooLarge(_) => ApiError::DocumentTooLarge(error.to_string()),
            CreateError::Unconfirmed(why) => {
                tracing::warn!(doc = %doc, error = %why, "creating a document failed");
                ApiError::Unavailable(
                    "the store failed while creating the document; read it before retrying".into(),
                )
            }
            CreateError::Gone => Gone.into(),
        }
    }
}

impl Refusal for SaveVersionError {
    fn is_gone(&self) -> bool {
        matches!(self, SaveVersionError::Gone)
    }
    /// The version is written by a task of its own, which stops with the actor only before the
    /// state was durable.
    fn stopped() -> Self {
        SaveVersionError::Gone
    }
    fn answer(self, _: &DocId) -> ApiError {
        self.into()
    }
}

/// Calls one document on behalf of a route.
pub(crate) struct DocClient<'a> {
    state: &'a AppState,
    id: &'a DocId,
}

impl<'a> DocClient<'a> {
    /// A client of `id`, which the store may not hold yet (to create it).
    pub(crate) fn new(state: &'a AppState, id: &'a DocId) -> Self {
        Self { state, id }
    }

    /// A client of `id`, which the store must hold: 404 otherwise. Without this check a call
    /// would load an empty document under any name.
    pub(crate) async fn existing(state: &'a AppState, id: &'a DocId) -> Result<Self, ApiError> {
        let found = state.store.get(id).await.map_err(|error| {
            tracing::warn!(%error, doc = %id, "the store did not answer");
            ApiError::store_down("nothing was changed")
        })?;
        match found {
            Some(_) => Ok(Self::new(state, id)),
            None => Err(ApiError::NotFound(id.to_string())),
        }
    }

    /// Sends the request `build` makes, again for each attempt, and answers what the document
    /// answered.
    pub(crate) async fn call<M, T, E>(&self, mut build: impl FnMut() -> M) -> Result<T, ApiError>
    where
        M: DocCall + Message<Result = Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: Refusal + Send + 'static,
        DocumentActor: Handler<M>,
    {
        self.try_call(|| Ok(build())).await
    }

    /// [`call`](Self::call) for a request that may fail to build (its error is the answer).
    pub(crate) async fn try_call<M, T, E>(
        &self,
        mut build: impl FnMut() -> Result<M, ApiError>,
    ) -> Result<T, ApiError>
    where
        M: DocCall + Message<Result = Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: Refusal + Send + 'static,
        DocumentActor: Handler<M>,
    {
        for _ in 0..ATTEMPTS {
            let message = build()?;
            let addr = self.open().await?;
            if M::CATCH_UP {
                match addr
                    .send::<CatchUp>(CatchUp)
                    .timeout(DURABLE_DEADLINE)
                    .await
                {
                    Ok(Ok(())) => {}
                    Err(MailboxError::Timeout) => {
                        return Err(ApiError::store_down("nothing was changed"));
                    }
                    // The document stopped, or found it was deleted: ask its next copy.
                    Ok(Err(Gone)) | Err(MailboxError::Closed) => continue,
                }
            }
            let request = addr.send(message);
            let answer = match M::NOT_DURABLE {
                Some(what) => match request.timeout(DURABLE_DEADLINE).await {
                    Err(MailboxError::Timeout) => return Err(ApiError::store_down(what)),
                    answer => answer,
                },
                None => request.await,
            };
            let refusal = match answer {
                Ok(Ok(output)) => return Ok(output),
                Ok(Err(refusal)) => refusal,
                Err(_) => E::stopped(),
            };
            if !refusal.is_gone() {
                return Err(refusal.answer(self.id));
            }
        }
        Err(Gone.into())
    }

    /// The document's actor, loading it if needed.
    async fn open(&self) -> Result<Addr<DocumentActor>, ApiError> {
        let join = Join {
            doc: self.id.clone(),
        };
        match self.state.registry.send(join).await {
            Ok(joined) => Ok(joined?),
            // The registry stops last, when the server shuts down.
            Err(_) => Err(crate::collab::registry::JoinError::ShuttingDown.into()),
        }
    }
}
