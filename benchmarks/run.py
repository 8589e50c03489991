"""Benchmarks: this package against upstream Channels 4.3, side by side, on one machine.

Both packages import as ``channels``, so each lives in its own virtual environment, built
on first use and cached (rebuilt when its requirement set changes). Every repetition of
every workload runs in a fresh interpreter (``workloads.py``), so no run inherits another's
heap, caches or layer state; repetitions of the different configurations are interleaved,
so a burst of load on a shared machine hits all sides alike. The table shows medians with
the min-max range.

Only the standard library is used here: this script runs on whatever ``python3`` is at hand.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

UPSTREAM_REQUIREMENTS = [
    "channels==4.3.2",
    "channels_redis==4.3.0",
    "daphne",
    "hypercorn",
    "anyio",
    "websockets",
]
OURS_REQUIREMENTS = ["-e", f"{REPO}[trio,redis,server]", "websockets"]

UPSTREAM = "upstream-asyncio"
OURS_ASYNCIO = "ours-asyncio"
OURS_TRIO = "ours-trio"
COLUMNS = {
    UPSTREAM: "Channels 4.3.2 (asyncio)",
    OURS_ASYNCIO: "channels-anyio (asyncio)",
    OURS_TRIO: "channels-anyio (trio)",
}
ALL = (UPSTREAM, OURS_ASYNCIO, OURS_TRIO)
OURS = (OURS_ASYNCIO, OURS_TRIO)


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    higher_is_better: bool = True
    ratio: bool = True


@dataclass(frozen=True)
class Case:
    id: str
    label: str
    workload: str
    params: dict[str, Any]
    quick: dict[str, Any]
    metrics: tuple[Metric, ...]
    configs: tuple[str, ...] = ALL


THROUGHPUT = Metric("msgs_per_s", "msgs/s")
DELIVERIES = (
    Metric("deliveries_per_s", "deliveries/s"),
    Metric("drops", "drops", higher_is_better=False, ratio=False),
)
GROUP_SENDS = (
    Metric("sends_per_s", "group_sends/s"),
    Metric("deliveries_per_s", "deliveries/s"),
    Metric("drops", "drops", higher_is_better=False, ratio=False),
)
RECOVERY = (
    Metric("recoveries_per_s", "recoveries/s"),
    Metric("ms_per_recovery", "ms per recovery", higher_is_better=False),
)
OURS = (OURS_ASYNCIO, OURS_TRIO)
ECHO = (
    Metric("round_trips_per_s", "round trips/s"),
    Metric("p50_ms", "p50 latency (ms)", higher_is_better=False),
    Metric("p99_ms", "p99 latency (ms)", higher_is_better=False),
    Metric("churn_per_s", "connect+echo+close/s"),
    Metric("server_cpu_us_per_round_trip", "server CPU per round trip (us)", False),
    Metric("server_cpu_us_per_churn", "server CPU per connect+echo+close (us)", False),
)
HTTP = (
    Metric("requests_per_s", "requests/s"),
    Metric("p50_ms", "p50 latency (ms)", higher_is_better=False),
    Metric("p99_ms", "p99 latency (ms)", higher_is_better=False),
)
CORES = (
    Metric("client_cpu_cores", "load generator CPU (cores)", ratio=False),
    Metric("server_cpu_cores", "server CPU (cores)", ratio=False),
)
BROADCAST = (
    Metric("deliveries_per_s", "deliveries/s"),
    Metric("p50_ms", "p50 send-to-receive (ms)", higher_is_better=False),
    Metric("p99_ms", "p99 send-to-receive (ms)", higher_is_better=False),
    Metric("server_cpu_us_per_delivery", "server CPU per delivery (us)", higher_is_better=False),
    *CORES,
)
IDLE = (
    Metric("rss_per_connection_kib", "server RSS per connection (KiB)", higher_is_better=False),
    Metric("connects_per_s", "connects/s"),
    *CORES,
)
# The load generator: raw WebSocket clients over selectors (wsclient.py), split over
# processes so that it is not what limits the server.
BROADCAST_LOAD = {"connections": 1_000, "processes": 4, "sends": 50, "payload": 64}
BROADCAST_QUICK = {"connections": 40, "processes": 2, "sends": 5, "payload": 64}
IDLE_LOAD = {"connections": 5_000, "processes": 4, "concurrency": 25}
IDLE_QUICK = {"connections": 200, "processes": 2, "concurrency": 10}
FAN_OUT_LATENCY = (
    Metric("deliveries_per_s", "deliveries/s"),
    Metric("p50_ms", "p50 latency (ms)", higher_is_better=False),
    Metric("p99_ms", "p99 latency (ms)", higher_is_better=False),
    Metric("drops", "drops", higher_is_better=False, ratio=False),
)
MULTIPROCESS = {"processes": 4, "members": 1_000, "sends": 100, "rate": 25}
MULTIPROCESS_QUICK = {"processes": 4, "members": 40, "sends": 10, "rate": 100}
HTTP_QUICK = {"server": "hypercorn", "connections": 4, "requests": 10}
ECHO_LOAD = {"connections": 50, "round_trips": 200, "churn": 500, "churn_concurrency": 10}
ECHO_QUICK = {"connections": 10, "round_trips": 20, "churn": 20, "churn_concurrency": 5}

CASES = [
    Case(
        "p2p",
        "in-memory: 1 channel, 100k msgs",
        "p2p",
        {"count": 100_000},
        {"count": 5_000},
        (THROUGHPUT,),
    ),
    Case(
        "fanout-100",
        "in-memory: fan-out 100 members x 1,000 sends",
        "fanout",
        {"members": 100, "sends": 1_000},
        {"members": 100, "sends": 50},
        DELIVERIES,
    ),
    Case(
        "fanout-1000",
        "in-memory: fan-out 1,000 members x 100 sends",
        "fanout",
        {"members": 1_000, "sends": 100},
        {"members": 1_000, "sends": 5},
        DELIVERIES,
    ),
    Case(
        "many",
        "in-memory: 1,000 channels x 100 msgs",
        "many",
        {"channels": 1_000, "per_channel": 100},
        {"channels": 1_000, "per_channel": 5},
        (
            Metric("receive_msgs_per_s", "receive phase msgs/s"),
            Metric("send_msgs_per_s", "send phase msgs/s"),
        ),
    ),
    Case(
        "redis-p2p",
        "Redis core: 1 channel, 20k msgs",
        "redis-p2p",
        {"count": 20_000},
        {"count": 500},
        (THROUGHPUT,),
    ),
    Case(
        "redis-p2p-between",
        "Redis core: 1 channel, 20k msgs, sent from a second layer (through Redis)",
        "redis-p2p-between",
        {"count": 20_000},
        {"count": 500},
        (THROUGHPUT,),
    ),
    Case(
        "redis-fanout",
        "Redis core: fan-out 100 members x 200 sends",
        "redis-fanout",
        {"members": 100, "sends": 200},
        {"members": 100, "sends": 5},
        DELIVERIES,
    ),
    # Durable groups (this package only). Each "history on" row has a "history off" twin
    # with the same sizes (and the upstream column) just above it.
    Case(
        "group-send-10",
        "in-memory: group_send to 10 members x 5,000, history off",
        "fanout",
        {"members": 10, "sends": 5_000},
        {"members": 10, "sends": 100},
        GROUP_SENDS,
    ),
    Case(
        "group-send-10-history",
        "in-memory: group_send to 10 members x 5,000, history on",
        "fanout-history",
        {"members": 10, "sends": 5_000},
        {"members": 10, "sends": 100},
        GROUP_SENDS,
        OURS,
    ),
    Case(
        "recovery-100",
        "in-memory: group_history(after=...) returning 100 messages, x 1,000",
        "recovery",
        {"missed": 100, "reads": 1_000},
        {"missed": 100, "reads": 10},
        RECOVERY,
        OURS,
    ),
    Case(
        "redis-group-send-10",
        "Redis core: group_send to 10 members x 1,000, history off",
        "redis-fanout",
        {"members": 10, "sends": 1_000},
        {"members": 10, "sends": 20},
        GROUP_SENDS,
    ),
    Case(
        "redis-group-send-10-history",
        "Redis core: group_send to 10 members x 1,000, history on",
        "redis-fanout-history",
        {"members": 10, "sends": 1_000},
        {"members": 10, "sends": 20},
        GROUP_SENDS,
        OURS,
    ),
    Case(
        "redis-recovery-100",
        "Redis core: group_history(after=...) returning 100 messages, x 500",
        "redis-recovery",
        {"missed": 100, "reads": 500},
        {"missed": 100, "reads": 10},
        RECOVERY,
        OURS,
    ),
    Case(
        "redis-pubsub-p2p",
        "Redis pub/sub: 1 channel, 20k msgs",
        "redis-pubsub-p2p",
        {"count": 20_000},
        {"count": 500},
        (THROUGHPUT, Metric("drops", "drops", higher_is_better=False, ratio=False)),
    ),
    Case(
        "redis-pubsub-fanout",
        "Redis pub/sub: fan-out 100 members x 200 sends",
        "redis-pubsub-fanout",
        {"members": 100, "sends": 200},
        {"members": 100, "sends": 5},
        DELIVERIES,
    ),
    # Redis Cluster (three masters, three replicas on this machine) by sharded pub/sub,
    # against the same workloads on one Redis by pub/sub (the rows above).
    Case(
        "redis-cluster-p2p",
        "Redis Cluster: 1 channel, 20k msgs",
        "redis-cluster-p2p",
        {"count": 20_000},
        {"count": 500},
        (THROUGHPUT,),
        OURS,
    ),
    Case(
        "redis-cluster-fanout",
        "Redis Cluster: fan-out 100 members x 200 sends",
        "redis-cluster-fanout",
        {"members": 100, "sends": 200},
        {"members": 100, "sends": 5},
        DELIVERIES,
        OURS,
    ),
    Case(
        "mp-fanout-redis",
        "Redis pub/sub: 4 processes, 1,000 members, 100 sends at 25/s",
        "multiprocess-fanout",
        {"layer": "redis-pubsub", **MULTIPROCESS},
        {"layer": "redis-pubsub", **MULTIPROCESS_QUICK},
        FAN_OUT_LATENCY,
        OURS,
    ),
    Case(
        "mp-fanout-cluster",
        "Redis Cluster: 4 processes, 1,000 members, 100 sends at 25/s",
        "multiprocess-fanout",
        {"layer": "redis-cluster", **MULTIPROCESS},
        {"layer": "redis-cluster", **MULTIPROCESS_QUICK},
        FAN_OUT_LATENCY,
        OURS,
    ),
    Case(
        "ws-hypercorn",
        "WebSocket echo consumer on hypercorn, 50 conns x 200",
        "ws-echo",
        {"server": "hypercorn", "app": "channels_app", **ECHO_LOAD},
        {"server": "hypercorn", "app": "channels_app", **ECHO_QUICK},
        ECHO,
    ),
    Case(
        "ws-serving",
        "WebSocket echo consumer on this package's server, 50 conns x 200",
        "ws-echo",
        {"server": "channels", "app": "channels_app", **ECHO_LOAD},
        {"server": "channels", "app": "channels_app", **ECHO_QUICK},
        ECHO,
        (OURS_ASYNCIO, OURS_TRIO),
    ),
    Case(
        "ws-daphne",
        "WebSocket echo consumer on daphne, 50 conns x 200",
        "ws-echo",
        {"server": "daphne", "app": "channels_app", **ECHO_LOAD},
        {"server": "daphne", "app": "channels_app", **ECHO_QUICK},
        ECHO,
        (UPSTREAM,),
    ),
    Case(
        "ws-bare",
        "bare ASGI echo (no Channels) on hypercorn, reference",
        "ws-echo",
        {"server": "hypercorn", "app": "bare_app", **ECHO_LOAD},
        {"server": "hypercorn", "app": "bare_app", **ECHO_QUICK},
        ECHO,
        (OURS_ASYNCIO, OURS_TRIO),
    ),
    Case(
        "ws-broadcast",
        "WebSocket broadcast on hypercorn: 1,000 clients in a group, 50 group_sends",
        "ws-broadcast",
        {"server": "hypercorn", "app": "broadcast_app", **BROADCAST_LOAD},
        {"server": "hypercorn", "app": "broadcast_app", **BROADCAST_QUICK},
        BROADCAST,
    ),
    Case(
        "ws-broadcast-daphne",
        "WebSocket broadcast on daphne: 1,000 clients in a group, 50 group_sends",
        "ws-broadcast",
        {"server": "daphne", "app": "broadcast_app", **BROADCAST_LOAD},
        {"server": "daphne", "app": "broadcast_app", **BROADCAST_QUICK},
        BROADCAST,
        (UPSTREAM,),
    ),
    Case(
        "ws-broadcast-bare",
        "bare ASGI broadcast (no Channels) on hypercorn, reference",
        "ws-broadcast",
        {"server": "hypercorn", "app": "bare_broadcast_app", **BROADCAST_LOAD},
        {"server": "hypercorn", "app": "bare_broadcast_app", **BROADCAST_QUICK},
        BROADCAST,
        (OURS_ASYNCIO, OURS_TRIO),
    ),
    Case(
        "ws-broadcast-serving",
        "WebSocket broadcast on this package's server (python -m channels.serving)",
        "ws-broadcast",
        {"server": "channels", "app": "broadcast_app", **BROADCAST_LOAD},
        {"server": "channels", "app": "broadcast_app", **BROADCAST_QUICK},
        BROADCAST,
        (OURS_ASYNCIO, OURS_TRIO),
    ),
    Case(
        "ws-idle",
        "5,000 idle WebSockets to a JSON consumer in a group, on hypercorn",
        "ws-idle",
        {"server": "hypercorn", **IDLE_LOAD},
        {"server": "hypercorn", **IDLE_QUICK},
        IDLE,
    ),
    Case(
        "ws-idle-bare",
        "5,000 idle WebSockets to a bare ASGI app (no Channels) on hypercorn, reference",
        "ws-idle",
        {"server": "hypercorn", "app": "bare_app", **IDLE_LOAD},
        {"server": "hypercorn", "app": "bare_app", **IDLE_QUICK},
        IDLE,
        (OURS_ASYNCIO, OURS_TRIO),
    ),
    # Django views over HTTP/1.1 keep-alive on hypercorn: upstream Channels projects serve
    # plain HTTP with Django's own handler, this package with channels.http.
    Case(
        "http-sync",
        "Django sync view (JSON) on hypercorn, 20 conns x 100",
        "django-http",
        {"server": "hypercorn", "view": "sync", "connections": 20, "requests": 100},
        {**HTTP_QUICK, "view": "sync"},
        HTTP,
    ),
    Case(
        "http-async",
        "Django async view (JSON) on hypercorn, 20 conns x 100",
        "django-http",
        {"server": "hypercorn", "view": "async", "connections": 20, "requests": 100},
        {**HTTP_QUICK, "view": "async"},
        HTTP,
    ),
    Case(
        "http-sync-slow",
        "Django sync view blocking 5 ms on hypercorn, 20 conns x 25",
        "django-http",
        {"server": "hypercorn", "view": "sync-slow", "connections": 20, "requests": 25},
        {**HTTP_QUICK, "view": "sync-slow"},
        HTTP,
    ),
    Case(
        "http-stream",
        "Django async streaming view, 50 parts, on hypercorn, 20 conns x 50",
        "django-http",
        {
            "server": "hypercorn",
            "view": "stream",
            "parts": 50,
            "connections": 20,
            "requests": 50,
        },
        {**HTTP_QUICK, "view": "stream", "parts": 5},
        HTTP,
    ),
    Case(
        "http-stream-serving",
        "Django async streaming view, 50 parts, on this package's server, 20 conns x 50",
        "django-http",
        {
            "server": "channels",
            "view": "stream",
            "parts": 50,
            "connections": 20,
            "requests": 50,
        },
        {**HTTP_QUICK, "server": "channels", "view": "stream", "parts": 5},
        HTTP,
        (OURS_ASYNCIO, OURS_TRIO),
    ),
    Case(
        "http-sync-stream",
        "Django sync streaming view, 50 parts, on hypercorn, 20 conns x 50",
        "django-http",
        {
            "server": "hypercorn",
            "view": "sync-stream",
            "parts": 50,
            "connections": 20,
            "requests": 50,
        },
        {**HTTP_QUICK, "view": "sync-stream", "parts": 5},
        HTTP,
    ),
    Case(
        "http-bare",
        "bare ASGI app (no Django) answering as the sync view, reference",
        "django-http",
        {
            "server": "hypercorn",
            "app": "bare_app",
            "view": "sync",
            "connections": 20,
            "requests": 100,
        },
        {**HTTP_QUICK, "app": "bare_app", "view": "sync"},
        HTTP,
        (OURS_ASYNCIO, OURS_TRIO),
    ),
]


# -- environments ---------------------------------------------------------------------------


def venvs_root() -> Path:
    return Path(os.environ.get("CHANNELS_BENCH_VENVS", HERE / ".venvs"))


def ensure_venv(name: str, requirements: list[str], extra_key: bytes, log: Progress) -> Path:
    """The cached environment ``name``, (re)built when its requirement set has changed."""
    root = venvs_root() / name
    python = root / "bin" / "python"
    digest = hashlib.sha256()
    digest.update(json.dumps([requirements, sys.version]).encode())
    digest.update(extra_key)
    key = digest.hexdigest()
    stamp = root / ".bench-requirements"
    if python.exists() and stamp.exists() and stamp.read_text() == key:
        return python
    log.note(f"building the {name} environment in {root} (cached for later runs)...")
    shutil.rmtree(root, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *requirements],
        check=True,
    )
    stamp.write_text(key)
    return python


def environments(log: Progress) -> dict[str, Path]:
    ours = ensure_venv("ours", OURS_REQUIREMENTS, (REPO / "pyproject.toml").read_bytes(), log)
    # Ours is an editable install of this checkout, which has no bytecode when Python runs
    # with PYTHONDONTWRITEBYTECODE: every process would compile the package from source,
    # ~2 MiB of peak RSS that neither upstream (pip compiled its wheel) nor a deployed
    # wheel of ours pays. Compile it, as pip does, so both sides load bytecode.
    subprocess.run([str(ours), "-m", "compileall", "-q", str(REPO / "channels")], check=True)
    upstream = ensure_venv("upstream", UPSTREAM_REQUIREMENTS, b"", log)
    return {"ours": ours, "upstream": upstream}


# -- running --------------------------------------------------------------------------------


class Progress:
    """One status line on a terminal; one line per run otherwise (CI logs, pipes)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.tty = sys.stderr.isatty()
        self.started = time.monotonic()

    def note(self, text: str) -> None:
        self._clear()
        print(text, file=sys.stderr, flush=True)

    def start(self, text: str) -> None:
        if self.tty:
            self._clear()
            sys.stderr.write(self._prefix() + text + " ...")
            sys.stderr.flush()

    def finish(self, text: str, outcome: str) -> None:
        line = f"{self._prefix()}{text}: {outcome}"
        self.done += 1
        if self.tty:
            self._clear()
            sys.stderr.write(line)
            sys.stderr.flush()
        else:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        self._clear()

    def _prefix(self) -> str:
        width = len(str(self.total))
        elapsed = time.monotonic() - self.started
        return f"[{self.done + 1:>{width}}/{self.total} {elapsed:5.0f}s] "

    def _clear(self) -> None:
        if self.tty:
            sys.stderr.write("\r\x1b[K")


