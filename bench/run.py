#!/usr/bin/env python3
"""Runs the benchmark loads against Tandem and the reference servers, in one run.

Started by `scripts/bench`, which builds the release binaries and installs the reference
servers first. Every server is started on a free loopback port for each load, measured, and
stopped by its PID. Results go to `target/bench/<time>.json` and to the generated block of
`BENCHMARKS.md` (between the `bench:results` markers; the rest of the file is left alone).

Servers:
  tandem-sqlite    Tandem, release build, embedded SQLite (every update committed before relay)
  tandem-postgres  Tandem, release build, on Postgres (same)
  tandem-hocuspocus
                   tandem-sqlite (same flags, same durability) spoken to over the Hocuspocus
                   protocol on its `/ws` endpoint instead of y-websocket: the comparison with
                   @hocuspocus/server, protocol for protocol
  y-websocket      @y/websocket-server 0.1.1, as shipped (keeps nothing)
  hocuspocus       @hocuspocus/server, no extensions (keeps nothing)
  relay            tandem-relay: bytes in, bytes out to the room; no CRDT, no store
  tandem-cluster   3 Tandem nodes (release build) on one Postgres database and a private
                   redis-server on a free port: one service, any node serves any client

Loads (see BENCHMARKS.md for what each measures). Loads 1–6 run on every server but
tandem-cluster; loads x1, x4 and xr on tandem-cluster only (a load that does not apply to a
server is skipped):
  1  1 document, 1 writer at 100 updates/s, 50 readers
  2  1 document, 1 writer at 50 updates/s, 500 readers
  3  200 documents, each 1 writer at 2 updates/s and 4 readers
  4  1 document, 1 writer, 10 readers: the highest rate with p99 under 50 ms
  5  10,000 idle connections over 1,000 documents: memory per connection
  6  1,000 documents of ~10 KB, each held by one client: memory per document;
     cold load of a 5 MB document to the first SyncStep2
  x1  cross-node relay: 1 writer on node 0 at 100 updates/s; 25 readers on each of nodes 0, 1
      and 2; p99 of the cross-node readers (nodes 1, 2) against the same-node ones (node 0);
      also the bare Redis round trip and pub/sub hop on this machine
  x4  load 4 across nodes: writer on node 0, 10 readers on node 1, the highest rate with p99
      under 50 ms (same search as load 4)
  xr  convergence with Redis down: writer on node 0 at 20 updates/s, 10 readers on node 1;
      measured with Redis up, after killing redis-server (the nodes' log poll carries every
      update), and after starting it again on the same port (nodes not restarted)

Results: loads 1–6 make the `bench:results` block, loads x1, x4 and xr (with tandem-postgres's
loads 1 and 4 from the same run, for the comparison) the `bench:cluster` block, and
tandem-hocuspocus beside hocuspocus the `bench:hocuspocus` block (it needs loads 1–4 on both;
loads 5 and 6 are shown when the run has them). A block is rewritten only by a run that has
every row it shows (a partial run would wipe the others' figures): see --write-partial. So
`--servers tandem-hocuspocus,hocuspocus --loads 1,2,3,4,5,6` rewrites the Hocuspocus block
alone.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import re
import shutil
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
SINGLE_SERVERS = ["tandem-sqlite", "tandem-postgres", "y-websocket", "hocuspocus", "relay"]
# Tandem over the Hocuspocus protocol and the server it is compared with (the bench:hocuspocus
# block); tandem-hocuspocus runs loads 1–6 like the single servers, but the bench:results block
# does not wait for it.
HOCUSPOCUS_SERVERS = ["tandem-hocuspocus", "hocuspocus"]
HOCUSPOCUS_LOADS = ["1", "2", "3", "4"]
ALL_SERVERS = [*SINGLE_SERVERS, "tandem-hocuspocus", "tandem-cluster"]
SINGLE_LOADS = ["1", "2", "3", "4", "5", "6"]
CLUSTER_LOADS = ["x1", "x4", "xr"]
ALL_LOADS = [*SINGLE_LOADS, *CLUSTER_LOADS]
BEGIN = "<!-- bench:results:begin -->"
END = "<!-- bench:results:end -->"
CLUSTER_BEGIN = "<!-- bench:cluster:begin -->"
CLUSTER_END = "<!-- bench:cluster:end -->"
HP_BEGIN = "<!-- bench:hocuspocus:begin -->"
HP_END = "<!-- bench:hocuspocus:end -->"
# Nodes of tandem-cluster, and the interval of their log poll (src/collab/log_watch.rs).
CLUSTER_NODES = 3
LOG_POLL_MS = 250
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


class ProcGroup:
    """/proc readings of several processes, added up (the nodes of a cluster)."""

    def __init__(self, procs: list[Proc]):
        self.procs = procs

    def rss_bytes(self) -> int:
        return sum(p.rss_bytes() for p in self.procs)

    def hwm_bytes(self) -> int:
        return sum(p.hwm_bytes() for p in self.procs)

    def cpu_seconds(self) -> float:
        return sum(p.cpu_seconds() for p in self.procs)


class Sampler(threading.Thread):
    """Samples a process's RSS every 100 ms until stopped; keeps the peak."""

    def __init__(self, proc: Proc | ProcGroup):
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
    """One started server process, stopped by its PID. A node of tandem-cluster is a
    tandem-postgres server given its database and extra flags (`--redis-url`).
    tandem-hocuspocus is tandem-sqlite, spoken to over the Hocuspocus protocol: the same `/ws`
    base URL, which tandem-load then uses as is (one endpoint, the document in each message)
    rather than as `/ws/{doc}`."""

    def __init__(self, name: str, args: argparse.Namespace, workdir: Path,
                 database_url: str | None = None, extra: tuple[str, ...] = (),
                 label: str | None = None):
        self.name = label or name
        self.port = free_port()
        self.protocol = ("hocuspocus" if name in ("hocuspocus", "tandem-hocuspocus")
                         else "y-websocket")
        self.metrics_url = None
        env = dict(os.environ)
        if name.startswith("tandem-"):
            if database_url is not None:
                pass
            elif name in ("tandem-sqlite", "tandem-hocuspocus"):
                db = workdir / f"tandem-{self.port}.db"
                database_url = f"sqlite://{db}"
            else:
                database_url = fresh_postgres(args.postgres_url)
            cmd = [str(RELEASE / "tandem"), "--bind", f"127.0.0.1:{self.port}",
                   "--database-url", database_url, *TANDEM_FLAGS, *extra]
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
        self.log_path = workdir / f"{self.name.replace(' ', '-')}-{self.port}.log"
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

    def alive(self) -> bool:
        return self.popen.poll() is None

    def ready(self) -> dict:
        """Tandem's /readyz answer (`{"status": "ready", "bus": "up"}`), {} if not ready."""
        status, body = http_get(self.ready_url) if self.ready_url else (0, "")
        if status != 200:
            return {}
        try:
            return json.loads(body)
        except ValueError:
            return {}

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


