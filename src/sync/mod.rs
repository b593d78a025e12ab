//! The y-websocket protocol without any transport: bytes in, typed messages out, and the frames
//! the server sends. Nothing here knows about actix, so it is unit-tested directly.

pub mod content;
pub mod hocuspocus;
pub mod presence;
pub mod prosemirror;
pub mod protocol;
pub mod restore;
pub(crate) mod survey;
pub mod text_ops;

use crate::wire;

/// Most structs, and bytes of them, that one transaction applies of a larger update. yrs joins
/// the adjacent items an update inserts when its transaction commits, and each join copies the
/// text joined so far: quadratic in what one transaction joins (one update of 100,000
/// one-character items took 15 s, and a 16 MiB message could hold 2 million). In parts of 256
/// structs and 16 KiB, a part copies at most about 2 MB; an update of at most 16 KiB, applied
/// whole, at most about 16 MB.
const MAX_PART_STRUCTS: usize = 256;
const MAX_PART_BYTES: usize = 16 * 1024;

/// Why an update did not apply.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Decode(#[from] yrs::encoding::read::Error),
    #[error(transparent)]
    Update(#[from] yrs::error::UpdateError),
}

/// Applies `update`, decoded from the v1 bytes `raw`, to `doc`: one over `MAX_PART_BYTES` in
/// parts of at most `MAX_PART_STRUCTS` structs and `MAX_PART_BYTES`, a transaction each, in the
/// order [`part_order`] gives, then its delete set; this builds the same document. For bytes
/// not indexed yet (stored rows, the server's own edits): those over the bound are indexed
/// here, and applied whole if the index refuses them. yrs may panic on hostile input; catching
/// that is the caller's part.
pub fn apply_update(doc: &yrs::Doc, update: yrs::Update, raw: &[u8]) -> Result<(), ApplyError> {
    use yrs::Transact;
    // Within the byte bound whole: no walk over the bytes on the path of every keystroke.
    if raw.len() <= MAX_PART_BYTES {
        return Ok(doc.transact_mut().apply_update(update)?);
    }
    match wire::Index::parse(raw) {
        Ok(index) => apply_indexed(doc, update, raw, &index),
        Err(_) => Ok(doc.transact_mut().apply_update(update)?),
    }
}

/// [`apply_update`] of an update indexed already (`index` is `raw`'s, as
/// [`protocol::IncomingUpdate`] carries it): the parts are cut by the index.
pub(crate) fn apply_indexed(
    doc: &yrs::Doc,
    update: yrs::Update,
    raw: &[u8],
    index: &wire::Index,
) -> Result<(), ApplyError> {
    use yrs::Transact;
    use yrs::updates::decoder::Decode;
    if raw.len() <= MAX_PART_BYTES {
        return Ok(doc.transact_mut().apply_update(update)?);
    }
    match wire::split_update_v1(raw, index, MAX_PART_STRUCTS, MAX_PART_BYTES) {
        Ok(Some(split)) => {
            for i in part_order(&split.parts) {
                let part = yrs::Update::decode_v1(&split.parts[i].update)?;
                doc.transact_mut().apply_update(part)?;
            }
            let deletes = yrs::Update::decode_v1(&split.delete_set)?;
            doc.transact_mut().apply_update(deletes)?;
            Ok(())
        }
        _ => Ok(doc.transact_mut().apply_update(update)?),
    }
}

/// How far [`apply_update_within`] got.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    /// All of it.
    Whole,
    /// Its deadline passed: only these parts (each a v1 update of its own, applied in this
    /// order) were applied, and none of its deletions.
    Stopped(Vec<Vec<u8>>),
}

