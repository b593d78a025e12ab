//! What the HTTP API asks of a document: read it, change it, create it, restore it. Every
//! answer waits until what it reports or changed is durable.

use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;
use tracing::Instrument;

use super::DocumentActor;
use crate::collab::core::{DEFAULT_TEXT_KEY, LocalEditError, build_doc};
use crate::collab::messages::{
    ApplyUpdate, ApplyUpdateError, CatchUp, CreateError, CreateWith, EditText, EditTextError,
    EncodeState, Gone, ReadContent, Restore, RestoreFailure, SaveVersion, SaveVersionError,
};
use crate::store::{DocSummary, StoreError, StoredDoc, VersionSummary};
use crate::sync::content::{self, ContentError};
use crate::sync::{restore, text_ops};

/// How long creating a document may hold it (and the store) before it counts as failed.
const CREATE_TIMEOUT: Duration = Duration::from_secs(10);

impl Handler<CatchUp> for DocumentActor {
    type Result = ResponseActFuture<Self, Result<(), Gone>>;

    /// With several nodes, looks where the document's log ends and waits until this copy holds
    /// that much: a call answered here then reflects every change another node confirmed
    /// before it. A store that does not answer leaves the call to find that out itself.
    fn handle(&mut self, _: CatchUp, _: &mut Context<Self>) -> Self::Result {
        if !self.core.settings().shared_log {
            return Box::pin(actix::fut::ready(Ok(())));
        }
        let (store, id) = (self.store.clone(), self.core.id().clone());
        let look = async move { store.log_head(&id).await };
        Box::pin(look.into_actor(self).then(|head, act, ctx| {
            let (reply, caught_up) = oneshot::channel();
            match head {
                Ok(head) => {
                    act.step(ctx, |core, now| core.catch_up(head, reply, now));
                }
                Err(error) => {
                    tracing::debug!(parent: act.core.span(), %error, "looking at the log failed");
                    let _ = reply.send(());
                }
            }
            async move { caught_up.await.map_err(|_| Gone) }.into_actor(act)
        }))
    }
}

impl Handler<EncodeState> for DocumentActor {
    type Result = ResponseFuture<Result<Vec<u8>, Gone>>;

    /// Encodes what `sv` lacks, answered once everything in it is durable.
    fn handle(&mut self, msg: EncodeState, ctx: &mut Context<Self>) -> Self::Result {
        let wait = self.step(ctx, |core, now| core.encode_state(&msg.sv, now));
        Box::pin(async move { wait.await.map_err(|_| Gone) })
    }
}

impl Handler<ApplyUpdate> for DocumentActor {
    type Result = ResponseFuture<Result<(), ApplyUpdateError>>;

    /// Applies an update from the API; answers once it is durable (and so relayed).
    fn handle(&mut self, msg: ApplyUpdate, ctx: &mut Context<Self>) -> Self::Result {
        if self.core.is_closing() {
            return Box::pin(async { Err(ApplyUpdateError::Gone) });
        }
        // Behind whatever a subscriber sent before it, as if it had come in the mailbox after it.
        let (reply, applied) = oneshot::channel();
        self.step(ctx, |core, now| core.api_update(msg.update, reply, now));
        Box::pin(async move {
            let wait = applied
                .await
                .map_err(|_| ApplyUpdateError::Gone)?
                .map_err(ApplyUpdateError::Refused)?;
            wait.await.map(|_| ()).map_err(|_| ApplyUpdateError::Gone)
        })
    }
}

impl Handler<ReadContent> for DocumentActor {
    type Result = ResponseFuture<Result<Result<Vec<u8>, ContentError>, Gone>>;

    /// Renders the content now, answered once everything in it is durable.
    fn handle(&mut self, msg: ReadContent, ctx: &mut Context<Self>) -> Self::Result {
        let doc = self.core.doc();
        let rendered = if msg.text {
            content::to_text(doc, msg.key.as_deref().unwrap_or(DEFAULT_TEXT_KEY))
                .map(String::into_bytes)
        } else {
            content::to_json(doc, msg.key.as_deref()).map(|json| json.to_string().into_bytes())
        };
        let bytes = match rendered {
            Ok(bytes) => bytes,
            Err(error) => return Box::pin(async move { Ok(Err(error)) }),
        };
        let wait = self.step(ctx, |core, now| core.answer_when_durable(bytes, now));
        Box::pin(async move { wait.await.map(Ok).map_err(|_| Gone) })
    }
}