class RedisServer:
    """A private redis-server on a free loopback port, without persistence: never the shared
    one. It can be killed and started again on the same port."""

    def __init__(self, workdir: Path):
        self.name = "redis-server"
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self.log_path = workdir / f"redis-{self.port}.log"
        self.popen: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        cmd = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
               "--appendonly", "no", "--daemonize", "no", "--protected-mode", "yes"]
        with open(self.log_path, "ab") as log_file:
            self.popen = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT)
        RUNNING.add(self)
        self.proc = Proc(self.popen.pid)
        try:
            wait_port(self.port, self.popen, timeout=20)
        except Exception:
            self.stop()
            raise

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> None:
        """An outage: SIGKILL, as a crash would end it."""
        if self.alive():
            assert self.popen is not None
            self.popen.kill()
            self.popen.wait()
        RUNNING.discard(self)

    def stop(self) -> None:
        if self.alive():
            assert self.popen is not None
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        RUNNING.discard(self)


class Cluster:
    """tandem-cluster: CLUSTER_NODES release Tandem nodes on one fresh Postgres database (the
    benchmark's, dropped and created) and a private redis-server. Offers what the loads use of
    a Server; `urls` are the nodes' WebSocket bases, node 0 first."""

    def __init__(self, args: argparse.Namespace, workdir: Path):
        self.name = "tandem-cluster"
        self.protocol = "y-websocket"
        self.nodes: list[Server] = []
        self.redis = RedisServer(workdir)
        RUNNING.add(self)
        try:
            database_url = fresh_postgres(args.postgres_url)
            # One after the other: the first node migrates the fresh database.
            for i in range(CLUSTER_NODES):
                self.nodes.append(Server("tandem-postgres", args, workdir,
                                         database_url=database_url,
                                         extra=("--redis-url", self.redis.url),
                                         label=f"tandem-cluster node {i}"))
            self.wait_bus(up=True, timeout=30)
        except Exception:
            self.stop()
            raise
        self.urls = [n.url for n in self.nodes]
        self.url = self.urls[0]
        self.metrics_url = self.nodes[0].metrics_url
        self.proc = ProcGroup([n.proc for n in self.nodes])
        self.log_path = ", ".join(str(n.log_path) for n in self.nodes)

    def alive(self) -> bool:
        return all(n.alive() for n in self.nodes)

    def metrics(self) -> dict[str, float]:
        """Every node's /metrics, added up."""
        out: dict[str, float] = {}
        for node in self.nodes:
            for key, value in node.metrics().items():
                out[key] = out.get(key, 0.0) + value
        return out

    def wait_bus(self, up: bool, timeout: float) -> float:
        """Waits until every node's /readyz says its bus is up (or down); returns the seconds
        waited."""
        want = "up" if up else "down"
        t0 = time.monotonic()
        while True:
            states = [n.ready().get("bus") for n in self.nodes]
            if all(state == want for state in states):
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"the nodes' buses are {states} after {timeout} s, not "
                                   f"all {want}")
            time.sleep(0.05)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        self.redis.stop()
        RUNNING.discard(self)


