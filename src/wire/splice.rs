//! Merging v1 updates by copying their structs rather than decoding them into yrs's blocks.
//!
//! The updates a document relays and stores together are, nearly always, each client's next
//! structs in order: every update of a client starts where its previous one ended. Then the
//! merge needs no CRDT at all: each client's structs are copied into one section, a string
//! item that continues the one before it (its left origin is that item's last character, and
//! both have the same right origin) is joined to it as Yjs itself joins such items, and the
//! delete sets are united. This reads each update's [`Index`] (and of its bytes only the text of
//! the string items it joins) and allocates nothing per struct, where yrs's merge builds, sorts
//! and re-encodes every block.
//!
//! Anything else (a client's structs overlapping or leaving a gap) is left to yrs's merge:
//! [`splice_updates_v1`] answers `None`.

use std::collections::HashMap;

use yrs::encoding::write::Write;

use super::index::{Block, Id, Index, Kind};
use super::reader::{Invalid, Reader};
use super::validate::{CONTENT_STRING, HAS_ORIGIN};

/// Merges v1 updates, each with its own [`Index`], into one that applies as they do in order,
/// by copying their structs, or `None` if some client's structs in one update do not start
/// where its structs in the updates before ended.
pub(crate) fn splice_updates_v1(updates: &[(&[u8], &Index)]) -> Option<Vec<u8>> {
    let mut merge = Splice::default();
    for &(update, index) in updates {
        merge.add(update, index).ok()??;
    }
    Some(merge.finish())
}

/// The structs of one client gathered so far.
struct Section<'a> {
    client: u64,
    /// The clocks its structs cover: `start..end`.
    start: u32,
    end: u32,
    /// Structs written to `structs`, and the bytes of them.
    count: u32,
    structs: Vec<u8>,
    /// The last string item, still open for the next one to join; its text is in `text`.
    open: Option<OpenString<'a>>,
    text: String,
}

/// A string item's header (info byte and origins, as its update wrote them) and what decides
/// whether the next item may join it.
struct OpenString<'a> {
    header: &'a [u8],
    info: u8,
    right: Option<Id>,
}

impl Section<'_> {
    /// Writes the open string item, if any.
    fn close_string(&mut self) {
        if let Some(open) = self.open.take() {
            self.structs.extend_from_slice(open.header);
            self.structs.write_string(&self.text);
            self.text.clear();
            self.count += 1;
        }
    }
}

#[derive(Default)]
struct Splice<'a> {
    sections: Vec<Section<'a>>,
    by_client: HashMap<u64, usize>,
    deletes: Vec<(u64, u32, u32)>,
    bytes: usize,
}

impl<'a> Splice<'a> {
    /// Adds one update; `Ok(None)` if its structs do not continue those added before.
    fn add(&mut self, update: &'a [u8], index: &Index) -> Result<Option<()>, Invalid> {
        self.bytes += update.len();
        for section in index.sections() {
            let blocks = index.blocks_of(section);
            if blocks.is_empty() {
                continue;
            }
            let (client, clock) = (section.client, section.clock);
            let at = *self.by_client.entry(client).or_insert_with(|| {
                self.sections.push(Section {
                    client,
                    start: clock,
                    end: clock,
                    count: 0,
                    structs: Vec::new(),
                    open: None,
                    text: String::new(),
                });
                self.sections.len() - 1
            });
            let section = &mut self.sections[at];
            if section.end != clock {
                return Ok(None);
            }
            for block in blocks {
                add_block(update, index, block, section)?;
            }
        }
        self.deletes.extend(
            index
                .deletes()
                .iter()
                .map(|range| (range.client, range.clock, range.len)),
        );
        Ok(Some(()))
    }

