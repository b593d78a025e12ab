//! The index against the walks it replaced. Those walks are kept here, test-only and as they
//! were (each reader walking the bytes itself), and every answer read from the index is
//! compared with theirs: the validator's verdict and struct count, whether an update holds
//! nested types, the split into parts and the splice, on generated sessions and on mangled
//! bytes.

use super::*;
use crate::wire::splice_tests::{Rng, session, splice_updates_v1 as splice};
use crate::wire::split::Split;
use crate::wire::validate::CONTENT_STRING;
use yrs::{
    Array, ArrayPrelim, ArrayRef, Doc, Map, MapPrelim, MapRef, ReadTxn, StateVector, Text,
    TextPrelim, Transact, XmlElementPrelim, XmlFragment,
};

/// The walks as they were before the index.
mod old {
    use super::super::*;
    use crate::wire::validate::CONTENT_STRING;
    use yrs::encoding::write::Write;

    pub(super) struct Block {
        pub(super) len: u32,
        pub(super) info: u8,
        pub(super) item: bool,
        /// Origin, right origin, parent item: as the old `check_block` reported them.
        pub(super) refs: Vec<Id>,
        pub(super) origin: Option<Id>,
        pub(super) right: Option<Id>,
        pub(super) content_ref: u8,
        pub(super) parent_type: bool,
        pub(super) content: usize,
    }

    pub(super) fn block(r: &mut Reader<'_>) -> Result<Block, Invalid> {
        let info = r.u8()?;
        let mut b = Block {
            len: 0,
            info,
            item: false,
            refs: Vec::new(),
            origin: None,
            right: None,
            content_ref: 0,
            parent_type: false,
            content: 0,
        };
        if info == BLOCK_GC || info == BLOCK_SKIP {
            b.len = r.var_u32()?;
            if b.len == 0 {
                return Err(Invalid::Malformed("empty block"));
            }
            return Ok(b);
        }
        b.item = true;
        if info & HAS_ORIGIN != 0 {
            b.origin = Some(r.id()?);
        }
        if info & HAS_RIGHT_ORIGIN != 0 {
            let right = r.id()?;
            if b.origin == Some(right) {
                return Err(Invalid::Malformed(
                    "an item's left and right origins are the same",
                ));
            }
            b.right = Some(right);
        }
        b.refs.extend(b.origin.iter().chain(&b.right));
        if info & (HAS_ORIGIN | HAS_RIGHT_ORIGIN) == 0 {
            if r.var_u32()? == 1 {
                r.string()?;
            } else {
                b.refs.push(r.id()?);
                b.parent_type = true;
            }
            if info & HAS_PARENT_SUB != 0 {
                r.string()?;
            }
        }
        b.content_ref = info & CONTENT_REF_MASK;
        b.content = r.position();
        b.len = check_content(r, b.content_ref)?;
        Ok(b)
    }

    pub(super) fn delete_set(r: &mut Reader<'_>) -> Result<Vec<Deletion>, Invalid> {
        let clients = r.var_u32()?;
        let (mut seen, mut out) = (Vec::new(), Vec::new());
        for _ in 0..clients {
            let client = r.client()?;
            seen.push(client);
            for _ in 0..r.var_u32()? {
                let (clock, len) = (r.var_u32()?, r.var_u32()?);
                clock.checked_add(len).ok_or(Invalid::ClockOverflow)?;
                if len > 0 {
                    out.push(Deletion { client, clock, len });
                }
            }
        }
        seen.sort_unstable();
        if seen.windows(2).any(|pair| pair[0] == pair[1]) {
            return Err(Invalid::Malformed(
                "a client's deletions appear in two sections",
            ));
        }
        Ok(out)
    }