/// Applies `update`, decoded from `raw` (whose index is `index`), to `doc` in parts of at most
/// `max_structs` structs, a transaction each, and stops between two parts once `deadline` has
/// passed. yrs cannot be interrupted inside a transaction, and some updates cost far more than
/// their size suggests (an item placed between origins that thousands of items separate is
/// compared with each of them), so parts keep the overshoot to what one part costs. What was applied when it stopped
/// is consistent on its own: each part is a valid update, applied after what it refers to.
pub(crate) fn apply_update_within(
    doc: &yrs::Doc,
    update: yrs::Update,
    raw: &[u8],
    index: &wire::Index,
    max_structs: usize,
    deadline: std::time::Instant,
) -> Result<Applied, ApplyError> {
    use yrs::Transact;
    use yrs::updates::decoder::Decode;
    let Ok((split, _)) = wire::split_into_parts(raw, index, max_structs, MAX_PART_BYTES) else {
        doc.transact_mut().apply_update(update)?;
        return Ok(Applied::Whole);
    };
    let mut applied = Vec::new();
    for i in part_order(&split.parts) {
        if std::time::Instant::now() >= deadline {
            return Ok(Applied::Stopped(applied));
        }
        let bytes = &split.parts[i].update;
        doc.transact_mut()
            .apply_update(yrs::Update::decode_v1(bytes)?)?;
        applied.push(bytes.clone());
    }
    let deletes = yrs::Update::decode_v1(&split.delete_set)?;
    doc.transact_mut().apply_update(deletes)?;
    Ok(Applied::Whole)
}

/// The order to apply parts in: each after the earlier run of its client and after the parts
/// holding the structs it refers to, otherwise in the update's order (Kahn's algorithm; where
/// references go round in a cycle, the earliest part left goes next). A part applied before
/// what it refers to waits as pending, and yrs integrates everything pending in one
/// transaction once that arrives: the quadratic join again.
fn part_order(parts: &[wire::Part]) -> Vec<usize> {
    use std::cmp::Reverse;
    use std::collections::{BinaryHeap, HashMap};
    // A client's structs are one section of the update, so its parts are consecutive.
    let mut runs: HashMap<u64, (usize, usize)> = HashMap::new();
    for (i, part) in parts.iter().enumerate() {
        runs.entry(part.client).or_insert((i, i)).1 = i;
    }
    let holder = |client: u64, clock: u32| {
        let &(first, last) = runs.get(&client)?;
        let run = &parts[first..=last];
        let after = run.partition_point(|p| p.start <= clock);
        (after > 0 && clock < run[after - 1].end).then(|| first + after - 1)
    };
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); parts.len()];
    let mut waiting = vec![0usize; parts.len()];
    for (i, part) in parts.iter().enumerate() {
        let earlier_run = (i > 0 && parts[i - 1].client == part.client).then(|| i - 1);
        let mut needs: Vec<usize> = earlier_run
            .into_iter()
            .chain(part.refers_to.iter().filter_map(|&(c, at)| holder(c, at)))
            .collect();
        needs.sort_unstable();
        needs.dedup();
        for need in needs {
            dependents[need].push(i);
            waiting[i] += 1;
        }
    }
    let mut ready: BinaryHeap<Reverse<usize>> = (0..parts.len())
        .filter(|&i| waiting[i] == 0)
        .map(Reverse)
        .collect();
    let (mut order, mut done, mut earliest) =
        (Vec::with_capacity(parts.len()), vec![false; parts.len()], 0);
    while order.len() < parts.len() {
        let next = match ready.pop() {
            Some(Reverse(i)) => i,
            None => {
                while done[earliest] {
                    earliest += 1;
                }
                earliest
            }
        };
        if std::mem::replace(&mut done[next], true) {
            continue;
        }
        order.push(next);
        for &d in &dependents[next] {
            waiting[d] = waiting[d].saturating_sub(1);
            if waiting[d] == 0 && !done[d] {
                ready.push(Reverse(d));
            }
        }
    }
    order
}

/// How many updates yrs merges at once. Its merge re-sorts every input for each block it writes,
/// so one call on n updates costs O(n²); merging in rounds of this many keeps a backlog of
/// thousands (a commit's worth under heavy load) linear: 3,000 small updates take about 2.5 ms
/// instead of 40.
const MERGE_FAN_IN: usize = 16;

