//! How deep an update would nest shared types, worked out before it is applied.
//!
//! yrs deletes, garbage-collects and renders nested types recursively, a few stack frames per
//! level. A chain of types nested some thousands deep costs a few bytes per level, so it fits in
//! one update (or is built up over many), and deleting it then overflows the document thread's
//! stack, which aborts the whole process. The document actor refuses any update that would put
//! a shared type deeper than [`MAX_TYPE_DEPTH`], so no document ever holds one.
//!
//! An item names its place by its left or right origin (it joins that item's parent) or, with
//! neither, by its parent: a root or the item holding a type. References resolve within the
//! update first, then in the document, the way yrs resolves them when it integrates. All of it
//! reads the update's [`Index`]; an update without nested types costs nothing here.

use std::collections::HashMap;

use yrs::branch::BranchPtr;
use yrs::{Assoc, BranchID, Doc, ID, IndexScope, ReadTxn, StickyIndex, Transact};

use super::index::{Id, Index, ItemHead, ItemParent, Kind};
use super::validate::{CONTENT_DELETED, CONTENT_TYPE};

/// Deepest nesting of shared types accepted; a root type counts as one, a type inside it as two.
/// Far inside what yrs's recursion needs of a 2 MiB stack, even in a debug build (it overflows
/// somewhere between 800 and 1,600 levels there), and beyond any editor's document structure.
pub const MAX_TYPE_DEPTH: usize = 128;

/// Why an update's shared types were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NestingError {
    #[error("shared types nested deeper than {MAX_TYPE_DEPTH} levels")]
    TooDeep,
    /// A type whose place depends on structs the document does not have yet: once they come,
    /// it would land at a depth nobody checked.
    #[error("a shared type whose place in the document is not known yet")]
    Unplaced,
    /// An item whose parent is an item holding other content than a shared type. yrs refuses
    /// it while applying, after integrating the structs before it, so it is refused first.
    #[error("an item's parent is not a shared type")]
    ParentNotAType,
    /// An item naming as its parent an item neither the update nor the document holds: yrs
    /// would hold it back, and refuse it part way through applying whatever update brings the
    /// parent, if that is not a type. Clients send an item with the type it goes in.
    #[error("an item's parent is not in the document")]
    ParentMissing,
}

/// Where an item lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// In a branch this deep.
    Depth(usize),
    /// Nowhere: its parent was deleted and collected, so yrs collects it too.
    Gone,
    /// Not known: it refers to a struct that neither the update nor the document holds.
    Missing,
}

#[derive(Clone, Copy)]
enum State {
    Unvisited,
    Visiting,
    Done(Place),
}

/// Refuses the update `index` describes if applying it to `doc` would nest a shared type deeper
/// than [`MAX_TYPE_DEPTH`], or would leave one waiting for structs the document lacks. An update
/// without nested types (the index says so) costs nothing.
pub(crate) fn check(doc: &Doc, index: &Index) -> Result<(), NestingError> {
    // Most updates hold no nested type.
    if !index.holds_types() {
        return Ok(());
    }
    let items = Items::new(index);
    let txn = doc.transact();
    match measure(&txn, &items)? {
        Some(depth) if depth > MAX_TYPE_DEPTH => Err(NestingError::TooDeep),
        _ => check_parents(&txn, &items),
    }
}

/// The depth of the deepest shared type the update `index` describes adds, if it adds any that
/// yrs would keep.
#[cfg(test)]
fn deepest<T: ReadTxn>(txn: &T, index: &Index) -> Result<Option<usize>, NestingError> {
    if !index.holds_types() {
        return Ok(None);
    }
    measure(txn, &Items::new(index))
}

/// Refuses an item whose parent, found as yrs finds it when it integrates the item, holds
/// content other than a shared type, or is missing: an item of the update, or else one of the
/// document. A parent deleted or collected is fine (yrs collects the item).
fn check_parents<T: ReadTxn>(txn: &T, items: &Items) -> Result<(), NestingError> {
    let known = txn.state_vector();
    // Built only if some parent is not a type: the document's deleted and collected clocks.
    let mut deleted: Option<yrs::IdSet> = None;
    for head in (0..items.len()).filter_map(|i| items.head(i)) {
        let Some(ItemParent::Type((client, clock))) = head.parent else {
            continue;
        };
        if let Some(index) = items.find((client, clock)) {
            match &items.head(index) {
                Some(parent)
                    if parent.content_ref != CONTENT_TYPE
                        && parent.content_ref != CONTENT_DELETED =>
                {
                    return Err(NestingError::ParentNotAType);
                }
                _ => continue,
            }
        }
        let id = ID::new(yrs::ClientID::new(client), clock);
        if known.get(&id.client) <= clock {
            return Err(NestingError::ParentMissing);
        }
        if StickyIndex::new(IndexScope::Nested(id), Assoc::After)
            .get_offset(txn)
            .is_some()
        {
            continue;
        }
        let deleted = deleted.get_or_insert_with(|| txn.snapshot().delete_set);
        if !deleted.contains(&id) {
            return Err(NestingError::ParentNotAType);
        }
    }
    Ok(())
}

