//! The y-websocket protocol without any transport: bytes in, typed messages out, and the frames
//! the server sends. Nothing here knows about actix, so it is unit-tested directly.

pub mod content;
pub mod presence;
pub mod protocol;
pub mod restore;
pub mod text_ops;
pub mod validate;
