//! The y-websocket protocol without any transport: bytes in, typed messages out, and the frames
//! the server sends. Nothing here knows about actix, so it is unit-tested directly.

pub mod content;
pub mod presence;
pub mod protocol;
pub mod restore;
pub mod text_ops;
pub mod validate;

/// Most structs, and bytes of them, that one transaction applies of a larger update. yrs joins
/// the adjacent items an update inserts when its transaction commits, and each join copies the
/// text joined so far: quadratic in what one transaction joins (one update of 100,000
/// one-character items took 15 s, and a 16 MiB message could hold 2 million). In parts of 256
/// structs and 16 KiB, a part copies at most about 2 MB.
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

/// Applies `update`, decoded from the v1 bytes `raw`, to `doc`: a large one in parts of at most
/// `MAX_PART_STRUCTS` structs and `MAX_PART_BYTES`, a transaction each, which builds the same
/// document. Bytes that [`validate::check_update_v1`] refuses are applied whole. yrs may panic on
/// hostile input; catching that is the caller's part.
pub fn apply_update(doc: &yrs::Doc, update: yrs::Update, raw: &[u8]) -> Result<(), ApplyError> {
    use yrs::Transact;
    use yrs::updates::decoder::Decode;
    match validate::split_update_v1(raw, MAX_PART_STRUCTS, MAX_PART_BYTES) {
        Ok(Some(parts)) => {
            for part in parts {
                let part = yrs::Update::decode_v1(&part)?;
                doc.transact_mut().apply_update(part)?;
            }
            Ok(())
        }
        _ => Ok(doc.transact_mut().apply_update(update)?),
    }
}

/// How many updates yrs merges at once. Its merge re-sorts every input for each block it writes,
/// so one call on n updates costs O(n²); merging in rounds of this many keeps a backlog of
/// thousands (a commit's worth under heavy load) linear: 3,000 small updates take about 2.5 ms
/// instead of 40.
const MERGE_FAN_IN: usize = 16;

/// Merges Yjs v1 updates into one that applies exactly as they do in order, or `None` if yrs
/// cannot (it reports an error or panics on some inputs that it applies without complaint).
/// Merging is associative, so many updates are merged in rounds of `MERGE_FAN_IN`.
pub fn merge_updates<'a>(updates: impl IntoIterator<Item = &'a [u8]>) -> Option<Vec<u8>> {
    let updates: Vec<&[u8]> = updates.into_iter().collect();
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

#[cfg(test)]
mod tests {
    use super::{apply_update, merge_updates, validate::split_update_v1};
    use yrs::updates::decoder::Decode;
    use yrs::{Doc, GetString, ReadTxn, Text, Transact, Update};

    /// Two writers' interleaved inserts and deletes, many more than one round merges at once:
    /// the merged update must build the same text as the updates applied one by one.
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
        let merged = merge_updates(updates.iter().map(Vec::as_slice)).expect("merges");
        let fresh = Doc::new();
        fresh
            .transact_mut()
            .apply_update(Update::decode_v1(&merged).expect("merged update decodes"))
            .expect("merged update applies");
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
        let merged = merge_updates(updates.iter().map(Vec::as_slice)).expect("merges");
        let whole = Doc::new();
        whole
            .transact_mut()
            .apply_update(Update::decode_v1(&merged).expect("decodes"))
            .expect("applies whole");

        let parts = split_update_v1(&merged, 256, 16 * 1024)
            .expect("valid")
            .expect("split");
        assert!(parts.len() > 3000 / 256, "{} parts", parts.len());
        let parted = Doc::new();
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
}
