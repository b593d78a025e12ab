//! Tandem: a self-hostable real-time collaborative editing server for Yjs clients.
//!
//! # Layout
//! - [`config`] — settings from flags and environment.
//! - [`startup`] — wiring and the shutdown order.
//! - `state` — what every HTTP handler shares.
//! - [`routes`] — HTTP handlers (documents, versions, access, health probes).
//! - `ws` — the WebSocket transport: upgrade, sessions, frame reader, outbound queue,
//!   admission limits.
//! - [`auth`] — API keys, document tokens, revocations, the origin rule.
//! - [`collab`] — documents: the transport-free core, its actor, the relay seam, the registry.
//! - `persist` — the persistence writer (group commit, retries, store health) and the
//!   compactor.
//! - [`sync`] — the y-websocket protocol without transport.
//! - [`wire`] — Yjs v1 update bytes, tied to the yrs pin: validation, nesting, the screen before
//!   applying, splitting and splicing.
//! - [`store`] — the storage trait and its SQLite and Postgres backends.
//! - `client_addr` — which address a request comes from, and which host it names, through
//!   trusted proxies.
//! - `guard` — the gate before routing: foreign host names and writes from foreign pages.
//! - [`domain`] — validated values such as document names, and which host names are this
//!   server's.
//! - `error` — HTTP errors as problem JSON.
//! - `backoff` — the one exponential backoff every retry follows.
//! - [`telemetry`] — log output.
//! - [`metrics`] — Prometheus metrics, served at `/metrics`.
//! - [`webhooks`] — signed change notifications, queued in the store and delivered with
//!   retries.
//! - `faults` — test-only fault injection, public for the integration tests but compiled only
//!   with the `fault-injection` feature.
//!
//! Modules in backticks without a link are the crate's own; the linked ones are what the
//! binary, the integration tests, the fuzz harness and the benchmark's test use.

// Items are `pub(crate)` unless another crate (the binary, tests/, fuzz/, bench/) needs them.
#![warn(unreachable_pub)]

pub mod auth;
mod backoff;
pub(crate) mod bus;
pub(crate) mod client_addr;
pub mod collab;
pub mod config;
pub mod domain;
pub(crate) mod error;
#[cfg(feature = "fault-injection")]
pub mod faults;
pub(crate) mod guard;
pub mod metrics;
pub(crate) mod persist;
pub mod routes;
pub mod startup;
pub(crate) mod state;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod webhooks;
pub mod wire;
pub(crate) mod ws;
