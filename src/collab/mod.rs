//! Documents: the core that decides, the actor that runs it, the relay to subscribers and the
//! registry of loaded documents. The writer they hand their appends to is `crate::persist`.
//!
//! ```text
//! ws session ─▶ DocumentActor ─(events)▶ DocCore ─(effects)▶ relay ─▶ subscribers
//!                    │                                   ▲
//!                    └─▶ crate::persist ─▶ Store ─(durable)──┘
//! Registry: DocId ─▶ Addr<DocumentActor>, loads on first use, unloads when idle
//! log watch (several nodes): Store ─(log heads)▶ DocumentActor ─(read)▶ Store
//! ```

pub mod core;
pub mod document;
pub(crate) mod log_watch;
pub(crate) mod messages;
pub(crate) mod peers;
pub(crate) mod registry;
pub(crate) mod relay;

pub(crate) use registry::Registry;
