//! HTTP routes: each file registers its own handlers; `doc_calls` is how they call a document.

pub mod access;
pub(crate) mod doc_calls;
pub mod docs;
pub mod health;
pub mod openapi;
pub mod static_files;
pub mod updates;
pub mod versions;
