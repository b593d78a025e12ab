//! Items whose two origins lie in different shared types, refused before they are applied.
//!
//! A Yjs client names as an item's origins the two items beside it in one list. An update can
//! name a left origin in one type and a right origin in another (a text's character and a map's
//! entry, say). yrs then links the new item to the right origin's list while placing it after
//! the left origin: the items between drop out of the list that holds them, differently live
//! and after a reload from the document's own snapshot, and a Yjs client places the item
//! elsewhere again (`fuzz/regressions/sync_message/origins-in-two-types-drop-text.bin`: a text
//! read 38 characters live, 53 reloaded, 60 in Yjs). No client makes such an item, so none is
//! taken.
//!
//! Only origins the document holds already are compared. yrs gives an item's type only with its
//! position, walking its list from it to the start, so the walks an update may cost are bounded
//! ([`MAX_WALK`]) and each origin is looked up once: an honest update pays one lookup pair for
//! its first insert between two items (the rest of a typed run names its own previous item),
//! and one crafted to make the document walk (thousands of items between far-apart origins)
//! costs no more than that bound ([`MAX_LOOKUPS`] lookups at most, too). Past it the update's remaining items are taken unchecked, and
//! an update that names two of its own items in two types is not caught yet (that needs each of
//! its items placed the way `nesting.rs` places types, by chains through the update): the check
//! stops what a client sends by mistake or a fuzzer finds, not every forgery.

use std::collections::HashMap;

use yrs::{Assoc, BranchID, ClientID, Doc, ID, IndexScope, ReadTxn, StickyIndex, Transact};

use super::index::{Id, Index};

/// Positions the lookups of one update may walk in all (a lookup walks about as far as its
/// item's position), and how many it may make: a lookup also walks the deleted items on its way,
/// which take no position, so their number is bounded too.
pub(crate) const MAX_WALK: u64 = 200_000;
pub(crate) const MAX_LOOKUPS: usize = 16;

/// Whether some item of the update `index` describes has a left and a right origin, both held
/// by `doc`, in two different shared types (as far as [`MAX_WALK`] and [`MAX_LOOKUPS`] let it
/// look).
pub(crate) fn origins_apart(doc: &Doc, index: &Index) -> bool {
    let mut view = None;
    let mut found: HashMap<Id, Option<BranchID>> = HashMap::new();
    let mut walked = 0u64;
    for i in 0..index.structs() {
        let Some(head) = index.block(i).and_then(|b| index.head(b)) else {
            continue;
        };
        let (Some(left), Some(right)) = (head.origin, head.right_origin) else {
            continue;
        };
        let (txn, sv) = view.get_or_insert_with(|| {
            let txn = doc.transact();
            let sv = txn.state_vector();
            (txn, sv)
        });
        let held = |(client, clock): Id| clock < sv.get(&ClientID::new(client));
        if !held(left) || !held(right) {
            continue;
        }
        if walked > MAX_WALK || found.len() >= MAX_LOOKUPS {
            return false;
        }
        let mut branch = |(client, clock): Id| {
            found
                .entry((client, clock))
                .or_insert_with(|| {
                    let id = ID::new(ClientID::new(client), clock);
                    let offset =
                        StickyIndex::new(IndexScope::Relative(id), Assoc::After).get_offset(&*txn);
                    walked += offset.as_ref().map_or(1, |o| u64::from(o.index) + 1);
                    offset.map(|o| o.branch.id())
                })
                .clone()
        };
        if let (Some(a), Some(b)) = (branch(left), branch(right))
            && a != b
        {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collab::core::build_doc;
    use crate::store::StoredDoc;
    use crate::sync::protocol::decode_update;

    const BASE: &[u8] = include_bytes!("../../fuzz/base/base_doc.bin");
    const FRAME: &[u8] =
        include_bytes!("../../fuzz/regressions/sync_message/origins-in-two-types-drop-text.bin");

    fn base() -> Doc {
        build_doc(&StoredDoc {
            snapshot: Some(BASE.to_vec()),
            ..StoredDoc::default()
        })
        .expect("decodes")
    }

    /// What yrs does with the recorded update when nothing refuses it: the text loses
    /// characters, and more of them after a reload from the document's own snapshot.
    #[test]
    fn yrs_drops_text_for_an_item_whose_origins_are_in_two_types() {
        use yrs::updates::decoder::Decode;
        use yrs::{GetString, StateVector, Text, Update};
        let update = &FRAME[3..];
        let live = base();
        live.transact_mut()
            .apply_update(Update::decode_v1(update).expect("decodes"))
            .expect("applies");
        let snapshot = live
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        let reloaded = build_doc(&StoredDoc {
            snapshot: Some(snapshot),
            ..StoredDoc::default()
        })
        .expect("decodes");
        let text = |doc: &Doc| {
            let txn = doc.transact();
            txn.get_text("content")
                .map(|t| (t.len(&txn), t.get_string(&txn)))
        };
        let (before, _) = text(&base()).expect("text");
        let (live_len, live_text) = text(&live).expect("text");
        let (reloaded_len, reloaded_text) = text(&reloaded).expect("text");
        // The base text ends "… end\n" and a second client's "ｔａｉｌ 🙂"; the update only adds.
        assert!(live_len < before, "{live_text:?}");
        assert!(reloaded_len < live_len, "{reloaded_text:?}");
    }

    #[test]
    fn the_recorded_update_is_refused_and_ordinary_edits_are_not() {
        let doc = base();
        let incoming = decode_update(bytes::Bytes::copy_from_slice(&FRAME[3..])).expect("valid");
        assert!(origins_apart(&doc, &incoming.index));

        // An insert between two characters of the text, by a client that has the document.
        let peer = base();
        let update = {
            use yrs::Text;
            let text = peer.get_or_insert_text("content");
            let mut txn = peer.transact_mut();
            text.insert(&mut txn, 3, "xy");
            txn.encode_update_v1()
        };
        let incoming = decode_update(bytes::Bytes::from(update)).expect("valid");
        assert!(!origins_apart(&doc, &incoming.index));
    }
}
