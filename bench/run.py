#!/usr/bin/env python3
"""Runs the benchmark loads against Tandem and the reference servers, in one run.

Started by `scripts/bench`, which builds the release binaries and installs the reference
servers first. Every server is started on a free loopback port for each load, measured, and
stopped by its PID. Results go to `target/bench/<time>.json` and to the generated block of
`BENCHMARKS.md` (between the `bench:results` markers; the rest of the file is left alone).

Servers:
  tandem-sqlite    Tandem, release build, embedded SQLite (every update committed before relay)
  tandem-postgres  Tandem, release build, on Postgres (same)
  y-websocket      @y/websocket-server 0.1.1, as shipped (keeps nothing)
  hocuspocus       @hocuspocus/server, no extensions (keeps nothing)
  relay            tandem-relay: bytes in, bytes out to the room; no CRDT, no store

Loads (see BENCHMARKS.md for what each measures):
  1  1 document, 1 writer at 100 updates/s, 50 readers
  2  1 document, 1 writer at 50 updates/s, 500 readers
  3  200 documents, each 1 writer at 2 updates/s and 4 readers
  4  1 document, 1 writer, 10 readers: the highest rate with p99 under 50 ms
  5  10,000 idle connections over 1,000 documents: memory per connection
  6  1,000 documents of ~10 KB, each held by one client: memory per document;
     cold load of a 5 MB document to the first SyncStep2
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RELEASE = ROOT / "target" / "release"
NODE_MODULES = ROOT / "bench" / "node_modules"
ALL_SERVERS = ["tandem-sqlite", "tandem-postgres", "y-websocket", "hocuspocus", "relay"]
ALL_LOADS = ["1", "2", "3", "4", "5", "6"]
BEGIN = "<!-- bench:results:begin -->"
END = "<!-- bench:results:end -->"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

# Limits Tandem is started with for the benchmark: none of its admission limits may refuse the
# benchmark's clients (they are all on one address, and load 4 writes far above the default
# per-connection message rate). Durability is unchanged: every update is committed before relay.
TANDEM_FLAGS = [
    "--insecure-no-auth",
    "--max-connections", "30000",
    "--max-connections-per-doc", "0",
    "--max-connections-per-ip", "0",
    "--message-rate", "0",
    "--idle-unload-delay", "3s",
    "--log", "warn",
]


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, ""


class Proc:
    """/proc readings of one process."""

    def __init__(self, pid: int):
        self.pid = pid

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE

    def hwm_bytes(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return 0

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.pid}/stat") as f:
            # The command name may contain spaces; fields after it are fixed.
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK


class Sampler(threading.Thread):
    """Samples a process's RSS every 100 ms until stopped; keeps the peak."""

    def __init__(self, proc: Proc):
        super().__init__(daemon=True)
        self.proc = proc
        self.peak = 0
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.peak = max(self.peak, self.proc.rss_bytes())
            except OSError:
                return
            self.stop_event.wait(0.1)

    def stop(self) -> int:
        self.stop_event.set()
        self.join()
        return self.peak


