//! A document's history outside the log: automatic versions after a pause in editing, and the
//! debounced `document.changed` webhook.

use std::time::Instant;

use actix::prelude::*;
use tracing::Instrument;
use yrs::updates::encoder::Encode;
use yrs::{ReadTxn, StateVector, Transact};

use super::{DEFAULT_TEXT_KEY, DocumentActor};
use crate::domain::DocId;
use crate::store::Store;
use crate::sync::content;
use crate::webhooks;

impl DocumentActor {
    /// Arms one timer for the automatic version; when it fires early (editing went on), it
    /// re-arms for the rest of the quiet time instead of piling up a timer per edit.
    pub(super) fn schedule_auto_version(&mut self, ctx: &mut Context<Self>) {
        let gap = self.settings.auto_version_after;
        if gap.is_zero() || self.auto_version_timer {
            return;
        }
        self.auto_version_timer = true;
        let wait = gap.saturating_sub(self.last_edit.elapsed());
        ctx.run_later(wait, |act, ctx| {
            act.auto_version_timer = false;
            if act.closing || !act.unversioned {
                return;
            }
            if act.last_edit.elapsed() < act.settings.auto_version_after {
                act.schedule_auto_version(ctx);
                return;
            }
            act.take_auto_version();
        });
    }

    /// Announces changes `DEBOUNCE` after the last one, and at least every `MAX_INTERVAL` while
    /// they keep coming, with one timer that re-arms itself.
    pub(super) fn schedule_change_event(&mut self, ctx: &mut Context<Self>) {
        let Some(since) = self.unannounced_since else {
            return;
        };
        if self.webhook_timer {
            return;
        }
        self.webhook_timer = true;
        let due = (self.last_edit + webhooks::DEBOUNCE).min(since + webhooks::MAX_INTERVAL);
        ctx.run_later(due.saturating_duration_since(Instant::now()), |act, ctx| {
            act.webhook_timer = false;
            let Some(since) = act.unannounced_since else {
                return;
            };
            let due = (act.last_edit + webhooks::DEBOUNCE).min(since + webhooks::MAX_INTERVAL);
            if Instant::now() < due {
                act.schedule_change_event(ctx);
            } else {
                act.announce_change();
            }
        });
    }

    /// Queues a `document.changed` event once everything it describes is durable.
    pub(super) fn announce_change(&mut self) {
        self.unannounced_since = None;
        let sv = self.doc.transact().state_vector().encode_v1();
        let text = content::to_text(&self.doc, DEFAULT_TEXT_KEY).unwrap_or_default();
        let wait = self.when_durable(sv);
        let (webhooks, doc) = (self.webhooks.clone(), self.id.clone());
        actix_web::rt::spawn(async move {
            if let Ok(sv) = wait.await {
                webhooks.emit(&doc, "document.changed", &sv, &text).await;
            }
        });
    }

    /// Saves the current state as an automatic version once it is durable, and prunes old ones.
    pub(super) fn take_auto_version(&mut self) {
        self.unversioned = false;
        let full = self
            .doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        let wait = self.when_durable(full);
        let (store, doc, keep) = (
            self.store.clone(),
            self.id.clone(),
            self.settings.auto_version_retention,
        );
        actix_web::rt::spawn(
            async move {
                if let Ok(full) = wait.await {
                    save_auto_version(store.as_ref(), &doc, &full, keep).await;
                }
            }
            .instrument(self.span.clone()),
        );
    }
}

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
