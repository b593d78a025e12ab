//! Yjs update bytes on the wire: reading and writing lib0 v1 updates, state vectors and
//! awareness payloads exactly as yrs =0.28.1 (the version pinned in `Cargo.toml`) decodes and
//! encodes them.
//!
//! Everything here reads the bytes with a reader of its own instead of yrs's decoder, to answer
//! what yrs cannot be asked safely. An update is walked once, by [`Index::parse`]
//! (`index.rs`): that walk decides whether the bytes are safe to hand to yrs at all (with the
//! rules in `validate.rs`, which also checks state vectors and awareness payloads) and records
//! an [`Index`] of them — each client's section, each struct's byte range, clock, length, kind,
//! origins and parent, and the delete set. The other readers take the bytes with their index
//! and walk nothing again: how deep an update would nest shared types (`nesting.rs`), how to cut
//! a large update into parts applied a transaction at a time (`split.rs`), and how to merge
//! updates that continue each other without yrs's merge (`splice.rs`, which reads only the text
//! of the string items it joins), and whether an item's origins lie in two types
//! (`origins.rs`). What of an update the document already holds is cut out in `screen.rs`.
//!
//! Each of those mirrors details of yrs 0.28.1's layout and its quirks (where yrs differs from
//! the Yjs spec, this code follows yrs). Bumping yrs means re-checking all of it: the fuzz seeds
//! and the regressions in `fuzz/` (`cargo test --manifest-path fuzz/Cargo.toml`), together with
//! the differential tests beside this code, are that check.

mod index;
mod nesting;
mod origins;
mod reader;
mod screen;
mod splice;
mod split;
mod validate;

pub use self::index::Index;
pub use self::nesting::{MAX_TYPE_DEPTH, NestingError};
pub use self::reader::Invalid;
pub use self::screen::{Refused, changes_anything, screen};
pub use self::validate::AwarenessEntry;

pub(crate) use self::splice::splice_updates_v1;
#[cfg(test)]
pub(crate) use self::splice::tests as splice_tests;
#[cfg(test)]
pub(crate) use self::split::Split;
pub(crate) use self::split::{Part, split_into_parts, split_update_v1};
#[cfg(test)]
pub(crate) use self::validate::check_update_v1;
pub(crate) use self::validate::{check_state_vector_v1, parse_awareness_v1};
