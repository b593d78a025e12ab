//! HTTP routes: each file registers its own handlers; `doc_calls` is how they call a document.
//! Route files share nothing else but the time format below.

use std::time::{Duration, UNIX_EPOCH};

pub(crate) mod access;
pub(crate) mod doc_calls;
pub(crate) mod docs;
pub(crate) mod health;
pub(crate) mod openapi;
pub(crate) mod rich;
pub(crate) mod static_files;
pub mod updates;
pub(crate) mod versions;

/// Milliseconds since the epoch as the API shows times: RFC 3339, UTC, to the millisecond.
pub(crate) fn rfc3339(epoch_ms: i64) -> String {
    let time = UNIX_EPOCH + Duration::from_millis(u64::try_from(epoch_ms).unwrap_or(0));
    humantime::format_rfc3339_millis(time).to_string()
}