impl Handler<EditText> for DocumentActor {
    type Result = ResponseFuture<Result<(), EditTextError>>;

    /// Applies text operations as one change; answers once it is durable and relayed.
    fn handle(&mut self, msg: EditText, ctx: &mut Context<Self>) -> Self::Result {
        self.core.touch(Instant::now());
        if self.core.is_closing() {
            return Box::pin(async { Err(EditTextError::Gone) });
        }
        if let Err(error) = content::to_text(self.core.doc(), &msg.key) {
            return Box::pin(async move { Err(EditTextError::Content(error)) });
        }
        let inserted: usize = msg.ops.iter().map(text_ops::TextOp::inserted_bytes).sum();
        if let Err(limit) = self.core.has_room_for(inserted) {
            return Box::pin(async move { Err(EditTextError::TooLarge(limit)) });
        }
        let EditText { key, ops } = msg;
        if crate::collab::core::is_heavy(ops.len(), self.core.stored_size()) {
            let doc = self.core.begin_edit(Instant::now());
            let job = tokio::task::spawn_blocking(move || {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    let root = doc.get_or_insert_text(key.as_str());
                    text_ops::apply(&doc, &root, &ops)
                }))
            });
            let (reply, answer) = oneshot::channel();
            ctx.wait(job.into_actor(self).map(move |joined, act, ctx| {
                // The blocking task cannot be cancelled; a join error is its panic.
                let outcome = joined.unwrap_or_else(|error| Err(Box::new(error.to_string())));
                let _ = reply.send(act.step(ctx, |core, now| core.finish_edit(outcome, now)));
            }));
            return Box::pin(async move {
                let wait = match answer.await {
                    Ok(Ok(wait)) => wait,
                    Ok(Err(LocalEditError::Refused(error))) => {
                        return Err(EditTextError::Ops(error));
                    }
                    Ok(Err(LocalEditError::Failed)) | Err(_) => return Err(EditTextError::Gone),
                };
                wait.await
                    .map(|_| ())
                    .map_err(|_| EditTextError::Unconfirmed)
            });
        }
        let edit = self.step(ctx, |core, now| {
            core.edit(
                |doc| {
                    let root = doc.get_or_insert_text(key.as_str());
                    text_ops::apply(doc, &root, &ops)
                },
                now,
            )
        });
        let wait = match edit {
            Ok(wait) => wait,
            Err(LocalEditError::Refused(error)) => {
                return Box::pin(async move { Err(EditTextError::Ops(error)) });
            }
            // The failed copy is dropped unstored, so asking again is safe.
            Err(LocalEditError::Failed) => return Box::pin(async { Err(EditTextError::Gone) }),
        };
        Box::pin(async move {
            wait.await
                .map(|_| ())
                .map_err(|_| EditTextError::Unconfirmed)
        })
    }
}

impl Handler<CreateWith> for DocumentActor {
    type Result = ResponseFuture<Result<DocSummary, CreateError>>;

