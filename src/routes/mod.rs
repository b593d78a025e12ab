//! HTTP routes: each file registers its own handlers.

pub mod access;
pub mod docs;
pub mod health;
pub mod openapi;
pub mod static_files;
pub mod updates;
pub mod versions;
pub mod ws;
