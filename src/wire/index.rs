//! The index of a v1 update: the one walk over an update's bytes that decides whether yrs may
//! see them (the rules for content and `Any` values are in `validate.rs`), recording as it goes
//! where each client's structs, each struct and the delete set lie and what each struct says
//! of its place. Nesting, the split into parts and the splice read the index instead of walking
//! the bytes again; an update is parsed once, when it arrives (or when a stored one is loaded).
//!
//! The index holds offsets into the bytes it was parsed from, not the bytes: a reader is always
//! handed both. Per struct it costs one [`Block`] (28 bytes) and 16 bytes for each ID the
//! struct names (its origins, or its parent), a small multiple of the struct's own bytes.

use std::collections::HashSet;
use std::ops::Range;

use super::reader::{Invalid, MAX_STRUCT_CLOCK, Reader};
use super::validate::{
    BLOCK_GC, BLOCK_SKIP, CONTENT_REF_MASK, CONTENT_TYPE, HAS_ORIGIN, HAS_PARENT_SUB,
    HAS_RIGHT_ORIGIN, check_content,
};

/// An item ID: client and clock.
pub(crate) type Id = (u64, u32);

/// What one validating walk found in a v1 update: see the module docs. Built by
/// [`Index::parse`]; it describes only the bytes it was parsed from.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Index {
    sections: Vec<Section>,
    blocks: Vec<Block>,
    /// The IDs the blocks name, each block's in the order origin, right origin, parent.
    refs: Vec<Id>,
    /// The delete set's non-empty ranges, in wire order.
    deletes: Vec<Deletion>,
    /// Where the delete set lies in the bytes (bytes after it are ignored, as yrs ignores them).
    delete_set: (u32, u32),
    holds_types: bool,
}

/// One client's structs: the update holds at most one section per client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Section {
    pub(crate) client: u64,
    /// The header clock: where its first struct starts.
    pub(crate) clock: u32,
    /// Its structs, as indexes into the index's blocks.
    first: u32,
    end: u32,
}

/// One struct of an update, by offsets into its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Block {
    /// The info byte's offset, where the struct starts.
    at: u32,
    /// Where its content starts (for a GC or Skip, its length).
    content: u32,
    /// Where the next struct (or the section's end) starts.
    end: u32,
    clock: u32,
    /// The length yrs adds to the running clock for it (0 for the empty items yrs drops).
    len: u32,
    /// Its first ID in the index's `refs`.
    refs: u32,
    info: u8,
    parent: u8,
}

/// What kind of struct a [`Block`] is; yrs decides it from the whole info byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A garbage-collected range.
    Gc,
    /// A skipped range: clocks this update does not carry.
    Skip,
    /// An item, with its content ref.
    Item(u8),
}

// How an item's parent is given (`Block::parent`).
const PARENT_NONE: u8 = 0;
const PARENT_ROOT: u8 = 1;
const PARENT_TYPE: u8 = 2;

/// Where an item says it belongs, and what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ItemHead {
    pub(crate) origin: Option<Id>,
    pub(crate) right_origin: Option<Id>,
    /// Given only when the item has neither origin.
    pub(crate) parent: Option<ItemParent>,
    /// Whether the parent comes with a key (a map entry); only with `parent`.
    pub(crate) parent_sub: bool,
    pub(crate) content_ref: u8,
}

/// An item's explicit parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ItemParent {
    /// A root type, by name.
    Root,
    /// The type held by this item.
    Type(Id),
}

/// A range of a client's clocks the update deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Deletion {
    pub(crate) client: u64,
    pub(crate) clock: u32,
    pub(crate) len: u32,
}

/// An offset or a count held as `u32`. Updates are bounded far below 4 GiB (by the frame and
/// document limits), so this refuses only what no configuration lets in.
fn small(n: usize) -> Result<u32, Invalid> {
    u32::try_from(n).map_err(|_| Invalid::Malformed("update of 4 GiB or more"))
}