fn measure<T: ReadTxn>(txn: &T, items: &Items) -> Result<Option<usize>, NestingError> {
    let mut resolver = Resolver {
        txn,
        items,
        state: vec![State::Unvisited; items.len()],
        known: txn.state_vector(),
    };
    let mut deepest = None;
    for index in 0..items.len() {
        if items
            .head(index)
            .is_none_or(|h| h.content_ref != CONTENT_TYPE)
        {
            continue;
        }
        match resolver.place(index) {
            Place::Depth(depth) => deepest = deepest.max(Some(depth + 1)),
            Place::Gone => {}
            Place::Missing => return Err(NestingError::Unplaced),
        }
    }
    Ok(deepest)
}

/// An update's structs, in order, found by ID.
struct Items<'a> {
    index: &'a Index,
    /// Each client's section, by its place in the index (one section per client).
    clients: HashMap<u64, usize>,
}

impl<'a> Items<'a> {
    fn new(index: &'a Index) -> Items<'a> {
        let clients = index
            .sections()
            .iter()
            .enumerate()
            .map(|(at, section)| (section.client, at))
            .collect();
        Items { index, clients }
    }

    /// How many structs the update holds.
    fn len(&self) -> usize {
        self.index.structs()
    }

    /// Struct `index`'s head; `None` for a collected or skipped range.
    fn head(&self, index: usize) -> Option<ItemHead> {
        self.index.block(index).and_then(|b| self.index.head(b))
    }

    /// The struct of this update that holds `id`; a skipped range holds nothing (references into
    /// it resolve in the document).
    fn find(&self, (client, clock): Id) -> Option<usize> {
        let section = self.index.sections().get(*self.clients.get(&client)?)?;
        let blocks = self.index.blocks_of(section);
        let at = blocks.partition_point(|b| b.end_clock() <= clock);
        let block = blocks.get(at)?;
        (block.clock() <= clock && block.kind() != Kind::Skip)
            .then_some(Index::range_of(section).start + at)
    }
}

struct Resolver<'a, T: ReadTxn> {
    txn: &'a T,
    items: &'a Items<'a>,
    state: Vec<State>,
    known: yrs::StateVector,
}

/// What an item's place depends on.
enum Reference {
    /// The branch that holds this item.
    Beside((u64, u32)),
    /// The type this item holds.
    Inside((u64, u32)),
}

