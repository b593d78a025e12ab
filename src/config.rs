//! Settings: every flag has an environment variable, and `--help` explains each.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// One MiB.
const MIB: usize = 1024 * 1024;

/// Tandem: a real-time collaborative editing server for Yjs clients.
///
/// Clients connect with `new WebsocketProvider('ws://HOST:PORT/ws', docName)`. Documents are kept
/// in SQLite (default) or Postgres, chosen by the database URL.
#[derive(Debug, Clone, Parser)]
#[command(name = "tandem", version, about, long_about)]
pub struct Settings {
    /// Address and port to listen on.
    #[arg(long, env = "TANDEM_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    /// Database URL: `sqlite://path/to/file.db` (created if missing) or `postgres://user@host/db`.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://data/tandem.db",
        hide_env_values = true
    )]
    pub database_url: String,

    /// Redis for several nodes on one Postgres database (`redis://host:6379`, with
    /// `redis://:password@host` or `rediss://` as needed): the fast path that relays each node's
    /// committed updates to the others. Without it nodes still converge, through the log, within
    /// about 250 ms. Needs Postgres.
    #[arg(long, env = "TANDEM_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Largest WebSocket message accepted, in bytes; a larger one closes the socket with 1009.
    #[arg(long, env = "TANDEM_MAX_MESSAGE_SIZE", default_value_t = 16 * MIB)]
    pub max_message_size: usize,

    /// How long a document stays loaded after its last client leaves (e.g. `30s`, `5m`).
    #[arg(long, env = "TANDEM_IDLE_UNLOAD_DELAY", default_value = "30s", value_parser = humantime::parse_duration)]
    pub idle_unload_delay: Duration,

    /// Compact a document (snapshot, then drop its log) once its log holds this many stored
    /// updates (rows: the updates of one commit are stored as one) and is as large as its
    /// snapshot; sixteen times this many in any case.
    #[arg(long, env = "TANDEM_COMPACT_AFTER_UPDATES", default_value_t = 1000)]
    pub compact_after_updates: u64,

    /// Compact a document once its log holds this many bytes and is as large as its snapshot.
    #[arg(long, env = "TANDEM_COMPACT_AFTER_BYTES", default_value_t = 4 * MIB)]
    pub compact_after_bytes: usize,

    /// Save a version automatically once editing has paused this long after changes (`0s` turns
    /// automatic versions off). A document unloaded with unsaved changes gets one too.
    #[arg(long, env = "TANDEM_AUTO_VERSION_AFTER", default_value = "10m", value_parser = humantime::parse_duration)]
    pub auto_version_after: Duration,

    /// Automatic versions kept per document; older ones are pruned (named ones are kept).
    #[arg(long, env = "TANDEM_AUTO_VERSION_RETENTION", default_value_t = 50)]
    pub auto_version_retention: u32,

    /// Presence (awareness) states not renewed for this long are removed. Clients renew every 15 s.
    #[arg(long, env = "TANDEM_AWARENESS_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub awareness_timeout: Duration,

    /// Bytes queued for one client before it counts as too slow and is closed with 1013. Frames
    /// are shared between recipients, so this bounds memory held for a slow client, not a copy.
    #[arg(long, env = "TANDEM_OUTBOUND_QUEUE_BYTES", default_value_t = 8 * MIB)]
    pub outbound_queue_bytes: usize,

    /// URL that receives a signed POST when a document is created, changed or deleted
    /// (repeatable; the environment variable takes a comma-separated list).
    #[arg(
        long = "webhook-url",
        env = "TANDEM_WEBHOOK_URLS",
        value_delimiter = ','
    )]
    pub webhook_urls: Vec<String>,

    /// Credential a metrics scraper sends as `Authorization: Bearer <token>` for `/metrics`; it
    /// opens nothing else. With access control on, `/metrics` wants this token or an API key;
    /// with it off, this token if one is set.
    #[arg(long, env = "TANDEM_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,

    /// Key for the HMAC-SHA256 signature of webhook requests (`X-Tandem-Signature`).
    #[arg(long, env = "TANDEM_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,

    /// Most events queued for one webhook receiver (0: no limit). Beyond it that receiver's
    /// oldest queued events are dropped, counted in `tandem_webhook_events_dropped_total` and
    /// logged; other receivers are not affected.
    #[arg(long, env = "TANDEM_WEBHOOK_MAX_BACKLOG", default_value_t = 10_000)]
    pub webhook_max_backlog: u64,

    /// Operator secret that turns access control on: it signs document tokens (HMAC-SHA256), and
    /// the REST API then wants an API key. At least 32 characters.
    #[arg(long, env = "TANDEM_AUTH_SECRET", hide_env_values = true)]
    pub auth_secret: Option<String>,

    /// File holding the operator secret (surrounding whitespace is ignored).
    #[arg(long, env = "TANDEM_AUTH_SECRET_FILE", conflicts_with = "auth_secret")]
    pub auth_secret_file: Option<std::path::PathBuf>,

    /// API key accepted by the REST API as `Authorization: Bearer <key>` when auth is on
    /// (repeatable; the environment variable takes a comma-separated list).
    #[arg(
        long = "api-key",
        env = "TANDEM_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<String>,

    /// File of API keys, one per line (blank lines and lines starting with `#` are ignored).
    #[arg(long, env = "TANDEM_API_KEY_FILE")]
    pub api_key_file: Option<std::path::PathBuf>,

    /// Lifetime of a document token when the request names none.
    #[arg(long, env = "TANDEM_TOKEN_LIFETIME", default_value = "1h", value_parser = humantime::parse_duration)]
    pub token_lifetime: Duration,

    /// Longest lifetime a document token may be given.
    #[arg(long, env = "TANDEM_MAX_TOKEN_LIFETIME", default_value = "24h", value_parser = humantime::parse_duration)]
    pub max_token_lifetime: Duration,

    /// Serve without access control on a non-loopback address (only behind a proxy that
    /// authenticates). Without a secret Tandem otherwise refuses to listen beyond loopback.
    #[arg(long, env = "TANDEM_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,

    /// Origin allowed to open WebSockets and to call the REST API from a browser (CORS)
    /// (repeatable; comma-separated in the environment; `*` allows any). With none, only
    /// same-origin pages and non-browser clients may connect.
    #[arg(
        long = "allowed-origin",
        env = "TANDEM_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// Host name this server is reached under besides loopback names and IP addresses, as the
    /// browser's address bar or a proxy's `Host`/`X-Forwarded-Host` names it (repeatable;
    /// comma-separated in the environment). Requests naming another host are refused with 421,
    /// against DNS rebinding: always without access control, and with it once a name is given.
    #[arg(
        long = "public-host",
        env = "TANDEM_PUBLIC_HOSTS",
        value_delimiter = ',',
        value_parser = crate::domain::public_host_arg
    )]
    pub public_hosts: Vec<String>,

    /// Largest REST request body, in bytes (413 beyond it).
    #[arg(long, env = "TANDEM_MAX_BODY_SIZE", default_value_t = 16 * MIB)]
    pub max_body_size: usize,

    /// Largest stored size a document may grow to, in bytes: an update beyond it is refused
    /// (WebSocket close 1009, REST 413).
    #[arg(long, env = "TANDEM_MAX_DOCUMENT_SIZE", default_value_t = 64 * MIB)]
    pub max_document_size: usize,

    /// Most WebSocket connections in total (0: no limit); more are closed with 1013.
    #[arg(long, env = "TANDEM_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Most WebSocket connections to one document (0: no limit); more are closed with 1013.
    #[arg(long, env = "TANDEM_MAX_CONNECTIONS_PER_DOC", default_value_t = 1_000)]
    pub max_connections_per_doc: usize,

    /// Most WebSocket connections from one client address (an IPv4 address, an IPv6 /64)
    /// (0: no limit); more are closed with 1013. Behind a proxy, see --trusted-proxy.
    #[arg(long, env = "TANDEM_MAX_CONNECTIONS_PER_IP", default_value_t = 256)]
    pub max_connections_per_ip: usize,

    /// Most documents one Hocuspocus connection (`/ws`) may hold at once (0: no limit); each
    /// counts as a connection to its document under --max-connections-per-doc. The provider is
    /// refused one more with a reason.
    #[arg(
        long,
        env = "TANDEM_MAX_DOCUMENTS_PER_CONNECTION",
        default_value_t = 100
    )]
    pub max_documents_per_connection: usize,

    /// Proxy address or network (`10.0.0.0/8`) whose `X-Forwarded-For` names the client, for
    /// the per-address limit and the logs (repeatable; comma-separated in the environment).
    /// Requests from anywhere else are counted by their socket's address.
    #[arg(
        long = "trusted-proxy",
        env = "TANDEM_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_parser = crate::client_addr::proxy_arg
    )]
    pub trusted_proxies: Vec<String>,

    /// Messages per second one connection may send on average (0: no limit); a client over it
    /// is closed with 1008.
    #[arg(long, env = "TANDEM_MESSAGE_RATE", default_value_t = 200)]
    pub message_rate: u32,

    /// Messages one connection may send in a burst above the average rate.
    #[arg(long, env = "TANDEM_MESSAGE_BURST", default_value_t = 1_000)]
    pub message_burst: u32,

    /// Presence (awareness) states one connection may hold live at once; a stock Yjs client
    /// holds one. A connection setting more is closed with 1008.
    #[arg(long, env = "TANDEM_MAX_PRESENCE_STATES", default_value_t = 4)]
    pub max_presence_states: usize,

    /// Longest presence state (its JSON, in bytes); a connection sending a longer one is closed
    /// with 1009.
    #[arg(long, env = "TANDEM_MAX_PRESENCE_STATE_SIZE", default_value_t = 16 * 1024)]
    pub max_presence_state_size: usize,

    /// Longest one update may take to apply, and what one connection's updates may take per
    /// 10 s. An update past it is stopped (the part applied is kept) and its sender closed with
    /// 1008; over HTTP it is answered 400. `0s` turns the budget off.
    #[arg(long, env = "TANDEM_UPDATE_COST_BUDGET", default_value = "2s", value_parser = humantime::parse_duration)]
    pub update_cost_budget: Duration,

    /// How long shutdown waits for the documents to flush and compact, and then for the last
    /// writes; a document not done by then is skipped and named in the log.
    #[arg(long, env = "TANDEM_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,

    /// Log line format.
    #[arg(long, env = "TANDEM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter in `tracing` syntax (e.g. `info`, `tandem=debug`); if unset, `RUST_LOG`, else
    /// `info`.
    #[arg(long, env = "TANDEM_LOG")]
    pub log: Option<String>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl Settings {
    /// Settings with every default, for embedding and tests.
    pub fn with_database(database_url: impl Into<String>) -> Self {
        let mut settings = Settings::parse_from(["tandem"]);
        settings.database_url = database_url.into();
        settings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_and_defaults_hold() {
        let s = Settings::try_parse_from([
            "tandem",
            "--bind",
            "0.0.0.0:9000",
            "--idle-unload-delay",
            "2m",
            "--log-format",
            "json",
        ])
        .expect("valid flags");
        assert_eq!(s.bind.port(), 9000);
        assert_eq!(s.idle_unload_delay, Duration::from_secs(120));
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.max_message_size, 16 * MIB);
        assert_eq!(s.webhook_max_backlog, 10_000);
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Settings::command().debug_assert();
    }
}
