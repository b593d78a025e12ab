//! Revocations: "tokens for this document (and user) issued before now no longer count".
//!
//! Tokens are stateless, so taking access away records the moment it happened; a token issued
//! before it is refused. Entries are kept in memory for fast checks and in the store so they
//! survive a restart; after the longest token lifetime they are moot and forgotten.
//!
//! "Moot" holds because no token is accepted whose lifetime is longer than the longest one now
//! allowed (`Auth::authorize_doc`), even one issued while the limit was longer: every token an
//! entry covers was issued before it and so has expired once that lifetime has passed. Rows
//! stay in the store (only the ones that can matter are loaded), so a restart with a longer
//! limit finds again the entries that then matter again.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::domain::DocId;
use crate::store::{Store, StoreError, now_ms};

/// A document's revocations: for everyone, and per user name.
#[derive(Debug, Default, Clone)]
struct DocRevocations {
    everyone: i64,
    users: HashMap<String, i64>,
}

/// Revocation times (Unix epoch milliseconds) per document.
pub(crate) struct Revocations {
    store: Arc<dyn Store>,
    /// Entries older than this are dropped: every token issued before them has expired.
    keep_for: Duration,
    by_doc: RwLock<HashMap<DocId, DocRevocations>>,
}

impl Revocations {
    /// Loads the revocations that can still matter from the store.
    pub(crate) async fn load(
        store: Arc<dyn Store>,
        keep_for: Duration,
    ) -> Result<Self, StoreError> {
        let since = now_ms() - keep_for.as_millis() as i64;
        let mut by_doc: HashMap<DocId, DocRevocations> = HashMap::new();
        for (doc, user, at) in store.revocations_since(since).await? {
            let entry = by_doc.entry(doc).or_default();
            match user {
                None => entry.everyone = entry.everyone.max(at),
                Some(user) => {
                    let t = entry.users.entry(user).or_default();
                    *t = (*t).max(at);
                }
            }
        }
        Ok(Self {
            store,
            keep_for,
            by_doc: RwLock::new(by_doc),
        })
    }

    /// Refuses, from now on, tokens of `doc` (only `user`'s, if given) issued before now.
    /// Returns the revocation time.
    pub(crate) async fn revoke(&self, doc: &DocId, user: Option<&str>) -> Result<i64, StoreError> {
        let at = now_ms();
        self.store.revoke(doc, user, at).await?;
        let mut by_doc = self.by_doc.write().unwrap_or_else(|e| e.into_inner());
        let entry = by_doc.entry(doc.clone()).or_default();
        match user {
            None => entry.everyone = entry.everyone.max(at),
            Some(user) => {
                entry.users.insert(user.to_string(), at);
            }
        }
        // Forget what can no longer matter, so the map stays as small as the live tokens.
        let horizon = at - self.keep_for.as_millis() as i64;
        by_doc.retain(|_, r| {
            r.users.retain(|_, t| *t >= horizon);
            r.everyone >= horizon || !r.users.is_empty()
        });
        Ok(at)
    }

    /// Reads the revocations made since the last look (by other nodes sharing the store) and
    /// adds those this node did not know: returns them, so that the sessions they cover here are
    /// closed too. A look reads a few seconds back, for commits that became visible late.
    pub(crate) async fn refresh(
        &self,
        since: i64,
    ) -> Result<Vec<(DocId, Option<String>, i64)>, StoreError> {
        let found = self.store.revocations_since(since).await?;
        let mut by_doc = self.by_doc.write().unwrap_or_else(|e| e.into_inner());
        let mut new = Vec::new();
        for (doc, user, at) in found {
            let entry = by_doc.entry(doc.clone()).or_default();
            let known = match &user {
                None => &mut entry.everyone,
                Some(user) => entry.users.entry(user.clone()).or_default(),
            };
            if at > *known {
                *known = at;
                new.push((doc, user, at));
            }
        }
        Ok(new)
    }

    /// Whether a token of `doc` for `user`, issued at `iat` (epoch ms), was revoked since.
    pub(crate) fn is_revoked(&self, doc: &DocId, user: Option<&str>, iat: i64) -> bool {
        let by_doc = self.by_doc.read().unwrap_or_else(|e| e.into_inner());
        let Some(entry) = by_doc.get(doc) else {
            return false;
        };
        let user_at = user.and_then(|u| entry.users.get(u)).copied().unwrap_or(0);
        iat <= entry.everyone.max(user_at)
    }
}
