//! The collaboration core: actors that connect sockets to documents and documents to the store.
//!
//! ```text
//! socket ─▶ SessionActor ─▶ DocumentActor ─▶ crate::persist ─▶ Store
//!                ▲               │  (durable)      │
//!                └── Outbound ◀──┴── relay ◀───────┘
//! Registry: DocId ─▶ Addr<DocumentActor>, loads on first use, unloads when idle
//! ```

pub mod document;
pub mod limits;
pub mod messages;
pub mod outbound;
pub mod reader;
pub mod registry;
pub mod session;
pub mod subscribers;

pub use registry::Registry;
