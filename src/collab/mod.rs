//! Documents: the core that decides, the actor that runs it, the relay to subscribers, the
//! registry of loaded documents, and the persistence writer.
//!
//! ```text
//! ws session ─▶ DocumentActor ─(events)▶ DocCore ─(effects)▶ relay ─▶ subscribers
//!                    │                                   ▲
//!                    └─▶ crate::persist ─▶ Store ─(durable)──┘
//! Registry: DocId ─▶ Addr<DocumentActor>, loads on first use, unloads when idle
//! ```

pub mod core;
pub mod document;
pub(crate) mod messages;
pub(crate) mod registry;
pub(crate) mod relay;

pub(crate) use registry::Registry;