RUNNING: set = set()


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
    alive = server.alive()
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
        if isinstance(server, Cluster):
            relayed = delta("tandem_bus_relay_seconds_count")
            result["metrics"].update({
                "bus_published": delta("tandem_bus_published_total"),
                "bus_received": delta("tandem_bus_received_total"),
                "bus_dropped": delta("tandem_bus_dropped_total"),
                "bus_relay_ms_mean": (round(1000 * delta("tandem_bus_relay_seconds_sum")
                                            / relayed, 2) if relayed else None),
                "log_reads": delta("tandem_log_reads_total"),
            })
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


def load_max_rate(server: Server | Cluster, args: argparse.Namespace,
                  place: tuple[str, ...] = ()) -> dict:
    """The highest writer rate on 1 document × 10 readers with p99 < 50 ms and nothing lost.
    `place` puts the writer and the readers on nodes of a cluster (tandem-load's
    `--writer-url`, `--reader-url`)."""
    probes: list[dict] = []

    def probe(rate: float) -> bool:
        # A probe lost to client errors or missing updates, not to latency, is run once more
        # (both stay in the list): it measures a fault, not the rate, and one such fault would
        # otherwise end the doubling early. Two in a row count as failing.
        for attempt in (1, 2):
            if probes:
                quiesce(server, args)
            r = run_load(server, ["--docs", "1", "--writers", "1", "--readers", "10",
                                  "--rate", f"{rate:.0f}", "--duration",
                                  "5s" if not args.quick else "2s", "--warmup", "1s", *place])
            ok = probe_ok(r, rate)
            r["probe_rate"] = rate
            r["probe_ok"] = ok
            r["probe_retried"] = attempt == 1 and not ok and bool(r["errors"] or r["missing"])
            probes.append(r)
            log(f"  {server.name} load {'x4' if place else '4'} at {rate:.0f}/s: p99 "
                f"{r.get('latency_ms_p99')} ms, sent {r['sent_updates_per_s']}/s, missing "
                f"{r['missing']}, errors {r['errors']}"
                f"{' ' + str(r['errors_by_kind']) if r['errors'] else ''}"
                f" -> {'ok' if ok else 'again' if r['probe_retried'] else 'over'}")
            if not r["probe_retried"]:
                break
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


def redis_floor(port: int, quick: bool) -> dict:
    """What Redis itself costs on this machine, measured on the cluster's redis-server while
    the nodes are idle: the PING round trip and the PUBLISH → subscriber hop (each from Python,
    whose own overhead is included), and `redis-cli --latency`'s average."""
    n = 300 if quick else 2000

    def conn() -> socket.socket:
        c = socket.create_connection(("127.0.0.1", port), timeout=5)
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return c

    def read_exactly(c: socket.socket, size: int) -> bytes:
        buf = b""
        while len(buf) < size:
            chunk = c.recv(size - len(buf))
            if not chunk:
                raise RuntimeError("redis closed the connection")
            buf += chunk
        return buf

    def resp(*parts: bytes) -> bytes:
        return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(x), x)
                                                    for x in parts)

    def pct(xs: list[float], q: float) -> float:
        xs = sorted(xs)
        return round(xs[min(len(xs) - 1, max(0, math.ceil(q / 100 * len(xs)) - 1))], 3)

    channel = b"tandem-bench-floor"
    sub, pub = conn(), conn()
    try:
        subscribed = resp(b"SUBSCRIBE", channel)
        sub.sendall(subscribed)
        # *3 $9 subscribe $18 channel :1
        read_exactly(sub, len(b"*3\r\n$9\r\nsubscribe\r\n") + len(b"$%d\r\n" % len(channel))
                     + len(channel) + 2 + len(b":1\r\n"))
        ping, publish = [], []
        for _ in range(n):
            t = time.perf_counter()
            pub.sendall(resp(b"PING"))
            read_exactly(pub, len(b"+PONG\r\n"))
            ping.append((time.perf_counter() - t) * 1000)
        for i in range(n):
            payload = b"%08d" % i
            message = (b"*3\r\n$7\r\nmessage\r\n" + b"$%d\r\n%s\r\n" % (len(channel), channel)
                       + b"$%d\r\n%s\r\n" % (len(payload), payload))
            t = time.perf_counter()
            pub.sendall(resp(b"PUBLISH", channel, payload))
            got = read_exactly(sub, len(message))
            publish.append((time.perf_counter() - t) * 1000)
            read_exactly(pub, len(b":1\r\n"))
            if got != message:
                raise RuntimeError("unexpected message from redis")
    finally:
        sub.close()
        pub.close()
    cli = sh(["redis-cli", "-p", str(port), "--latency", "-i", "2"]).split()
    return {"samples": n,
            "ping_ms_p50": pct(ping, 50), "ping_ms_p99": pct(ping, 99),
            "publish_ms_p50": pct(publish, 50), "publish_ms_p99": pct(publish, 99),
            "redis_cli_latency_ms_avg": float(cli[2]) if len(cli) == 4 else None}


