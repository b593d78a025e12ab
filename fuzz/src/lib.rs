//! The bodies of the fuzz targets, shared with `tests/replay.rs` so that every seed and
//! regression input can be replayed under `cargo test` without libFuzzer.
//!
//! Each harness hands its input to the server's own code: the frame decoder and the document
//! core (`tandem::collab::core::DocCore`, the same struct the document actor drives), playing
//! the actor's part for the effects it returns (the writer commits every append, an update
//! applied off the thread is run inline). Then it checks invariants that hold for any input
//! the server accepts. A panic anywhere, in tandem or in yrs, is a finding.

mod driver;
mod sync_message;
mod text_edit;
mod view;

pub use driver::SyncOutcome;
pub use sync_message::sync_message;
pub use text_edit::{TextOutcome, text_edit};
