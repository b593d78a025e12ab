//! Cutting a v1 update into runs of one client's structs, each an update of its own: how a
//! large update is applied a transaction at a time.

use super::reader::{Invalid, Reader};
use super::validate::{check_block, check_delete_set};

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
/// in any order, and then the delete set, the parts make the same document as the update. The
/// update must have passed [`check_update_v1`].
pub(crate) fn split_update_v1(
    update: &[u8],
    max_structs: usize,
    max_bytes: usize,
) -> Result<Option<Split>, Invalid> {
    let (split, cut) = split_into_parts(update, max_structs, max_bytes)?;
    Ok(cut.then_some(split))
}

/// [`split_update_v1`], but the split is returned even when no client's structs needed cutting
/// (each client's run is then one part), with whether any did.
pub(crate) fn split_into_parts(
    update: &[u8],
    max_structs: usize,
    max_bytes: usize,
) -> Result<(Split, bool), Invalid> {
    use yrs::encoding::write::Write;
    let mut r = Reader::new(update);
    let (mut parts, mut cut) = (Vec::new(), false);
    let clients = r.var_u32()?;
    for _ in 0..clients {
        let blocks = r.var_u32()?;
        let client = r.client()?;
        let mut clock = r.var_u32()?;
        // The run being gathered: its first struct's clock and offset, how many it holds, and
        // what its structs refer to.
        let (mut start_clock, mut start, mut count) = (clock, r.position(), 0usize);
        let mut refers_to: Vec<(u64, u32)> = Vec::new();
        for _ in 0..blocks {
            let before = r.position();
            if count > 0 && (count == max_structs || before - start > max_bytes) {
                let structs = &update[start..before];
                let refs = std::mem::take(&mut refers_to);
                parts.push(part(client, start_clock, clock, count, structs, refs));
                (start_clock, start, count, cut) = (clock, before, 0, true);
            }
            let len = check_block(&mut r, &mut |other, at| {
                if other == client {
                    return;
                }
                match refers_to.iter_mut().find(|(c, _)| *c == other) {
                    Some((_, highest)) => *highest = (*highest).max(at),
                    None => refers_to.push((other, at)),
                }
            })?;
            clock = clock.checked_add(len).ok_or(Invalid::ClockOverflow)?;
            count += 1;
        }
        if count > 0 {
            let structs = &update[start..r.position()];
            parts.push(part(client, start_clock, clock, count, structs, refers_to));
        }
    }
    let delete_set_at = r.position();
    check_delete_set(&mut r)?;
    let mut delete_set = Vec::with_capacity(1 + r.position() - delete_set_at);
    delete_set.write_var(0u32);
    delete_set.extend_from_slice(&update[delete_set_at..r.position()]);
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
