//! The command line: every option of a run, and the checks that refuse unusable ones.

use std::time::Duration;

use clap::{Parser, ValueEnum};

/// Wire protocol spoken to the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Protocol {
    /// y-websocket: one WebSocket per document at `{url}/{doc}`, bare y-protocol messages.
    YWebsocket,
    /// `@hocuspocus/server`: one endpoint at `{url}`; every message starts with the document
    /// name and a hocuspocus message type, and the client authenticates before it syncs.
    Hocuspocus,
}

/// Load generator for y-websocket (and hocuspocus) servers.
#[derive(Debug, Parser)]
#[command(name = "tandem-load", version)]
pub(crate) struct Args {
    /// Base WebSocket URL; document `d` is served at `{url}/{d}` (with `--protocol hocuspocus`,
    /// every client connects to `{url}` itself).
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub(crate) url: String,
    /// Base WebSocket URL of the writers (default: `--url`), e.g. one node of several that
    /// serve one service.
    #[arg(long)]
    pub(crate) writer_url: Option<String>,
    /// Base WebSocket URLs of the readers (default: `--url`), repeatable or comma-separated:
    /// each document's readers are spread over them in turn (reader `r` at URL `r mod n`; name
    /// a URL twice to give it twice the share). Latency is reported per URL as well.
    #[arg(long, value_delimiter = ',')]
    pub(crate) reader_url: Vec<String>,
    /// Wire protocol of the server.
    #[arg(long, value_enum, default_value_t = Protocol::YWebsocket)]
    pub(crate) protocol: Protocol,
    /// Number of documents.
    #[arg(long, default_value_t = 1)]
    pub(crate) docs: usize,
    /// Writers per document.
    #[arg(long, default_value_t = 1)]
    pub(crate) writers: usize,
    /// Readers per document.
    #[arg(long, default_value_t = 10)]
    pub(crate) readers: usize,
    /// Updates per second per writer; 0 makes every client idle: it connects, syncs and holds
    /// its connection for the warmup and the window without sending updates.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) rate: f64,
    /// Measured window (e.g. `15s`).
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub(crate) duration: Duration,
    /// Writing before the measured window, not counted in latency or throughput.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub(crate) warmup: Duration,
    /// Prefix of document names; a random suffix is added per run.
    #[arg(long, default_value = "load")]
    pub(crate) doc_prefix: String,
    /// Token sent as `?token=` on every connection (with hocuspocus, in its Auth message).
    #[arg(long)]
    pub(crate) token: Option<String>,
    /// Right after its set-up, each writer inserts about this many bytes of text in one update
    /// and waits until the server has it; not counted as sent or delivered (for measuring the
    /// memory of loaded documents).
    #[arg(long, default_value_t = 0)]
    pub(crate) fill_bytes: usize,
    /// Before the run, build a document of about this many bytes and time its load.
    #[arg(long)]
    pub(crate) cold_load_bytes: Option<usize>,
    /// Pause between building the cold-load document and loading it (use more than the
    /// server's idle-unload delay to measure a load from storage).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub(crate) cold_wait: Duration,
    /// Give up on a client that is not set up (connected and synced) after this long.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub(crate) setup_timeout: Duration,
    /// Longest wait for in-flight updates after the writers stop.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub(crate) drain: Duration,
    /// Connection attempts in flight at once.
    #[arg(long, default_value_t = 64)]
    pub(crate) connect_concurrency: usize,
    /// Print only the JSON line.
    #[arg(long)]
    pub(crate) json_only: bool,
}

/// The interval between one writer's updates (None: idle clients), or why `rate` is unusable.
pub(crate) fn send_period(rate: f64) -> Result<Option<Duration>, &'static str> {
    if !(rate.is_finite() && rate >= 0.0) {
        return Err("--rate must be a number, 0 or more");
    }
    if rate == 0.0 {
        return Ok(None);
    }
    match Duration::try_from_secs_f64(1.0 / rate) {
        Ok(period) if !period.is_zero() => Ok(Some(period)),
        _ => Err("--rate is out of range"),
    }
}

