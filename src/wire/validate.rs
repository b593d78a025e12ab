//! The rules for untrusted Yjs (lib0 v1) payloads: whether it is safe to hand these bytes to
//! yrs.
//!
//! This module owns that question for the three payload kinds a y-websocket peer can send us:
//! document updates (whose walk over sections, structs and the delete set is
//! [`super::Index::parse`], applying the rules for item content and `Any` values kept here),
//! state vectors and awareness updates. Each walk follows exactly the layout yrs 0.28.1
//! decodes, and refuses input that would make yrs misbehave:
//!
//! * client ids of 2^53 or more: yrs's `ClientID::new` carries a `debug_assert!` on that bound,
//!   so such an id panics a debug build and is silently masked to a different client in a
//!   release build;
//! * `Any` values nested deeper than [`MAX_ANY_DEPTH`]: `Any::decode` recurses without a limit,
//!   and on a 2 MiB thread stack (tokio's default) about 2 KB of nesting overflows it in a debug
//!   build and about 20 KB in a release build, which aborts the whole process;
//! * per-client clocks that overflow `u32` (`Update::decode` adds block lengths to a `u32`
//!   clock; delete-set ranges compute `clock + len`), which panics a debug build;
//! * signed var-ints that yrs's `read_var::<i64>` decodes with an over-wide shift or an
//!   overflowing negation (both panic a debug build);
//! * truncated or otherwise malformed input, which yrs would refuse too.
//!
//! Every count read from the input is only a loop bound: nothing is pre-allocated from it and
//! each iteration consumes at least one byte, so a huge declared count behind a short payload
//! fails at the first missing byte. A payload accepted here therefore also bounds the memory
//! yrs reserves from those counts (and what the index records) to a small multiple of its
//! length.
//!
//! The walk follows yrs rather than the Yjs spec where the two differ (for example yrs reads
//! `len + 1` strings for JSON content), because yrs is what will decode the bytes next.

use super::reader::{Invalid, MAX_ANY_DEPTH, Reader};

// Block info byte layout, as yrs's `Update::decode_block` reads it.
pub(super) const HAS_ORIGIN: u8 = 0x80;
pub(super) const HAS_RIGHT_ORIGIN: u8 = 0x40;
pub(super) const HAS_PARENT_SUB: u8 = 0x20;
pub(super) const CONTENT_REF_MASK: u8 = 0x0F;
/// Content ref of deleted content (a length, no data).
pub(super) const CONTENT_DELETED: u8 = 1;
/// Content ref of a string item.
pub(super) const CONTENT_STRING: u8 = 4;
/// Content ref of a shared type nested in another.
pub(super) const CONTENT_TYPE: u8 = 7;
/// Info bytes of a garbage-collected and of a skipped range.
pub(super) const BLOCK_GC: u8 = 0;
pub(super) const BLOCK_SKIP: u8 = 10;

/// Checks a lib0 v1-encoded Yjs update: [`super::Index::parse`], without the index.
#[cfg(test)]
pub(crate) fn check_update_v1(update: &[u8]) -> Result<(), Invalid> {
    super::Index::parse(update).map(|_| ())
}

/// Checks a v1-encoded state vector (the SyncStep1 payload) before `StateVector::decode_v1`.
/// Bytes after the last entry are ignored, as yrs ignores them.
pub(crate) fn check_state_vector_v1(sv: &[u8]) -> Result<(), Invalid> {
    let mut r = Reader::new(sv);
    let entries = r.var_u32()?;
    for _ in 0..entries {
        r.client()?;
        r.var_u32()?;
    }
    Ok(())
}

/// One client's entry in an awareness update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwarenessEntry {
    /// The client id, at most [`MAX_CLIENT_ID`].
    pub client: u64,
    /// The client's awareness clock.
    pub clock: u32,
    /// The client's state as JSON text; not parsed here (`"null"` means the client left).
    pub json: String,
}

