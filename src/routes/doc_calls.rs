//! How a route calls a document: its actor (loaded if need be), how often a call that races
//! with the document unloading is tried, and how long an answer may wait for durability.

use std::time::Duration;

use actix::Addr;

use crate::collab::document::DocumentActor;
use crate::collab::messages::{Join, JoinError};
use crate::domain::DocId;
use crate::error::ApiError;
use crate::state::AppState;

/// A request races with the document unloading at most this many times before giving up.
pub(crate) const ATTEMPTS: usize = 3;

/// How long an API call waits for what it read or changed to be durable; beyond it the store
/// counts as down and the caller gets 503.
pub(crate) const DURABLE_DEADLINE: Duration = Duration::from_secs(10);

/// The answer when the store does not take writes in time: `what` says what became of the
/// request.
pub(crate) fn store_down(what: &str) -> ApiError {
    ApiError::store_down(what)
}

pub(crate) async fn ensure_exists(state: &AppState, id: &DocId) -> Result<(), ApiError> {
    let found = state.store.get(id).await.map_err(|error| {
        tracing::warn!(%error, doc = %id, "the store did not answer");
        store_down("nothing was changed")
    })?;
    match found {
        Some(_) => Ok(()),
        None => Err(ApiError::NotFound(id.to_string())),
    }
}

/// The document's actor, loading it if needed.
pub(crate) async fn open(state: &AppState, id: &DocId) -> Result<Addr<DocumentActor>, ApiError> {
    match state.registry.send(Join { doc: id.clone() }).await {
        Ok(Ok(addr)) => Ok(addr),
        Ok(Err(JoinError::ShuttingDown)) | Err(_) => {
            Err(ApiError::Unavailable("the server is shutting down".into()))
        }
        Ok(Err(JoinError::LoadFailed)) => Err(ApiError::Unavailable(
            "the document could not be loaded from the store".into(),
        )),
    }
}