    /// `check_update_v1_counting`, and whether the update holds types (`holds_types`).
    pub(super) fn check(update: &[u8]) -> Result<(usize, bool), Invalid> {
        let mut r = Reader::new(update);
        let (mut structs, mut types) = (0, false);
        let mut seen = HashSet::new();
        for _ in 0..r.var_u32()? {
            let blocks = r.var_u32()?;
            if !seen.insert(r.client()?) {
                return Err(Invalid::Malformed(
                    "a client's structs appear in two sections",
                ));
            }
            let mut clock = r.var_u32()?;
            for _ in 0..blocks {
                let b = block(&mut r)?;
                types |= b.item && (b.content_ref == CONTENT_TYPE || b.parent_type);
                clock = clock.checked_add(b.len).ok_or(Invalid::ClockOverflow)?;
                if clock > MAX_STRUCT_CLOCK {
                    return Err(Invalid::ClockTooLarge);
                }
                structs += 1;
            }
        }
        delete_set(&mut r)?;
        Ok((structs, types))
    }

    /// `split_into_parts`, its parts as (update, client, start, end, refers_to).
    pub(super) type Parts = (Vec<(Vec<u8>, u64, u32, u32, Vec<Id>)>, Vec<u8>, bool);

    pub(super) fn split(update: &[u8], max_structs: usize, max_bytes: usize) -> Parts {
        let part = |client: u64, start: u32, count: usize, structs: &[u8]| {
            let mut u = Vec::new();
            u.write_var(1u32);
            u.write_var(count);
            u.write_var(client);
            u.write_var(start);
            u.extend_from_slice(structs);
            u.write_var(0u32);
            u
        };
        let mut r = Reader::new(update);
        let (mut parts, mut cut) = (Vec::new(), false);
        for _ in 0..r.var_u32().expect("valid") {
            let blocks = r.var_u32().expect("valid");
            let client = r.client().expect("valid");
            let mut clock = r.var_u32().expect("valid");
            let (mut start_clock, mut start, mut count) = (clock, r.position(), 0usize);
            let mut refers_to: Vec<Id> = Vec::new();
            for _ in 0..blocks {
                let before = r.position();
                if count > 0 && (count == max_structs || before - start > max_bytes) {
                    let u = part(client, start_clock, count, &update[start..before]);
                    parts.push((
                        u,
                        client,
                        start_clock,
                        clock,
                        std::mem::take(&mut refers_to),
                    ));
                    (start_clock, start, count, cut) = (clock, before, 0, true);
                }
                let b = block(&mut r).expect("valid");
                for &(other, at) in &b.refs {
                    if other == client {
                        continue;
                    }
                    match refers_to.iter_mut().find(|(c, _)| *c == other) {
                        Some((_, highest)) => *highest = (*highest).max(at),
                        None => refers_to.push((other, at)),
                    }
                }
                clock += b.len;
                count += 1;
            }
            if count > 0 {
                let u = part(client, start_clock, count, &update[start..r.position()]);
                parts.push((u, client, start_clock, clock, refers_to));
            }
        }
        let at = r.position();
        delete_set(&mut r).expect("valid");
        let mut ds = vec![0];
        ds.extend_from_slice(&update[at..r.position()]);
        (parts, ds, cut)
    }

    struct Section {
        client: u64,
        start: u32,
        end: u32,
        count: u32,
        structs: Vec<u8>,
        /// The open string's header, info and right origin, and its text.
        open: Option<(Vec<u8>, u8, Option<Id>)>,
        text: String,
    }

    impl Section {
        fn close(&mut self) {
            if let Some((header, _, _)) = self.open.take() {
                self.structs.extend_from_slice(&header);
                self.structs.write_string(&self.text);
                self.text.clear();
                self.count += 1;
            }
        }
    }

