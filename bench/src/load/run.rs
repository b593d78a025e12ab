//! The coordinator of a run: the cold load, then every client task, the phases they watch
//! (set-up, warmup, measured window, drain, stop), and the collection of what they measured.

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, watch};
use yrs::{ClientID, Doc};

use crate::cli::{Args, send_period};
use crate::cold::cold_load;
use crate::protocol::Endpoint;
use crate::reader::run_reader;
use crate::report::{self, Outcome, UrlOutcome};
use crate::state::{Phase, Shared, Window, WriterLog};
use crate::writer::run_writer;

/// Random client ids in JavaScript's safe range (Yjs uses 32-bit ids), all distinct.
fn client_ids(n: usize) -> Vec<u64> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let b = uuid::Uuid::new_v4().into_bytes();
        let id = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64;
        if id != 0 && seen.insert(id) {
            out.push(id);
        }
    }
    out
}

/// Runs the whole measurement described by `args` and prints its report.
pub(crate) async fn run(args: Args) {
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let shared = Arc::new(Shared::default());
    let sem = Arc::new(Semaphore::new(args.connect_concurrency));
    let total_writers = args.docs * args.writers;
    let ids = client_ids(total_writers + 1);

    // Cold load first, on its own document.
    let mut cold_ms = None;
    let mut cold_bytes = None;
    if args.cold_load_bytes.is_some() {
        let name = format!("{}-{}-cold", args.doc_prefix, run_id);
        match cold_load(&args, &name, ids[total_writers], &sem).await {
            Ok((ms, bytes)) => {
                cold_ms = Some((ms * 1000.0).round() / 1000.0);
                cold_bytes = Some(bytes);
            }
            Err(kind) => shared.error(kind),
        }
    }

    let (phase_tx, phase_rx) = watch::channel(Phase {
        start: None,
        stop: false,
    });
    let (window_tx, window_rx) = watch::channel(None::<Window>);
    let (until_tx, until_rx) = watch::channel(None::<Instant>);
    // Validated in `main`.
    let period = send_period(args.rate).unwrap_or(None);

    let reader_bases = args.reader_bases();
    let mut by_url: Vec<UrlOutcome> = reader_bases
        .iter()
        .map(|base| UrlOutcome {
            url: base.to_string(),
            ..UrlOutcome::default()
        })
        .collect();
    let mut reader_tasks = Vec::new();
    // The index in `by_url` of each reader task's URL.
    let mut reader_urls = Vec::new();
    let mut writer_tasks = Vec::new();
    let mut logs: Vec<Vec<Arc<WriterLog>>> = Vec::new();
    for d in 0..args.docs {
        let name = format!("{}-{}-{}", args.doc_prefix, run_id, d);
        let endpoint = Endpoint::at(&args, args.writer_base(), &name);
        let reader_endpoints: Vec<Endpoint> = reader_bases
            .iter()
            .map(|base| Endpoint::at(&args, base, &name))
            .collect();
        let mut map = HashMap::new();
        let mut docs = Vec::new();
        let mut doc_logs = Vec::new();
        for w in 0..args.writers {
            let id = ids[d * args.writers + w];
            let log = Arc::new(WriterLog::default());
            map.insert(ClientID::new(id), log.clone());
            doc_logs.push(log.clone());
            docs.push((Doc::with_client_id(id), log));
        }
        logs.push(doc_logs);
        let map = Arc::new(map);
        for r in 0..args.readers {
            let u = r % reader_endpoints.len();
            reader_urls.push(u);
            by_url[u].readers += 1;
            reader_tasks.push(tokio::spawn(run_reader(
                d,
                reader_endpoints[u].clone(),
                map.clone(),
                shared.clone(),
                sem.clone(),
                args.setup_timeout,
                phase_rx.clone(),
                window_rx.clone(),
            )));
        }
        for (w, (doc, log)) in docs.into_iter().enumerate() {
            let i = d * args.writers + w;
            let offset = period
                .unwrap_or_default()
                .mul_f64(i as f64 / total_writers.max(1) as f64);
            writer_tasks.push(tokio::spawn(run_writer(
                endpoint.clone(),
                doc,
                log,
                shared.clone(),
                sem.clone(),
                args.setup_timeout,
                args.fill_bytes,
                phase_rx.clone(),
                period,
                offset,
                until_rx.clone(),
            )));
        }
    }
    let total_clients = reader_tasks.len() + writer_tasks.len();

    // Wait until every client is set up (or gave up). Clients queue for a connection slot, so
    // many of them take long in total: give up only when set-ups stop finishing (each one ends
    // within --setup-timeout once it has a slot).
    let stall_limit = args.setup_timeout * 2 + Duration::from_secs(5);
    let mut settled = shared.settled.load(Ordering::SeqCst);
    let mut last_progress = Instant::now();
    while settled < total_clients && last_progress.elapsed() < stall_limit {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let now_settled = shared.settled.load(Ordering::SeqCst);
        if now_settled != settled {
            settled = now_settled;
            last_progress = Instant::now();
        }
    }

    let start = Instant::now() + Duration::from_millis(50);
    let window = Window {
        start: start + args.warmup,
        end: start + args.warmup + args.duration,
    };
    let _ = window_tx.send(Some(window));
    let _ = until_tx.send(Some(window.end));
    let _ = phase_tx.send(Phase {
        start: Some(start),
        stop: false,
    });
    if !args.json_only {
        eprintln!(
            "tandem-load: {} of {} clients set up ({} docs × {}w + {}r), run {}: warmup {:?}, measuring {:?}",
            shared.connected.load(Ordering::SeqCst),
            total_clients,
            args.docs,
            args.writers,
            args.readers,
            run_id,
            args.warmup,
            args.duration
        );
    }
    // The mark a benchmark script waits for to sample the server (memory per connection or per
    // document): every client is set up (and filled) and the window starts. Printed even with
    // --json-only.
    tokio::time::sleep_until(window.start.into()).await;
    eprintln!("tandem-load: holding");
    let _ = std::io::stderr().flush();
    tokio::time::sleep_until(window.end.into()).await;
    let done_deadline = Instant::now() + Duration::from_secs(5);
    while shared.writers_done.load(Ordering::SeqCst) < writer_tasks.len()
        && Instant::now() < done_deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Expected deliveries: every send after a reader's set-up, by every writer of its doc.
    let expected: u64 = {
        let setups = shared
            .reader_setups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        setups
            .iter()
            .map(|&(d, at)| {
                logs[d]
                    .iter()
                    .map(|log| {
                        let log = log.read().unwrap_or_else(|e| e.into_inner());
                        let mut times: Vec<Instant> = log.iter().map(|&(_, t)| t).collect();
                        times.sort();
                        (times.len() - times.partition_point(|&t| t <= at)) as u64
                    })
                    .sum::<u64>()
            })
            .sum()
    };
    // Drain: wait until everything arrived, progress stalls for a second, or the deadline.
    let drain_deadline = Instant::now() + args.drain;
    let mut last = shared.delivered.load(Ordering::SeqCst);
    let mut last_change = Instant::now();
    loop {
        let now = Instant::now();
        let cur = shared.delivered.load(Ordering::SeqCst);
        if cur != last {
            last = cur;
            last_change = now;
        }
        if cur >= expected
            || now >= drain_deadline
            || now.duration_since(last_change) > Duration::from_secs(1)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let delivered_total = shared.delivered.load(Ordering::SeqCst);
    let _ = phase_tx.send(Phase {
        start: Some(start),
        stop: true,
    });

    let mut latencies: Vec<u32> = Vec::new();
    let mut setups: Vec<u32> = Vec::new();
    let mut readers_ok = 0usize;
    let mut writers_ok = 0usize;
    for (t, u) in reader_tasks.into_iter().zip(reader_urls) {
        match tokio::time::timeout(Duration::from_secs(10), t).await {
            Ok(Ok(r)) => {
                if let Some(s) = r.setup {
                    readers_ok += 1;
                    by_url[u].readers_ok += 1;
                    setups.push(s.as_micros().min(u32::MAX as u128) as u32);
                }
                by_url[u].latencies.extend_from_slice(&r.latencies_us);
                latencies.extend(r.latencies_us);
            }
            Ok(Err(_)) => shared.error("task_panic"),
            Err(_) => shared.error("task_timeout"),
        }
    }
    for t in writer_tasks {
        match tokio::time::timeout(Duration::from_secs(10), t).await {
            Ok(Ok(r)) => {
                if let Some(s) = r.setup {
                    writers_ok += 1;
                    setups.push(s.as_micros().min(u32::MAX as u128) as u32);
                }
            }
            Ok(Err(_)) => shared.error("task_panic"),
            Err(_) => shared.error("task_timeout"),
        }
    }
    latencies.sort_unstable();
    setups.sort_unstable();
    for url in &mut by_url {
        url.latencies.sort_unstable();
    }

    let mut sent_total = 0u64;
    let mut sent_window = 0u64;
    for doc_logs in &logs {
        for log in doc_logs {
            let log = log.read().unwrap_or_else(|e| e.into_inner());
            sent_total += log.len() as u64;
            sent_window += log.iter().filter(|&&(_, t)| window.contains(t)).count() as u64;
        }
    }
    let errors = shared
        .errors
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let outcome = Outcome {
        run_id,
        total_clients,
        readers_ok,
        writers_ok,
        setups,
        latencies,
        sent_total,
        sent_window,
        expected,
        delivered_total,
        errors,
        cold_ms,
        cold_bytes,
        by_url,
    };
    report::print(&args, &outcome);
}