/// Merges Yjs v1 updates into one that applies exactly as they do in order, or `None` if it
/// cannot. Updates that continue each other, as a document's live updates do, are spliced
/// (`wire::splice_updates_v1`, which reads each update's index: these are parsed here); others
/// are merged by yrs, or not at all where yrs cannot (it reports an error or panics on some
/// inputs that it applies without complaint). yrs's merge is associative, so many updates are
/// merged in rounds of `MERGE_FAN_IN`.
pub fn merge_updates<'a>(updates: impl IntoIterator<Item = &'a [u8]>) -> Option<Vec<u8>> {
    merge_indexed(updates.into_iter().map(|update| (update, None)))
}

/// [`merge_updates`] of updates that may come with their index already (as the document hands
/// its updates to the writer); only those without one are parsed.
pub(crate) fn merge_indexed<'a>(
    updates: impl IntoIterator<Item = (&'a [u8], Option<&'a wire::Index>)>,
) -> Option<Vec<u8>> {
    let updates: Vec<(&[u8], Option<&wire::Index>)> = updates.into_iter().collect();
    // Indexes for the updates that came without one; any that does not parse goes to yrs.
    let parsed: Option<Vec<wire::Index>> = updates
        .iter()
        .filter(|(_, index)| index.is_none())
        .map(|(update, _)| wire::Index::parse(update).ok())
        .collect();
    if let Some(parsed) = parsed {
        let mut own = parsed.iter();
        let indexed: Option<Vec<(&[u8], &wire::Index)>> = updates
            .iter()
            .map(|&(update, index)| Some((update, index.or_else(|| own.next())?)))
            .collect();
        if let Some(spliced) = indexed.and_then(|indexed| wire::splice_updates_v1(&indexed)) {
            return Some(spliced);
        }
    }
    let updates: Vec<&[u8]> = updates.into_iter().map(|(update, _)| update).collect();
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        if updates.len() <= MERGE_FAN_IN {
            return yrs::merge_updates_v1(updates);
        }
        let mut round = merge_round(updates.chunks(MERGE_FAN_IN))?;
        while round.len() > 1 {
            round = merge_round(round.chunks(MERGE_FAN_IN))?;
        }
        Ok(round.pop().unwrap_or_default())
    }))
    .ok()?
    .ok()
}

fn merge_round<'a, U: AsRef<[u8]> + 'a>(
    chunks: impl Iterator<Item = &'a [U]>,
) -> Result<Vec<Vec<u8>>, yrs::encoding::read::Error> {
    chunks
        .map(|chunk| match chunk {
            [one] => Ok(one.as_ref().to_vec()),
            _ => yrs::merge_updates_v1(chunk.iter().map(AsRef::as_ref)),
        })
        .collect()
}

/// Helpers shared by the module tests.
#[cfg(test)]
pub(crate) mod test_support {
    use yrs::updates::decoder::Decode;
    use yrs::{Array, Doc, OffsetKind, Options, ReadTxn, StateVector, Text, Transact, Update};

    /// `out` after taking in everything `doc` holds.
    fn copy_into(doc: &Doc, out: Doc) -> Doc {
        let state = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        out.transact_mut()
            .apply_update(Update::decode_v1(&state).expect("decodes"))
            .expect("applies");
        out
    }

    /// A new client holding what `doc` holds.
    fn synced_client(doc: &Doc) -> Doc {
        copy_into(doc, Doc::new())
    }

    /// `build`'s document as the server holds it: built only from updates, no root declared.
    pub(crate) fn as_received(build: impl FnOnce(&Doc)) -> Doc {
        let source = Doc::new();
        build(&source);
        copy_into(&source, Doc::new())
    }

    /// A document with the server's options: text counted in UTF-16 units, as Yjs counts it.
    pub(crate) fn server_doc() -> Doc {
        Doc::with_options(Options {
            offset_kind: OffsetKind::Utf16,
            ..Options::default()
        })
    }