    fn finish(mut self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bytes);
        out.write_var(self.sections.len());
        for section in &mut self.sections {
            section.close_string();
            out.write_var(section.count);
            out.write_var(section.client);
            out.write_var(section.start);
            out.extend_from_slice(&section.structs);
        }
        // The delete sets united: each client's ranges in order, overlapping ones joined.
        self.deletes.sort_unstable();
        let mut merged: Vec<(u64, u32, u32)> = Vec::with_capacity(self.deletes.len());
        for (client, clock, len) in self.deletes {
            let end = clock + len;
            match merged.last_mut() {
                Some((c, _, last_end)) if *c == client && clock <= *last_end => {
                    *last_end = (*last_end).max(end);
                }
                _ => merged.push((client, clock, end)),
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
        out
    }
}

/// Copies `block` of `update` into `section`, joining a string item to the open one when Yjs
/// would join the two.
fn add_block<'a>(
    update: &'a [u8],
    index: &Index,
    block: &Block,
    section: &mut Section<'a>,
) -> Result<(), Invalid> {
    // The index describes these bytes; were it another's, its ranges would not lie inside them.
    let slice = |range: std::ops::Range<usize>| {
        update
            .get(range)
            .ok_or(Invalid::Malformed("an index of other bytes"))
    };
    let info = block.info();
    // Lengths are in UTF-16 units, as yrs counts them; an empty item is dropped by yrs and kept
    // apart here.
    if block.kind() == Kind::Item(CONTENT_STRING) && info & HAS_ORIGIN != 0 && block.len() > 0 {
        let head = index.head(block).ok_or(Invalid::Malformed("not an item"))?;
        let joins = section.open.as_ref().is_some_and(|open| {
            open.info == info
                && open.right == head.right_origin
                && head.origin == Some((section.client, section.end.wrapping_sub(1)))
        });
        if !joins {
            section.close_string();
            section.open = Some(OpenString {
                header: slice(block.header())?,
                info,
                right: head.right_origin,
            });
        }
        let mut r = Reader::new(update);
        r.seek(block.content());
        section.text.push_str(r.string()?);
    } else {
        section.close_string();
        section.structs.extend_from_slice(slice(block.bytes())?);
        section.count += 1;
    }
    section.end = section
        .end
        .checked_add(block.len())
        .ok_or(Invalid::ClockOverflow)?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::wire::Index;

    /// [`super::splice_updates_v1`] of raw updates, each indexed first; `None` if one does not
    /// parse.
    pub(crate) fn splice_updates_v1(run: &[&[u8]]) -> Option<Vec<u8>> {
        let indexes = run
            .iter()
            .map(|update| Index::parse(update).ok())
            .collect::<Option<Vec<_>>>()?;
        let pairs: Vec<(&[u8], &Index)> = run.iter().copied().zip(&indexes).collect();
        super::splice_updates_v1(&pairs)
    }
    use yrs::types::{Attrs, ToJson};
    use yrs::updates::decoder::Decode;
    use yrs::{Any, Array, Doc, GetString, Map, ReadTxn, Text, Transact, Update, WriteTxn};

    /// A small deterministic generator, so a failure names the seed that found it.
    pub(crate) struct Rng(pub(crate) u64);

    impl Rng {
        pub(crate) fn below(&mut self, n: u32) -> u32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % u64::from(n.max(1))) as u32
        }
    }

    fn apply(doc: &Doc, update: &[u8]) {
        let decoded = Update::decode_v1(update).expect("update decodes");
        doc.transact_mut()
            .apply_update(decoded)
            .expect("update applies");
    }

    /// What a document holds: its text, list and map as JSON-ish strings, its state vector and
    /// its deletions.
    fn state(doc: &Doc) -> (String, String, String, Vec<u8>, bool) {
        use yrs::updates::encoder::Encode;
        let txn = doc.transact();
        let text = txn
            .get_text("content")
            .map(|t| format!("{:?}", t.diff(&txn, yrs::types::text::YChange::identity)))
            .unwrap_or_default();
        let list = txn
            .get_array("list")
            .map(|a| a.to_json(&txn).to_string())
            .unwrap_or_default();
        let map = txn
            .get_map("map")
            .map(|m| match m.to_json(&txn) {
                // Entries in key order: the map's own order is a hash map's.
                Any::Map(entries) => format!(
                    "{:?}",
                    entries
                        .iter()
                        .map(|(k, v)| (k.clone(), v.to_string()))
                        .collect::<std::collections::BTreeMap<_, _>>()
                ),
                other => other.to_string(),
            })
            .unwrap_or_default();
        let snapshot = txn.snapshot().encode_v1();
        (
            text,
            list,
            map,
            snapshot,
            txn.store().pending_update().is_none(),
        )
    }

    /// Three peers editing a text (inserts, deletions, formatting), a list and a map, syncing
    /// now and then; returns every update in the order a server would receive them.
    pub(crate) fn session(seed: u64, steps: usize) -> Vec<Vec<u8>> {
        let mut rng = Rng(seed);
        let peers: Vec<Doc> = (1..=3).map(Doc::with_client_id).collect();
        let mut log: Vec<Vec<u8>> = Vec::new();
        let mut seen = [0usize; 3];
        for _ in 0..steps {
            let p = rng.below(3) as usize;
            let doc = &peers[p];
            // Catch up with the log now and then, as a client hearing the server.
            if rng.below(4) == 0 {
                for update in &log[seen[p]..] {
                    apply(doc, update);
                }
                seen[p] = log.len();
            }
            let update = {
                let mut txn = doc.transact_mut();
                let text = txn.get_or_insert_text("content");
                // Offsets in bytes (the documents' offset kind), at character boundaries.
                let current = text.get_string(&txn);
                let mut bounds: Vec<u32> = current.char_indices().map(|(i, _)| i as u32).collect();
                bounds.push(current.len() as u32);
                let chars = bounds.len() as u32 - 1;
                let at = |rng: &mut Rng, below: u32| bounds[rng.below(below) as usize];
                match rng.below(10) {
                    0..=4 => {
                        let pos = if rng.below(2) == 0 {
                            bounds[chars as usize]
                        } else {
                            at(&mut rng, chars + 1)
                        };
                        let s = ["a", "bc", "é", "😀", "xyz", "ü😀"][rng.below(6) as usize];
                        text.insert(&mut txn, pos, s);
                    }
                    5 if chars > 0 => {
                        let from = rng.below(chars);
                        let to = (from + 1 + rng.below(3)).min(chars);
                        let (a, b) = (bounds[from as usize], bounds[to as usize]);
                        text.remove_range(&mut txn, a, b - a);
                    }
                    6 if chars > 2 => {
                        let from = rng.below(chars - 1);
                        let (a, b) = (bounds[from as usize], bounds[from as usize + 2]);
                        let attrs = Attrs::from([("bold".into(), Any::Bool(true))]);
                        text.format(&mut txn, a, b - a, attrs);
                    }
                    7 => {
                        let list = txn.get_or_insert_array("list");
                        let n = list.len(&txn);
                        list.insert(&mut txn, rng.below(n + 1), rng.below(100));
                    }
                    8 => {
                        let map = txn.get_or_insert_map("map");
                        map.insert(&mut txn, format!("k{}", rng.below(5)), rng.below(100));
                    }
                    _ => {
                        let map = txn.get_or_insert_map("map");
                        map.remove(&mut txn, &format!("k{}", rng.below(5)));
                    }
                }
                txn.encode_update_v1()
            };
            if update.as_slice() != [0, 0] {
                log.push(update);
                // A peer's own updates are in its state already.
                if seen[p] == log.len() - 1 {
                    seen[p] = log.len();
                }
            }
        }
        log
    }

    /// Runs of random length spliced into one update each build the same document as the
    /// updates applied one by one, and as yrs's merge of the same runs.
    #[test]
    fn spliced_runs_build_the_same_document_as_the_updates_one_by_one() {
        for seed in 1..=40u64 {
            let log = session(seed * 7919, 300);
            let mut rng = Rng(seed);
            let (one_by_one, spliced, by_yrs) = (Doc::new(), Doc::new(), Doc::new());
            for update in &log {
                apply(&one_by_one, update);
            }
            let (mut start, mut spliced_runs) = (0, 0);
            while start < log.len() {
                let end = (start + 1 + rng.below(40) as usize).min(log.len());
                let run: Vec<&[u8]> = log[start..end].iter().map(Vec::as_slice).collect();
                let merged = match splice_updates_v1(&run) {
                    Some(merged) => {
                        spliced_runs += 1;
                        merged
                    }
                    // Runs that catch up out of order are yrs's to merge.
                    None => yrs::merge_updates_v1(&run).expect("yrs merges"),
                };
                crate::wire::check_update_v1(&merged).expect("spliced update is valid");
                apply(&spliced, &merged);
                apply(&by_yrs, &yrs::merge_updates_v1(&run).expect("yrs merges"));
                start = end;
            }
            let expected = state(&one_by_one);
            assert!(expected.4, "seed {seed}: nothing pending");
            assert_eq!(state(&spliced), expected, "seed {seed}");
            assert_eq!(state(&by_yrs), expected, "seed {seed}");
            assert!(spliced_runs > 0, "seed {seed}: some runs spliced");
        }
    }

    /// A writer's keystrokes, each its own update, splice into one string item: as small as
    /// yrs's merge of them, and the same text.
    #[test]
    fn keystrokes_join_into_one_item() {
        let doc = Doc::with_client_id(7);
        let text = doc.get_or_insert_text("content");
        let first = {
            let mut txn = doc.transact_mut();
            text.insert(&mut txn, 0, "start ");
            txn.encode_update_v1()
        };
        let mut updates = Vec::new();
        for i in 0..1000u32 {
            let mut txn = doc.transact_mut();
            let len = text.len(&txn);
            text.insert(&mut txn, len, if i % 10 == 9 { "😀" } else { "k" });
            updates.push(txn.encode_update_v1());
        }
        let run: Vec<&[u8]> = updates.iter().map(Vec::as_slice).collect();
        let spliced = splice_updates_v1(&run).expect("splices");
        let by_yrs = yrs::merge_updates_v1(&run).expect("yrs merges");
        assert!(
            spliced.len() <= by_yrs.len(),
            "{} bytes spliced, {} by yrs",
            spliced.len(),
            by_yrs.len()
        );
        assert_eq!(spliced[..2], [1, 1], "one client, one struct");
        let fresh = Doc::new();
        apply(&fresh, &first);
        apply(&fresh, &spliced);
        let expected = text.get_string(&doc.transact());
        let got = fresh
            .get_or_insert_text("content")
            .get_string(&fresh.transact());
        assert_eq!(got, expected);
    }

    /// A string item is joined to the one before only when its left origin is that item's last
    /// character: one that names an earlier character of it stays an item of its own.
    #[test]
    fn an_item_that_does_not_continue_the_one_before_stays_apart() {
        use yrs::encoding::write::Write;
        // Client 9's "x" at the root, then client 5's "ab" after it, then client 5's "c" after
        // its own "a" (before "b", a valid if unusual update).
        let item = |client: u64, clock: u32, origin: Option<(u64, u32)>, s: &str| {
            let mut u = Vec::new();
            u.write_var(1u32);
            u.write_var(1u32);
            u.write_var(client);
            u.write_var(clock);
            match origin {
                Some((c, k)) => {
                    u.write_u8(0x84);
                    u.write_var(c);
                    u.write_var(k);
                }
                None => {
                    u.write_u8(0x04);
                    u.write_var(1u32);
                    u.write_string("content");
                }
            }
            u.write_string(s);
            u.write_var(0u32);
            u
        };
        let root = item(9, 0, None, "x");
        let ab = item(5, 0, Some((9, 0)), "ab");
        let c = item(5, 2, Some((5, 0)), "c");
        let one_by_one = Doc::new();
        for update in [&root, &ab, &c] {
            apply(&one_by_one, update);
        }
        let spliced = splice_updates_v1(&[&ab, &c]).expect("continues in clocks");
        assert_eq!(spliced[..2], [1, 2], "one client, two structs");
        let doc = Doc::new();
        apply(&doc, &root);
        apply(&doc, &spliced);
        let text = |d: &Doc| d.get_or_insert_text("content").get_string(&d.transact());
        assert_eq!(text(&doc), text(&one_by_one));
        assert_ne!(text(&doc), "xabc");
    }

    /// Bytes mangled every way (truncated, bytes changed, inserted, dropped) never make the
    /// splice panic, and whatever it builds from inputs the validator accepts, the validator
    /// accepts too, and yrs applies as it applies the inputs one by one.
    #[test]
    fn mangled_updates_never_panic_and_what_splices_is_valid() {
        use crate::wire::check_update_v1;
        let log = session(4242, 200);
        // The document before each update of the log, as one update.
        let before: Vec<Vec<u8>> = {
            let doc = Doc::new();
            let mut states = Vec::with_capacity(log.len());
            for update in &log {
                states.push(
                    doc.transact()
                        .encode_state_as_update_v1(&Default::default()),
                );
                apply(&doc, update);
            }
            states
        };
        let mut rng = Rng(99);
        let (mut spliced, mut accepted_runs, mut compared) = (0, 0, 0);
        for round in 0..20_000 {
            let start = rng.below(log.len() as u32 - 3) as usize;
            let mut run: Vec<Vec<u8>> = log[start..start + 3].to_vec();
            let victim = &mut run[rng.below(3) as usize];
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(victim.len() as u32) as usize;
                match rng.below(4) {
                    0 => victim.truncate(at),
                    1 => victim[at] = rng.below(256) as u8,
                    2 => victim.insert(at, rng.below(256) as u8),
                    _ => {
                        victim.remove(at);
                    }
                }
                if victim.is_empty() {
                    victim.push(0);
                }
            }
            let slices: Vec<&[u8]> = run.iter().map(Vec::as_slice).collect();
            let merged = splice_updates_v1(&slices);
            if !slices.iter().all(|u| check_update_v1(u).is_ok()) {
                continue;
            }
            accepted_runs += 1;
            let Some(merged) = merged else { continue };
            spliced += 1;
            check_update_v1(&merged).unwrap_or_else(|e| panic!("round {round}: {e}"));
            // yrs may refuse or panic on hostile structs; where the inputs apply, so must this.
            // Compared: the structs and deletions integrated, read off the block store (some
            // hostile structs leave a type's item list in a state that walking it never ends).
            let apply_all = |updates: &[&[u8]]| {
                std::panic::catch_unwind(|| {
                    let doc = Doc::new();
                    apply(&doc, &before[start]);
                    for u in updates {
                        let decoded = Update::decode_v1(u).ok()?;
                        doc.transact_mut().apply_update(decoded).ok()?;
                    }
                    let txn = doc.transact();
                    let pending = txn.store().pending_update().is_some();
                    Some((txn.snapshot(), pending))
                })
                .ok()
                .flatten()
            };
            if let Some(expected) = apply_all(&slices).filter(|s| !s.1) {
                assert_eq!(apply_all(&[&merged]), Some(expected), "round {round}");
                compared += 1;
            }
        }
        assert!(
            accepted_runs > 600 && spliced > 500 && compared > 300,
            "{accepted_runs} accepted, {spliced} spliced, {compared} compared"
        );
    }

    /// A client's structs that overlap or skip clocks are not spliced.
    #[test]
    fn a_gap_or_an_overlap_is_left_to_yrs() {
        let doc = Doc::with_client_id(3);
        let text = doc.get_or_insert_text("content");
        let updates: Vec<Vec<u8>> = (0..3)
            .map(|_| {
                let mut txn = doc.transact_mut();
                text.push(&mut txn, "ab");
                txn.encode_update_v1()
            })
            .collect();
        let splice = |picks: &[usize]| {
            let run: Vec<&[u8]> = picks.iter().map(|&i| updates[i].as_slice()).collect();
            splice_updates_v1(&run)
        };
        assert!(splice(&[0, 1, 2]).is_some());
        assert_eq!(splice(&[0, 2]), None, "a gap");
        assert_eq!(splice(&[0, 1, 1]), None, "an overlap");
        assert_eq!(splice(&[1, 0]), None, "out of order");
        assert_eq!(
            splice_updates_v1(&[&updates[0], &[5, 1]]),
            None,
            "truncated"
        );
    }
}
