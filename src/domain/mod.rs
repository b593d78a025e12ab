//! Validated values that cross the boundary from clients into the server.

mod doc_id;
mod host;

pub use doc_id::{DocId, InvalidDocId};
pub(crate) use host::{HostRule, public_host_arg};
