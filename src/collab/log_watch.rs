//! The log watch. With several nodes on one database, another node's client may write a
//! document this node holds. Every [`INTERVAL`] the registry asks the store how far the logs of
//! the loaded documents have grown, one query for all of them, and tells each document
//! ([`LogHead`]). A document that is behind reads the rest of its log. This is how nodes
//! converge when nothing faster tells them; it is also what catches up on anything a faster
//! path missed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::Addr;

use super::document::DocumentActor;
use super::messages::LogHead;
use crate::domain::DocId;
use crate::store::Store;

/// How often the logs are looked at: a change made on another node reaches this node's
/// clients within about this long.
pub(crate) const INTERVAL: Duration = Duration::from_millis(250);

/// Looks at the logs of `docs` and tells each document where its log ends.
pub(crate) async fn look(store: Arc<dyn Store>, docs: Vec<(DocId, Addr<DocumentActor>)>) {
    if docs.is_empty() {
        return;
    }
    let ids: Vec<DocId> = docs.iter().map(|(id, _)| id.clone()).collect();
    match store.log_heads(&ids).await {
        Ok(heads) => {
            let heads: HashMap<DocId, i64> = heads.into_iter().collect();
            // A document not in the store has no log: 0 (deleted, if its copy holds any).
            for (id, addr) in docs {
                addr.do_send(LogHead(heads.get(&id).copied().unwrap_or(0)));
            }
        }
        // The writer reports the store's health; the next look tries again.
        Err(error) => tracing::debug!(%error, "looking at the logs failed"),
    }
}
