//! Writing automatic versions: the core decides when (after a pause in editing, and at unload),
//! and the actor writes them here once what they hold is durable.

use crate::domain::DocId;
use crate::store::Store;

/// Saves an automatic version and prunes the oldest beyond `keep`; failures are logged, since
/// nothing waits on them.
pub(super) async fn save_auto_version(store: &dyn Store, doc: &DocId, full: &[u8], keep: u32) {
    match store.create_version(doc, None, "auto", full).await {
        Ok(version) => {
            tracing::debug!(version = version.id, "automatic version saved");
            if let Err(error) = store.prune_versions(doc, "auto", keep).await {
                tracing::warn!(%error, "pruning automatic versions failed");
            }
        }
        Err(error) => tracing::warn!(%error, "saving an automatic version failed"),
    }
}