    /// Creates the document in the store with its first content, in one transaction, and then
    /// applies that content here. Only a document of which nothing was ever stored can be
    /// created: any other exists already, or will once the writer commits what it was handed.
    ///
    /// Nothing else is handled until the store has answered. The row is written beside the
    /// persistence writer, so this copy must hold its content before it can ask for a
    /// compaction again: a snapshot without it would cover, and drop, the row.
    fn handle(&mut self, msg: CreateWith, ctx: &mut Context<Self>) -> Self::Result {
        self.core.touch(Instant::now());
        if self.core.is_closing() {
            return Box::pin(async { Err(CreateError::Gone) });
        }
        if !self.core.pristine() {
            return Box::pin(async { Err(CreateError::AlreadyExists) });
        }
        if let Err(limit) = self.core.has_room_for(msg.update.len()) {
            return Box::pin(async move { Err(CreateError::TooLarge(limit)) });
        }
        let update = msg.update;
        let (store, id) = (self.store.clone(), self.core.id().clone());
        let (answer, answered) = oneshot::channel();
        let write = async move {
            let written =
                tokio::time::timeout(CREATE_TIMEOUT, store.create_with_update(&id, &update));
            (written.await, update)
        };
        ctx.wait(write.into_actor(self).map(move |(written, update), act, ctx| {
            let result = match written {
                Ok(Ok((summary, log_id))) => {
                    act.step(ctx, |core, now| core.adopt_created(update, log_id, now));
                    Ok(summary)
                }
                Ok(Err(StoreError::AlreadyExists)) => Err(CreateError::AlreadyExists),
                outcome => {
                    let why = match outcome {
                        Ok(Err(error)) => error.to_string(),
                        _ => "no answer in time".to_string(),
                    };
                    // The row may have been committed: only a reload can tell.
                    tracing::warn!(parent: act.core.span(), error = %why, "creating the document failed; reloading it");
                    act.step(ctx, |core, _| core.fail());
                    Err(CreateError::Unconfirmed(why))
                }
            };
            let _ = answer.send(result);
        }));
        Box::pin(async move {
            answered
                .await
                .unwrap_or_else(|_| Err(CreateError::Unconfirmed("the document stopped".into())))
        })
    }
}

impl Handler<Restore> for DocumentActor {
    type Result = ResponseFuture<Result<(), RestoreFailure>>;

    /// Edits the document back to a saved state; answers once the edits are durable.
    fn handle(&mut self, msg: Restore, ctx: &mut Context<Self>) -> Self::Result {
        self.core.touch(Instant::now());
        if self.core.is_closing() {
            return Box::pin(async { Err(RestoreFailure::Gone) });
        }
        if let Err(limit) = self.core.has_room_for(msg.target.len()) {
            return Box::pin(async move { Err(RestoreFailure::TooLarge(limit)) });
        }
        let stored = StoredDoc {
            snapshot: Some(msg.target),
            ..StoredDoc::default()
        };
        let Ok(target) = build_doc(&stored) else {
            return Box::pin(async { Err(RestoreFailure::Corrupt) });
        };
        let edit = self.step(ctx, |core, now| {
            core.edit(|doc| restore::restore(doc, &target), now)
        });
        let wait = match edit {
            Ok(wait) => wait,
            Err(LocalEditError::Refused(error)) => {
                return Box::pin(async move { Err(RestoreFailure::Refused(error)) });
            }
            Err(LocalEditError::Failed) => {
                return Box::pin(async { Err(RestoreFailure::Unconfirmed) });
            }
        };
        Box::pin(async move {
            wait.await
                .map(|_| ())
                .map_err(|_| RestoreFailure::Unconfirmed)
        })
    }
}

impl Handler<SaveVersion> for DocumentActor {
    type Result = ResponseFuture<Result<VersionSummary, SaveVersionError>>;

    /// Saves the whole current state as a manual version: encoded now, written through the
    /// store once everything in it is durable (as an automatic version is), so a version never
    /// holds what a crash could still lose.
    fn handle(&mut self, msg: SaveVersion, ctx: &mut Context<Self>) -> Self::Result {
        let SaveVersion {
            name,
            durable_within,
        } = msg;
        let wait = self.step(ctx, |core, now| core.full_state_when_durable(now));
        let (store, id) = (self.store.clone(), self.core.id().clone());
        Box::pin(
            async move {
                let full = match tokio::time::timeout(durable_within, wait).await {
                    Ok(Ok(full)) => full,
                    Ok(Err(_)) => return Err(SaveVersionError::Gone),
                    Err(_) => return Err(SaveVersionError::NotDurable),
                };
                let version = store
                    .create_version(&id, name.as_deref(), "manual", &full)
                    .await?;
                tracing::debug!(version = version.id, "manual version saved");
                Ok(version)
            }
            .instrument(self.core.span().clone()),
        )
    }
}