    /// `splice_updates_v1` of raw bytes.
    pub(super) fn splice(updates: &[&[u8]]) -> Option<Vec<u8>> {
        let mut sections: Vec<Section> = Vec::new();
        let mut deletes = Vec::new();
        for update in updates {
            let mut r = Reader::new(update);
            for _ in 0..r.var_u32().ok()? {
                let blocks = r.var_u32().ok()?;
                let client = r.client().ok()?;
                let clock = r.var_u32().ok()?;
                if blocks == 0 {
                    continue;
                }
                let at = match sections.iter().position(|s| s.client == client) {
                    Some(at) => at,
                    None => {
                        sections.push(Section {
                            client,
                            start: clock,
                            end: clock,
                            count: 0,
                            structs: Vec::new(),
                            open: None,
                            text: String::new(),
                        });
                        sections.len() - 1
                    }
                };
                let s = &mut sections[at];
                if s.end != clock {
                    return None;
                }
                for _ in 0..blocks {
                    let start = r.position();
                    let b = block(&mut r).ok()?;
                    let string = b.item && b.content_ref == CONTENT_STRING;
                    if string && b.origin.is_some() && b.len > 0 {
                        let joins = s.open.as_ref().is_some_and(|(_, info, right)| {
                            *info == b.info
                                && *right == b.right
                                && b.origin == Some((s.client, s.end.wrapping_sub(1)))
                        });
                        if !joins {
                            s.close();
                            s.open = Some((update[start..b.content].to_vec(), b.info, b.right));
                        }
                        let mut text = Reader::new(update);
                        text.seek(b.content);
                        s.text.push_str(text.string().ok()?);
                    } else {
                        s.close();
                        s.structs.extend_from_slice(&update[start..r.position()]);
                        s.count += 1;
                    }
                    s.end = s.end.checked_add(b.len)?;
                }
            }
            deletes.extend(delete_set(&mut r).ok()?);
        }
        let mut out = Vec::new();
        out.write_var(sections.len());
        for s in &mut sections {
            s.close();
            out.write_var(s.count);
            out.write_var(s.client);
            out.write_var(s.start);
            out.extend_from_slice(&s.structs);
        }
        let mut ranges: Vec<(u64, u32, u32)> =
            deletes.iter().map(|d| (d.client, d.clock, d.len)).collect();
        ranges.sort_unstable();
        let mut merged: Vec<(u64, u32, u32)> = Vec::new();
        for (client, clock, len) in ranges {
            match merged.last_mut() {
                Some((c, _, end)) if *c == client && clock <= *end => {
                    *end = (*end).max(clock + len)
                }
                _ => merged.push((client, clock, clock + len)),
            }
        }
        let clients = merged.chunk_by(|a, b| a.0 == b.0);
        out.write_var(clients.clone().count());
        for ranges in clients {
            out.write_var(ranges[0].0);
            out.write_var(ranges.len());
            for &(_, start, end) in ranges {
                out.write_var(start);
                out.write_var(end - start);
            }
        }
        Some(out)
    }
}

/// Updates with nested types of every kind, deletions among them: each transaction's update,
/// and the whole document as one.
fn nested_session(seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng(seed);
    let doc = Doc::with_client_id(seed);
    let (list, map, xml) = (
        doc.get_or_insert_array("a"),
        doc.get_or_insert_map("m"),
        doc.get_or_insert_xml_fragment("x"),
    );
    let values = doc.get_or_insert_array("d");
    let mut lists: Vec<ArrayRef> = vec![list];
    let mut maps: Vec<MapRef> = vec![map];
    let mut updates = Vec::new();
    for step in 0..60 {
        let mut txn = doc.transact_mut();
        let l = lists[rng.below(lists.len() as u32) as usize].clone();
        let m = maps[rng.below(maps.len() as u32) as usize].clone();
        let at = rng.below(l.len(&txn) + 1);
        match rng.below(7) {
            0 => lists.push(l.insert(&mut txn, at, ArrayPrelim::default())),
            1 => maps.push(m.insert(&mut txn, format!("k{step}"), MapPrelim::default())),
            2 => {
                let text = l.insert(&mut txn, at, TextPrelim::new("nested"));
                text.insert(&mut txn, 2, "ü😀");
            }
            3 => {
                xml.insert(&mut txn, 0, XmlElementPrelim::empty("p"));
            }
            // Deletions in a list of plain values: nested types stay where they are, so the
            // references held to them stay good.
            4 => {
                values.push_back(&mut txn, step);
            }
            5 if values.len(&txn) > 0 => {
                let at = rng.below(values.len(&txn));
                values.remove(&mut txn, at);
            }
            _ => {
                m.insert(&mut txn, format!("v{}", rng.below(3)), step);
            }
        }
        updates.push(txn.encode_update_v1());
    }
    updates.push(
        doc.transact()
            .encode_state_as_update_v1(&StateVector::default()),
    );
    updates
}

