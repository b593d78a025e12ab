//! Test-only fault injection (the `fault-injection` feature, which only the test suite turns
//! on): lets a test make the server fail where a real bug would, to prove what happens then.

use std::collections::HashSet;
use std::sync::Mutex;

static PANIC_ON_APPLY: Mutex<Option<HashSet<String>>> = Mutex::new(None);
static UNSCREENED: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// The next update applied to document `doc` panics inside the apply step, as a bug in the
/// CRDT library would.
pub fn panic_on_next_apply(doc: &str) {
    PANIC_ON_APPLY
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashSet::new)
        .insert(doc.to_string());
}

/// Called inside the apply step: panics once if a test asked for it.
pub(crate) fn before_apply(doc: &str) {
    let armed = PANIC_ON_APPLY
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_mut()
        .is_some_and(|docs| docs.remove(doc));
    if armed {
        panic!("injected fault: panic while applying an update to {doc}");
    }
}

/// The next update to document `doc` goes to yrs without the checks before it, as if they
/// missed a case: what yrs does with an update it refuses part way through is then the test's.
pub fn unscreened_next_update(doc: &str) {
    UNSCREENED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashSet::new)
        .insert(doc.to_string());
}

/// Called before the checks of an update: whether a test asked to skip them, once.
pub(crate) fn skip_screen(doc: &str) -> bool {
    UNSCREENED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_mut()
        .is_some_and(|docs| docs.remove(doc))
}
