//! The registry: which documents are loaded, and by which actor.
//!
//! A document is loaded from the store before any client is answered. While it loads, further
//! joiners wait for the same load. A failed load answers every waiter with an error and leaves
//! nothing behind, so an empty document can never be created in place of stored data. Document
//! actors are spread over one arbiter (thread) per core.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::oneshot;

use super::core::{DocCore, DocSettings, build_doc};
use super::document::{DocServices, DocumentActor, Unloaded};
use super::log_watch;
use super::messages::{Disconnect, DocPresence, Evict, GetPresence, Shutdown};
use crate::bus::Bus;
use crate::domain::DocId;
use crate::persist::PersistHandle;
use crate::store::{Store, StoreError, StoredDoc};
use crate::webhooks::Webhooks;

/// Anyone → Registry: give me the actor of this document, loading it if needed.
#[derive(Message)]
#[rtype(result = "Result<Addr<DocumentActor>, JoinError>")]
pub(crate) struct Join {
    pub doc: DocId,
}

/// Why a document could not be had.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum JoinError {
    /// The store could not load it; nothing was created in its place.
    #[error("the document could not be loaded from the store")]
    LoadFailed,
    /// The server is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// Anyone → Registry: who is connected to each of these documents (absent when nobody is).
#[derive(Message)]
#[rtype(result = "HashMap<DocId, DocPresence>")]
pub(crate) struct PresenceOf {
    pub docs: Vec<DocId>,
}

/// Anyone → Registry: delete a document, closing its subscribers first. Answers whether there
/// was anything to delete.
#[derive(Message)]
#[rtype(result = "Result<bool, StoreError>")]
pub(crate) struct DeleteDoc {
    pub doc: DocId,
}

/// Metrics → Registry: how many documents are loaded now.
#[derive(Message)]
#[rtype(result = "usize")]
pub(crate) struct LoadedCount;

/// Application → Registry: refuse new joins and shut every document down; answers once all are
/// flushed and compacted, or the documents that did not finish within `deadline`, which
/// shutdown skips.
#[derive(Message)]
#[rtype(result = "Vec<DocId>")]
pub(crate) struct ShutdownAll {
    pub deadline: std::time::Duration,
}

type Waiter = oneshot::Sender<Result<Addr<DocumentActor>, JoinError>>;

enum Entry {
    Loading(Vec<Waiter>),
    Loaded(Addr<DocumentActor>),
    /// Being deleted: joiners wait, then get a fresh, empty document.
    Deleting(Vec<Waiter>),
}

/// Maps document ids to their actors.
pub(crate) struct Registry {
    docs: HashMap<DocId, Entry>,
    store: Arc<dyn Store>,
    persist: PersistHandle,
    services: DocServices,
    arbiters: Vec<Arbiter>,
    next_arbiter: usize,
    shutting_down: bool,
    /// A look at the logs is under way (see `log_watch.rs`).
    watching: bool,
}