/// Text, list and map sessions of three peers, their runs merged by yrs (several clients,
/// deletions of each), and nested types: every kind of update a document sees.
fn corpus() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for seed in 1..=6u64 {
        let log = session(seed * 7919, 150);
        for run in log.chunks(1 + seed as usize * 7) {
            out.push(yrs::merge_updates_v1(run).expect("yrs merges"));
        }
        out.extend(log);
        out.extend(nested_session(seed));
    }
    out
}

/// The update with one to three bytes changed, inserted, dropped or cut off.
fn mangle(update: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut bytes = update.to_vec();
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(bytes.len() as u32) as usize;
        match rng.below(4) {
            0 => bytes.truncate(at),
            1 => bytes[at] = rng.below(256) as u8,
            2 => bytes.insert(at, rng.below(256) as u8),
            _ => {
                bytes.remove(at);
            }
        }
        if bytes.is_empty() {
            bytes.push(0);
        }
    }
    bytes
}

#[test]
fn the_parse_accepts_and_refuses_as_the_old_validator_and_counts_the_same_structs() {
    let mut rng = Rng(17);
    let (mut accepted, mut refused, mut typed) = (0, 0, 0);
    for update in corpus() {
        for round in 0..40 {
            let bytes = if round == 0 {
                update.clone()
            } else {
                mangle(&update, &mut rng)
            };
            let index = Index::parse(&bytes);
            let new = index.as_ref().map(|i| (i.structs(), i.holds_types()));
            assert_eq!(new, old::check(&bytes).as_ref().map(|x| *x), "{bytes:?}");
            match index {
                Ok(index) => {
                    accepted += 1;
                    typed += usize::from(index.holds_types());
                    // The blocks of a section lie end to end, clock after clock.
                    for section in index.sections() {
                        let blocks = index.blocks_of(section);
                        for pair in blocks.windows(2) {
                            assert_eq!(pair[0].bytes().end, pair[1].start());
                            assert_eq!(pair[0].end_clock(), pair[1].clock());
                        }
                        if let Some(first) = blocks.first() {
                            assert_eq!(first.clock(), section.clock);
                        }
                    }
                    let mut r = Reader::new(&bytes);
                    r.seek(index.delete_set().start);
                    assert_eq!(old::delete_set(&mut r).as_deref(), Ok(index.deletes()));
                    assert_eq!(r.position(), index.delete_set().end);
                }
                Err(_) => refused += 1,
            }
        }
    }
    assert!(
        accepted > 1000 && refused > 1000 && typed > 100,
        "{accepted} accepted, {refused} refused, {typed} with types"
    );
}

#[test]
fn the_index_reads_each_item_head_as_the_old_block_walk() {
    for update in corpus() {
        let index = Index::parse(&update).expect("valid");
        let mut r = Reader::new(&update);
        r.var_u32().expect("a count of sections");
        for section in index.sections() {
            for _ in 0..3 {
                r.var_u64().expect("section header");
            }
            for block in index.blocks_of(section) {
                assert_eq!(r.position(), block.start());
                let old = old::block(&mut r).expect("valid");
                assert_eq!(r.position(), block.bytes().end);
                assert_eq!((old.len, old.info), (block.len(), block.info()));
                assert_eq!(index.refs(block), old.refs.as_slice());
                match index.head(block) {
                    Some(head) => {
                        assert!(old.item);
                        assert_eq!((head.origin, head.right_origin), (old.origin, old.right));
                        assert_eq!(head.content_ref, old.content_ref);
                        assert_eq!(
                            matches!(head.parent, Some(ItemParent::Type(_))),
                            old.parent_type
                        );
                        assert_eq!(block.content(), old.content);
                    }
                    None => assert!(!old.item),
                }
            }
        }
    }
}