impl Index {
    /// Checks a lib0 v1-encoded Yjs update before it is given to `yrs::Update::decode_v1`, and
    /// indexes it.
    ///
    /// Accepts exactly what yrs 0.28.1 decodes without error or debug-build panic, except that
    /// it is stricter on `Any` nesting ([`super::reader::MAX_ANY_DEPTH`]) and on over-long signed
    /// var-ints, and does not parse the JSON text of embed/format content (yrs parses it with
    /// serde_json, which has its own depth limit, and returns an error on bad syntax). Bytes
    /// after the delete set are ignored, as yrs ignores them.
    pub(crate) fn parse(update: &[u8]) -> Result<Index, Invalid> {
        let mut r = Reader::new(update);
        let mut index = Index::default();
        let clients = r.var_u32()?;
        // Yjs writes each client's structs in one section. yrs merges repeated sections into
        // one run with a gap in it, which its own splitting code does not expect (it panics).
        let mut seen = HashSet::new();
        for _ in 0..clients {
            let blocks = r.var_u32()?;
            let client = r.client()?;
            if !seen.insert(client) {
                return Err(Invalid::Malformed(
                    "a client's structs appear in two sections",
                ));
            }
            // yrs starts each client section at the header clock and adds every decoded block's
            // length with a plain `u32 +=`, including after the last block.
            let header = r.var_u32()?;
            let first = small(index.blocks.len())?;
            let mut clock = header;
            for _ in 0..blocks {
                let len = index.read_block(&mut r, clock)?;
                clock = clock.checked_add(len).ok_or(Invalid::ClockOverflow)?;
                if clock > MAX_STRUCT_CLOCK {
                    return Err(Invalid::ClockTooLarge);
                }
            }
            index.sections.push(Section {
                client,
                clock: header,
                first,
                end: small(index.blocks.len())?,
            });
        }
        let start = small(r.position())?;
        index.read_delete_set(&mut r)?;
        index.delete_set = (start, small(r.position())?);
        Ok(index)
    }

    /// Reads one block as `Update::decode_block` does, records it, and returns the length yrs
    /// adds to the running clock for it.
    fn read_block(&mut self, r: &mut Reader<'_>, clock: u32) -> Result<u32, Invalid> {
        let at = small(r.position())?;
        let refs = small(self.refs.len())?;
        let info = r.u8()?;
        let mut parent = PARENT_NONE;
        let (content, len) = if info == BLOCK_GC || info == BLOCK_SKIP {
            // yrs matches the whole info byte here, so a GC/Skip number with any flag bit set
            // is decoded as an item (whose content ref is then unknown and refused below).
            let content = r.position();
            let len = r.var_u32()?;
            if len == 0 {
                return Err(Invalid::Malformed("empty block"));
            }
            (content, len)
        } else {
            let origin = if info & HAS_ORIGIN != 0 {
                Some(r.id()?)
            } else {
                None
            };
            if info & HAS_RIGHT_ORIGIN != 0 {
                let right = r.id()?;
                // An item sits between its two origins, so they cannot be the same item; yrs
                // integrates such an item differently from Yjs, and a reload differently again.
                if origin == Some(right) {
                    return Err(Invalid::Malformed(
                        "an item's left and right origins are the same",
                    ));
                }
                self.refs.extend(origin);
                self.refs.push(right);
            } else {
                self.refs.extend(origin);
            }
            // Without either origin the item carries its own parent (and optional parent sub).
            if info & (HAS_ORIGIN | HAS_RIGHT_ORIGIN) == 0 {
                // yrs reads the parent kind as a var-int and treats only 1 as "named root type".
                if r.var_u32()? == 1 {
                    r.string()?;
                    parent = PARENT_ROOT;
                } else {
                    self.refs.push(r.id()?);
                    self.holds_types = true;
                    parent = PARENT_TYPE;
                }
                if info & HAS_PARENT_SUB != 0 {
                    r.string()?;
                }
            }
            let content_ref = info & CONTENT_REF_MASK;
            let content = r.position();
            let len = check_content(r, content_ref)?;
            self.holds_types |= content_ref == CONTENT_TYPE;
            (content, len)
        };
        self.blocks.push(Block {
            at,
            content: small(content)?,
            end: small(r.position())?,
            clock,
            len,
            refs,
            info,
            parent,
        });
        Ok(len)
    }

    /// Reads the delete set as `IdSet::decode` does; yrs computes `clock + len` per range.
    ///
    /// A client listed twice is refused: yrs keeps only its last list of ranges, while Yjs
    /// clients (and the merge of a commit's updates) apply both, so they would delete what the
    /// server keeps.
    fn read_delete_set(&mut self, r: &mut Reader<'_>) -> Result<(), Invalid> {
        let clients = r.var_u32()?;
        // Most delete sets name one client: nothing to compare, nothing allocated.
        let mut seen = Vec::new();
        for _ in 0..clients {
            let client = r.client()?;
            if clients > 1 {
                seen.push(client);
            }
            let ranges = r.var_u32()?;
            for _ in 0..ranges {
                let clock = r.var_u32()?;
                let len = r.var_u32()?;
                clock.checked_add(len).ok_or(Invalid::ClockOverflow)?;
                if len > 0 {
                    self.deletes.push(Deletion { client, clock, len });
                }
            }
        }
        seen.sort_unstable();
        if seen.windows(2).any(|pair| pair[0] == pair[1]) {
            return Err(Invalid::Malformed(
                "a client's deletions appear in two sections",
            ));
        }
        Ok(())
    }