impl Registry {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        persist: PersistHandle,
        webhooks: Webhooks,
        settings: DocSettings,
        metrics: Arc<crate::metrics::Metrics>,
        bus: Option<Bus>,
    ) -> Self {
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        Self {
            docs: HashMap::new(),
            services: DocServices {
                persist: persist.clone(),
                store: store.clone(),
                webhooks,
                settings: Arc::new(settings),
                metrics,
                bus,
            },
            store,
            persist,
            arbiters: (0..threads).map(|_| Arbiter::new()).collect(),
            next_arbiter: 0,
            shutting_down: false,
            watching: false,
        }
    }

    fn start_load(&mut self, doc: DocId, ctx: &mut Context<Self>) {
        let started = std::time::Instant::now();
        let metrics = self.services.metrics.clone();
        let store = self.store.clone();
        let persist = self.persist.clone();
        let id = doc.clone();
        let load = async move {
            // Whatever an earlier instance of this document queued must be committed first,
            // or this load would miss it.
            persist
                .barrier()
                .await
                .map_err(|e| tracing::error!(doc = %id, error = %e))?;
            let stored = store
                .load(&id)
                .await
                .map_err(|e| tracing::error!(doc = %id, error = %e, "loading failed"))?;
            // Replaying a large document takes a while: keep it off the registry's thread.
            actix_web::rt::task::spawn_blocking(move || {
                let built = build_doc(&stored);
                (built, stored)
            })
            .await
            .map_err(|e| tracing::error!(doc = %id, error = %e, "loading panicked"))
            .and_then(|(built, stored)| match built {
                Ok(doc) => Ok((doc, stored)),
                Err(e) => {
                    tracing::error!(doc = %id, error = %e, "stored data does not decode");
                    Err(())
                }
            })
        };
        ctx.spawn(load.into_actor(self).map(move |result, act, ctx| {
            match &result {
                Ok(_) => metrics
                    .document_load_seconds
                    .observe(started.elapsed().as_secs_f64()),
                Err(()) => metrics.document_load_failures.inc(),
            }
            act.finish_load(doc, result, ctx);
        }));
    }

    /// The actor of `doc`, if it is loaded.
    pub(super) fn loaded(&self, doc: &DocId) -> Option<&Addr<DocumentActor>> {
        match self.docs.get(doc) {
            Some(Entry::Loaded(addr)) => Some(addr),
            _ => None,
        }
    }

    /// Looks at the logs of the loaded documents, unless the last look is still under way.
    pub(super) fn watch_log(&mut self, ctx: &mut Context<Self>) {
        if self.watching || self.shutting_down {
            return;
        }
        let docs: Vec<_> = self
            .docs
            .iter()
            .filter_map(|(id, entry)| match entry {
                Entry::Loaded(addr) => Some((id.clone(), addr.clone())),
                _ => None,
            })
            .collect();
        self.watching = true;
        let look = log_watch::look(self.store.clone(), docs);
        ctx.spawn(look.into_actor(self).map(|(), act, _| act.watching = false));
    }

    fn finish_load(
        &mut self,
        id: DocId,
        result: Result<(yrs::Doc, StoredDoc), ()>,
        ctx: &mut Context<Self>,
    ) {
        // A delete that began meanwhile took over the waiters; this load is stale.
        if !matches!(self.docs.get(&id), Some(Entry::Loading(_))) {
            return;
        }
        let Some(Entry::Loading(waiters)) = self.docs.remove(&id) else {
            return;
        };
        let answer = match result {
            Ok(_) if self.shutting_down => Err(JoinError::ShuttingDown),
            Ok((doc, stored)) => {
                let arbiter = &self.arbiters[self.next_arbiter % self.arbiters.len()];
                self.next_arbiter = self.next_arbiter.wrapping_add(1);
                let (registry, services) = (ctx.address().recipient(), self.services.clone());
                let actor_id = id.clone();
                let addr = DocumentActor::start_in_arbiter(&arbiter.handle(), move |_| {
                    let core = DocCore::new(
                        actor_id,
                        doc,
                        &stored,
                        services.settings.clone(),
                        services.metrics.clone(),
                        std::time::Instant::now(),
                    );
                    DocumentActor::new(core, registry, &services)
                });
                self.docs.insert(id, Entry::Loaded(addr.clone()));
                Ok(addr)
            }
            Err(()) => Err(JoinError::LoadFailed),
        };
        for waiter in waiters {
            let _ = waiter.send(answer.clone());
        }
    }
}

impl Actor for Registry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if self.store.shares_log() {
            ctx.run_interval(log_watch::INTERVAL, |act, ctx| act.watch_log(ctx));
        }
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
    }
}

impl Handler<Join> for Registry {
    type Result = ResponseFuture<Result<Addr<DocumentActor>, JoinError>>;

    /// Answers with the document's actor, loading the document first if needed.
    fn handle(&mut self, msg: Join, ctx: &mut Context<Self>) -> Self::Result {
        if self.shutting_down {
            return Box::pin(async { Err(JoinError::ShuttingDown) });
        }
        match self.docs.get_mut(&msg.doc) {
            Some(Entry::Loaded(addr)) if addr.connected() => {
                let addr = addr.clone();
                return Box::pin(async move { Ok(addr) });
            }
            Some(Entry::Loading(waiters) | Entry::Deleting(waiters)) => {
                let (tx, rx) = oneshot::channel();
                waiters.push(tx);
                return Box::pin(async move { rx.await.unwrap_or(Err(JoinError::LoadFailed)) });
            }
            _ => {}
        }
        let (tx, rx) = oneshot::channel();
        self.docs.insert(msg.doc.clone(), Entry::Loading(vec![tx]));
        self.start_load(msg.doc, ctx);
        Box::pin(async move { rx.await.unwrap_or(Err(JoinError::LoadFailed)) })
    }
}

impl Handler<LoadedCount> for Registry {
    type Result = usize;

    /// Counts the documents loaded now.
    fn handle(&mut self, _: LoadedCount, _: &mut Context<Self>) -> usize {
        self.docs
            .values()
            .filter(|e| matches!(e, Entry::Loaded(_)))
            .count()
    }
}

impl Handler<Unloaded> for Registry {
    type Result = ();

    /// Forgets a document actor that is going away (if it is still the current one).
    fn handle(&mut self, msg: Unloaded, _: &mut Context<Self>) {
        if matches!(self.docs.get(&msg.doc), Some(Entry::Loaded(addr)) if *addr == msg.addr) {
            self.docs.remove(&msg.doc);
        }
    }
}

impl Handler<ShutdownAll> for Registry {
    type Result = ResponseActFuture<Self, Vec<DocId>>;

