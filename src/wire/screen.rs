//! What the document actor makes of an update before applying it: updates yrs would mishandle
//! are refused, and structs the document already holds are cut out, so that what is applied,
//! stored and relayed is one and the same update. (Public for the fuzz targets, through
//! `collab::document`.)

use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};

use bytes::Bytes;
use yrs::updates::encoder::Encode;
use yrs::{ClientID, Doc, IdSet, ReadTxn, StateVector, Transact, Update};

use super::nesting::{self, NestingError};
use super::origins;
use crate::sync::protocol::{IncomingUpdate, decode_update};

/// Why an update was refused before it was applied; the document is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// yrs keeps live items that arrive early for later, but panics on collected ones; no Yjs
    /// client sends them, as it only ever sends what the server lacks.
    #[error("garbage-collected structs beyond the document's state")]
    CollectedBeyondState,
    /// yrs would skip them and keep the content, but a Yjs client receiving them may take the
    /// re-sent struct and lose it. An honest client collects only deleted content, so the
    /// document or the update itself deletes those clocks.
    #[error("collected or deleted structs over content the document holds live")]
    DeadOverLive,
    /// Deleting a type nested thousands deep overflows yrs's recursion: none gets in.
    #[error(transparent)]
    Nesting(#[from] NestingError),
    /// yrs would link the item into one list after an item of another, losing what lies
    /// between (see `origins.rs`); no Yjs client makes one.
    #[error("an item's origins lie in two different shared types")]
    OriginsApart,
    /// What the update adds beyond the document could not be cut out of it.
    #[error("the update's new part does not decode: {0}")]
    Unsplittable(String),
}

/// Whether `update` would add anything to `doc`: content it lacks, or deletions it has not made.
pub fn changes_anything(doc: &Doc, update: &Update) -> bool {
    let txn = doc.transact();
    if update.extends(&txn.state_vector()) {
        return true;
    }
    let deleted = txn.snapshot().delete_set;
    !update.delete_set().diff(&deleted).is_empty()
}

/// The update to apply to `doc`, whose state vector is `sv`, and to store and relay in place of
/// `incoming`, or why none is.
///
/// Structs of clocks the document holds are cut out of it. yrs skips them when applying, but
/// the bytes received still carry them: a merge of a commit's updates, a reload from the log
/// and a Yjs client may each take the re-sent version, which can name other content, other
/// origins or another parent, and so show another document than the server's. Honest clients
/// re-send known structs only when edits cross a sync (a client's update and its answer to the
/// server's state vector overlap); cutting them changes nothing there but the bytes relayed.
/// An update of only what the document lacks, the common case, is returned as it came.
pub fn screen(
    doc: &Doc,
    sv: &StateVector,
    incoming: IncomingUpdate,
) -> Result<IncomingUpdate, Refused> {
    let lower = incoming.update.state_vector_lower();
    if collected_beyond_state(sv, &lower, &incoming.update) {
        return Err(Refused::CollectedBeyondState);
    }
    let known: Vec<(ClientID, u32, u32)> = lower
        .iter()
        .filter(|(client, lower)| **lower < sv.get(client))
        .map(|(client, lower)| (*client, *lower, sv.get(client)))
        .collect();
    let incoming = if known.is_empty() {
        incoming
    } else {
        if resends_live_as_dead(doc, &known, &incoming.update) {
            return Err(Refused::DeadOverLive);
        }
        without_known(sv, &incoming.raw)?
    };
    nesting::check(doc, &incoming.index)?;
    if origins::origins_apart(doc, &incoming.index) {
        return Err(Refused::OriginsApart);
    }
    Ok(incoming)
}

/// Whether `update` starts some client's structs past what the document has (`sv`) with a
/// garbage-collected (or deleted) struct.
fn collected_beyond_state(sv: &StateVector, lower: &StateVector, update: &Update) -> bool {
    let ahead: Vec<(ClientID, u32)> = lower
        .iter()
        .filter(|(client, clock)| **clock > sv.get(client))
        .map(|(client, clock)| (*client, *clock))
        .collect();
    // The common case (nothing arrives early) costs no walk over the update's blocks.
    if ahead.is_empty() {
        return false;
    }
    let live = update.insertions(false);
    ahead
        .into_iter()
        .any(|(client, clock)| !live.contains(&yrs::ID::new(client, clock)))
}

/// Whether `update` re-sends, as collected or deleted structs, clocks in `known` (client, the
/// update's lowest clock, the document's state) that `doc` holds as live content, without
/// deleting them.
fn resends_live_as_dead(doc: &Doc, known: &[(ClientID, u32, u32)], update: &Update) -> bool {
    let live = update.insertions(false);
    let all = update.insertions(true);
    // Built only if some struct is dead: the whole document's delete set.
    let mut doc_deleted: Option<IdSet> = None;
    for &(client, lower, held) in known {
        let dead = dead_ranges(&all, &live, client, lower, held);
        if dead.is_empty() {
            continue;
        }
        let doc_deleted = doc_deleted.get_or_insert_with(|| doc.transact().snapshot().delete_set);
        let mut deleted = ranges_of(doc_deleted, client);
        deleted.extend(ranges_of(update.delete_set(), client));
        if dead.iter().any(|range| !covered(range, &mut deleted)) {
            return true;
        }
    }
    false
}

