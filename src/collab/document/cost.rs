//! What applying updates may cost: which updates are applied off the document's thread, and
//! how much applying time one connection may spend.
//!
//! yrs integrates an item by comparing it with every item between its two origins, so an update
//! can cost far more than its size: a few hundred bytes of items placed between origins that
//! thousands of items separate kept a thread busy for seconds, and 2 MB for minutes. Documents
//! share threads, so such an update is applied on a thread of its own while the document waits
//! for it, in parts, and stopped between two parts at the connection's budget
//! ([`crate::collab::limits::CostBudget`]).

/// An update whose structs times the document's stored bytes reach this is applied off the
/// document's thread. Each struct may be compared with every item the document holds, and a
/// document holds fewer items than bytes, so what stays on the thread costs at most about this
/// many comparisons (a few milliseconds): a keystroke in a document of up to 256 KiB, or a
/// paste of a few dozen structs into a small one.
const INLINE_WORK: u128 = 256 * 1024;

/// Structs per part when an update is applied off the thread: its overshoot past the deadline
/// is what one part costs.
pub const OFFLOADED_PART_STRUCTS: usize = 32;

/// Whether an update of `structs` structs into a document of `stored_bytes` is applied off the
/// document's thread.
pub fn is_heavy(structs: usize, stored_bytes: usize) -> bool {
    (structs as u128) * (stored_bytes.max(1) as u128) > INLINE_WORK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keystrokes_in_ordinary_documents_stay_on_the_thread() {
        assert!(!is_heavy(1, 100 * 1024));
        assert!(!is_heavy(20, 10 * 1024));
        assert!(is_heavy(1, 1024 * 1024));
        assert!(is_heavy(2_000, 300 * 1024));
        assert!(!is_heavy(1, 0));
    }
}