    /// Refuses new joins, then shuts every loaded document down and waits for each until the
    /// deadline; answers (and logs, with why) those that did not finish by then.
    fn handle(&mut self, msg: ShutdownAll, _: &mut Context<Self>) -> Self::Result {
        self.shutting_down = true;
        let docs: Vec<(DocId, Addr<DocumentActor>)> = self
            .docs
            .drain()
            .filter_map(|(id, entry)| match entry {
                Entry::Loaded(addr) => Some((id, addr)),
                Entry::Loading(waiters) | Entry::Deleting(waiters) => {
                    for waiter in waiters {
                        let _ = waiter.send(Err(JoinError::ShuttingDown));
                    }
                    None
                }
            })
            .collect();
        tracing::info!(
            documents = docs.len(),
            "flushing and compacting loaded documents"
        );
        let persist = self.persist.clone();
        let deadline = msg.deadline;
        Box::pin(
            async move {
                let finished = futures_util::future::join_all(docs.into_iter().map(
                    |(id, addr)| async move {
                        let done = tokio::time::timeout(deadline, addr.send(Shutdown)).await;
                        (id, done.is_ok())
                    },
                ))
                .await;
                let skipped: Vec<DocId> = finished
                    .into_iter()
                    .filter(|(_, done)| !done)
                    .map(|(id, _)| id)
                    .collect();
                let store_failing = persist.health().is_failing();
                for doc in &skipped {
                    // A document is late because its flush waits for the store, or because it
                    // is still busy with what it was sent (an update costs at most the update
                    // budget, but many may be queued).
                    let why = if store_failing {
                        "the store is failing: its flush did not commit"
                    } else {
                        "it was still busy applying updates"
                    };
                    tracing::warn!(doc = %doc, deadline_s = deadline.as_secs(), why, "skipped at shutdown: not flushed or compacted in time; what it acknowledged as stored is stored");
                }
                // Documents that stopped on their own may still have writes queued.
                if tokio::time::timeout(deadline, persist.barrier()).await.is_err() {
                    tracing::warn!("the last writes did not commit before the shutdown deadline");
                }
                skipped
            }
            .into_actor(self)
            // Stopping drops the registry's writer handle, which lets the writer finish.
            .map(|skipped, _, ctx| {
                ctx.stop();
                skipped
            }),
        )
    }
}

impl Handler<PresenceOf> for Registry {
    type Result = ResponseFuture<HashMap<DocId, DocPresence>>;

    /// Asks each loaded document among `docs` who is connected.
    fn handle(&mut self, msg: PresenceOf, _: &mut Context<Self>) -> Self::Result {
        let loaded: Vec<(DocId, Addr<DocumentActor>)> = msg
            .docs
            .into_iter()
            .filter_map(|doc| match self.docs.get(&doc) {
                Some(Entry::Loaded(addr)) => Some((doc, addr.clone())),
                _ => None,
            })
            .collect();
        Box::pin(async move {
            let answers = futures_util::future::join_all(
                loaded
                    .into_iter()
                    .map(|(doc, addr)| async move { (doc, addr.send(GetPresence).await) }),
            )
            .await;
            answers
                .into_iter()
                .filter_map(|(doc, answer)| answer.ok().map(|presence| (doc, presence)))
                .filter(|(_, presence)| presence.clients > 0)
                .collect()
        })
    }
}

impl Handler<Disconnect> for Registry {
    type Result = ResponseFuture<usize>;

    /// Closes the matching sessions of the document, if it is loaded.
    fn handle(&mut self, msg: Disconnect, _: &mut Context<Self>) -> Self::Result {
        let addr = match self.docs.get(&msg.doc) {
            Some(Entry::Loaded(addr)) => Some(addr.clone()),
            _ => None,
        };
        Box::pin(async move {
            match addr {
                Some(addr) => addr.send(msg).await.unwrap_or(0),
                None => 0,
            }
        })
    }
}

impl Handler<DeleteDoc> for Registry {
    type Result = ResponseActFuture<Self, Result<bool, StoreError>>;

    /// Evicts the document (its sessions are closed with 4404), waits for its queued writes, and
    /// deletes it from the store. Joiners meanwhile wait and then get a fresh document.
    fn handle(&mut self, msg: DeleteDoc, _: &mut Context<Self>) -> Self::Result {
        let previous = self
            .docs
            .insert(msg.doc.clone(), Entry::Deleting(Vec::new()));
        let mut waiters = Vec::new();
        match previous {
            Some(Entry::Loaded(addr)) => addr.do_send(Evict),
            Some(Entry::Loading(w) | Entry::Deleting(w)) => waiters = w,
            None => {}
        }
        if let Some(Entry::Deleting(list)) = self.docs.get_mut(&msg.doc) {
            list.extend(waiters);
        }
        let (store, persist, doc) = (self.store.clone(), self.persist.clone(), msg.doc);
        let id = doc.clone();
        Box::pin(
            async move {
                // Writes the document queued before it was evicted must land before the delete,
                // or they would bring it back.
                persist
                    .barrier()
                    .await
                    .map_err(|e| StoreError::Other(e.into()))?;
                store.delete(&id).await
            }
            .into_actor(self)
            .map(move |result, act, ctx| {
                if let Some(Entry::Deleting(waiters)) = act.docs.remove(&doc)
                    && !waiters.is_empty()
                {
                    act.docs.insert(doc.clone(), Entry::Loading(waiters));
                    act.start_load(doc, ctx);
                }
                result
            }),
        )
    }
}