class Server:
    """One started server process, stopped by its PID."""

    def __init__(self, name: str, args: argparse.Namespace, workdir: Path):
        self.name = name
        self.port = free_port()
        self.protocol = "hocuspocus" if name == "hocuspocus" else "y-websocket"
        self.metrics_url = None
        env = dict(os.environ)
        if name.startswith("tandem-"):
            if name == "tandem-sqlite":
                db = workdir / f"tandem-{self.port}.db"
                database_url = f"sqlite://{db}"
            else:
                database_url = fresh_postgres(args.postgres_url)
            cmd = [str(RELEASE / "tandem"), "--bind", f"127.0.0.1:{self.port}",
                   "--database-url", database_url, *TANDEM_FLAGS]
            self.url = f"ws://127.0.0.1:{self.port}/ws"
            self.metrics_url = f"http://127.0.0.1:{self.port}/metrics"
            self.ready_url = f"http://127.0.0.1:{self.port}/readyz"
        elif name == "y-websocket":
            cmd = ["node", str(NODE_MODULES / "@y/websocket-server/src/server.js")]
            env.update(HOST="127.0.0.1", PORT=str(self.port))
            self.url = f"ws://127.0.0.1:{self.port}"
            self.ready_url = None
        elif name == "hocuspocus":
            cmd = ["node", str(ROOT / "bench" / "hocuspocus.mjs"), str(self.port)]
            self.url = f"ws://127.0.0.1:{self.port}"
            self.ready_url = None
        elif name == "relay":
            cmd = [str(RELEASE / "tandem-relay"), "--bind", f"127.0.0.1:{self.port}"]
            self.url = f"ws://127.0.0.1:{self.port}/ws"
            self.ready_url = None
        else:
            raise ValueError(name)
        self.log_path = workdir / f"{name}-{self.port}.log"
        self.log_file = open(self.log_path, "wb")
        self.popen = subprocess.Popen(cmd, env=env, stdout=self.log_file,
                                      stderr=subprocess.STDOUT, cwd=workdir)
        RUNNING.add(self)
        self.proc = Proc(self.popen.pid)
        try:
            wait_port(self.port, self.popen)
            if self.ready_url:
                deadline = time.monotonic() + 30
                while http_get(self.ready_url)[0] != 200:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{name} never became ready")
                    time.sleep(0.1)
        except Exception:
            self.stop()
            raise
        time.sleep(1.0)  # let start-up allocations settle before the baseline reading

    def metrics(self) -> dict[str, float]:
        if not self.metrics_url:
            return {}
        status, body = http_get(self.metrics_url)
        if status != 200:
            raise RuntimeError(f"{self.metrics_url} answered {status}")
        out: dict[str, float] = {}
        for line in body.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                try:
                    out[key] = float(value)
                except ValueError:
                    pass
        return out

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                log(f"{self.name} (pid {self.popen.pid}) ignored SIGTERM for 20 s: SIGKILL")
                self.popen.kill()
                self.popen.wait()
        self.log_file.close()
        RUNNING.discard(self)


RUNNING: set[Server] = set()


def stop_all(*_: object) -> None:
    for server in list(RUNNING):
        server.stop()
    sys.exit(130)


def fresh_postgres(url: str) -> str:
    """Drops and creates the benchmark database named in `url`; returns `url`."""
    base, _, name = url.rpartition("/")
    name = name.split("?")[0]
    if not re.fullmatch(r"[A-Za-z0-9_]+", name):
        raise RuntimeError(f"unexpected database name in {url}")
    admin = f"{base}/postgres"
    for sql in (f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}"):
        try:
            r = subprocess.run(["psql", admin, "-v", "ON_ERROR_STOP=1", "-qc", sql],
                               capture_output=True, text=True)
        except FileNotFoundError:
            raise RuntimeError("tandem-postgres needs psql (Debian: postgresql-client); or "
                               "leave it out with --servers") from None
        if r.returncode != 0:
            raise RuntimeError(f"Postgres at {admin} is not usable: {r.stderr.strip()}")
    return url


def settle_disk(args: argparse.Namespace) -> None:
    """Flushes what earlier loads left to write (the kernel's dirty pages, Postgres's shared
    buffers), so that the next server's fsyncs do not queue behind another server's writes."""
    os.sync()
    base = args.postgres_url.rpartition("/")[0]
    try:
        r = subprocess.run(["psql", f"{base}/postgres", "-qc", "CHECKPOINT"],
                           capture_output=True, text=True, timeout=300)
    except (FileNotFoundError, subprocess.TimeoutExpired) as e:
        log(f"no Postgres checkpoint before the next load: {e}")
        return
    if r.returncode != 0:
        log(f"no Postgres checkpoint before the next load: {r.stderr.strip()}")


