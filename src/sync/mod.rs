//! The y-websocket protocol without any transport: bytes in, typed messages out, and the frames
//! the server sends. Nothing here knows about actix, so it is unit-tested directly.

pub mod content;
pub mod presence;
pub mod protocol;
pub mod restore;
pub mod text_ops;
pub mod validate;

/// Merges Yjs v1 updates into one that applies exactly as they do in order, or `None` if yrs
/// cannot (it reports an error or panics on some inputs that it applies without complaint).
pub fn merge_updates<'a>(updates: impl IntoIterator<Item = &'a [u8]>) -> Option<Vec<u8>> {
    let updates: Vec<&[u8]> = updates.into_iter().collect();
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        yrs::merge_updates_v1(updates)
    }))
    .ok()?
    .ok()
}
