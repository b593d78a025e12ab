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

    /// Largest WebSocket message accepted, in bytes; a larger one closes the socket with 1009.
    #[arg(long, env = "TANDEM_MAX_MESSAGE_SIZE", default_value_t = 16 * MIB)]
    pub max_message_size: usize,

    /// How long a document stays loaded after its last client leaves (e.g. `30s`, `5m`).
    #[arg(long, env = "TANDEM_IDLE_UNLOAD_DELAY", default_value = "30s", value_parser = humantime::parse_duration)]
    pub idle_unload_delay: Duration,

    /// Compact a document (snapshot, then drop its log) once this many updates are logged.
    #[arg(long, env = "TANDEM_COMPACT_AFTER_UPDATES", default_value_t = 1000)]
    pub compact_after_updates: u64,

    /// Compact a document once its log holds this many bytes.
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

    /// Key for the HMAC-SHA256 signature of webhook requests (`X-Tandem-Signature`).
    #[arg(long, env = "TANDEM_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,

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
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Settings::command().debug_assert();
    }
}