#[test]
fn splits_cut_where_the_old_split_cut() {
    let parts = |split: Split| -> old::Parts {
        let parts = split.parts.into_iter();
        let parts = parts.map(|p| (p.update, p.client, p.start, p.end, p.refers_to));
        (parts.collect(), split.delete_set, false)
    };
    let mut cuts = 0;
    for update in corpus() {
        let index = Index::parse(&update).expect("valid");
        for (max_structs, max_bytes) in [(1, 1 << 20), (3, 40), (256, 16 * 1024), (7, 1)] {
            let (split, cut) =
                crate::wire::split_into_parts(&update, &index, max_structs, max_bytes)
                    .expect("splits");
            let mut expected = old::split(&update, max_structs, max_bytes);
            assert_eq!(expected.2, cut);
            cuts += usize::from(cut);
            expected.2 = false;
            assert_eq!(parts(split), expected);
        }
    }
    assert!(cuts > 200, "{cuts} cut");
}

#[test]
fn splices_are_byte_for_byte_the_old_splices() {
    let mut rng = Rng(5);
    let (mut spliced, mut joined) = (0, 0);
    for seed in 1..=12u64 {
        let log = session(seed * 104_729, 200);
        let mut start = 0;
        while start < log.len() {
            let end = (start + 1 + rng.below(30) as usize).min(log.len());
            let run: Vec<&[u8]> = log[start..end].iter().map(Vec::as_slice).collect();
            let ours = splice(&run);
            assert_eq!(ours, old::splice(&run), "seed {seed}, {start}..{end}");
            spliced += usize::from(ours.is_some());
            joined += usize::from(ours.is_some_and(|u| u.len() < run.concat().len()));
            start = end;
        }
    }
    assert!(
        spliced > 50 && joined > 20,
        "{spliced} spliced, {joined} joined"
    );
}

#[test]
fn splices_of_mangled_but_valid_updates_are_the_old_splices() {
    let log = session(4242, 200);
    let mut rng = Rng(99);
    let mut compared = 0;
    for _ in 0..20_000 {
        let start = rng.below(log.len() as u32 - 3) as usize;
        let mut run: Vec<Vec<u8>> = log[start..start + 3].to_vec();
        let victim = rng.below(3) as usize;
        run[victim] = mangle(&run[victim], &mut rng);
        let slices: Vec<&[u8]> = run.iter().map(Vec::as_slice).collect();
        if slices.iter().all(|u| Index::parse(u).is_ok()) {
            assert_eq!(splice(&slices), old::splice(&slices));
            compared += 1;
        }
    }
    assert!(compared > 800, "{compared} compared");
}

#[test]
fn string_items_of_typed_text_are_indexed_with_their_text() {
    let doc = Doc::with_client_id(3);
    let text = doc.get_or_insert_text("t");
    let mut txn = doc.transact_mut();
    text.insert(&mut txn, 0, "héllo 😀");
    let update = txn.encode_update_v1();
    let index = Index::parse(&update).expect("valid");
    let [section] = index.sections() else {
        panic!("one client");
    };
    let [block] = index.blocks_of(section) else {
        panic!("one item");
    };
    assert_eq!(block.kind(), Kind::Item(CONTENT_STRING));
    // Seven characters, the emoji two UTF-16 units.
    assert_eq!((block.clock(), block.len()), (0, 8));
    let mut r = Reader::new(&update);
    r.seek(block.content());
    assert_eq!(r.string(), Ok("héllo 😀"));
    let head = index.head(block).expect("an item");
    assert_eq!(head.parent, Some(ItemParent::Root));
    assert!(!index.holds_types());
    assert_eq!(index.structs(), 1);
}

#[test]
fn a_struct_costs_the_index_28_bytes_and_16_per_id_it_names() {
    assert_eq!(std::mem::size_of::<Block>(), 28);
    assert_eq!(std::mem::size_of::<Id>(), 16);
}