impl<T: ReadTxn> Resolver<'_, T> {
    /// Where struct `index` lands. Chains of references within the update are followed with a
    /// stack of their own, not by recursion: they are as long as the update.
    fn place(&mut self, index: usize) -> Place {
        let mut stack = vec![index];
        while let Some(&top) = stack.last() {
            if let State::Done(_) = self.state[top] {
                stack.pop();
                continue;
            }
            if self.items.head(top).is_none() {
                // A collected range: yrs finds no item there to place anything beside.
                self.state[top] = State::Done(Place::Gone);
                stack.pop();
                continue;
            }
            self.state[top] = State::Visiting;
            let mut waiting = None;
            let mut places = Vec::new();
            for reference in self.references(top) {
                match self.resolve(&reference) {
                    Ok(place) => places.push(place),
                    Err(dependency) => match self.state[dependency] {
                        // A cycle: yrs cannot integrate it either; it stays pending.
                        State::Visiting => places.push(Place::Missing),
                        _ => {
                            waiting = Some(dependency);
                            break;
                        }
                    },
                }
            }
            if let Some(dependency) = waiting {
                stack.push(dependency);
                continue;
            }
            self.state[top] = State::Done(combine(&places));
            stack.pop();
        }
        match self.state[index] {
            State::Done(place) => place,
            _ => Place::Missing,
        }
    }

    /// The references that decide struct `index`'s place, in the order yrs consults them.
    fn references(&self, index: usize) -> Vec<Reference> {
        let Some(head) = self.items.head(index) else {
            return Vec::new();
        };
        match &head.parent {
            Some(ItemParent::Root) => Vec::new(),
            Some(ItemParent::Type(id)) => vec![Reference::Inside(*id)],
            None => head
                .origin
                .iter()
                .chain(&head.right_origin)
                .map(|id| Reference::Beside(*id))
                .collect(),
        }
    }

    /// Resolves one reference to a place, or names the struct of this update it waits for.
    fn resolve(&self, reference: &Reference) -> Result<Place, usize> {
        let (id, inside) = match reference {
            Reference::Beside(id) => (*id, false),
            Reference::Inside(id) => (*id, true),
        };
        if let Some(index) = self.items.find(id) {
            let State::Done(place) = self.state[index] else {
                return Err(index);
            };
            if !inside {
                return Ok(place);
            }
            // The parent is an item of this update: its type's branch is one deeper than it.
            let holds_type = self
                .items
                .head(index)
                .is_some_and(|h| h.content_ref == CONTENT_TYPE);
            return Ok(match place {
                Place::Depth(depth) if holds_type => Place::Depth(depth + 1),
                // yrs refuses a parent that is not a type; nothing of it lands.
                Place::Depth(_) => Place::Gone,
                other => other,
            });
        }
        let (client, clock) = id;
        if self.known.get(&yrs::ClientID::new(client)) <= clock {
            return Ok(Place::Missing);
        }
        let scope = if inside {
            IndexScope::Nested(ID::new(yrs::ClientID::new(client), clock))
        } else {
            IndexScope::Relative(ID::new(yrs::ClientID::new(client), clock))
        };
        // yrs finds the branch of an item (or the type an item holds) without reading any
        // content; a collected item has none.
        Ok(StickyIndex::new(scope, Assoc::After)
            .get_offset(self.txn)
            .map_or(Place::Gone, |offset| {
                Place::Depth(branch_depth(self.txn, offset.branch))
            }))
    }
}

/// yrs places an item beside its left origin if that is still there, else beside its right
/// origin; it waits if either is missing, and collects the item if neither is there.
fn combine(places: &[Place]) -> Place {
    if places.is_empty() {
        // A root's child.
        return Place::Depth(1);
    }
    if places.contains(&Place::Missing) {
        return Place::Missing;
    }
    places
        .iter()
        .copied()
        .find(|p| matches!(p, Place::Depth(_)))
        .unwrap_or(Place::Gone)
}