def cross_place(cluster: Cluster, *readers: int) -> tuple[str, ...]:
    """tandem-load's options for a writer on node 0 and readers on the nodes `readers` (in
    turn)."""
    return ("--writer-url", cluster.urls[0],
            "--reader-url", ",".join(cluster.urls[i] for i in readers))


def load_cross_relay(cluster: Cluster, args: argparse.Namespace) -> dict:
    """Load x1: one writer on node 0 at load 1's 100 updates/s; 25 readers on each of nodes 1, 2
    (cross-node: load 1's 50 readers) and 0 (same node, for the comparison in one run)."""
    floor = redis_floor(cluster.redis.port, args.quick)
    log(f"  redis floor: PING p50 {floor['ping_ms_p50']} ms, PUBLISH→subscriber p50 "
        f"{floor['publish_ms_p50']} p99 {floor['publish_ms_p99']} ms")
    r = run_load(cluster, ["--docs", "1", "--writers", "1", "--readers", "75", "--rate", "100",
                           *common(args, "15s"), *cross_place(cluster, 1, 2, 0)])
    # tandem-load reports the reader URLs in the order given: nodes 1, 2, 0.
    by_node = {1: r["reader_urls"][0], 2: r["reader_urls"][1], 0: r["reader_urls"][2]}
    r["same_node"] = by_node[0]
    r["cross_node"] = [by_node[1], by_node[2]]
    r["redis_floor"] = floor
    return r


def load_cross_max_rate(cluster: Cluster, args: argparse.Namespace) -> dict:
    """Load x4: load 4's search with the writer on node 0 and the 10 readers on node 1."""
    return load_max_rate(cluster, args, place=cross_place(cluster, 1))


def load_redis_down(cluster: Cluster, args: argparse.Namespace) -> dict:
    """Load xr: a writer on node 0 at 20 updates/s and 10 readers on node 1, three times: with
    Redis up; after the redis-server is killed (only the nodes' log poll carries updates across);
    after it is started again on the same port, the nodes left running (their buses reconnect by
    themselves)."""
    spec = ["--docs", "1", "--writers", "1", "--readers", "10", "--rate", "20",
            *common(args, "15s"), *cross_place(cluster, 1)]
    phases: dict = {}
    phases["up"] = run_load(cluster, spec)
    quiesce(cluster, args)
    cluster.redis.kill()
    down_s = cluster.wait_bus(up=False, timeout=30)
    log(f"  redis-server killed; every node's bus down after {down_s:.2f} s")
    phases["down"] = run_load(cluster, spec)
    quiesce(cluster, args)
    cluster.redis.start()
    back_s = cluster.wait_bus(up=True, timeout=60)
    log(f"  redis-server started again; every node's bus up after {back_s:.2f} s")
    phases["restored"] = run_load(cluster, spec)
    for name, r in phases.items():
        log(f"  {name}: p50 {r['latency_ms_p50']} p99 {r['latency_ms_p99']} max "
            f"{r['latency_ms_max']} ms, missing {r['missing']}, errors {r['errors']}")
    return {"phases": phases, "bus_down_after_s": round(down_s, 2),
            "bus_up_after_s": round(back_s, 2), "poll_ms": LOG_POLL_MS}


def applies(name: str, load: str) -> bool:
    """Loads x1, x4, xr need several nodes; loads 1–6 run on one server."""
    return (load in CLUSTER_LOADS) == (name == "tandem-cluster")