/// `raw` without the structs a document at `sv` holds; its deletions are kept whole.
fn without_known(sv: &StateVector, raw: &[u8]) -> Result<IncomingUpdate, Refused> {
    // yrs was not built for hostile input: a panic here refuses the update.
    let cut = catch_unwind(AssertUnwindSafe(|| {
        yrs::diff_updates_v1(raw, &sv.encode_v1())
    }))
    .map_err(|_| Refused::Unsplittable("it could not be read".into()))?
    .map_err(|error| Refused::Unsplittable(error.to_string()))?;
    // The cut is yrs's own encoding: it passes the same checks as what clients send, and is
    // indexed as they are.
    decode_update(Bytes::from(cut)).map_err(|error| Refused::Unsplittable(error.to_string()))
}

/// `client`'s clock ranges in `set`.
fn ranges_of(set: &IdSet, client: ClientID) -> Vec<Range<u32>> {
    set.iter()
        .filter(|(c, _)| **c == client)
        .flat_map(|(_, ranges)| ranges.iter().cloned().collect::<Vec<_>>())
        .collect()
}

/// The clocks of `client` within `lower..held` that `all` inserts but `live` does not: the
/// update's collected and deleted structs over what the document holds.
fn dead_ranges(
    all: &IdSet,
    live: &IdSet,
    client: ClientID,
    lower: u32,
    held: u32,
) -> Vec<Range<u32>> {
    let mut live = ranges_of(live, client);
    let mut dead = Vec::new();
    for range in ranges_of(all, client) {
        let range = range.start.max(lower)..range.end.min(held);
        if range.is_empty() {
            continue;
        }
        subtract(range, &mut live, &mut dead);
    }
    dead
}

/// Pushes onto `out` the parts of `range` that no range of `minus` covers.
fn subtract(range: Range<u32>, minus: &mut [Range<u32>], out: &mut Vec<Range<u32>>) {
    minus.sort_unstable_by_key(|r| r.start);
    let mut start = range.start;
    for m in minus.iter() {
        if m.end <= start || m.start >= range.end {
            continue;
        }
        if m.start > start {
            out.push(start..m.start);
        }
        start = start.max(m.end);
        if start >= range.end {
            return;
        }
    }
    if start < range.end {
        out.push(start..range.end);
    }
}

/// Whether the ranges of `by` together cover all of `range`.
fn covered(range: &Range<u32>, by: &mut [Range<u32>]) -> bool {
    let mut left = Vec::new();
    subtract(range.clone(), by, &mut left);
    left.is_empty()
}

#[cfg(test)]
mod tests {
    use super::{Refused, screen};
    use crate::sync::protocol::{IncomingUpdate, decode_update};
    use bytes::Bytes;
    use yrs::updates::decoder::Decode;
    use yrs::{Array, Doc, GetString, ReadTxn, StateVector, Text, Transact, Update};

    /// The client every test document is written by.
    const C5: yrs::block::ClientID = yrs::block::ClientID::new(5);

    fn incoming(bytes: &[u8]) -> IncomingUpdate {
        decode_update(Bytes::copy_from_slice(bytes)).expect("a valid update")
    }

    fn apply(doc: &Doc, update: &[u8]) {
        doc.transact_mut()
            .apply_update(Update::decode_v1(update).expect("decodes"))
            .expect("applies");
    }

    /// Client 5's structs from clock 0: one collected range of `len`, then the delete set
    /// `deletes` of client 5 (clock, len).
    fn collected(len: u8, deletes: &[(u8, u8)]) -> IncomingUpdate {
        let mut bytes = vec![1, 1, 5, 0, 0, len];
        if deletes.is_empty() {
            bytes.push(0);
        } else {
            bytes.extend([1, 5, deletes.len() as u8]);
            for (clock, len) in deletes {
                bytes.extend([*clock, *len]);
            }
        }
        incoming(&bytes)
    }

    /// A document where client 5 typed "hello" (clocks 0–4).
    fn typed() -> (Doc, Doc) {
        let author = Doc::with_client_id(5);
        let text = author.get_or_insert_text("t");
        text.insert(&mut author.transact_mut(), 0, "hello");
        let doc = Doc::new();
        apply(
            &doc,
            &author
                .transact()
                .encode_state_as_update_v1(&StateVector::default()),
        );
        (doc, author)
    }