impl Args {
    /// Where the writers connect.
    pub(crate) fn writer_base(&self) -> &str {
        self.writer_url.as_deref().unwrap_or(&self.url)
    }

    /// Where the readers connect, in turn: `--reader-url`, or `--url` alone.
    pub(crate) fn reader_bases(&self) -> Vec<&str> {
        if self.reader_url.is_empty() {
            vec![self.url.as_str()]
        } else {
            self.reader_url.iter().map(String::as_str).collect()
        }
    }

    /// Whether writers and readers were given URLs of their own (the report then breaks the
    /// latency down by reader URL).
    pub(crate) fn split_urls(&self) -> bool {
        self.writer_url.is_some() || !self.reader_url.is_empty()
    }

    /// Why these options cannot make a run, if they cannot.
    pub(crate) fn problem(&self) -> Option<&'static str> {
        if self.docs == 0 {
            Some("--docs must be at least 1")
        } else if let Err(msg) = send_period(self.rate) {
            Some(msg)
        } else if self.duration.is_zero() {
            Some("--duration must be positive")
        } else if self.connect_concurrency == 0 {
            Some("--connect-concurrency must be at least 1")
        } else if !is_ws(&self.url) {
            Some("--url must start with ws:// or wss://")
        } else if !self.writer_url.as_deref().is_none_or(is_ws) {
            Some("--writer-url must start with ws:// or wss://")
        } else if !self.reader_url.iter().all(|u| is_ws(u)) {
            Some("every --reader-url must start with ws:// or wss://")
        } else {
            None
        }
    }
}

fn is_ws(url: &str) -> bool {
    url.starts_with("ws://") || url.starts_with("wss://")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("tandem-load").chain(args.iter().copied()))
            .expect("options parse")
    }

    #[test]
    fn writers_and_readers_default_to_the_one_url() {
        let args = parse(&["--url", "ws://a/ws"]);
        assert_eq!(args.writer_base(), "ws://a/ws");
        assert_eq!(args.reader_bases(), ["ws://a/ws"]);
        assert!(!args.split_urls());
        assert_eq!(args.problem(), None);
    }

    #[test]
    fn reader_urls_are_repeatable_or_comma_separated_and_keep_their_order() {
        let args = parse(&[
            "--writer-url",
            "ws://n0/ws",
            "--reader-url",
            "ws://n1/ws,ws://n2/ws",
            "--reader-url",
            "ws://n0/ws",
        ]);
        assert_eq!(args.writer_base(), "ws://n0/ws");
        assert_eq!(
            args.reader_bases(),
            ["ws://n1/ws", "ws://n2/ws", "ws://n0/ws"]
        );
        assert!(args.split_urls());
        assert_eq!(args.problem(), None);
        // A writer URL alone leaves the readers on --url.
        let args = parse(&["--url", "ws://a/ws", "--writer-url", "ws://b/ws"]);
        assert_eq!(args.reader_bases(), ["ws://a/ws"]);
        assert!(args.split_urls());
    }

    #[test]
    fn split_urls_must_be_websocket_urls() {
        let args = parse(&["--writer-url", "http://n0/ws"]);
        assert_eq!(
            args.problem(),
            Some("--writer-url must start with ws:// or wss://")
        );
        let args = parse(&["--reader-url", "ws://n1/ws,n2/ws"]);
        assert_eq!(
            args.problem(),
            Some("every --reader-url must start with ws:// or wss://")
        );
    }

    #[test]
    fn rate_zero_means_idle_and_bad_rates_are_refused() {
        assert_eq!(send_period(0.0), Ok(None));
        assert_eq!(send_period(10.0), Ok(Some(Duration::from_millis(100))));
        for bad in [-1.0, f64::NAN, f64::INFINITY, 1e12] {
            assert!(send_period(bad).is_err(), "{bad}");
        }
    }
}
