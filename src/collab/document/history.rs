//! Writing automatic versions: the core decides when (after a pause in editing, and at unload),
//! and the actor writes them here once what they hold is durable.

use crate::collab::core::AutoVersion;
use crate::domain::DocId;
use crate::metrics::Metrics;
use crate::store::Store;

/// Saves an automatic version and prunes the oldest beyond `keep` (unless another node saved
/// that state already); failures are logged, since nothing waits on them.
pub(super) async fn save_auto_version(
    store: &dyn Store,
    metrics: &Metrics,
    doc: &DocId,
    version: AutoVersion,
    keep: u32,
) {
    match store
        .save_auto_version(doc, &version.state, version.cover, keep)
        .await
    {
        Ok(Some(saved)) => {
            metrics.auto_versions_saved.inc();
            tracing::debug!(version = saved.id, "automatic version saved");
        }
        Ok(None) => {
            metrics.auto_versions_held_elsewhere.inc();
            tracing::debug!(
                through = version.cover.through,
                "automatic version saved already by another node"
            );
        }
        Err(error) => tracing::warn!(%error, "saving an automatic version failed"),
    }
}