    /// A server document holding what `doc` holds, as after a reload from the store.
    pub(crate) fn server_copy(doc: &Doc) -> Doc {
        copy_into(doc, server_doc())
    }

    /// The update a client sends after syncing `doc` and inserting `value` at the front of
    /// `getArray(key)`: what another client's use of a text root as an array looks like.
    pub(crate) fn array_insert_at_front(doc: &Doc, key: &str, value: i64) -> Vec<u8> {
        let other = synced_client(doc);
        let list = other.get_or_insert_array(key);
        let mut txn = other.transact_mut();
        list.insert(&mut txn, 0, value);
        txn.encode_update_v1()
    }

    /// The update a client sends after syncing `doc` and typing `text` at `at` of
    /// `getText(key)`: another client's use of an array root as text.
    pub(crate) fn text_insert(doc: &Doc, key: &str, at: u32, text: &str) -> Vec<u8> {
        let other = synced_client(doc);
        let root = other.get_or_insert_text(key);
        let mut txn = other.transact_mut();
        root.insert(&mut txn, at, text);
        txn.encode_update_v1()
    }
}

#[cfg(test)]
mod tests {
    use super::{apply_update, merge_updates, part_order};
    use crate::wire::Index;
    use yrs::encoding::write::Write;
    use yrs::updates::decoder::Decode;
    use yrs::{Doc, GetString, ReadTxn, Text, Transact, Update};

    /// [`crate::wire::split_update_v1`] of a raw update, indexed first.
    fn split_update_v1(
        update: &[u8],
        max_structs: usize,
        max_bytes: usize,
    ) -> Result<Option<crate::wire::Split>, crate::wire::Invalid> {
        let index = Index::parse(update)?;
        crate::wire::split_update_v1(update, &index, max_structs, max_bytes)
    }

    /// A new document with `update` applied in one transaction, as yrs applies it.
    fn doc_applying_whole(update: &[u8]) -> Doc {
        let doc = Doc::new();
        doc.transact_mut()
            .apply_update(Update::decode_v1(update).expect("update decodes"))
            .expect("update applies whole");
        doc
    }

    /// Two writers' interleaved inserts and deletes, many more than one round merges at once,
    /// one of them twice: the merged update must build the same text as the updates applied
    /// one by one.
    #[test]
    fn many_updates_merge_in_rounds_into_one_that_builds_the_same_text() {
        let (a, b) = (Doc::with_client_id(1), Doc::with_client_id(2));
        let mut updates = Vec::new();
        for i in 0..700u32 {
            let (doc, peer) = if i % 3 == 0 { (&b, &a) } else { (&a, &b) };
            let text = doc.get_or_insert_text("content");
            let update = {
                let mut txn = doc.transact_mut();
                let len = text.len(&txn);
                if i % 7 == 6 && len > 2 {
                    text.remove_range(&mut txn, len / 2, 2);
                } else {
                    text.insert(&mut txn, (i * 31) % (len + 1), &format!("<{i}>"));
                }
                txn.encode_update_v1()
            };
            let decoded = Update::decode_v1(&update).expect("own update decodes");
            peer.transact_mut()
                .apply_update(decoded)
                .expect("peer applies");
            updates.push(update);
        }
        // One update again at the end, as a client resending it would: the updates no longer
        // continue each other, so yrs merges them, in rounds.
        updates.push(updates[1].clone());
        let run: Vec<&[u8]> = updates.iter().map(Vec::as_slice).collect();
        assert_eq!(crate::wire::splice_tests::splice_updates_v1(&run), None);
        let merged = merge_updates(run).expect("merges");
        let fresh = doc_applying_whole(&merged);
        let expected = a.get_or_insert_text("content").get_string(&a.transact());
        assert!(expected.len() > 1000);
        let text = fresh.get_or_insert_text("content");
        assert_eq!(text.get_string(&fresh.transact()), expected);
        assert!(fresh.transact().store().pending_update().is_none());
    }