def run_load(server: Server, load_args: list[str], timeout: float = 600) -> dict:
    """Runs tandem-load against `server`; samples the server while it runs.

    Returns tandem-load's JSON plus the server's RSS before, at the moment every client is set
    up (`holding`, after 2 s of settling), and at its peak, its CPU use, and /metrics deltas.
    """
    cmd = [str(RELEASE / "tandem-load"), "--url", server.url, "--protocol", server.protocol,
           "--json-only", *load_args]
    before_metrics = server.metrics()
    rss_before = server.proc.rss_bytes()
    cpu_before = server.proc.cpu_seconds()
    sampler = Sampler(server.proc)
    sampler.start()
    t0 = time.monotonic()
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    held: dict[str, float] = {}

    def watch_stderr() -> None:
        assert child.stderr is not None
        for line in child.stderr:
            if line.startswith("tandem-load: holding") and "rss" not in held:
                held["cpu"] = server.proc.cpu_seconds()
                held["t"] = time.monotonic()
                time.sleep(2.0)
                try:
                    held["rss"] = server.proc.rss_bytes()
                except OSError:
                    pass
            elif line.strip():
                held.setdefault("stderr", "")
                held["stderr"] += line  # type: ignore[operator]

    watcher = threading.Thread(target=watch_stderr, daemon=True)
    watcher.start()
    # stdout is read here and stderr by the watcher: communicate() would read both.
    killer = threading.Timer(timeout, child.kill)
    killer.start()
    assert child.stdout is not None
    out = child.stdout.read()
    child.wait()
    killer.cancel()
    watcher.join(timeout=10)
    wall = time.monotonic() - t0
    peak = sampler.stop()
    cpu_after = server.proc.cpu_seconds()
    alive = server.popen.poll() is None
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"tandem-load printed no result (exit {child.returncode}): "
                           f"{held.get('stderr', '')}")
    result = json.loads(lines[-1])
    result["server_alive"] = alive
    result["rss_before_mb"] = round(rss_before / 2**20, 1)
    result["rss_peak_mb"] = round(peak / 2**20, 1)
    if "rss" in held:
        result["rss_holding_mb"] = round(held["rss"] / 2**20, 1)
        result["rss_holding_delta_bytes"] = held["rss"] - rss_before
    result["cpu_s"] = round(cpu_after - cpu_before, 2)
    result["cpu_percent"] = round(100 * (cpu_after - cpu_before) / wall, 1)
    if "cpu" in held and "t" in held:
        measured = max(wall - (held["t"] - t0), 0.001)
        result["cpu_percent_running"] = round(100 * (cpu_after - held["cpu"]) / measured, 1)
    after_metrics = server.metrics()
    if after_metrics:
        def delta(key: str) -> float:
            return after_metrics.get(key, 0.0) - before_metrics.get(key, 0.0)
        result["metrics"] = {
            "updates_applied": delta("tandem_updates_applied_total"),
            "frames_sent": delta("tandem_frames_sent_total"),
            "connections": delta("tandem_connections_total"),
            "commits": delta("tandem_store_commit_seconds_count"),
            "commit_seconds_sum": round(delta("tandem_store_commit_seconds_sum"), 3),
            "batched_updates": delta("tandem_store_commit_batch_updates_sum"),
        }
    if not alive:
        raise RuntimeError(f"{server.name} died during the load; see {server.log_path}")
    return result


def common(args: argparse.Namespace, duration: str) -> list[str]:
    return ["--duration", duration if not args.quick else "3s",
            "--warmup", "2s" if not args.quick else "1s"]


def load_fixed(server: Server, args: argparse.Namespace, docs: int, readers: int,
               rate: float) -> dict:
    return run_load(server, ["--docs", str(docs), "--writers", "1", "--readers", str(readers),
                             "--rate", str(rate), *common(args, "15s")])


def quiesce(server: "Server", args: argparse.Namespace) -> None:
    """Waits until the server holds no document (Tandem unloads an idle one after
    `--idle-unload-delay`, writing its snapshot first), then flushes the disk: each load-4 probe
    starts on a quiet server, not while the last probe's document is still being written out."""
    if server.metrics_url:
        deadline = time.monotonic() + 60
        while server.metrics().get("tandem_documents_loaded", 0) > 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{server.name} still holds documents 60 s after a probe")
            time.sleep(0.2)
    settle_disk(args)


def probe_ok(r: dict, rate: float) -> bool:
    p99 = r.get("latency_ms_p99")
    return (p99 is not None and p99 < 50.0 and r["missing"] == 0 and r["errors"] == 0
            and r["sent_updates_per_s"] >= 0.95 * rate)