    #[test]
    fn collected_structs_over_live_content_are_refused() {
        let (doc, _) = typed();
        // Clocks 0–7 as one collected range: 0–4 are live characters here.
        assert!(matches!(
            screen(&doc, &doc.transact().state_vector(), collected(8, &[])),
            Err(Refused::DeadOverLive)
        ));
        // Deleting only part of them in the same update is not enough.
        assert!(matches!(
            screen(
                &doc,
                &doc.transact().state_vector(),
                collected(8, &[(0, 3)])
            ),
            Err(Refused::DeadOverLive)
        ));
    }

    #[test]
    fn collected_structs_over_deleted_content_pass_without_them() {
        // The update deletes what it collects, as an honest client's does.
        let (doc, author) = typed();
        let kept = screen(
            &doc,
            &doc.transact().state_vector(),
            collected(8, &[(0, 5)]),
        )
        .expect("accepted");
        // Only clocks 5–7 remain, with the deletions.
        assert_eq!(kept.update.state_vector_lower().get(&C5), 5);
        let inserted = kept.update.insertions(true);
        assert!(inserted.contains(&yrs::ID::new(C5, 7)));
        assert!(!inserted.contains(&yrs::ID::new(C5, 4)));
        assert!(kept.update.delete_set().contains(&yrs::ID::new(C5, 0)));
        // The document deleted it already.
        let text = author.get_or_insert_text("t");
        let before = author.transact().state_vector();
        text.remove_range(&mut author.transact_mut(), 0, 5);
        apply(&doc, &author.transact().encode_state_as_update_v1(&before));
        assert!(screen(&doc, &doc.transact().state_vector(), collected(8, &[])).is_ok());
        // What the document lacks passes as it came.
        let whole = collected(8, &[]);
        let raw = whole.raw.clone();
        let passed = screen(&Doc::new(), &StateVector::default(), whole).expect("accepted");
        assert_eq!(passed.raw, raw);
    }

    #[test]
    fn structs_beyond_the_state_that_are_collected_are_refused() {
        // Clock 10 of client 5, which the document has only up to 5.
        let (doc, _) = typed();
        assert!(matches!(
            screen(
                &doc,
                &doc.transact().state_vector(),
                incoming(&[1, 1, 5, 10, 0, 3, 0])
            ),
            Err(Refused::CollectedBeyondState)
        ));
    }

    /// Yjs clients re-send what they already sent when an edit crosses the sync: the overlap is
    /// cut, and what is left applies to the same text.
    #[test]
    fn an_update_overlapping_the_document_keeps_only_what_is_new() {
        let (doc, author) = typed();
        let text = author.get_or_insert_text("t");
        text.insert(&mut author.transact_mut(), 5, " world");
        let everything = author
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        let kept =
            screen(&doc, &doc.transact().state_vector(), incoming(&everything)).expect("accepted");
        assert!(kept.raw.len() < everything.len());
        assert_eq!(kept.update.state_vector_lower().get(&C5), 5);
        // The relayed frame carries the cut update.
        assert!(kept.relay.ends_with(&kept.raw));
        apply(&doc, &kept.raw);
        let t = doc.get_or_insert_text("t");
        assert_eq!(t.get_string(&doc.transact()), "hello world");
        // A fresh copy built from the first state and the cut matches.
        let copy = Doc::new();
        apply(
            &copy,
            &typed()
                .0
                .transact()
                .encode_state_as_update_v1(&StateVector::default()),
        );
        apply(&copy, &kept.raw);
        assert_eq!(
            copy.get_or_insert_text("t").get_string(&copy.transact()),
            "hello world"
        );
    }

    /// Known clocks re-sent as items of another root, and a new item placed against them: the
    /// new item lands against what the document holds, wherever the update came from.
    #[test]
    fn known_clocks_re_sent_with_other_content_are_cut() {
        let (doc, _) = typed();
        // Client 5 again, clocks 0–4 as an array of five numbers in root "a", then clock 5.
        let forger = Doc::with_client_id(5);
        let list = forger.get_or_insert_array("a");
        list.insert_range(&mut forger.transact_mut(), 0, [1, 2, 3, 4, 5]);
        list.insert(&mut forger.transact_mut(), 5, 6);
        let forged = forger
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        let kept =
            screen(&doc, &doc.transact().state_vector(), incoming(&forged)).expect("accepted");
        assert_eq!(kept.update.state_vector_lower().get(&C5), 5);
        let inserted = kept.update.insertions(true);
        assert!(inserted.contains(&yrs::ID::new(C5, 5)));
        assert!(!inserted.contains(&yrs::ID::new(C5, 4)));
        // No struct of the cut names root "a": the re-sent array items are gone.
        assert!(!kept.raw.windows(2).any(|w| w == [1, b'a']));
        apply(&doc, &kept.raw);
        assert_eq!(doc.transact().state_vector().get(&C5), 6);
    }
}
