//! HTTP routes: each file registers its own handlers.

pub mod health;
pub mod ws;