/// Parses one awareness update payload (the bytes inside the awareness message's
/// `varBytes`): a var-int count, then per entry a client id, a `u32` clock and a JSON string.
///
/// Entries come back in wire order, duplicates included (yrs keeps the last one per client).
/// Bytes after the last entry are ignored, as yrs ignores them.
pub(crate) fn parse_awareness_v1(payload: &[u8]) -> Result<Vec<AwarenessEntry>, Invalid> {
    let mut r = Reader::new(payload);
    // yrs reads this count as a `usize` var-int, i.e. a full u64 on 64-bit targets.
    let count = r.var_u64()?;
    // Grown per entry rather than reserved from `count`: each entry costs at least 3 bytes
    // of input, so the vector can never outgrow the payload.
    let mut entries = Vec::new();
    for _ in 0..count {
        let client = r.client()?;
        let clock = r.var_u32()?;
        let json = r.string()?.to_owned();
        entries.push(AwarenessEntry {
            client,
            clock,
            json,
        });
    }
    Ok(entries)
}

/// Walks item content as `ItemContent::decode` reads it and returns its length as
/// `ItemContent::len_utf16` computes it: yrs measures block lengths in UTF-16 units whatever
/// the document's offset kind.
pub(super) fn check_content(r: &mut Reader<'_>, content_ref: u8) -> Result<u32, Invalid> {
    match content_ref {
        // Deleted: just a length; 0 makes yrs drop the item without advancing the clock.
        CONTENT_DELETED => r.var_u32(),
        // JSON (a legacy encoding no current Yjs writes): yrs reads `len + 1` strings but
        // writes `len`, so a document holding it cannot be re-encoded or reloaded.
        2 => Err(Invalid::Unsupported("JSON content (a legacy Yjs encoding)")),
        // Binary.
        3 => r.buf().map(|_| 1),
        // String: length in UTF-16 code units, as yrs's `SplittableString::len_utf16`.
        CONTENT_STRING => {
            let s = r.string()?;
            // Never fails: a string holds at most u32::MAX bytes and no more UTF-16 units.
            u32::try_from(s.encode_utf16().count())
                .map_err(|_| Invalid::Malformed("string too long"))
        }
        // Embed: JSON text (parsed later by yrs).
        5 => r.string().map(|_| 1),
        // Format: key, then JSON text.
        6 => {
            r.string()?;
            r.string()?;
            Ok(1)
        }
        // Type: a one-byte type ref; XmlElement (3) carries its tag name.
        CONTENT_TYPE => {
            match r.u8()? {
                0..=2 | 4..=6 | 9 | 15 => {}
                3 => {
                    r.string()?;
                }
                _ => return Err(Invalid::Malformed("unknown type ref")),
            }
            Ok(1)
        }
        // Any: count, then that many values.
        8 => {
            let len = r.var_u32()?;
            for _ in 0..len {
                check_any(r, 0)?;
            }
            Ok(len)
        }
        // Subdocument: a document holding one is never freed by yrs (a reference cycle), and
        // y-websocket does not sync subdocuments anyway.
        9 => Err(Invalid::Unsupported("subdocuments")),
        _ => Err(Invalid::Malformed("unknown content ref")),
    }
}

/// Walks one `Any` value as `Any::decode` reads it. `depth` counts the arrays/maps enclosing
/// this value; the recursion stops at [`MAX_ANY_DEPTH`] so a hostile payload cannot exhaust
/// the stack here, and yrs, which recurses without a limit, never sees deeper nesting.
fn check_any(r: &mut Reader<'_>, depth: usize) -> Result<(), Invalid> {
    match r.u8()? {
        // undefined, null, true, false
        127 | 126 | 121 | 120 => Ok(()),
        // integer (signed var-int)
        125 => r.var_i64(),
        // float32
        124 => r.bytes(4).map(|_| ()),
        // float64, bigint
        123 | 122 => r.bytes(8).map(|_| ()),
        // string
        119 => r.string().map(|_| ()),
        // map, array: yrs reads the count as a `usize` var-int.
        tag @ (118 | 117) => {
            if depth >= MAX_ANY_DEPTH {
                return Err(Invalid::TooDeep);
            }
            let len = r.var_u64()?;
            for _ in 0..len {
                if tag == 118 {
                    r.string()?;
                }
                check_any(r, depth + 1)?;
            }
            Ok(())
        }
        // buffer
        116 => r.buf().map(|_| ()),
        _ => Err(Invalid::Malformed("unknown Any tag")),
    }
}

#[cfg(test)]
mod tests;