    /// How many structs the update holds (skipped and collected ranges, and the empty items yrs
    /// drops, included): what its cost to apply grows with.
    pub(crate) fn structs(&self) -> usize {
        self.blocks.len()
    }

    /// Whether the update holds a nested shared type, or an item placed in one by its parent.
    pub(crate) fn holds_types(&self) -> bool {
        self.holds_types
    }

    /// The client sections, in the update's order.
    pub(crate) fn sections(&self) -> &[Section] {
        &self.sections
    }

    /// The structs of `section`, in order.
    pub(crate) fn blocks_of(&self, section: &Section) -> &[Block] {
        self.blocks
            .get(section.first as usize..section.end as usize)
            .unwrap_or_default()
    }

    /// The indexes (into [`Index::block`]) of `section`'s structs.
    pub(crate) fn range_of(section: &Section) -> Range<usize> {
        section.first as usize..section.end as usize
    }

    /// Struct number `i` of the whole update (in section order).
    pub(crate) fn block(&self, i: usize) -> Option<&Block> {
        self.blocks.get(i)
    }

    /// The IDs `block` names, in the order origin, right origin, parent: what its place
    /// depends on.
    pub(crate) fn refs(&self, block: &Block) -> &[Id] {
        let count = usize::from(block.info & HAS_ORIGIN != 0)
            + usize::from(block.info & HAS_RIGHT_ORIGIN != 0)
            + usize::from(block.parent == PARENT_TYPE);
        let start = block.refs as usize;
        self.refs.get(start..start + count).unwrap_or_default()
    }

    /// Where an item says it belongs; `None` for a collected or skipped range.
    pub(crate) fn head(&self, block: &Block) -> Option<ItemHead> {
        let Kind::Item(content_ref) = block.kind() else {
            return None;
        };
        let mut refs = self.refs(block).iter().copied();
        let origin = (block.info & HAS_ORIGIN != 0)
            .then(|| refs.next())
            .flatten();
        let right_origin = (block.info & HAS_RIGHT_ORIGIN != 0)
            .then(|| refs.next())
            .flatten();
        let parent = match block.parent {
            PARENT_ROOT => Some(ItemParent::Root),
            PARENT_TYPE => refs.next().map(ItemParent::Type),
            _ => None,
        };
        Some(ItemHead {
            origin,
            right_origin,
            parent,
            parent_sub: parent.is_some() && block.info & HAS_PARENT_SUB != 0,
            content_ref,
        })
    }

    /// The delete set's non-empty ranges, in wire order.
    pub(crate) fn deletes(&self) -> &[Deletion] {
        &self.deletes
    }

    /// Where the delete set lies in the bytes.
    pub(crate) fn delete_set(&self) -> Range<usize> {
        self.delete_set.0 as usize..self.delete_set.1 as usize
    }
}

impl Block {
    /// Where the struct lies in the bytes.
    pub(crate) fn bytes(&self) -> Range<usize> {
        self.at as usize..self.end as usize
    }

    /// Where it starts: its info byte.
    pub(crate) fn start(&self) -> usize {
        self.at as usize
    }

    /// Its header (info byte, origins, parent) in the bytes; its content follows.
    pub(crate) fn header(&self) -> Range<usize> {
        self.at as usize..self.content as usize
    }

    /// Where its content starts.
    pub(crate) fn content(&self) -> usize {
        self.content as usize
    }

    /// Its info byte.
    pub(crate) fn info(&self) -> u8 {
        self.info
    }

    pub(crate) fn kind(&self) -> Kind {
        match self.info {
            BLOCK_GC => Kind::Gc,
            BLOCK_SKIP => Kind::Skip,
            info => Kind::Item(info & CONTENT_REF_MASK),
        }
    }

    /// Its first clock.
    pub(crate) fn clock(&self) -> u32 {
        self.clock
    }

    /// The clocks it covers (as yrs counts them).
    pub(crate) fn len(&self) -> u32 {
        self.len
    }

    /// The clock after it; never past [`MAX_STRUCT_CLOCK`], which the parse checked.
    pub(crate) fn end_clock(&self) -> u32 {
        self.clock.saturating_add(self.len)
    }
}

#[cfg(test)]
mod tests;