def load_max_rate(server: Server, args: argparse.Namespace) -> dict:
    """The highest writer rate on 1 document × 10 readers with p99 < 50 ms and nothing lost."""
    probes: list[dict] = []

    def probe(rate: float) -> bool:
        if probes:
            quiesce(server, args)
        r = run_load(server, ["--docs", "1", "--writers", "1", "--readers", "10",
                              "--rate", f"{rate:.0f}", "--duration",
                              "5s" if not args.quick else "2s", "--warmup", "1s"])
        ok = probe_ok(r, rate)
        r["probe_rate"] = rate
        r["probe_ok"] = ok
        probes.append(r)
        log(f"  {server.name} load 4 at {rate:.0f}/s: p99 {r.get('latency_ms_p99')} ms, "
            f"sent {r['sent_updates_per_s']}/s, missing {r['missing']}, errors {r['errors']}"
            f" -> {'ok' if ok else 'over'}")
        return ok

    lo, hi = 0.0, None
    rate = 500.0
    while rate <= args.max_rate:
        if probe(rate):
            lo = rate
            rate *= 2
        else:
            hi = rate
            break
    capped = hi is None  # every rate up to --max-rate passed: nothing to bisect
    if capped:
        hi = rate
    elif lo == 0.0:
        # Even the first rate failed: walk down.
        rate = hi / 2
        while rate >= 10 and not probe(rate):
            hi = rate
            rate /= 2
        lo = rate if rate >= 10 else 0.0

    def bisect(lo: float, hi: float) -> tuple[float, float]:
        for _ in range(args.bisect_steps):
            mid = math.sqrt(lo * hi)
            if mid / lo < 1.06:
                break
            if probe(mid):
                lo = mid
            else:
                hi = mid
        return lo, hi

    if lo > 0 and not capped:
        lo, hi = bisect(lo, hi)
    # Near its limit a server's p99 varies from run to run: the rate found must pass a second
    # time. If it does not, it counts as failing, and the search bisects again between it and
    # the next lower rate that passed, up to three times.
    confirmed = None
    for _ in range(3):
        if lo <= 0:
            break
        if probe(lo):
            confirmed = lo
            break
        hi = lo
        lo = max((p["probe_rate"] for p in probes if p["probe_ok"] and p["probe_rate"] < hi),
                 default=0.0)
        if lo > 0:
            lo, hi = bisect(lo, hi)
    lo = confirmed or 0.0
    best = max((p for p in probes if p["probe_ok"] and p["probe_rate"] == lo),
               key=lambda p: p["probe_rate"], default=None)
    return {"max_rate": lo, "first_failing_rate": hi if hi <= args.max_rate else None,
            "best": best, "probes": probes}


def load_idle(server: Server, args: argparse.Namespace) -> dict:
    docs = 1000 if not args.quick else 100
    r = run_load(server, ["--docs", str(docs), "--writers", "0", "--readers", "10",
                          "--rate", "0", "--duration", "6s", "--warmup", "0s",
                          "--setup-timeout", "120s"])
    if "rss_holding_delta_bytes" in r and r["clients_connected"]:
        r["bytes_per_connection"] = round(r["rss_holding_delta_bytes"] / r["clients_connected"])
    return r


def load_documents(server: Server, args: argparse.Namespace) -> dict:
    docs = 1000 if not args.quick else 100
    r = run_load(server, ["--docs", str(docs), "--writers", "1", "--readers", "0",
                          "--rate", "0", "--fill-bytes", "10000", "--duration", "6s",
                          "--warmup", "0s", "--setup-timeout", "120s"])
    if "rss_holding_delta_bytes" in r and r["clients_connected"]:
        r["bytes_per_document"] = round(r["rss_holding_delta_bytes"] / r["clients_connected"])
    # Cold load of a 5 MB document: written, left until the server unloads it (Tandem unloads
    # after 3 s idle in this benchmark), then loaded by a new client.
    cold = run_load(server, ["--docs", "1", "--writers", "0", "--readers", "1", "--rate", "0",
                             "--duration", "1s", "--warmup", "0s",
                             "--cold-load-bytes", str(5_000_000), "--cold-wait", "5s"])
    r["cold"] = cold
    return r


def run_server_loads(name: str, args: argparse.Namespace, workdir: Path) -> dict:
    results: dict = {}
    for load in args.loads:
        log(f"{name}: load {load}")
        settle_disk(args)
        server = Server(name, args, workdir)
        try:
            if load == "1":
                results[load] = load_fixed(server, args, docs=1, readers=50, rate=100)
            elif load == "2":
                results[load] = load_fixed(server, args, docs=1, readers=500, rate=50)
            elif load == "3":
                results[load] = load_fixed(server, args, docs=200, readers=4, rate=2)
            elif load == "4":
                results[load] = load_max_rate(server, args)
            elif load == "5":
                results[load] = load_idle(server, args)
            elif load == "6":
                results[load] = load_documents(server, args)
        except Exception as e:  # one server's failure is a result, not the end of the run
            log(f"{name}: load {load} failed: {e}")
            results[load] = {"failed": str(e)}
        finally:
            server.stop()
    return results


