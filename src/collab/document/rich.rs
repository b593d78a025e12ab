//! What the HTTP API asks of a rich-text (ProseMirror) fragment: read it as ProseMirror JSON,
//! and replace its content. Answers wait until what they show or changed is durable.

use std::time::Instant;

use actix::prelude::*;
use tokio::sync::oneshot;

use super::DocumentActor;
use crate::collab::core::{LocalEditError, is_heavy};
use crate::collab::messages::{EditTextError, Gone, ReadProsemirror, ReplaceFragment};
use crate::sync::content::ContentError;
use crate::sync::prosemirror;

impl Handler<ReadProsemirror> for DocumentActor {
    type Result = ResponseFuture<Result<Result<Vec<u8>, ContentError>, Gone>>;

    /// Renders the fragment now, answered once everything in it is durable.
    fn handle(&mut self, msg: ReadProsemirror, ctx: &mut Context<Self>) -> Self::Result {
        let bytes = match prosemirror::to_json(self.core.doc(), &msg.key) {
            Ok(json) => json.to_string().into_bytes(),
            Err(error) => return Box::pin(async move { Ok(Err(error)) }),
        };
        let wait = self.step(ctx, |core, now| core.answer_when_durable(bytes, now));
        Box::pin(async move { wait.await.map(Ok).map_err(|_| Gone) })
    }
}

impl Handler<ReplaceFragment> for DocumentActor {
    type Result = ResponseFuture<Result<(), EditTextError>>;

    /// Makes the fragment hold the nodes, as one change; answers once it is durable and
    /// relayed. A large one is written off the document's thread, as a large text edit is.
    fn handle(&mut self, msg: ReplaceFragment, ctx: &mut Context<Self>) -> Self::Result {
        self.core.touch(Instant::now());
        if self.core.is_closing() {
            return Box::pin(async { Err(EditTextError::Gone) });
        }
        // Refused before anything is written: a root of another kind, or one yrs cannot read.
        match prosemirror::read_fragment(self.core.doc(), &msg.key) {
            Ok(_) | Err(ContentError::NoSuchKey(_)) => {}
            Err(error) => return Box::pin(async move { Err(EditTextError::Content(error)) }),
        }
        if let Err(limit) = self.core.has_room_for(msg.bytes) {
            return Box::pin(async move { Err(EditTextError::TooLarge(limit)) });
        }
        let ReplaceFragment { key, nodes, .. } = msg;
        // A node is a few structs: the element or text, its attributes, its formatting.
        let structs = prosemirror::count(&nodes).saturating_mul(3);
        if is_heavy(structs, self.core.stored_size()) {
            let doc = self.core.begin_edit(Instant::now());
            let job = tokio::task::spawn_blocking(move || {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    prosemirror::replace_fragment(&doc, &key, &nodes)
                }))
            });
            let (reply, answer) = oneshot::channel();
            ctx.wait(job.into_actor(self).map(move |joined, act, ctx| {
                // The blocking task cannot be cancelled; a join error is its panic.
                let outcome = joined.unwrap_or_else(|error| Err(Box::new(error.to_string())));
                let _ = reply.send(act.step(ctx, |core, now| core.finish_edit(outcome, now)));
            }));
            return Box::pin(async move {
                match answer.await {
                    Ok(Ok(wait)) => durable(wait).await,
                    Ok(Err(error)) => Err(refused(error)),
                    Err(_) => Err(EditTextError::Gone),
                }
            });
        }
        let edit = self.step(ctx, |core, now| {
            core.edit(|doc| prosemirror::replace_fragment(doc, &key, &nodes), now)
        });
        match edit {
            Ok(wait) => Box::pin(durable(wait)),
            Err(error) => Box::pin(async move { Err(refused(error)) }),
        }
    }
}

/// Why the edit made nothing: its own refusal, or a panic (the copy was dropped unstored, so
/// asking again is safe).
fn refused(error: LocalEditError<ContentError>) -> EditTextError {
    match error {
        LocalEditError::Refused(error) => EditTextError::Content(error),
        LocalEditError::Failed => EditTextError::Gone,
    }
}

async fn durable(wait: oneshot::Receiver<Vec<u8>>) -> Result<(), EditTextError> {
    wait.await
        .map(|_| ())
        .map_err(|_| EditTextError::Unconfirmed)
}
