//! What every HTTP handler shares: [`AppState`]. It is built by `startup.rs`, and lives apart
//! from it so that the routes, which read it, never import how the server is built.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use actix::Addr;
use actix_web::http::header::HeaderMap;

use crate::auth::Auth;
use crate::bus::Bus;
use crate::client_addr::TrustedProxies;
use crate::collab::Registry;
use crate::config::Settings;
use crate::domain::HostRule;
use crate::persist::StoreHealth;
use crate::store::Store;
use crate::webhooks::Webhooks;
use crate::ws::limits::ConnectionLimits;
use crate::ws::outbound::OpenSockets;

/// What every handler shares.
pub(crate) struct AppState {
    pub registry: Addr<Registry>,
    pub store: Arc<dyn Store>,
    pub webhooks: Webhooks,
    pub settings: Arc<Settings>,
    pub auth: Arc<Auth>,
    pub limits: Arc<ConnectionLimits>,
    /// Whether the store takes writes, as the persistence writer finds it.
    pub store_health: Arc<StoreHealth>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// WebSockets with a writer task at work (frames the socket did not take at once, a close).
    pub sockets: Arc<OpenSockets>,
    /// Whose `X-Forwarded-For` names the client, and `X-Forwarded-Host` the host.
    pub proxies: TrustedProxies,
    /// Which host names requests may be addressed to.
    pub hosts: HostRule,
    /// The fast path to the other nodes, with `--redis-url`.
    pub(crate) bus: Option<Bus>,
    pub(crate) next_session: AtomicU64,
    pub(crate) shutting_down: AtomicBool,
}

impl AppState {
    /// A process-unique id for a new connection.
    pub(crate) fn next_session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// The address a request comes from: its socket's peer, or the client a trusted proxy
    /// names.
    pub(crate) fn client_ip(
        &self,
        peer: Option<std::net::SocketAddr>,
        headers: &HeaderMap,
    ) -> Option<IpAddr> {
        peer.map(|peer| self.proxies.client(peer.ip(), headers))
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    /// From now on the server is shutting down (`/readyz` says so).
    pub(crate) fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }
}