def sh(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def machine(args: argparse.Namespace) -> dict:
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    pg = {}
    if "tandem-postgres" in args.servers:
        base = args.postgres_url.rpartition("/")[0] + "/postgres"
        for setting in ("server_version", "fsync", "synchronous_commit"):
            pg[setting] = sh(["psql", base, "-Atqc", f"SHOW {setting}"])
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": sh(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]),
        "dirty": bool(sh(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"])),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 2**20, 1),
        "kernel": platform.release(),
        "loadavg_at_start": os.getloadavg(),
        "rustc": sh(["rustc", "--version"]),
        "node": sh(["node", "--version"]),
        "postgres": pg,
        "quick": args.quick,
    }


# ---- report ----

def fmt(v, digits: int = 1, suffix: str = "") -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.{digits}f}{suffix}"
    return f"{v:,}{suffix}"


def row(cells: list) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def table(results: dict, load: str, title: str, headers: list[str], cells) -> list[str]:
    """The section of `load`: a row per server that ran it, `cells(result)` giving its cells
    after the server's name; a failed load gets its error instead."""
    if not any(load in r for r in results.values()):
        return []
    out = [f"### {title}", "", row(headers), row(["---"] * len(headers))]
    for name, per_load in results.items():
        r = per_load.get(load)
        if r is None:
            continue
        if "failed" in r:
            out.append(row([name, "failed: " + r["failed"][:80]] + [""] * (len(headers) - 2)))
        else:
            out.append(row([name, *cells(r)]))
    return out + [""]


def latency_cells(r: dict) -> list:
    return [f"{r['clients_connected']}/{r['clients']}", fmt(r["sent_updates_per_s"]),
            fmt(r["delivered_updates_per_s"]), fmt(r["latency_ms_p50"], 2),
            fmt(r["latency_ms_p90"], 2), fmt(r["latency_ms_p99"], 2),
            fmt(r["latency_ms_max"], 2), r["missing"], r["errors"], fmt(r["rss_peak_mb"]),
            fmt(r.get("cpu_percent_running", r["cpu_percent"]))]


def max_rate_cells(r: dict) -> list:
    best = r["best"] or {}
    probes = ", ".join(f"{p['probe_rate']:.0f}{'✓' if p['probe_ok'] else '✗'}"
                       for p in r["probes"])
    return [fmt(r["max_rate"], 0), fmt(best.get("delivered_updates_per_s")),
            fmt(best.get("latency_ms_p99"), 2), fmt(best.get("cpu_percent_running")),
            fmt(r["first_failing_rate"], 0), probes]


def memory_cells(r: dict, per_key: str) -> list:
    per = r.get(per_key)
    return [f"{r['clients_connected']}/{r['clients']}", fmt(r["rss_before_mb"]),
            fmt(r.get("rss_holding_mb")), fmt(per / 1024 if per is not None else None)]


def documents_cells(r: dict) -> list:
    cold = r.get("cold", {})
    errors = ", ".join(f"{k} {v}" for k, v in cold.get("errors_by_kind", {}).items()) or "0"
    return [*memory_cells(r, "bytes_per_document"), fmt(cold.get("cold_load_ms"), 1), errors]


def report(meta: dict, results: dict) -> str:
    lines = [BEGIN, "",
             f"Run {meta['date']} on commit `{meta['commit']}`"
             + (" (with uncommitted changes)" if meta["dirty"] else "")
             + (" — **quick run, not comparable**" if meta["quick"] else "") + ".",
             f"Machine: {meta['cpu']}, {meta['cores']} cores, {meta['memory_gib']} GiB, "
             f"Linux {meta['kernel']}; load average at start "
             f"{', '.join(f'{x:.2f}' for x in meta['loadavg_at_start'])}. "
             f"{meta['rustc']}; Node {meta['node']}."
             + (f" Postgres {meta['postgres'].get('server_version')} (fsync "
                f"{meta['postgres'].get('fsync')}, synchronous_commit "
                f"{meta['postgres'].get('synchronous_commit')})." if meta["postgres"] else ""),
             "The load generator runs on the same machine as the server.", ""]
    latency_headers = ["server", "clients", "sent/s", "delivered/s", "p50 ms", "p90 ms",
                       "p99 ms", "max ms", "missing", "errors", "peak RSS MB", "CPU %"]
    lines += table(results, "1", "Load 1 — 1 document, 1 writer at 100 updates/s, 50 readers",
                   latency_headers, latency_cells)
    lines += table(results, "2", "Load 2 — 1 document, 1 writer at 50 updates/s, 500 readers",
                   latency_headers, latency_cells)
    lines += table(results, "3",
                   "Load 3 — 200 documents, each 1 writer at 2 updates/s and 4 readers",
                   latency_headers, latency_cells)
    lines += table(results, "4",
                   "Load 4 — highest writer rate on 1 document × 10 readers with p99 < 50 ms",
                   ["server", "max rate/s", "delivered/s there", "p99 ms there", "CPU % there",
                    "first failing rate/s", "probes"], max_rate_cells)
    lines += table(results, "5", "Load 5 — idle connections over documents (10 per document)",
                   ["server", "connections", "RSS before MB", "RSS holding MB",
                    "KiB per connection"],
                   lambda r: memory_cells(r, "bytes_per_connection"))
    lines += table(results, "6",
                   "Load 6 — loaded documents of ~10 KB (one client each); cold load of 5 MB",
                   ["server", "documents", "RSS before MB", "RSS holding MB", "KiB per document",
                    "5 MB cold load ms", "cold load errors"], documents_cells)
    lines += targets(results)
    lines += crosscheck(results)
    lines += ["", END]
    return "\n".join(lines)


def targets(results: dict) -> list[str]:
    """The issue's targets, as ratios computed from this run."""
    ref = results.get("y-websocket", {})
    relay = results.get("relay", {})
    out = ["### Targets, from this run", "",
           row(["target", "server", "Tandem", "reference", "ratio", "met"]),
           row(["---"] * 6)]

    def add(target: str, who: str, ours, theirs, ratio, ok) -> None:
        out.append(row([target, who, ours, theirs, fmt(ratio, 2) if ratio is not None else "–",
                         "–" if ok is None else ("yes" if ok else "**no**")]))

    def get(r: dict, *path):
        for p in path:
            if not isinstance(r, dict) or p not in r:
                return None
            r = r[p]
        return r

    for name in ("tandem-postgres", "tandem-sqlite"):
        mine = results.get(name)
        if not mine:
            continue
        a, b = get(mine, "4", "max_rate"), get(ref, "4", "max_rate")
        if a is not None and b:
            add("load 4: ≥ 5× @y/websocket-server's rate", name, fmt(a, 0), fmt(b, 0), a / b,
                a / b >= 5)
        for load in ("1", "2", "3"):
            a, b = get(mine, load, "latency_ms_p99"), get(ref, load, "latency_ms_p99")
            if a is not None and b:
                add(f"load {load}: p99 ≤ ½ of @y/websocket-server's", name, fmt(a, 2),
                    fmt(b, 2), a / b, a / b <= 0.5)
        a, b = get(mine, "5", "bytes_per_connection"), get(ref, "5", "bytes_per_connection")
        if a is not None and b:
            add("load 5: memory per connection ≤ ⅓", name, fmt(a / 1024, 1) + " KiB",
                fmt(b / 1024, 1) + " KiB", a / b, a / b <= 1 / 3)
        a, b = get(mine, "6", "bytes_per_document"), get(ref, "6", "bytes_per_document")
        if a is not None and b:
            add("load 6: memory per document ≤ ⅓", name, fmt(a / 1024, 1) + " KiB",
                fmt(b / 1024, 1) + " KiB", a / b, a / b <= 1 / 3)
        for load, key in (("2", "delivered_updates_per_s"), ("4", None)):
            if key:
                a, b = get(mine, load, key), get(relay, load, key)
            else:
                a = get(mine, "4", "best", "delivered_updates_per_s")
                b = get(relay, "4", "best", "delivered_updates_per_s")
            if a is not None and b:
                add(f"load {load}: ≥ 70% of the raw relay's delivered/s", name, fmt(a),
                    fmt(b), a / b, a / b >= 0.7)
    out.append("")
    return out


def crosscheck(results: dict) -> list[str]:
    """Tandem's own /metrics against the load generator's counts."""
    out = ["### /metrics cross-check (Tandem's counters vs the load generator's)", "",
           row(["server", "load", "updates sent", "updates applied (metrics)",
                "frames sent (metrics)", "updates delivered", "commits", "updates per commit",
                "mean commit ms"]),
           row(["---"] * 9)]
    for name, per_load in results.items():
        if not name.startswith("tandem"):
            continue
        for load in ("1", "2", "3"):
            r = per_load.get(load)
            if not r or "metrics" not in r:
                continue
            m = r["metrics"]
            commits = m["commits"] or None
            out.append(row([name, load, r["updates_sent"], fmt(m["updates_applied"], 0),
                            fmt(m["frames_sent"], 0), r["updates_delivered"],
                            fmt(m["commits"], 0),
                            fmt(m["batched_updates"] / commits if commits else None, 1),
                            fmt(1000 * m["commit_seconds_sum"] / commits if commits else None,
                                2)]))
    out += ["", "Frames sent include each client's sync answers; updates applied should equal "
            "updates sent. A commit (with its fsync) comes before every relay: its mean time is "
            "part of every update's latency."]
    return out


def write_markdown(path: Path, block: str) -> None:
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if BEGIN in text and END in text:
        head, _, rest = text.partition(BEGIN)
        _, _, tail = rest.partition(END)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n## Latest results\n\n" + block + "\n"
    path.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", default=",".join(ALL_SERVERS),
                        help="comma-separated, from: " + ", ".join(ALL_SERVERS))
    parser.add_argument("--loads", default=",".join(ALL_LOADS), help="comma-separated, 1–6")
    parser.add_argument("--quick", action="store_true",
                        help="short runs and fewer documents, to check the script itself")
    parser.add_argument("--max-rate", type=float, default=256_000,
                        help="load 4 stops searching above this writer rate")
    parser.add_argument("--bisect-steps", type=int, default=4)
    parser.add_argument("--postgres-url",
                        default=os.environ.get("BENCH_DATABASE_URL",
                                               "postgres://postgres@127.0.0.1:5432/tandem_bench"),
                        help="database for tandem-postgres; dropped and created for each load")
    parser.add_argument("--output", default=str(ROOT / "BENCHMARKS.md"),
                        help="Markdown file whose results block is replaced")
    parser.add_argument("--no-write", action="store_true", help="leave BENCHMARKS.md alone")
    parser.add_argument("--from-json", help="only rewrite the Markdown from a saved result")
    args = parser.parse_args()
    args.servers = [s for s in args.servers.split(",") if s]
    args.loads = [s for s in args.loads.split(",") if s]
    for s in args.servers:
        if s not in ALL_SERVERS:
            parser.error(f"unknown server {s}")
    for s in args.loads:
        if s not in ALL_LOADS:
            parser.error(f"unknown load {s}")

    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        block = report(saved["machine"], saved["results"])
        write_markdown(Path(args.output), block)
        print(block)
        return 0

    signal.signal(signal.SIGTERM, stop_all)
    signal.signal(signal.SIGINT, stop_all)
    for binary in ("tandem", "tandem-load", "tandem-relay"):
        if not (RELEASE / binary).exists():
            raise SystemExit(f"{RELEASE / binary} is missing: run scripts/bench, which builds it")
    if {"y-websocket", "hocuspocus"} & set(args.servers) and not NODE_MODULES.exists():
        raise SystemExit("bench/node_modules is missing: run scripts/bench, which installs it")
    if "tandem-postgres" in args.servers:
        try:
            fresh_postgres(args.postgres_url)  # fail now rather than after the other servers
        except RuntimeError as e:
            raise SystemExit(f"error: {e}") from None

    meta = machine(args)
    results: dict = {}
    out_dir = ROOT / "target" / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    with tempfile.TemporaryDirectory(prefix="tandem-bench-") as tmp:
        for name in args.servers:
            results[name] = run_server_loads(name, args, Path(tmp))
            (out_dir / f"{stamp}.json").write_text(
                json.dumps({"machine": meta, "results": results}, indent=1))
    block = report(meta, results)
    print(block)
    log(f"raw results: {out_dir / f'{stamp}.json'}")
    if not args.no_write:
        write_markdown(Path(args.output), block)
        log(f"wrote {args.output}")
    failed = [f"{n} load {l}" for n, r in results.items() for l, v in r.items()
              if isinstance(v, dict) and "failed" in v]
    if failed:
        log("failed: " + ", ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
