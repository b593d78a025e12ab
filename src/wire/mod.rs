//! Reading Yjs v1 update bytes as yrs =0.28.1 defines them, before the document applies them.
//!
//! `screen` cuts out of an update what the document already holds and refuses what yrs would
//! panic on or apply wrongly. What it relies on is the encoding of the pinned yrs: bumping yrs
//! means checking it again (the fuzz seeds and regressions in `fuzz/` are that check).

pub mod screen;

pub use screen::{Refused, changes_anything, screen};
