//! Revocations made on other nodes. With several nodes on one database, a node looks every
//! [`INTERVAL`] for revocations that others stored: from then on it refuses the tokens they
//! cover, and closes, with 4403, the sessions here that such tokens admitted.

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;

use super::Auth;
use crate::collab::Registry;
use crate::collab::messages::Disconnect;
use crate::store::now_ms;

/// How often the store is looked at: a revocation on another node takes effect here within
/// about this long.
pub(crate) const INTERVAL: Duration = Duration::from_secs(1);
/// Each look reads back this far before the last one, for commits that became visible late.
const OVERLAP_MS: i64 = 5_000;

/// Starts looking; runs as long as the process.
pub(crate) fn spawn(auth: Arc<Auth>, registry: Addr<Registry>) {
    tokio::spawn(async move {
        let mut since = now_ms() - OVERLAP_MS;
        let mut ticks = tokio::time::interval(INTERVAL);
        loop {
            ticks.tick().await;
            let looked = now_ms();
            match auth.revocations.refresh(since).await {
                Ok(new) => {
                    for (doc, user, at) in new {
                        tracing::info!(doc = %doc, user = user.as_deref(), "access revoked on another node");
                        registry.do_send(Disconnect {
                            doc,
                            user,
                            issued_before: Some(at),
                        });
                    }
                    since = looked - OVERLAP_MS;
                }
                Err(error) => tracing::debug!(%error, "looking for revocations failed"),
            }
        }
    });
}
