//! The report of a run: the human-readable summary and the one JSON line with stable keys that
//! `bench/run.py` parses. Keys (and the summary's lines) only ever get added, and only for
//! options that are in use, so older results stay comparable.

use std::collections::BTreeMap;

use crate::cli::{Args, Protocol};

/// What one run measured, as the coordinator collected it.
pub(crate) struct Outcome {
    pub(crate) run_id: String,
    /// Clients started (readers and writers, over every document).
    pub(crate) total_clients: usize,
    pub(crate) readers_ok: usize,
    pub(crate) writers_ok: usize,
    /// Set-up times in microseconds of every client that was set up, sorted.
    pub(crate) setups: Vec<u32>,
    /// Latencies in microseconds of the deliveries of updates sent in the window, sorted.
    pub(crate) latencies: Vec<u32>,
    pub(crate) sent_total: u64,
    pub(crate) sent_window: u64,
    /// Deliveries due: every send after a reader's set-up, by every writer of its document.
    pub(crate) expected: u64,
    pub(crate) delivered_total: u64,
    pub(crate) errors: BTreeMap<String, u64>,
    pub(crate) cold_ms: Option<f64>,
    pub(crate) cold_bytes: Option<usize>,
    /// The readers of each reader URL, in the order given (one entry for `--url` alone).
    pub(crate) by_url: Vec<UrlOutcome>,
}

/// What the readers at one reader URL measured.
#[derive(Default)]
pub(crate) struct UrlOutcome {
    pub(crate) url: String,
    /// Readers started at this URL, over every document.
    pub(crate) readers: usize,
    pub(crate) readers_ok: usize,
    /// Latencies in microseconds of this URL's deliveries of updates sent in the window, sorted.
    pub(crate) latencies: Vec<u32>,
}

impl UrlOutcome {
    /// The JSON object of one reader URL.
    fn summary(&self, window_secs: f64) -> serde_json::Value {
        let l = &self.latencies;
        serde_json::json!({
            "url": self.url,
            "readers": self.readers,
            "readers_connected": self.readers_ok,
            "updates_delivered_in_window": l.len(),
            "delivered_updates_per_s": ((l.len() as f64 / window_secs) * 1000.0).round() / 1000.0,
            "latency_ms_p50": ms(percentile(l, 50.0)),
            "latency_ms_p90": ms(percentile(l, 90.0)),
            "latency_ms_p99": ms(percentile(l, 99.0)),
            "latency_ms_max": ms(l.last().copied()),
        })
    }
}

/// Prints the summary (unless `--json-only`), then the JSON line.
pub(crate) fn print(args: &Args, outcome: &Outcome) {
    let summary = summary(args, outcome);
    if !args.json_only {
        print_human(args, outcome, &summary);
    }
    println!("{summary}");
}

/// The JSON object of the run, with stable keys.
fn summary(args: &Args, outcome: &Outcome) -> serde_json::Value {
    let &Outcome {
        ref run_id,
        total_clients,
        readers_ok,
        writers_ok,
        ref setups,
        ref latencies,
        sent_total,
        sent_window,
        expected,
        delivered_total,
        ref errors,
        cold_ms,
        cold_bytes,
        ref by_url,
    } = outcome;
    let window_secs = args.duration.as_secs_f64();
    let delivered_window = latencies.len() as u64;
    let error_total: u64 = errors.values().sum();
    let missing = expected.saturating_sub(delivered_total);
    let round3 = |v: f64| (v * 1000.0).round() / 1000.0;

    let mut summary = serde_json::json!({
        "url": args.url,
        "run_id": run_id,
        "docs": args.docs,
        "writers_per_doc": args.writers,
        "readers_per_doc": args.readers,
        "rate_per_writer": args.rate,
        "duration_s": window_secs,
        "warmup_s": args.warmup.as_secs_f64(),
        "clients": total_clients,
        "clients_connected": readers_ok + writers_ok,
        "readers_connected": readers_ok,
        "writers_connected": writers_ok,
        "setup_ms_p50": ms(percentile(setups, 50.0)),
        "setup_ms_p99": ms(percentile(setups, 99.0)),
        "setup_ms_max": ms(setups.last().copied()),
        "updates_sent": sent_total,
        "updates_sent_in_window": sent_window,
        "sent_updates_per_s": round3(sent_window as f64 / window_secs),
        "updates_expected": expected,
        "updates_delivered": delivered_total,
        "updates_delivered_in_window": delivered_window,
        "delivered_updates_per_s": round3(delivered_window as f64 / window_secs),
        "latency_ms_p50": ms(percentile(latencies, 50.0)),
        "latency_ms_p90": ms(percentile(latencies, 90.0)),
        "latency_ms_p99": ms(percentile(latencies, 99.0)),
        "latency_ms_max": ms(latencies.last().copied()),
        "missing": missing,
        "errors": error_total,
        "errors_by_kind": errors,
        "cold_load_bytes": args.cold_load_bytes,
        "cold_load_sync_bytes": cold_bytes,
        "cold_load_ms": cold_ms,
    });
    // Keys for the newer options only when they are used, so default output keeps its keys.
    if args.protocol != Protocol::YWebsocket {
        summary["protocol"] = serde_json::json!("hocuspocus");
    }
    if args.fill_bytes > 0 {
        summary["fill_bytes"] = serde_json::json!(args.fill_bytes);
    }
    if args.split_urls() {
        summary["writer_url"] = serde_json::json!(args.writer_base());
        summary["reader_urls"] = by_url.iter().map(|u| u.summary(window_secs)).collect();
    }
    summary
}