/// How deep a branch of the document sits (a root is 1), counted up to one past the limit.
fn branch_depth<T: ReadTxn>(txn: &T, mut branch: BranchPtr) -> usize {
    let mut depth = 1;
    while depth <= MAX_TYPE_DEPTH {
        let BranchID::Nested(holder) = branch.id() else {
            break;
        };
        depth += 1;
        match StickyIndex::new(IndexScope::Relative(holder), Assoc::After).get_offset(txn) {
            Some(offset) => branch = offset.branch,
            None => break,
        }
    }
    depth
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::types::TypeRef;
    use yrs::types::text::YChange;
    use yrs::updates::decoder::Decode;
    use yrs::{
        Array, ArrayPrelim, ArrayRef, Doc, Map, MapPrelim, MapRef, Text, TextPrelim, TextRef,
        Transact, Update, XmlElementPrelim, XmlFragment, XmlFragmentRef,
    };

    /// [`super::check`] of a raw update, indexed first.
    fn check(doc: &Doc, update: &[u8]) -> Result<(), NestingError> {
        super::check(doc, &Index::parse(update).expect("a valid update"))
    }

    /// [`super::deepest`] of a raw update, indexed first.
    fn deepest<T: ReadTxn>(txn: &T, update: &[u8]) -> Result<Option<usize>, NestingError> {
        super::deepest(txn, &Index::parse(update).expect("a valid update"))
    }

    fn apply(doc: &Doc, update: &[u8]) {
        doc.transact_mut()
            .apply_update(Update::decode_v1(update).expect("decodes"))
            .expect("applies");
    }

    /// Every shared type in `doc` with its depth (a root is 1), found by walking from the roots.
    fn branches(doc: &Doc) -> Vec<(BranchPtr, usize)> {
        let txn = doc.transact();
        let mut found = Vec::new();
        let mut pending: Vec<(BranchPtr, usize)> = txn
            .root_refs()
            .filter_map(|(_, out)| out.try_branch().map(|b| (BranchPtr::from(b), 1)))
            .collect();
        while let Some((branch, depth)) = pending.pop() {
            found.push((branch, depth));
            let map = MapRef::from(branch);
            let nested = TextRef::from(branch)
                .diff(&txn, YChange::identity)
                .into_iter()
                .map(|chunk| chunk.insert)
                .chain(map.iter(&txn).map(|(_, value)| value));
            for out in nested {
                if let Some(b) = out.try_branch() {
                    pending.push((BranchPtr::from(b), depth + 1));
                }
            }
        }
        found
    }

    fn walked_depth(doc: &Doc) -> usize {
        branches(doc)
            .iter()
            .map(|(_, depth)| *depth)
            .max()
            .unwrap_or(0)
    }

    /// Arrays nested in root `deep`, `levels` below it, each level its own update.
    fn nesting_updates(levels: usize) -> Vec<Vec<u8>> {
        let source = Doc::with_client_id(5);
        let root = source.get_or_insert_array("deep");
        let mut updates = Vec::new();
        let mut txn = source.transact_mut();
        let mut list: ArrayRef = root.insert(&mut txn, 0, ArrayPrelim::default());
        updates.push(txn.encode_update_v1());
        drop(txn);
        for _ in 1..levels {
            let mut txn = source.transact_mut();
            // A value first, so the next list has a left origin inside this one.
            list.push_back(&mut txn, 1);
            list = list.push_back(&mut txn, ArrayPrelim::default());
            updates.push(txn.encode_update_v1());
        }
        updates
    }

    fn whole(updates: &[Vec<u8>]) -> Vec<u8> {
        yrs::merge_updates_v1(updates).expect("merges")
    }

    #[test]
    fn updates_without_nested_types_are_not_measured() {
        let source = Doc::with_client_id(1);
        let text = source.get_or_insert_text("content");
        let mut txn = source.transact_mut();
        text.insert(&mut txn, 0, "hello");
        let update = txn.encode_update_v1();
        assert_eq!(deepest(&Doc::new().transact(), &update), Ok(None));
    }

    #[test]
    fn a_chain_in_one_update_is_measured_exactly() {
        for levels in [1, 2, 7, MAX_TYPE_DEPTH - 1, MAX_TYPE_DEPTH] {
            let update = whole(&nesting_updates(levels));
            let server = Doc::new();
            // `levels` lists below the root: the deepest sits at `levels + 1`.
            assert_eq!(
                deepest(&server.transact(), &update),
                Ok(Some(levels + 1)),
                "{levels}"
            );
            let accepted = check(&server, &update);
            assert_eq!(accepted.is_ok(), levels < MAX_TYPE_DEPTH, "{levels}");
            if accepted.is_ok() {
                apply(&server, &update);
                assert_eq!(walked_depth(&server), levels + 1);
            }
        }
        // What the limit exists for: ten thousand levels in one transaction, under 100 KB.
        let source = Doc::with_client_id(6);
        let root = source.get_or_insert_array("deep");
        let update = {
            let mut txn = source.transact_mut();
            let mut list: ArrayRef = root.insert(&mut txn, 0, ArrayPrelim::default());
            for _ in 0..10_000 {
                list = list.insert(&mut txn, 0, ArrayPrelim::default());
            }
            txn.encode_update_v1()
        };
        assert!(update.len() < 100_000, "{}", update.len());
        assert_eq!(check(&Doc::new(), &update), Err(NestingError::TooDeep));
    }

    #[test]
    fn a_chain_built_over_many_updates_stops_at_the_limit() {
        let server = Doc::new();
        let updates = nesting_updates(MAX_TYPE_DEPTH + 20);
        let mut accepted = 0;
        for update in &updates {
            let checked = check(&server, update);
            match checked {
                Ok(()) => {
                    apply(&server, update);
                    accepted += 1;
                }
                Err(error) => {
                    assert_eq!(error, NestingError::TooDeep);
                    break;
                }
            }
        }
        // The root is 1 deep and each accepted update adds a level.
        assert_eq!(accepted + 1, MAX_TYPE_DEPTH);
        assert_eq!(walked_depth(&server), MAX_TYPE_DEPTH);
        // And deleting the whole chain (what overflowed the stack) is harmless at this depth.
        let deep = server.get_or_insert_array("deep");
        deep.remove(&mut server.transact_mut(), 0);
        assert_eq!(walked_depth(&server), 1);
    }

    #[test]
    fn a_type_waiting_for_missing_structs_is_refused() {
        let updates = nesting_updates(3);
        // The second level's parent list arrives only with the first update.
        assert_eq!(check(&Doc::new(), &updates[1]), Err(NestingError::Unplaced));
    }

    /// A v1 update of one string item, client 9 clock 0, whose parent is the item `parent`.
    fn inside(parent: (u8, u8)) -> Vec<u8> {
        vec![1, 1, 9, 0, 4, 0, parent.0, parent.1, 1, b'x', 0]
    }

    /// A document where client 5 typed "hello" into text `t` (clocks 0–4).
    fn hello() -> Doc {
        let source = Doc::with_client_id(5);
        let text = source.get_or_insert_text("t");
        let mut txn = source.transact_mut();
        text.insert(&mut txn, 0, "hello");
        let doc = Doc::new();
        apply(&doc, &txn.encode_update_v1());
        doc
    }

    #[test]
    fn an_item_inside_a_character_is_refused_before_yrs_stops_part_way() {
        let doc = hello();
        assert_eq!(
            check(&doc, &inside((5, 2))),
            Err(NestingError::ParentNotAType)
        );
        // Inside a character of the same update, after it: yrs would have integrated "ab".
        let update = [
            1, 2, 9, 0, // client 9 from clock 0, two structs
            4, 1, 1, b'u', 2, b'a', b'b', // "ab" in root `u`
            4, 0, 9, 1, 1, b'x', // "x" inside 9#1
            0,
        ];
        assert_eq!(check(&doc, &update), Err(NestingError::ParentNotAType));
        let failed = doc
            .transact_mut()
            .apply_update(Update::decode_v1(&update).expect("decodes"));
        assert!(failed.is_err(), "yrs refuses it");
        assert_eq!(
            doc.transact().state_vector().get(&yrs::ClientID::new(9)),
            2,
            "after taking 'ab'"
        );
    }

    #[test]
    fn an_item_inside_a_missing_item_is_refused() {
        assert_eq!(
            check(&hello(), &inside((7, 0))),
            Err(NestingError::ParentMissing)
        );
        // Beyond what the document has of a client it knows.
        assert_eq!(
            check(&hello(), &inside((5, 5))),
            Err(NestingError::ParentMissing)
        );
    }

    #[test]
    fn items_inside_types_or_deleted_items_pass() {
        let updates = nesting_updates(2);
        let server = Doc::new();
        apply(&server, &updates[0]);
        // The second update's first value names the first list (5#0) as its parent.
        assert_eq!(check(&server, &updates[1]), Ok(()));
        // Once that list is deleted, yrs collects what goes in it: harmless.
        let deleter = Doc::with_client_id(6);
        apply(&deleter, &updates[0]);
        let before = deleter.transact().state_vector();
        deleter
            .get_or_insert_array("deep")
            .remove(&mut deleter.transact_mut(), 0);
        apply(
            &server,
            &deleter.transact().encode_state_as_update_v1(&before),
        );
        assert_eq!(check(&server, &updates[1]), Ok(()));
        apply(&server, &updates[1]);
    }

    /// What a client can insert into `branch`: nested types of each kind where the branch takes
    /// them, or a plain value.
    fn insert_something(
        txn: &mut yrs::TransactionMut,
        branch: BranchPtr,
        pick: u64,
        key: &mut u64,
    ) {
        let index = |len: u32| {
            if len == 0 {
                0
            } else {
                (pick >> 8) as u32 % (len + 1)
            }
        };
        match branch.type_ref() {
            TypeRef::Array => {
                let list = ArrayRef::from(branch);
                let at = index(list.len(txn));
                match pick % 4 {
                    0 => {
                        list.insert(txn, at, ArrayPrelim::default());
                    }
                    1 => {
                        list.insert(txn, at, MapPrelim::default());
                    }
                    2 => {
                        list.insert(txn, at, TextPrelim::new("x"));
                    }
                    _ => {
                        list.insert(txn, at, 7);
                    }
                }
            }
            TypeRef::Map => {
                let map = MapRef::from(branch);
                *key += 1;
                let k = format!("k{key}");
                match pick % 3 {
                    0 => {
                        map.insert(txn, k, ArrayPrelim::default());
                    }
                    1 => {
                        map.insert(txn, k, MapPrelim::default());
                    }
                    _ => {
                        map.insert(txn, k, "v");
                    }
                }
            }
            TypeRef::Text => {
                let text = TextRef::from(branch);
                let at = index(text.len(txn));
                match pick % 3 {
                    0 => {
                        text.insert_embed(txn, at, ArrayPrelim::default());
                    }
                    _ => text.insert(txn, at, "ab"),
                }
            }
            TypeRef::XmlFragment | TypeRef::XmlElement(_) => {
                let xml = XmlFragmentRef::from(branch);
                let at = index(xml.len(txn));
                xml.insert(txn, at, XmlElementPrelim::empty("p"));
            }
            _ => {}
        }
    }

    /// Three clients insert nested types anywhere (lists, maps, text embeds, XML), syncing with
    /// each other now and then; the server gets their updates out of order and puts back any it
    /// refuses as unplaced. Once nothing is held back, the walked depth must be exactly the
    /// deepest `deepest` reported for any accepted update (nothing is deleted, so nothing lowers
    /// it), and never more in between.
    #[test]
    fn measured_depths_match_the_documents_yrs_builds() {
        // SEEDS=n runs more of them.
        let seeds: u64 = std::env::var("SEEDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(30);
        for seed in 0..seeds {
            let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let mut next = move || {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng
            };
            let clients: Vec<Doc> = (1..=3).map(Doc::with_client_id).collect();
            for c in &clients {
                c.get_or_insert_array("a");
                c.get_or_insert_map("m");
                c.get_or_insert_text("t");
                c.get_or_insert_xml_fragment("x");
            }
            let mut key = seed * 1_000;
            let mut outbox: Vec<Vec<u8>> = Vec::new();
            for _ in 0..150 {
                let c = &clients[(next() % 3) as usize];
                if next() % 10 == 0 {
                    let other = &clients[(next() % 3) as usize];
                    let sv = c.transact().state_vector();
                    let diff = other.transact().encode_state_as_update_v1(&sv);
                    apply(c, &diff);
                    continue;
                }
                let all = branches(c);
                let (branch, _) = all[(next() % all.len() as u64) as usize];
                let mut txn = c.transact_mut();
                insert_something(&mut txn, branch, next(), &mut key);
                outbox.push(txn.encode_update_v1());
            }
            let server = Doc::new();
            let mut claimed = 0;
            let mut refusals = 0;
            while !outbox.is_empty() {
                let mut batch = vec![outbox.remove((next() % outbox.len() as u64) as usize)];
                // Now and then several at once, as a reconnecting client sends them: references
                // then resolve inside the update.
                if next() % 3 == 0 {
                    for _ in 0..next() % 4 {
                        if !outbox.is_empty() {
                            batch.push(outbox.remove((next() % outbox.len() as u64) as usize));
                        }
                    }
                }
                let update = whole(&batch);
                let measured = deepest(&server.transact(), &update);
                match measured {
                    Ok(measured) => {
                        apply(&server, &update);
                        claimed = claimed.max(measured.unwrap_or(0));
                        let walked = walked_depth(&server);
                        // Roots are 1 deep; `deepest` measures only nested types.
                        let expected = claimed.max(usize::from(walked > 0));
                        // yrs holds back structs that follow a gap in their client's clock
                        // until it fills; they land where they were measured to.
                        if server.transact().store().pending_update().is_none() {
                            assert_eq!(walked, expected, "seed {seed}");
                        } else {
                            assert!(walked <= expected, "seed {seed}: {walked} > {expected}");
                        }
                    }
                    Err(NestingError::Unplaced) => {
                        refusals += 1;
                        assert!(refusals < 100_000, "seed {seed}: never placed");
                        // Resent one by one, as the clients that made them would.
                        outbox.extend(batch);
                    }
                    Err(other) => panic!("seed {seed}: {other}"),
                }
            }
            // Everything arrived: the server holds all that every client made.
            let server_state = server.transact().state_vector();
            for c in &clients {
                let own = c.client_id();
                assert_eq!(
                    server_state.get(&own),
                    c.transact().state_vector().get(&own),
                    "seed {seed}"
                );
            }
            assert!(
                refusals > 0,
                "seed {seed}: the out-of-order path was not taken"
            );
        }
    }
}