def run_server_loads(name: str, args: argparse.Namespace, workdir: Path) -> dict:
    results: dict = {}
    for load in args.loads:
        if not applies(name, load):
            continue
        log(f"{name}: load {load}")
        settle_disk(args)
        loadavg = os.getloadavg()
        try:
            server = (Cluster(args, workdir) if name == "tandem-cluster"
                      else Server(name, args, workdir))
        except Exception as e:  # a server that does not start is a result too
            log(f"{name}: load {load} failed to start: {e}")
            results[load] = {"failed": f"start: {e}"}
            continue
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
            elif load == "x1":
                results[load] = load_cross_relay(server, args)
            elif load == "x4":
                results[load] = load_cross_max_rate(server, args)
            elif load == "xr":
                results[load] = load_redis_down(server, args)
            results[load]["loadavg_at_start"] = loadavg
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
    if {"tandem-postgres", "tandem-cluster"} & set(args.servers):
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
        # "Redis server v=7.0.15 sha=…" → "redis-server 7.0.15"
        "redis": (sh(["redis-server", "--version"]).split(" sha=")[0]
                  .replace("Redis server v=", "redis-server ")
                  if "tandem-cluster" in args.servers else None),
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
    # ✗ over the latency bound (or short of the rate); ✗e lost updates or client errors.
    probes = ", ".join(f"{p['probe_rate']:.0f}"
                       f"{'✓' if p['probe_ok'] else '✗e' if p['errors'] or p['missing'] else '✗'}"
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


def run_header(meta: dict) -> list[str]:
    return [f"Run {meta['date']} on commit `{meta['commit']}`"
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


def report(meta: dict, results: dict) -> str:
    lines = [BEGIN, "", *run_header(meta)]
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


# ---- the cluster block ----

def node_cells(u: dict) -> list:
    return [f"{u['readers_connected']}/{u['readers']}", fmt(u["delivered_updates_per_s"]),
            fmt(u["latency_ms_p50"], 2), fmt(u["latency_ms_p90"], 2),
            fmt(u["latency_ms_p99"], 2), fmt(u["latency_ms_max"], 2)]


def worst_cross_p99(r: dict):
    values = [u["latency_ms_p99"] for u in r.get("cross_node", [])
              if u.get("latency_ms_p99") is not None]
    return max(values) if values else None


def loadavg_text(r: dict) -> str:
    la = r.get("loadavg_at_start")
    return ", ".join(f"{x:.2f}" for x in la) if la else "?"


def cluster_report(meta: dict, results: dict) -> str:
    """The `bench:cluster` block: loads x1, x4, xr on tandem-cluster, beside tandem-postgres's
    loads 1 and 4 from the same run."""
    cluster = results.get("tandem-cluster", {})
    single = results.get("tandem-postgres", {})
    lines = [CLUSTER_BEGIN, "", *run_header(meta)[:-2],
             f"tandem-cluster: {CLUSTER_NODES} Tandem nodes on one Postgres database and a "
             f"private {meta.get('redis') or 'redis-server'} (no persistence, a port of its "
             "own), all on this machine with the load generator; nodes poll the log every "
             f"{LOG_POLL_MS} ms.", ""]

    def failed(load: str, r: dict | None) -> bool:
        if r is None:
            lines.extend([f"Load {load}: not in this run.", ""])
            return True
        if "failed" in r:
            lines.extend([f"Load {load}: failed: {r['failed'][:200]}", ""])
            return True
        return False

    x1 = cluster.get("x1")
    lines += ["### Load x1 — cross-node relay: 1 writer on node 0 at 100 updates/s, 25 readers "
              "on each of nodes 0, 1, 2", ""]
    if not failed("x1", x1):
        assert x1 is not None
        headers = ["readers", "relayed by", "readers set up", "delivered/s", "p50 ms", "p90 ms",
                   "p99 ms", "max ms"]
        lines += [row(headers), row(["---"] * len(headers)),
                  row(["node 0", "the writer's node", *node_cells(x1["same_node"])])]
        for i, u in enumerate(x1["cross_node"], start=1):
            lines.append(row([f"node {i}", "another node, through Redis", *node_cells(u)]))
        one = single.get("1")
        if one and "failed" not in one:
            lines.append(row(["tandem-postgres, load 1 (this run)", "one node, 50 readers",
                              f"{one['readers_connected']}/{one['clients'] - 1}",
                              fmt(one["delivered_updates_per_s"]), fmt(one["latency_ms_p50"], 2),
                              fmt(one["latency_ms_p90"], 2), fmt(one["latency_ms_p99"], 2),
                              fmt(one["latency_ms_max"], 2)]))
        m = x1.get("metrics", {})
        f = x1["redis_floor"]
        lines += ["", f"All 75 readers: missing {x1['missing']}, errors {x1['errors']}; the three "
                  f"nodes' CPU {fmt(x1.get('cpu_percent_running', x1['cpu_percent']))} % "
                  f"(100 % = one core), peak RSS {fmt(x1['rss_peak_mb'])} MB in all; rows "
                  f"published {fmt(m.get('bus_published'), 0)}, heard "
                  f"{fmt(m.get('bus_received'), 0)} (two nodes hear each), dropped "
                  f"{fmt(m.get('bus_dropped'), 0)}; publication → arrival on the other node, "
                  f"mean {fmt(m.get('bus_relay_ms_mean'), 2)} ms (the nodes' millisecond "
                  f"clocks). Load average at start {loadavg_text(x1)}.",
                  "", f"Redis alone on this machine (idle nodes, {f['samples']} samples each, "
                  f"from Python): PING round trip p50 {fmt(f['ping_ms_p50'], 3)} ms, p99 "
                  f"{fmt(f['ping_ms_p99'], 3)} ms; PUBLISH → subscriber p50 "
                  f"{fmt(f['publish_ms_p50'], 3)} ms, p99 {fmt(f['publish_ms_p99'], 3)} ms; "
                  f"`redis-cli --latency` average {fmt(f['redis_cli_latency_ms_avg'], 2)} ms.",
                  ""]

    x4 = cluster.get("x4")
    lines += ["### Load x4 — highest writer rate, writer on node 0 and 10 readers on node 1, "
              "p99 < 50 ms", ""]
    if not failed("x4", x4):
        assert x4 is not None
        headers = ["server", "max rate/s", "delivered/s there", "p99 ms there", "CPU % there",
                   "first failing rate/s", "probes"]
        lines += [row(headers), row(["---"] * len(headers)),
                  row(["tandem-cluster, node 0 → node 1", *max_rate_cells(x4)])]
        four = single.get("4")
        if four and "failed" not in four:
            lines.append(row(["tandem-postgres, load 4 (this run)", *max_rate_cells(four)]))
        lines += ["", f"CPU is the three nodes' together. Load average at start "
                  f"{loadavg_text(x4)}.", ""]

    xr = cluster.get("xr")
    lines += ["### Load xr — convergence with Redis down: writer on node 0 at 20 updates/s, "
              "10 readers on node 1", ""]
    if not failed("xr", xr):
        assert xr is not None
        headers = ["Redis", "readers set up", "delivered/s", "p50 ms", "p90 ms", "p99 ms",
                   "max ms", "missing", "errors", "rows heard through Redis", "log reads"]
        lines += [row(headers), row(["---"] * len(headers))]
        titles = {"up": "up",
                  "down": "killed (SIGKILL)",
                  "restored": f"started again on the same port, nodes not restarted (every "
                              f"bus up after {xr['bus_up_after_s']:.1f} s)"}
        for phase, title in titles.items():
            r = xr["phases"][phase]
            m = r.get("metrics", {})
            lines.append(row([title, f"{r['readers_connected']}/{r['readers_per_doc']}",
                              fmt(r["delivered_updates_per_s"]), fmt(r["latency_ms_p50"], 2),
                              fmt(r["latency_ms_p90"], 2), fmt(r["latency_ms_p99"], 2),
                              fmt(r["latency_ms_max"], 2), r["missing"], r["errors"],
                              fmt(m.get("bus_received"), 0), fmt(m.get("log_reads"), 0)]))
        lines += ["", "The delay is the writer's send on node 0 → a reader's receipt on node 1. "
                  f"Every node's /readyz said its bus was down {xr['bus_down_after_s']:.2f} s "
                  f"after the kill. Load average at start {loadavg_text(xr)}.", ""]

    lines += cluster_targets(results)
    lines += [CLUSTER_END]
    return "\n".join(lines)


def cluster_targets(results: dict) -> list[str]:
    """Issue 22's targets for several nodes, from this run."""
    cluster = results.get("tandem-cluster", {})
    single = results.get("tandem-postgres", {})
    out = ["### Several-node targets, from this run", "",
           row(["target", "measured", "bound", "ratio", "met"]), row(["---"] * 5)]

    def ok(r) -> bool:
        return bool(r) and "failed" not in r

    def add(target: str, measured: str, bound: str, ratio, met) -> None:
        out.append(row([target, measured, bound, fmt(ratio, 2) if ratio is not None else "–",
                        "–" if met is None else ("yes" if met else "**no**")]))

    x1 = cluster.get("x1")
    if ok(x1):
        cross, same = worst_cross_p99(x1), x1["same_node"].get("latency_ms_p99")
        if cross is not None and same is not None:
            add("x1: cross-node p99 ≤ same-node p99 + 2 ms (same run, node 0's readers)",
                f"{fmt(cross, 2)} ms (worse of nodes 1, 2)", f"{fmt(same + 2, 2)} ms", None,
                cross <= same + 2)
        one = single.get("1")
        if cross is not None and ok(one) and one.get("latency_ms_p99") is not None:
            add("x1: cross-node p99 ≤ tandem-postgres load 1 p99 + 2 ms", f"{fmt(cross, 2)} ms",
                f"{fmt(one['latency_ms_p99'] + 2, 2)} ms", None,
                cross <= one["latency_ms_p99"] + 2)
    x4, four = cluster.get("x4"), single.get("4")
    if ok(x4) and ok(four) and four.get("max_rate"):
        ratio = x4["max_rate"] / four["max_rate"]
        add("x4: ≥ 50 % of one node's load-4 rate (tandem-postgres)",
            f"{fmt(x4['max_rate'], 0)}/s", f"{fmt(four['max_rate'] / 2, 0)}/s", ratio,
            ratio >= 0.5)
    xr = cluster.get("xr")
    if ok(xr):
        down, up, back = (xr["phases"][k] for k in ("down", "up", "restored"))
        if down.get("latency_ms_max") is not None:
            add("xr: Redis down, every update on the other node within 1 s (max), none missing",
                f"{fmt(down['latency_ms_max'], 1)} ms, missing {down['missing']}", "1,000 ms",
                None, down["latency_ms_max"] <= 1000 and down["missing"] == 0)
        if back.get("latency_ms_p99") is not None and up.get("latency_ms_p99") is not None:
            add("xr: Redis back, the fast path again (p99 ≤ the Redis-up p99 + 2 ms)",
                f"{fmt(back['latency_ms_p99'], 2)} ms", f"{fmt(up['latency_ms_p99'] + 2, 2)} ms",
                None, back["latency_ms_p99"] <= up["latency_ms_p99"] + 2)
    return out + [""]


# ---- the Hocuspocus block ----

def hocuspocus_report(meta: dict, results: dict) -> str:
    """The `bench:hocuspocus` block: Tandem over the Hocuspocus protocol (tandem-hocuspocus)
    beside @hocuspocus/server, loads 1–4 (and 5, 6 if the run has them), and the targets."""
    mine = {n: results[n] for n in HOCUSPOCUS_SERVERS if n in results}
    latency_headers = ["server", "clients", "sent/s", "delivered/s", "p50 ms", "p90 ms",
                       "p99 ms", "max ms", "missing", "errors", "peak RSS MB", "CPU %"]
    lines = [HP_BEGIN, "", *run_header(meta)]
    lines += table(mine, "1", "Load 1 — 1 document, 1 writer at 100 updates/s, 50 readers",
                   latency_headers, latency_cells)
    lines += table(mine, "2", "Load 2 — 1 document, 1 writer at 50 updates/s, 500 readers",
                   latency_headers, latency_cells)
    lines += table(mine, "3",
                   "Load 3 — 200 documents, each 1 writer at 2 updates/s and 4 readers",
                   latency_headers, latency_cells)
    lines += table(mine, "4",
                   "Load 4 — highest writer rate on 1 document × 10 readers with p99 < 50 ms",
                   ["server", "max rate/s", "delivered/s there", "p99 ms there", "CPU % there",
                    "first failing rate/s", "probes"], max_rate_cells)
    lines += table(mine, "5", "Load 5 — idle connections over documents (10 per document)",
                   ["server", "connections", "RSS before MB", "RSS holding MB",
                    "KiB per connection"],
                   lambda r: memory_cells(r, "bytes_per_connection"))
    lines += table(mine, "6",
                   "Load 6 — loaded documents of ~10 KB (one client each); cold load of 5 MB",
                   ["server", "documents", "RSS before MB", "RSS holding MB", "KiB per document",
                    "5 MB cold load ms", "cold load errors"], documents_cells)
    lines += hocuspocus_targets(mine)
    t = mine.get("tandem-hocuspocus", {})
    rows = []
    for load in ("1", "2", "3"):
        r = t.get(load)
        if r and "metrics" in r:
            m = r["metrics"]
            commits = m["commits"] or None
            rows.append(row([load, r["updates_sent"], fmt(m["updates_applied"], 0),
                             fmt(m["commits"], 0),
                             fmt(m["batched_updates"] / commits if commits else None, 1),
                             fmt(1000 * m["commit_seconds_sum"] / commits if commits else None,
                                 2)]))
    if rows:
        lines += ["### tandem-hocuspocus: its /metrics", "",
                  row(["load", "updates sent", "updates applied (metrics)", "commits",
                       "updates per commit", "mean commit ms"]), row(["---"] * 6), *rows,
                  "", "A commit (with its fsync) comes before every relay and every "
                  "acknowledgement: its mean time is part of every update's latency.", ""]
    lines += [HP_END]
    return "\n".join(lines)


def hocuspocus_targets(results: dict) -> list[str]:
    """Targets of Tandem over the Hocuspocus protocol against @hocuspocus/server, same run."""
    mine, ref = results.get("tandem-hocuspocus", {}), results.get("hocuspocus", {})
    out = ["### Targets against @hocuspocus/server, from this run", "",
           row(["target", "tandem-hocuspocus", "hocuspocus", "ratio", "met"]),
           row(["---"] * 5)]

    def get(r: dict, *path):
        for p in path:
            if not isinstance(r, dict) or p not in r:
                return None
            r = r[p]
        return r

    def add(target: str, ours, theirs, ratio, ok) -> None:
        out.append(row([target, ours, theirs, fmt(ratio, 2) if ratio is not None else "–",
                        "yes" if ok else "**no**"]))

    for load in ("1", "2", "3"):
        a, b = get(mine, load, "latency_ms_p99"), get(ref, load, "latency_ms_p99")
        if a is not None and b:
            add(f"load {load}: p99 ≤ @hocuspocus/server's", f"{fmt(a, 2)} ms",
                f"{fmt(b, 2)} ms", a / b, a <= b)
    a, b = get(mine, "4", "max_rate"), get(ref, "4", "max_rate")
    if a is not None and b:
        add("load 4: ≥ 10× @hocuspocus/server's rate", f"{fmt(a, 0)}/s", f"{fmt(b, 0)}/s",
            a / b, a / b >= 10)
    for load, key, what in (("5", "bytes_per_connection", "connection"),
                            ("6", "bytes_per_document", "document")):
        a, b = get(mine, load, key), get(ref, load, key)
        if a is not None and b:
            add(f"load {load}: memory per {what} ≤ ⅓ of @hocuspocus/server's",
                fmt(a / 1024, 1) + " KiB", fmt(b / 1024, 1) + " KiB", a / b, a / b <= 1 / 3)
    return out + [""]


def complete(results: dict, servers: list[str], loads: list[str]) -> bool:
    """Whether the run has every one of `loads` on every one of `servers`."""
    return all(load in results.get(s, {}) for s in servers for load in loads)


def blocks(meta: dict, results: dict, partial: bool) -> list[tuple[str, str, str]]:
    """The generated blocks this run may rewrite, as (begin marker, end marker, text). A block
    is rewritten as a whole, so only by a run that has all of its rows (unless `partial`)."""
    out = []
    ran_single = any(l in r for r in results.values() for l in SINGLE_LOADS)
    if ran_single and (partial or complete(results, SINGLE_SERVERS, SINGLE_LOADS)):
        out.append((BEGIN, END, report(meta, results)))
    elif ran_single:
        log("not rewriting the bench:results block: this run lacks some of its servers or "
            "loads 1–6 (--write-partial does it anyway)")
    ran_cluster = any(l in results.get("tandem-cluster", {}) for l in CLUSTER_LOADS)
    if ran_cluster and (partial or (complete(results, ["tandem-cluster"], CLUSTER_LOADS)
                                    and complete(results, ["tandem-postgres"], ["1", "4"]))):
        out.append((CLUSTER_BEGIN, CLUSTER_END, cluster_report(meta, results)))
    elif ran_cluster:
        log("not rewriting the bench:cluster block: it needs loads x1, x4, xr on "
            "tandem-cluster and loads 1, 4 on tandem-postgres in one run (--write-partial "
            "does it anyway)")
    ran_hp = any(l in results.get("tandem-hocuspocus", {}) for l in SINGLE_LOADS)
    if ran_hp and (partial or complete(results, HOCUSPOCUS_SERVERS, HOCUSPOCUS_LOADS)):
        out.append((HP_BEGIN, HP_END, hocuspocus_report(meta, results)))
    elif ran_hp:
        log("not rewriting the bench:hocuspocus block: it needs loads 1–4 on tandem-hocuspocus "
            "and hocuspocus in one run (--write-partial does it anyway)")
    return out


def write_markdown(path: Path, begin: str, end: str, block: str) -> None:
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if begin in text and end in text:
        head, _, rest = text.partition(begin)
        _, _, tail = rest.partition(end)
        text = head + block + tail
    else:
        title = {BEGIN: "Latest results", CLUSTER_BEGIN: "Latest results, several nodes",
                 HP_BEGIN: "Latest results, over the Hocuspocus protocol"}[begin]
        text = text.rstrip("\n") + f"\n\n## {title}\n\n" + block + "\n"
    path.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", default=",".join(ALL_SERVERS),
                        help="comma-separated, from: " + ", ".join(ALL_SERVERS))
    parser.add_argument("--loads", default=",".join(ALL_LOADS),
                        help="comma-separated, from: " + ", ".join(ALL_LOADS))
    parser.add_argument("--quick", action="store_true",
                        help="short runs and fewer documents, to check the script itself")
    parser.add_argument("--max-rate", type=float, default=256_000,
                        help="load 4 stops searching above this writer rate")
    parser.add_argument("--bisect-steps", type=int, default=4)
    parser.add_argument("--postgres-url",
                        default=os.environ.get("BENCH_DATABASE_URL",
                                               "postgres://postgres@127.0.0.1:5432/tandem_bench"),
                        help="database for tandem-postgres and tandem-cluster; dropped and "
                             "created for each load")
    parser.add_argument("--output", default=str(ROOT / "BENCHMARKS.md"),
                        help="Markdown file whose results block is replaced")
    parser.add_argument("--no-write", action="store_true", help="leave BENCHMARKS.md alone")
    parser.add_argument("--write-partial", action="store_true",
                        help="rewrite a results block even from a run that lacks some of its "
                             "rows (which then vanish from it)")
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
        for begin, end, block in blocks(saved["machine"], saved["results"], args.write_partial):
            write_markdown(Path(args.output), begin, end, block)
            print(block)
        return 0

    signal.signal(signal.SIGTERM, stop_all)
    signal.signal(signal.SIGINT, stop_all)
    for binary in ("tandem", "tandem-load", "tandem-relay"):
        if not (RELEASE / binary).exists():
            raise SystemExit(f"{RELEASE / binary} is missing: run scripts/bench, which builds it")
    if {"y-websocket", "hocuspocus"} & set(args.servers) and not NODE_MODULES.exists():
        raise SystemExit("bench/node_modules is missing: run scripts/bench, which installs it")
    if {"tandem-postgres", "tandem-cluster"} & set(args.servers):
        try:
            fresh_postgres(args.postgres_url)  # fail now rather than after the other servers
        except RuntimeError as e:
            raise SystemExit(f"error: {e}") from None
    if "tandem-cluster" in args.servers:
        for tool in ("redis-server", "redis-cli"):
            if not shutil.which(tool):
                raise SystemExit(f"error: tandem-cluster needs {tool} (Debian: redis-server); "
                                 "or leave it out with --servers")

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
    generated = blocks(meta, results, partial=True)
    for _, _, block in generated:
        print(block)
    log(f"raw results: {out_dir / f'{stamp}.json'}")
    if not args.no_write:
        for begin, end, block in blocks(meta, results, args.write_partial):
            write_markdown(Path(args.output), begin, end, block)
            log(f"wrote {begin} … {end} in {args.output}")
    failed = [f"{n} load {l}" for n, r in results.items() for l, v in r.items()
              if isinstance(v, dict) and "failed" in v]
    if failed:
        log("failed: " + ", ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