/// The human-readable lines, read back from `summary` where it holds the value.
fn print_human(args: &Args, outcome: &Outcome, summary: &serde_json::Value) {
    let &Outcome {
        ref run_id,
        total_clients,
        readers_ok,
        writers_ok,
        sent_total,
        sent_window,
        expected,
        delivered_total,
        ref errors,
        cold_ms,
        cold_bytes,
        ..
    } = outcome;
    let window_secs = args.duration.as_secs_f64();
    let delivered_window = outcome.latencies.len() as u64;
    let error_total: u64 = errors.values().sum();
    let missing = expected.saturating_sub(delivered_total);
    let f = |k: &str| fmt_ms(summary[k].as_f64());
    println!(
        "tandem-load against {}{} (run {})",
        args.url,
        if args.protocol == Protocol::Hocuspocus {
            " [hocuspocus]"
        } else {
            ""
        },
        run_id
    );
    println!(
        "  clients:    {} set up of {} ({} docs × {} writers + {} readers)",
        readers_ok + writers_ok,
        total_clients,
        args.docs,
        args.writers,
        args.readers
    );
    println!(
        "  set-up ms:  p50 {}  p99 {}  max {}",
        f("setup_ms_p50"),
        f("setup_ms_p99"),
        f("setup_ms_max")
    );
    println!(
        "  sent:       {} updates ({} in the {:.1}s window, {:.1}/s)",
        sent_total,
        sent_window,
        window_secs,
        sent_window as f64 / window_secs
    );
    println!(
        "  delivered:  {} of {} expected; {} in window = {:.1} updates/s",
        delivered_total,
        expected,
        delivered_window,
        delivered_window as f64 / window_secs
    );
    println!(
        "  latency ms: p50 {}  p90 {}  p99 {}  max {}",
        f("latency_ms_p50"),
        f("latency_ms_p90"),
        f("latency_ms_p99"),
        f("latency_ms_max")
    );
    if args.split_urls() {
        println!("  writers at: {}", args.writer_base());
        for u in summary["reader_urls"].as_array().into_iter().flatten() {
            let f = |k: &str| fmt_ms(u[k].as_f64());
            println!(
                "  readers at: {} ({} of {} set up): {} delivered in window; latency ms p50 {}  p99 {}  max {}",
                u["url"].as_str().unwrap_or("?"),
                u["readers_connected"],
                u["readers"],
                u["updates_delivered_in_window"],
                f("latency_ms_p50"),
                f("latency_ms_p99"),
                f("latency_ms_max")
            );
        }
    }
    if args.fill_bytes > 0 {
        println!(
            "  fill:       {} bytes of text per writer before the run",
            args.fill_bytes
        );
    }
    println!("  missing:    {missing}");
    println!("  errors:     {error_total} {errors:?}");
    if args.cold_load_bytes.is_some() {
        println!(
            "  cold load:  {} ms ({} bytes of text, SyncStep2 {} bytes)",
            fmt_ms(cold_ms),
            args.cold_load_bytes.unwrap_or(0),
            cold_bytes.map_or_else(|| "-".to_string(), |b| b.to_string())
        );
    }
}

/// The value at percentile `p` (nearest rank) of `sorted`.
fn percentile(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Microseconds as milliseconds.
fn ms(us: Option<u32>) -> Option<f64> {
    us.map(|v| v as f64 / 1000.0)
}

/// Milliseconds for the summary: three decimals, or `-` when there is no value.
fn fmt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.3}"))
}