    /// One update holding 3,000 small items of one client, a second client's section
    /// and deletions of both: split into parts, it builds the same text as applied whole.
    #[test]
    fn a_large_update_applies_in_parts_to_the_same_text() {
        let (a, b) = (Doc::with_client_id(1), Doc::with_client_id(2));
        let mut updates = Vec::new();
        for i in 0..3000u32 {
            let doc = if i % 1000 == 999 { &b } else { &a };
            let text = doc.get_or_insert_text("content");
            let mut txn = doc.transact_mut();
            let len = text.len(&txn);
            text.insert(&mut txn, len, if i % 2 == 0 { "x" } else { "yz" });
            if i % 500 == 499 && text.len(&txn) > 4 {
                text.remove_range(&mut txn, 1, 3);
            }
            updates.push(txn.encode_update_v1());
        }
        // yrs's merge keeps each update's item apart (a splice would join them into a few).
        let merged = yrs::merge_updates_v1(&updates).expect("merges");
        let whole = doc_applying_whole(&merged);

        let split = split_update_v1(&merged, 256, 16 * 1024)
            .expect("valid")
            .expect("split");
        assert!(
            split.parts.len() > 3000 / 256,
            "{} parts",
            split.parts.len()
        );
        let parted = Doc::new();
        assert!(merged.len() > super::MAX_PART_BYTES, "split when applied");
        let update = Update::decode_v1(&merged).expect("decodes");
        apply_update(&parted, update, &merged).expect("applies in parts");

        let text = |doc: &Doc| {
            doc.get_or_insert_text("content")
                .get_string(&doc.transact())
        };
        assert!(text(&whole).chars().count() > 1000);
        assert_eq!(text(&parted), text(&whole));
        assert_eq!(
            parted.transact().state_vector(),
            whole.transact().state_vector()
        );
        assert!(parted.transact().store().pending_update().is_none());
        // Within the bounds, nothing is split.
        assert_eq!(split_update_v1(&updates[0], 256, 16 * 1024), Ok(None));
    }

    /// A chain of 4,000 adjacent items of client 2 whose first item follows client 1's only item,
    /// which the update holds after them: client 1's part goes first, so no part waits as
    /// pending (yrs would join the whole pending chain in one transaction).
    #[test]
    fn parts_go_after_the_parts_they_refer_to() {
        const ITEMS: u32 = 4000;
        let mut update = Vec::new();
        update.write_var(2u32); // clients
        update.write_var(ITEMS);
        update.write_var(2u64);
        update.write_var(0u32);
        for clock in 0..ITEMS {
            update.write_u8(0x80 | 4); // string content after its left origin
            let origin = if clock == 0 { (1, 0) } else { (2, clock - 1) };
            update.write_var(origin.0 as u64);
            update.write_var(origin.1);
            update.write_string("x");
        }
        update.write_var(1u32);
        update.write_var(1u64);
        update.write_var(0u32);
        update.write_u8(4); // no origins: a named root parent follows
        update.write_var(1u32);
        update.write_string("content");
        update.write_string("y");
        update.write_var(0u32); // empty delete set
        crate::wire::check_update_v1(&update).expect("valid");
        assert!(update.len() > super::MAX_PART_BYTES, "split when applied");

        let split = split_update_v1(&update, 256, 16 * 1024)
            .expect("valid")
            .expect("split");
        let order = part_order(&split.parts);
        let last = split.parts.len() - 1;
        assert_eq!(split.parts[last].client, 1);
        assert_eq!(order[0], last, "{order:?}");
        assert_eq!(&order[1..], (0..last).collect::<Vec<_>>());

        let doc = Doc::new();
        let decoded = Update::decode_v1(&update).expect("decodes");
        apply_update(&doc, decoded, &update).expect("applies");
        let text = doc
            .get_or_insert_text("content")
            .get_string(&doc.transact());
        assert_eq!(text, format!("y{}", "x".repeat(ITEMS as usize)));
        assert!(doc.transact().store().pending_update().is_none());
    }
}
