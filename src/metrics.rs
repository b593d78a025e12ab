//! Prometheus metrics, served at `/metrics` in the text format.
//!
//! Each application has its own registry (not the process-global one), so several servers in
//! one process (the test suite) count separately.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Every metric the server keeps.
pub struct Metrics {
    registry: Registry,
    /// WebSocket connections open now (set when rendered).
    pub(crate) connections: IntGauge,
    pub(crate) connections_total: IntCounter,
    /// Connections the server closed, by close code.
    pub(crate) connections_closed: IntCounterVec,
    /// Documents loaded now (set when rendered).
    pub(crate) documents_loaded: IntGauge,
    pub(crate) updates_applying: IntGauge,
    /// Updates applied on a blocking thread, because they may be costly.
    pub(crate) updates_off_thread: IntCounter,
    pub(crate) document_load_seconds: Histogram,
    pub(crate) document_load_failures: IntCounter,
    /// Document changes applied (from clients and from the API).
    pub(crate) updates_applied: IntCounter,
    /// Frames queued to clients (relayed updates, sync answers, presence).
    pub(crate) frames_sent: IntCounter,
    pub(crate) bytes_received: IntCounter,
    pub(crate) bytes_sent: IntCounter,
    /// Clients dropped because their outbound queue was full.
    pub(crate) outbound_drops: IntCounter,
    pub(crate) presence_drops: IntCounter,
    pub(crate) commit_seconds: Histogram,
    /// How long the oldest update released by a commit waited for it before being relayed.
    pub(crate) relay_hold_seconds: Histogram,
    /// Updates per group commit.
    pub(crate) commit_batch_updates: Histogram,
    pub(crate) commit_failures: IntCounter,
    pub(crate) compactions: IntCounter,
    /// Duration of one transaction of compactions.
    pub(crate) compaction_seconds: Histogram,
    /// 1 while the store fails writes (set when rendered).
    pub(crate) store_failing: IntGauge,
    /// Webhook events dropped because their receiver's backlog was full, by receiver. Receivers
    /// are the operator's `--webhook-url`s, so the label takes few values.
    pub(crate) webhook_events_dropped: IntCounterVec,
    /// 1 while both connections to Redis are up (set when rendered; 0 without Redis).
    pub(crate) bus_up: IntGauge,
    /// Log rows published to the other nodes, heard from them, and dropped unsent.
    pub(crate) bus_published: IntCounter,
    pub(crate) bus_received: IntCounter,
    pub(crate) bus_dropped: IntCounter,
    /// From a row's publication on another node to its arrival here.
    pub(crate) bus_relay_seconds: Histogram,
    /// Reads of a document's log for rows other nodes appended.
    pub(crate) log_reads: IntCounter,
    /// Automatic versions saved, and not saved because another node had saved that state.
    pub(crate) auto_versions_saved: IntCounter,
    pub(crate) auto_versions_held_elsewhere: IntCounter,
}

impl Metrics {
    pub fn new() -> Self {
        let registry =
            Registry::new_custom(Some("tandem".into()), None).expect("a valid metric namespace");
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                .expect("valid metric");
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
            h
        };
        let seconds = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let connections_closed = IntCounterVec::new(
            Opts::new(
                "connections_closed_total",
                "WebSocket connections the server closed, by close code",
            ),
            &["code"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(connections_closed.clone()))
            .expect("unique metric");
        let webhook_events_dropped = IntCounterVec::new(
            Opts::new(
                "webhook_events_dropped_total",
                "Webhook events dropped unsent because their receiver's backlog was full",
            ),
            &["receiver"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(webhook_events_dropped.clone()))
            .expect("unique metric");
        let bus_relay_seconds = histogram(
            "bus_relay_seconds",
            "Time from a log row's publication on another node to its arrival here",
            seconds.clone(),
        );
        Self {
            bus_up: gauge("bus_up", "1 while the connections to Redis are up"),
            bus_published: counter(
                "bus_published_total",
                "Log rows published to the other nodes through Redis",
            ),
            bus_received: counter(
                "bus_received_total",
                "Log rows of other nodes heard through Redis",
            ),
            bus_dropped: counter(
                "bus_dropped_total",
                "Log rows not published through Redis (the other nodes read them from the log)",
            ),
            bus_relay_seconds,
            log_reads: counter(
                "log_reads_total",
                "Reads of a document's log for rows other nodes appended",
            ),
            auto_versions_saved: counter("auto_versions_saved_total", "Automatic versions saved"),
            auto_versions_held_elsewhere: counter(
                "auto_versions_held_elsewhere_total",
                "Automatic versions not saved because another node had saved the same state",
            ),
            connections: gauge("connections", "WebSocket connections open now"),
            connections_total: counter("connections_total", "WebSocket connections accepted"),
            connections_closed,
            documents_loaded: gauge("documents_loaded", "Documents loaded in memory now"),
            updates_applying: gauge(
                "updates_applying_off_thread",
                "Costly updates being applied on a blocking thread now",
            ),
            updates_off_thread: counter(
                "updates_applied_off_thread_total",
                "Updates applied on a blocking thread because they may be costly",
            ),
            document_load_seconds: histogram(
                "document_load_seconds",
                "Time to load a document from the store and rebuild it",
                seconds.clone(),
            ),
            document_load_failures: counter(
                "document_load_failures_total",
                "Documents that could not be loaded from the store",
            ),
            updates_applied: counter(
                "updates_applied_total",
                "Document changes applied, from clients and the API",
            ),
            frames_sent: counter("frames_sent_total", "Frames queued to WebSocket clients"),
            bytes_received: counter(
                "bytes_received_total",
                "Bytes of WebSocket messages received",
            ),
            bytes_sent: counter("bytes_sent_total", "Bytes of WebSocket messages sent"),
            outbound_drops: counter(
                "outbound_drops_total",
                "Clients closed because their outbound queue was full",
            ),
            presence_drops: counter(
                "presence_drops_total",
                "Presence frames not sent to a client whose outbound queue was half full",
            ),
            commit_seconds: histogram(
                "store_commit_seconds",
                "Duration of one group commit to the store",
                seconds.clone(),
            ),
            relay_hold_seconds: histogram(
                "relay_hold_seconds",
                "Time the oldest update made durable by a commit was held back before its relay",
                seconds.clone(),
            ),
            compaction_seconds: histogram(
                "compaction_seconds",
                "Duration of one transaction of compactions (snapshots written, log rows dropped)",
                seconds,
            ),
            commit_batch_updates: histogram(
                "store_commit_batch_updates",
                "Updates written by one group commit",
                vec![
                    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
                ],
            ),
            commit_failures: counter(
                "store_commit_failures_total",
                "Group commits that failed and were retried",
            ),
            compactions: counter("compactions_total", "Document compactions committed"),
            store_failing: gauge(
                "store_failing",
                "1 while the store fails writes (documents then relay from memory)",
            ),
            webhook_events_dropped,
            registry,
        }
    }

    /// Everything, in the Prometheus text format.
    pub(crate) fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding gathered families into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
