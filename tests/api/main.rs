//! Integration tests: real servers on real databases, real sockets, stock and yrs clients.

mod access;
mod bad_input;
mod balancer;
mod browser;
mod cluster;
mod cluster_bus;
mod cluster_nodes;
mod convergence;
mod documents;
mod fairness;
mod faults;
mod fuzz_regressions;
mod handshake;
mod helpers;
mod hostile;
mod interop;
mod lifecycle;
mod limits;
mod log_order;
mod metrics;
mod outage;
mod persistence;
mod sync;
mod updates;
mod versions;
mod webhooks;
