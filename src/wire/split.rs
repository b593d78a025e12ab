//! Cutting a v1 update into runs of one client's structs, each an update of its own: how a
//! large update is applied a transaction at a time. The cuts are the byte ranges the update's
//! [`Index`] recorded; nothing is read again.

use super::index::Index;
use super::reader::Invalid;

/// A v1 update split by [`split_update_v1`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Split {
    /// The runs of structs, in the update's order.
    pub(crate) parts: Vec<Part>,
    /// An update of the delete set alone, to apply after the parts.
    pub(crate) delete_set: Vec<u8>,
}

/// A run of one client's structs, as an update of its own.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Part {
    pub(crate) update: Vec<u8>,
    pub(crate) client: u64,
    /// The clocks of `client` it inserts: `start..end`.
    pub(crate) start: u32,
    pub(crate) end: u32,
    /// The highest clock of each other client that its structs refer to (as an origin, a right
    /// origin or a parent).
    pub(crate) refers_to: Vec<(u64, u32)>,
}

/// Splits a v1 update into runs of at most `max_structs` structs and, where structs allow,
/// `max_bytes` bytes of them, or `None` if no client's structs exceed both bounds. Each part
/// holds a run of one client's structs, copied as they are (a v1 struct does not depend on its
/// neighbours) behind a header that starts it at its own clock, and an empty delete set. Applied
/// in any order, and then the delete set, the parts make the same document as the update.
/// `index` is the update's own ([`Index::parse`]): the cuts are its byte ranges.
pub(crate) fn split_update_v1(
    update: &[u8],
    index: &Index,
    max_structs: usize,
    max_bytes: usize,
) -> Result<Option<Split>, Invalid> {
    let (split, cut) = split_into_parts(update, index, max_structs, max_bytes)?;
    Ok(cut.then_some(split))
}

/// [`split_update_v1`], but the split is returned even when no client's structs needed cutting
/// (each client's run is then one part), with whether any did.
pub(crate) fn split_into_parts(
    update: &[u8],
    index: &Index,
    max_structs: usize,
    max_bytes: usize,
) -> Result<(Split, bool), Invalid> {
    use yrs::encoding::write::Write;
    // The index describes these bytes; were it another's, the cuts would not lie inside them.
    let slice = |range: std::ops::Range<usize>| {
        update
            .get(range)
            .ok_or(Invalid::Malformed("an index of other bytes"))
    };
    let (mut parts, mut cut) = (Vec::new(), false);
    for section in index.sections() {
        let client = section.client;
        let blocks = index.blocks_of(section);
        let (Some(first), Some(last)) = (blocks.first(), blocks.last()) else {
            continue;
        };
        // The run being gathered: its first struct's clock and offset, how many it holds, and
        // what its structs refer to.
        let (mut start_clock, mut start, mut count) = (section.clock, first.start(), 0usize);
        let mut refers_to: Vec<(u64, u32)> = Vec::new();
        for block in blocks {
            let before = block.start();
            if count > 0 && (count == max_structs || before - start > max_bytes) {
                let refs = std::mem::take(&mut refers_to);
                let structs = slice(start..before)?;
                parts.push(part(
                    client,
                    start_clock,
                    block.clock(),
                    count,
                    structs,
                    refs,
                ));
                (start_clock, start, count, cut) = (block.clock(), before, 0, true);
            }
            for &(other, at) in index.refs(block) {
                if other == client {
                    continue;
                }
                match refers_to.iter_mut().find(|(c, _)| *c == other) {
                    Some((_, highest)) => *highest = (*highest).max(at),
                    None => refers_to.push((other, at)),
                }
            }
            count += 1;
        }
        let structs = slice(start..last.bytes().end)?;
        let end = last.end_clock();
        parts.push(part(client, start_clock, end, count, structs, refers_to));
    }
    let deletions = slice(index.delete_set())?;
    let mut delete_set = Vec::with_capacity(1 + deletions.len());
    delete_set.write_var(0u32);
    delete_set.extend_from_slice(deletions);
    return Ok((Split { parts, delete_set }, cut));

    fn part(
        client: u64,
        start: u32,
        end: u32,
        count: usize,
        structs: &[u8],
        refers_to: Vec<(u64, u32)>,
    ) -> Part {
        let mut update = Vec::with_capacity(structs.len() + 24);
        update.write_var(1u32);
        update.write_var(count);
        update.write_var(client);
        update.write_var(start);
        update.extend_from_slice(structs);
        update.write_var(0u32);
        Part {
            update,
            client,
            start,
            end,
            refers_to,
        }
    }
}