def run_once(python: Path, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    try:
        proc = subprocess.run(
            [str(python), str(HERE / "workloads.py"), json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=HERE,
        )
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {timeout:.0f} s"}
    lines = proc.stdout.strip().splitlines()
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        return {"ok": False, "error": f"exit {proc.returncode}: {proc.stderr[-3000:]}"}
    return result


@dataclass
class Outcome:
    runs: list[dict[str, Any]] = field(default_factory=list)
    unavailable: str | None = None
    errors: list[str] = field(default_factory=list)


def run_all(args: argparse.Namespace, cases: list[Case]) -> dict[tuple[str, str], Outcome]:
    reps = args.reps or (1 if args.quick else 5)
    planned = [(case, config) for case in cases for config in case.configs]
    progress = Progress(reps * len(planned))
    pythons = environments(progress)
    outcomes = {(case.id, config): Outcome() for case, config in planned}
    for rep in range(reps):
        for case, config in planned:
            outcome = outcomes[case.id, config]
            side, backend = config.split("-")
            label = f"rep {rep + 1}/{reps} {case.id} {config}"
            if outcome.unavailable or len(outcome.errors) >= 2:
                progress.finish(label, "skipped")
                continue
            spec = {
                "workload": case.workload,
                "side": side,
                "backend": backend,
                "params": case.quick if args.quick else case.params,
                "redis_url": args.redis_url,
                "redis_cluster": args.redis_cluster,
            }
            progress.start(label)
            result = run_once(pythons[side], spec, args.timeout)
            if result.get("unavailable"):
                outcome.unavailable = result["unavailable"]
                progress.finish(label, f"not available ({result['unavailable']})")
            elif not result["ok"]:
                outcome.errors.append(result["error"])
                progress.finish(label, "ERROR")
            else:
                outcome.runs.append(result)
                first = case.metrics[0]
                progress.finish(label, f"{human(result['metrics'][first.key])} {first.label}")
    progress.close()
    return outcomes


# -- reporting ------------------------------------------------------------------------------


@contextlib.contextmanager
def cluster_for(args: argparse.Namespace, cases: list[Case]) -> Iterator[None]:
    """A Redis Cluster of six local nodes for the cluster cases, unless one was named
    (the test suite's: tests/redis_cluster.py); stopped afterwards."""
    needed = any("cluster" in case.workload or "cluster" in str(case.params) for case in cases)
    if args.redis_cluster or not needed:
        yield
        return
    # Started by the benchmark environment's Python: this one need not have the package's
    # dependencies (the fixture speaks RESP through them).
    python = environments(Progress(0))["ours"]
    server = subprocess.Popen(
        [str(python), "-m", "tests.redis_cluster"],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdin is not None
    assert server.stdout is not None
    try:
        started = json.loads(server.stdout.readline() or '{"error": "it exited"}')
        if "urls" not in started:  # no redis-server here: those rows say so
            print(f"no Redis Cluster for the cluster rows: {started['error']}", file=sys.stderr)
            yield
            return
        args.redis_cluster = started["urls"]
        yield
    finally:
        server.stdin.close()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def human(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.2f}M"
    if value >= 1e4:
        return f"{value / 1e3:.0f}k"
    if value >= 1e3:
        return f"{value / 1e3:.1f}k"
    if value >= 10 or value == int(value):
        return f"{value:.0f}"
    return f"{value:.2f}"


def summarize(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def cell(values: list[float]) -> str:
    if not values:
        return ""
    s = summarize(values)
    if len(values) == 1:
        return human(s["median"])
    return f"{human(s['median'])} ({human(s['min'])}-{human(s['max'])})"


def ratio(metric: Metric, ours: list[float], theirs: list[float]) -> str:
    if not metric.ratio or not ours or not theirs:
        return ""
    a, b = statistics.median(ours), statistics.median(theirs)
    if not metric.higher_is_better:
        a, b = b, a
    return f"{a / b:.2f}x" if b else ""


def table_rows(
    cases: list[Case], outcomes: dict[tuple[str, str], Outcome], quick: bool = False
) -> list[list[str]]:
    rows = []
    for case in cases:
        label = f"{case.label} (--quick sizes)" if quick else case.label
        first = True
        extra = [Metric("peak_rss_mib", "peak RSS (MiB)", higher_is_better=False)]
        for metric in [*case.metrics, *extra]:
            values: dict[str, list[float]] = {}
            texts: dict[str, str] = {}
            for config in ALL:
                outcome = outcomes.get((case.id, config))
                if outcome is None:
                    texts[config] = ""
                elif outcome.unavailable:
                    texts[config] = "not available"
                elif not outcome.runs:
                    texts[config] = "error" if outcome.errors else ""
                else:
                    values[config] = [metric_value(run, metric) for run in outcome.runs]
                    texts[config] = cell(values[config])
            rows.append(
                [
                    label if first else "",
                    metric.label,
                    texts[UPSTREAM],
                    texts[OURS_ASYNCIO],
                    ratio(metric, values.get(OURS_ASYNCIO, []), values.get(UPSTREAM, [])),
                    texts[OURS_TRIO],
                    ratio(metric, values.get(OURS_TRIO, []), values.get(UPSTREAM, [])),
                ]
            )
            first = False
    return rows


def metric_value(run: dict[str, Any], metric: Metric) -> float:
    if metric.key == "peak_rss_mib":
        return float(run["peak_rss_kib"]) / 1024
    return float(run["metrics"][metric.key])


HEADER = [
    "workload",
    "metric",
    COLUMNS[UPSTREAM],
    COLUMNS[OURS_ASYNCIO],
    "x",
    COLUMNS[OURS_TRIO],
    "x",
]


def text_table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [HEADER, *rows]) for i in range(len(HEADER))]
    lines = []
    for index, row in enumerate([HEADER, *rows]):
        if index == 0 or row[0]:
            lines.append("-+-".join("-" * w for w in widths))
        lines.append(" | ".join(text.ljust(w) for text, w in zip(row, widths, strict=True)))
    return "\n".join(lines)


def markdown_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def notes(outcomes: dict[tuple[str, str], Outcome]) -> list[str]:
    """Comparisons the table's columns do not show: Channels against a bare app."""
    found = []
    for backend in ("asyncio", "trio"):
        channels = outcomes.get(("ws-hypercorn", f"ours-{backend}"))
        bare = outcomes.get(("ws-bare", f"ours-{backend}"))
        if channels and bare and channels.runs and bare.runs:
            a = statistics.median(r["metrics"]["round_trips_per_s"] for r in channels.runs)
            b = statistics.median(r["metrics"]["round_trips_per_s"] for r in bare.runs)
            found.append(
                f"echo consumer on hypercorn-{backend} reaches {a / b:.0%} of the bare ASGI"
                " echo app's round trips/s"
            )
    for backend in ("asyncio", "trio"):
        channels = outcomes.get(("ws-broadcast", f"ours-{backend}"))
        bare = outcomes.get(("ws-broadcast-bare", f"ours-{backend}"))
        if channels and bare and channels.runs and bare.runs:
            a = statistics.median(r["metrics"]["deliveries_per_s"] for r in channels.runs)
            b = statistics.median(r["metrics"]["deliveries_per_s"] for r in bare.runs)
            found.append(
                f"the broadcast consumer on hypercorn-{backend} reaches {a / b:.0%} of the"
                " bare ASGI broadcast's deliveries/s"
            )
    for backend in ("asyncio", "trio"):
        django = outcomes.get(("http-sync", f"ours-{backend}"))
        bare = outcomes.get(("http-bare", f"ours-{backend}"))
        if django and bare and django.runs and bare.runs:
            a = statistics.median(r["metrics"]["requests_per_s"] for r in django.runs)
            b = statistics.median(r["metrics"]["requests_per_s"] for r in bare.runs)
            found.append(
                f"the Django sync view through channels.http on hypercorn-{backend} reaches"
                f" {a / b:.0%} of the bare ASGI app's requests/s"
            )
    return found


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "cpu": model or platform.processor(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "loadavg": os.getloadavg(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: small sizes, 1 rep")
    parser.add_argument("--reps", type=int, help="repetitions per workload (default 5)")
    parser.add_argument(
        "--only", help="comma-separated case ids: " + ", ".join(case.id for case in CASES)
    )
    parser.add_argument("--json", type=Path, help="write raw results here")
    parser.add_argument("--markdown", type=Path, help="write the table as markdown here")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per run")
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("CHANNELS_BENCH_REDIS_URL", "redis://127.0.0.1:6379"),
    )
    parser.add_argument(
        "--redis-cluster",
        default=os.environ.get("CHANNELS_BENCH_REDIS_CLUSTER", ""),
        help="comma-separated startup URLs of a Redis Cluster (default: start one here)",
    )
    args = parser.parse_args()
    args.redis_cluster = [url for url in args.redis_cluster.split(",") if url]
    if args.reps is not None and args.reps < 1:
        parser.error("--reps must be at least 1")
    cases = CASES
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {case.id for case in CASES}
        if unknown:
            parser.error(f"unknown case(s): {', '.join(sorted(unknown))}")
        cases = [case for case in CASES if case.id in wanted]

    before = machine()
    with cluster_for(args, cases):
        outcomes = run_all(args, cases)
    rows = table_rows(cases, outcomes, args.quick)
    print(text_table(rows))
    print()
    print("Medians (min-max) over each configuration's runs; x = ours / upstream, higher is")
    print("better (for latencies and memory, upstream / ours). Each run is a fresh process.")
    for line in notes(outcomes):
        print(f"- {line}")
    failures = [
        (case_id, config, error)
        for (case_id, config), outcome in outcomes.items()
        for error in outcome.errors
    ]
    for case_id, config, error in failures:
        print(f"\nERROR in {case_id} / {config}:\n{error}", file=sys.stderr)

    if args.markdown:
        args.markdown.write_text(markdown_table(rows) + "\n")
    if args.json:
        report = {
            "machine": before,
            "loadavg_after": os.getloadavg(),
            "quick": args.quick,
            "cases": [
                {
                    "id": case.id,
                    "label": case.label,
                    "workload": case.workload,
                    "params": case.quick if args.quick else case.params,
                    "results": {
                        config: {
                            "runs": outcomes[case.id, config].runs,
                            "unavailable": outcomes[case.id, config].unavailable,
                            "errors": outcomes[case.id, config].errors,
                        }
                        for config in case.configs
                    },
                }
                for case in cases
            ],
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
