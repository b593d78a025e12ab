//! Validated values that cross the boundary from clients into the server.

mod doc_id;

pub use doc_id::{DocId, InvalidDocId};
