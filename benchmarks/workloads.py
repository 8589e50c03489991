"""The benchmark workloads. ``run.py`` starts this file once per repetition, in a fresh
interpreter of one of its two virtual environments.

The same file runs under this package and under upstream Channels (both import as
``channels``), so it touches only the public API: ``settings.CHANNEL_LAYERS``,
``get_channel_layer()``, ``send``/``receive``/``new_channel``/``group_add``/``group_send``
and ``AsyncWebsocketConsumer``. It is driven by anyio in both environments: upstream runs
under anyio's asyncio backend, this package under asyncio and trio.

Usage: ``python workloads.py '<json spec>'``; it prints one JSON object on stdout, either
``{"ok": true, "metrics": {...}, ...}`` or ``{"ok": false, "unavailable": "why"}``.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import json
import os
import random
import resource
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent

# Layer backends by side: the same public API under two import paths.
LAYER_BACKENDS = {
    ("ours", "inmemory"): "channels.layers.InMemoryChannelLayer",
    ("upstream", "inmemory"): "channels.layers.InMemoryChannelLayer",
    ("ours", "redis"): "channels.layers.redis.RedisChannelLayer",
    ("upstream", "redis"): "channels_redis.core.RedisChannelLayer",
    ("ours", "redis-pubsub"): "channels.layers.redis.RedisPubSubChannelLayer",
    ("upstream", "redis-pubsub"): "channels_redis.pubsub.RedisPubSubChannelLayer",
    ("ours", "redis-cluster"): "channels.layers.redis.RedisClusterChannelLayer",
}


class Unavailable(Exception):
    """This workload cannot run in this environment (a missing module, no Redis)."""


def peak_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


# -- setup ----------------------------------------------------------------------------------


def configure_django(layers: dict[str, Any]) -> None:
    from django.conf import settings

    settings.configure(
        CHANNEL_LAYERS=layers,
        INSTALLED_APPS=[],
        USE_TZ=True,
        LOGGING_CONFIG=None,
    )
    import django

    django.setup()


def make_layer(spec: dict[str, Any], kind: str, config: dict[str, Any]) -> Any:
    path = LAYER_BACKENDS[spec["side"], kind]
    module = path.rpartition(".")[0]
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise Unavailable(f"cannot import {path}: {exc}") from None
    if kind == "redis-cluster":
        hosts = spec.get("redis_cluster")
        if not hosts:
            raise Unavailable("no Redis Cluster (run.py starts one unless --redis-cluster)")
        require_redis(hosts[0])
        config = {"hosts": hosts, "prefix": f"bench{random.getrandbits(32):x}.", **config}
    elif kind.startswith("redis"):
        require_redis(spec["redis_url"])
        # No ":" in it: the pub/sub layer's channel names start with the prefix, and our
        # layer (unlike upstream's) rejects names that are not valid Channels names.
        prefix = f"bench{random.getrandbits(32):x}."
        config = {"hosts": [spec["redis_url"]], "prefix": prefix, **config}
    configure_django({"default": {"BACKEND": path, "CONFIG": config}})
    from channels.layers import get_channel_layer

    return get_channel_layer()


def require_redis(url: str) -> None:
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 1).close()
    except OSError as exc:
        raise Unavailable(f"no Redis at {url}: {exc}") from None


async def send_until_accepted(layer: Any, channel: str, message: dict[str, Any]) -> None:
    """Send, yielding while the channel is full: the producer waits for its consumer."""
    import anyio

    from channels.exceptions import ChannelFull

    while True:
        try:
            await layer.send(channel, message)
            return
        except ChannelFull:
            await anyio.sleep(0.0005)


async def repeat_until(send: Callable[[], Awaitable[None]], done: Any) -> None:
    """Send ``send()`` until ``done`` is set: covers pub/sub subscriptions that are not
    in place yet and sentinels dropped by a full channel."""
    import anyio

    while not done.is_set():
        await send()
        with anyio.move_on_after(0.02):
            await done.wait()


# -- workloads on a layer ------------------------------------------------------------------


# How long a consumer may go without a message, once its producer has finished, before
# the rest count as dropped (a pub/sub layer's full local buffer drops its oldest).
QUIET_S = 2.0


async def point_to_point_between_layers(layer: Any, count: int) -> dict[str, Any]:
    """:func:`point_to_point` with the producer on a second layer made from the same
    settings (``channel_layers.make_backend``), as another process's would be: every
    message goes through Redis, where a layer may deliver its own sends to its own
    waiting receivers without it."""
    from channels.layers import DEFAULT_CHANNEL_LAYER, channel_layers

    sender = channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)
    try:
        return await point_to_point(layer, count, sender)
    finally:
        import anyio

        with anyio.CancelScope(shield=True):
            close = getattr(sender, "close", None) or getattr(sender, "close_pools", None)
            if close is not None:
                await close()


async def point_to_point(layer: Any, count: int, sender: Any = None) -> dict[str, Any]:
    """One producer, one consumer, ``count`` small dicts on one channel.

    The channel comes from ``new_channel()``, as a consumer's does. A message the layer
    dropped is counted (``drops``), not waited for: once the producer has finished, the
    consumer stops after ``QUIET_S`` seconds without a message. The producer sends
    through ``sender`` (default: ``layer``).
    """
    import anyio.lowlevel

    if sender is None:
        sender = layer
    channel = await layer.new_channel()
    ready = anyio.Event()
    finished = anyio.Event()
    state = {"received": 0, "out_of_order": 0, "done_at": 0.0}

    async def consume() -> None:
        expected = 0
        while True:
            message = await layer.receive(channel)
            if message["type"] == "bench.probe":
                ready.set()
                continue
            if message["n"] < expected:  # a gap (n > expected) is a drop, counted below
                state["out_of_order"] += 1
            expected = message["n"] + 1
            state["received"] += 1
            if state["received"] == count:
                state["done_at"] = time.perf_counter()
                finished.set()
                return

    async with anyio.create_task_group() as group:
        group.start_soon(consume)
        await repeat_until(lambda: sender.send(channel, {"type": "bench.probe"}), ready)
        started = time.perf_counter()
        for n in range(count):
            message = {"type": "bench.message", "n": n, "x": "hi"}
            await send_until_accepted(sender, channel, message)
            if n % 50 == 49:  # let the consumer in, as any real producer would
                await anyio.lowlevel.checkpoint()
        # Wait for the rest while messages still come; stop once they stop coming (the
        # last one then arrived within 50 ms of the last change seen).
        seen, changed = -1, time.perf_counter()
        while not finished.is_set():
            with anyio.move_on_after(0.05):
                await finished.wait()
            now = time.perf_counter()
            if state["received"] != seen:
                seen, changed = state["received"], now
            elif now - changed >= QUIET_S:
                state["done_at"] = changed
                group.cancel_scope.cancel()
                break
    received = state["received"]
    elapsed = state["done_at"] - started
    return {
        "msgs_per_s": received / elapsed,
        "elapsed_s": elapsed,
        "received": received,
        "drops": count - received,
        "out_of_order": state["out_of_order"],
    }


async def fan_out(layer: Any, members: int, sends: int) -> dict[str, Any]:
    """``sends`` group_sends to a group of ``members`` channels, each drained by its own task.

    The sender yields after each group_send; a member whose channel is full at that moment
    misses the message, which is counted as a drop.
    """
    import anyio.lowlevel

    group_name = "bench-fanout"
    channels = [await layer.new_channel() for _ in range(members)]
    for channel in channels:
        await layer.group_add(group_name, channel)
    received = [0] * members
    last = [0.0] * members
    probed = [False] * members
    counts = {"probed": 0, "finished": 0}
    all_probed = anyio.Event()
    all_finished = anyio.Event()

    async def member(index: int, channel: str) -> None:
        while True:
            message = await layer.receive(channel)
            kind = message["type"]
            if kind == "bench.message":
                received[index] += 1
                last[index] = time.perf_counter()
            elif kind == "bench.probe":
                if not probed[index]:
                    probed[index] = True
                    counts["probed"] += 1
                    if counts["probed"] == members:
                        all_probed.set()
            elif kind == "bench.end":
                counts["finished"] += 1
                if counts["finished"] == members:
                    all_finished.set()
                return

    async with anyio.create_task_group() as group:
        for index, channel in enumerate(channels):
            group.start_soon(member, index, channel)
        await repeat_until(
            lambda: layer.group_send(group_name, {"type": "bench.probe"}), all_probed
        )
        started = time.perf_counter()
        for n in range(sends):
            await layer.group_send(group_name, {"type": "bench.message", "n": n, "x": "hi"})
            await anyio.lowlevel.checkpoint()
        await repeat_until(
            lambda: layer.group_send(group_name, {"type": "bench.end"}), all_finished
        )
    delivered = sum(received)
    elapsed = max(last) - started
    return {
        "deliveries_per_s": delivered / elapsed,
        "sends_per_s": sends / elapsed,
        "elapsed_s": elapsed,
        "delivered": delivered,
        "drops": members * sends - delivered,
    }


async def many_channels(layer: Any, channels: int, per_channel: int) -> dict[str, Any]:
    """``per_channel`` messages to each of ``channels`` channels, then read them all back.

    The receive phase is timed on its own: it is where a layer that sweeps every channel
    on every receive pays for it.
    """
    names = [f"bench.many.{i}" for i in range(channels)]
    started = time.perf_counter()
    for n in range(per_channel):
        for name in names:
            await layer.send(name, {"type": "bench.message", "n": n})
    sent = time.perf_counter()
    wrong = 0
    for name in names:
        for n in range(per_channel):
            message = await layer.receive(name)
            wrong += message["n"] != n
    received = time.perf_counter()
    total = channels * per_channel
    return {
        "send_msgs_per_s": total / (sent - started),
        "receive_msgs_per_s": total / (received - sent),
        "elapsed_s": received - started,
        "out_of_order": wrong,
    }


# Group history for the fan-out group (this package only: upstream has none).
HISTORY_CONFIG = {"group_history": {"bench-*": {"size": 1_000, "ttl": 600}}}


async def recovery(layer: Any, missed: int, reads: int) -> dict[str, Any]:
    """A client back after missing ``missed`` messages: ``group_history(after=...)``
    returning them all, ``reads`` times (the stream holds ``missed`` more before them)."""
    group_name = "bench-recovery"
    for n in range(missed):
        await layer.group_send(group_name, {"type": "bench.message", "n": n, "x": "hi"})
    seen = (await layer.group_history(group_name)).position
    for n in range(missed):
        await layer.group_send(group_name, {"type": "bench.message", "n": n, "x": "hi"})
    started = time.perf_counter()
    for _ in range(reads):
        history = await layer.group_history(group_name, after=seen)
        if not history.recovered or len(history.messages) != missed:
            raise RuntimeError(f"recovery failed: {len(history.messages)} messages")
    elapsed = time.perf_counter() - started
    return {
        "recoveries_per_s": reads / elapsed,
        "ms_per_recovery": 1000 * elapsed / reads,
        "elapsed_s": elapsed,
    }


def layer_workload(kind: str, config: dict[str, Any], body: Callable[..., Awaitable[Any]]) -> Any:
    def run(spec: dict[str, Any]) -> dict[str, Any]:
        import anyio

        layer = make_layer(spec, kind, config)
        params = spec["params"]

        async def main() -> dict[str, Any]:
            try:
                return await body(layer, **params)
            finally:
                if kind.startswith("redis"):
                    with anyio.CancelScope(shield=True):
                        await layer.flush()
                        close = getattr(layer, "close", None) or getattr(
                            layer, "close_pools", None
                        )
                        if close is not None:  # upstream's pub/sub layer closes in flush
                            await close()

        return anyio.run(main, backend=spec["backend"])

    return run


# -- fan-out across processes ---------------------------------------------------------------


def multiprocess_fan_out(spec: dict[str, Any]) -> dict[str, Any]:
    """A group of ``members`` channels spread over ``processes`` member processes; this
    process sends ``sends`` group messages at ``rate`` per second and collects, from each
    member process, every delivery's latency (send time to receive, one machine's clock).

    Open loop: the sender keeps its pace whatever the members do, so the result says what
    the layer delivered at that offered load (deliveries/s, p50/p99 latency, drops).
    """
    import anyio

    params = spec["params"]
    kind = params["layer"]
    layer = make_layer(spec, kind, {})
    hosts = spec["redis_cluster"] if kind == "redis-cluster" else [spec["redis_url"]]
    child_config = {"hosts": hosts, "prefix": layer.prefix}
    processes, members, sends, rate = (
        params["processes"],
        params["members"],
        params["sends"],
        params["rate"],
    )
    share = [members // processes + (i < members % processes) for i in range(processes)]

    async def main() -> dict[str, Any]:
        from anyio.streams.buffered import BufferedByteReceiveStream

        children = []
        readers = []
        try:
            for count in share:
                child_spec = {
                    **spec,
                    "role": "member",
                    "kind": kind,
                    "config": child_config,
                    "members": count,
                    "expected": count * sends,
                }
                process = await anyio.open_process(
                    [sys.executable, __file__, json.dumps(child_spec)], stderr=None
                )
                children.append(process)
                assert process.stdout is not None
                readers.append(BufferedByteReceiveStream(process.stdout))

            async def line(index: int) -> dict[str, Any]:
                with anyio.fail_after(120):
                    data = await readers[index].receive_until(b"\n", 1 << 26)
                result: dict[str, Any] = json.loads(data)
                return result

            for index in range(processes):
                assert (await line(index))["state"] == "joined"
            probed = anyio.Event()
            acks = {"probed": 0}

            async def wait_probed(index: int) -> None:
                assert (await line(index))["state"] == "probed"
                acks["probed"] += 1
                if acks["probed"] == processes:
                    probed.set()

            async with anyio.create_task_group() as group:
                for index in range(processes):
                    group.start_soon(wait_probed, index)
                await repeat_until(
                    lambda: layer.group_send("bench-mp", {"type": "bench.probe"}), probed
                )
            started = time.time()
            interval = 1 / rate
            for n in range(sends):
                due = started + n * interval
                delay = due - time.time()
                if delay > 0:
                    await anyio.sleep(delay)
                await layer.group_send(
                    "bench-mp", {"type": "bench.message", "n": n, "t": time.time()}
                )
            results = [await line(index) for index in range(processes)]
        finally:
            for process in children:
                with anyio.CancelScope(shield=True):
                    with contextlib.suppress(Exception):
                        await process.wait()
                    await process.aclose()
            with anyio.CancelScope(shield=True):
                await layer.close()
        latencies = sorted(value for result in results for value in result["latencies"])
        delivered = len(latencies)
        last = max(result["last"] for result in results)
        elapsed = last - started
        return {
            "deliveries_per_s": delivered / elapsed,
            "offered_per_s": rate * members,
            "p50_ms": 1000 * latencies[delivered // 2] if latencies else 0.0,
            "p99_ms": 1000 * latencies[min(delivered - 1, delivered * 99 // 100)]
            if latencies
            else 0.0,
            "delivered": delivered,
            "drops": members * sends - delivered,
        }

    return anyio.run(main, backend=spec["backend"])


def fan_out_member(spec: dict[str, Any]) -> None:
    """One member process of :func:`multiprocess_fan_out` (prints JSON lines)."""
    import anyio

    layer = make_layer(spec, spec["kind"], spec["config"])
    count, expected = spec["members"], spec["expected"]

    def say(payload: dict[str, Any]) -> None:
        print(json.dumps(payload), flush=True)

    async def main() -> None:
        channels = [await layer.new_channel() for _ in range(count)]
        for channel in channels:
            await layer.group_add("bench-mp", channel)
        say({"state": "joined"})
        latencies: list[float] = []
        probed = {"members": 0}
        last = {"at": 0.0}
        done = anyio.Event()

        async def member(channel: str) -> None:
            seen_probe = False
            while True:
                message = await layer.receive(channel)
                if message["type"] == "bench.probe":
                    if not seen_probe:
                        seen_probe = True
                        probed["members"] += 1
                        if probed["members"] == count:
                            say({"state": "probed"})
                    continue
                now = time.time()
                latencies.append(now - message["t"])
                last["at"] = now
                if len(latencies) == expected:
                    done.set()

        async with anyio.create_task_group() as group:
            for channel in channels:
                group.start_soon(member, channel)
            # Every delivery, or two quiet seconds after the last one (drops).
            while not done.is_set():
                before = len(latencies)
                with anyio.move_on_after(2):
                    await done.wait()
                if len(latencies) == before and before:
                    break
            group.cancel_scope.cancel()
        await layer.close()
        say({"state": "done", "latencies": [round(v, 6) for v in latencies], "last": last["at"]})

    anyio.run(main, backend=spec["backend"])


# -- end to end: a WebSocket echo server under load -----------------------------------------

SERVER_COMMANDS = {
    "hypercorn": [
        "-m", "hypercorn", "--worker-class", "{backend}", "--bind", "127.0.0.1:{port}",
        "--log-level", "warning", "--keep-alive", "30", "e2e_app:{app}",
    ],
    "daphne": ["-m", "daphne", "-b", "127.0.0.1", "-p", "{port}", "-v", "0", "e2e_app:{app}"],
    # This package's own server (hypercorn's per-connection servers behind its accept loop).
    "channels": [
        "-m", "channels.serving", "--backend", "{backend}", "--bind", "127.0.0.1:{port}",
        "e2e_app:{app}",
    ],
}  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tree_peak_rss_kib(pid: int) -> int:
    """The largest VmHWM in a process and its descendants (hypercorn runs a worker child)."""
    peak = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return peak


@contextlib.contextmanager
def serving(spec: dict[str, Any], app: str) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """``e2e_app:<app>`` served by the case's server in a subprocess, once it listens."""
    port = free_port()
    command = [sys.executable] + [
        part.format(backend=spec["backend"], port=port, app=app)
        for part in SERVER_COMMANDS[spec["params"]["server"]]
    ]
    with tempfile.TemporaryFile("w+") as log:
        server = subprocess.Popen(command, cwd=HERE, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while True:
                if server.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"server exited: {log.read()[-2000:]}")
                try:
                    socket.create_connection(("127.0.0.1", port), 0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("server did not start within 30 s") from None
                    time.sleep(0.05)
            yield port, server
        finally:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def require(*modules: str) -> None:
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise Unavailable(f"cannot import {module}: {exc}") from None


def websocket_echo(spec: dict[str, Any]) -> dict[str, Any]:
    params = spec["params"]
    app = params["app"]
    needed = ["websockets", "daphne" if params["server"] == "daphne" else "hypercorn"]
    if params["server"] == "channels":
        needed.append("channels.serving")
    if app == "channels_app":
        needed.append("channels.generic.websocket")
    require(*needed)
    with serving(spec, app) as (port, server):
        import anyio

        metrics: dict[str, Any] = anyio.run(
            echo_client, f"ws://127.0.0.1:{port}/", params, server.pid, backend="asyncio"
        )
        metrics["server_peak_rss_kib"] = tree_peak_rss_kib(server.pid)
        return metrics


async def echo_client(url: str, params: dict[str, Any], server_pid: int = 0) -> dict[str, Any]:
    """``connections`` clients doing ``round_trips`` echoes each, then connection churn.

    The client is asyncio-only (``websockets``) whatever the server runs on.
    """
    import anyio
    from websockets.asyncio.client import connect

    latencies: list[float] = []
    payload = "x" * 64

    async def echo(ws: Any, text: str) -> None:
        await ws.send(text)
        reply = await ws.recv()
        if reply != text:
            raise RuntimeError(f"echo returned {reply!r}, sent {text!r}")

    async def client() -> None:
        async with connect(url, compression=None, max_size=None) as ws:
            for _ in range(params["round_trips"]):
                sent = time.perf_counter()
                await echo(ws, payload)
                latencies.append(time.perf_counter() - sent)

    # The server's CPU per round trip and per connection: less sensitive to other load
    # on the machine than the rates, for A/B work (0 without a server pid).
    cpu = tree_cpu_s(server_pid) if server_pid else 0.0
    started = time.perf_counter()
    async with anyio.create_task_group() as group:
        for _ in range(params["connections"]):
            group.start_soon(client)
    echo_elapsed = time.perf_counter() - started
    echo_cpu = tree_cpu_s(server_pid) - cpu if server_pid else 0.0

    churn = params["churn"]
    remaining = [churn]

    async def churner() -> None:
        while remaining[0] > 0:
            remaining[0] -= 1
            async with connect(url, compression=None) as ws:
                await echo(ws, payload)

    started = time.perf_counter()
    async with anyio.create_task_group() as group:
        for _ in range(params["churn_concurrency"]):
            group.start_soon(churner)
    churn_elapsed = time.perf_counter() - started
    churn_cpu = tree_cpu_s(server_pid) - cpu - echo_cpu if server_pid else 0.0

    latencies.sort()
    return {
        "server_cpu_us_per_round_trip": echo_cpu / max(len(latencies), 1) * 1e6,
        "server_cpu_us_per_churn": churn_cpu / max(churn, 1) * 1e6,
        "round_trips_per_s": len(latencies) / echo_elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "churn_per_s": churn / churn_elapsed,
        "elapsed_s": echo_elapsed + churn_elapsed,
    }


# -- end to end: many WebSocket clients (broadcast, idle) -----------------------------------


def raise_open_files_limit(needed: int) -> None:
    """Raise this process's soft limit on open files towards ``needed`` (never past the
    hard limit): the server and the client processes inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target < needed:
            raise Unavailable(f"{needed} open files needed, the hard limit is {hard}")


def tree_pids(pid: int) -> list[int]:
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
    return found


def tree_cpu_s(pid: int) -> float:
    """User plus system CPU seconds of a process and its descendants."""
    ticks = 0
    for current in tree_pids(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{current}/stat").read_text().rpartition(")")[2].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def tree_rss_kib(pid: int) -> int:
    """The resident memory of a process and its descendants, now."""
    total = 0
    for current in tree_pids(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


class ClientPool:
    """``processes`` load generators (``wsclient.py``) sharing ``connections``."""

    def __init__(self, port: int, path: str, params: dict[str, Any], mode: str) -> None:
        count, processes = params["connections"], params["processes"]
        shares = [count // processes + (i < count % processes) for i in range(processes)]
        self.children = []
        self.errors: list[Any] = []
        for share in shares:
            spec = {
                "host": "127.0.0.1",
                "port": port,
                "path": path,
                "connections": share,
                "concurrency": params.get("concurrency", 25),
                "mode": mode,
                "sends": params.get("sends", 0),
            }
            errors = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed in close())
            self.errors.append(errors)
            self.children.append(
                subprocess.Popen(
                    [sys.executable, str(HERE / "wsclient.py"), json.dumps(spec)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=errors,
                    text=True,
                )
            )

    def read(self) -> list[dict[str, Any]]:
        """The next line of every client, in order; a client that died fails the run."""
        lines = []
        for child, errors in zip(self.children, self.errors, strict=True):
            assert child.stdout is not None
            line = child.stdout.readline()
            if not line:
                code = child.wait()
                errors.seek(0)
                raise RuntimeError(f"a load generator exited with {code}: {errors.read()[-2000:]}")
            lines.append(json.loads(line))
        return lines

    def tell(self) -> None:
        for child in self.children:
            assert child.stdin is not None
            child.stdin.write("close\n")
            child.stdin.flush()

    def close(self) -> None:
        for child, errors in zip(self.children, self.errors, strict=True):
            if child.poll() is None:
                child.kill()
            child.wait()
            for pipe in (child.stdin, child.stdout):
                if pipe is not None:
                    pipe.close()
            errors.close()


def open_clients(port: int, path: str, params: dict[str, Any], mode: str) -> Iterator[Any]:
    pool = ClientPool(port, path, params, mode)
    try:
        yield pool
    finally:
        pool.close()


client_pool = contextlib.contextmanager(open_clients)


def ws_broadcast(spec: dict[str, Any]) -> dict[str, Any]:
    """``connections`` clients in one group, ``sends`` group_sends from one more
    connection; deliveries/s at the clients and send-to-receive latency."""
    params = spec["params"]
    require("websockets", "daphne" if params["server"] == "daphne" else "hypercorn")
    if params["server"] == "channels":
        require("channels.serving")
    if params["app"] == "broadcast_app":
        require("channels.generic.websocket")
    raise_open_files_limit(params["connections"] + 512)
    with serving(spec, params["app"]) as (port, server):
        import anyio

        with client_pool(port, "/", params, "broadcast") as pool:
            ready = pool.read()
            server_cpu = tree_cpu_s(server.pid)
            payload = "x" * params.get("payload", 64)
            anyio.run(request_broadcast, port, params["sends"], payload, backend="asyncio")
            results = pool.read()
            server_cpu = tree_cpu_s(server.pid) - server_cpu
            pool.read()  # closed
        peak = tree_peak_rss_kib(server.pid)
    latencies = sorted(x for result in results for x in result["latencies"])
    elapsed = max(r["last_received"] for r in results) - min(r["first_sent"] for r in results)
    return {
        "deliveries_per_s": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 0.5) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "delivered": len(latencies),
        "server_cpu_us_per_delivery": server_cpu / len(latencies) * 1e6,
        "elapsed_s": elapsed,
        **cpu_metrics(sum(r["cpu_s"] for r in results), server_cpu, elapsed),
        "connected": sum(r["ready"] for r in ready),
        "server_peak_rss_kib": peak,
    }


def percentile(ordered: list[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def cpu_metrics(client_cpu_s: float, server_cpu_s: float, elapsed: float) -> dict[str, float]:
    """CPU the load generators and the server used over ``elapsed`` seconds, in cores:
    a server near 1.0 is the bottleneck; clients near the machine's spare cores are."""
    return {
        "client_cpu_cores": client_cpu_s / elapsed,
        "server_cpu_cores": server_cpu_s / elapsed,
        "client_cpu_s": client_cpu_s,
    }


async def request_broadcast(port: int, sends: int, payload: str) -> None:
    """Ask the server's ``/send`` endpoint for ``sends`` group_sends; return once done."""
    from websockets.asyncio.client import connect

    async with connect(f"ws://127.0.0.1:{port}/send", compression=None) as ws:
        await ws.send(json.dumps({"sends": sends, "x": payload}))
        reply = json.loads(await ws.recv())
        if reply != {"sent": sends}:
            raise RuntimeError(f"the sender answered {reply!r}")


def ws_idle(spec: dict[str, Any]) -> dict[str, Any]:
    """``connections`` open, idle WebSockets to a JSON consumer in one group: what each
    costs the server in resident memory, and how fast they connect."""
    params = spec["params"]
    app = params.get("app", "idle_app")
    require(
        "websockets", "hypercorn", *(["channels.generic.websocket"] if app == "idle_app" else [])
    )
    if params["server"] == "channels":
        require("channels.serving")
    count = params["connections"]
    raise_open_files_limit(count + 512)
    with serving(spec, app) as (port, server):
        import anyio

        anyio.run(warm_up, port, backend="asyncio")  # lazy imports, first-use caches
        time.sleep(0.3)
        before = tree_rss_kib(server.pid)
        server_cpu = tree_cpu_s(server.pid)
        with client_pool(port, "/", params, "idle") as pool:
            ready = pool.read()
            started = min(r["connect_started"] for r in ready)
            elapsed = max(r["connect_ended"] for r in ready) - started
            server_cpu = tree_cpu_s(server.pid) - server_cpu
            time.sleep(params.get("settle_s", 1.0))
            after = tree_rss_kib(server.pid)
            pool.tell()
            pool.read()  # closed
        peak = tree_peak_rss_kib(server.pid)
    connected = sum(r["ready"] for r in ready)
    return {
        "rss_per_connection_kib": (after - before) / connected,
        "connects_per_s": connected / elapsed,
        "server_rss_mib": after / 1024,
        "connected": connected,
        "elapsed_s": elapsed,
        **cpu_metrics(sum(r["cpu_s"] for r in ready), server_cpu, elapsed),
        "server_peak_rss_kib": peak,
    }


async def warm_up(port: int) -> None:
    from websockets.asyncio.client import connect

    async with connect(f"ws://127.0.0.1:{port}/", compression=None):
        pass


# -- end to end: Django views over HTTP/1.1 -------------------------------------------------

# The Django handler each side's users serve plain HTTP with (``e2e_app``'s names).
HTTP_APPS = {"ours": "channels_http_app", "upstream": "django_http_app"}


def django_http(spec: dict[str, Any]) -> dict[str, Any]:
    require("hypercorn", "anyio")
    if spec["side"] == "ours":
        require("channels.http")
    params = spec["params"]
    with serving(spec, params.get("app") or HTTP_APPS[spec["side"]]) as (port, server):
        import anyio

        cpu = tree_cpu_s(server.pid)
        metrics: dict[str, Any] = anyio.run(http_client, port, params, backend="asyncio")
        # Less sensitive to other load than the rates: for A/B work on a busy machine.
        metrics["server_cpu_us_per_request"] = (
            (tree_cpu_s(server.pid) - cpu) / metrics["requests"] * 1e6
        )
        metrics["server_peak_rss_kib"] = tree_peak_rss_kib(server.pid)
        return metrics


def expected_body(view: str, n: int, parts: int) -> bytes:
    """What ``e2e_app``'s view answers to ``?n=<n>``."""
    if view.endswith("stream"):
        return "".join(f"{n}:{index};" for index in range(parts)).encode()
    return json.dumps({"view": view, "n": n}).encode()


async def http_client(port: int, params: dict[str, Any]) -> dict[str, Any]:
    """``connections`` keep-alive HTTP/1.1 clients, each making ``requests`` GETs of
    ``/<view>`` back to back once all are connected and warmed up by one untimed request;
    every response's status and body are checked.

    A wrong answer raises (the run fails) rather than being counted.
    """
    import anyio
    from anyio.streams.buffered import BufferedByteReceiveStream

    view, parts = params["view"], params.get("parts", 0)
    connections = params["connections"]
    latencies: list[float] = []
    served = [0]
    connected = [0]
    go = anyio.Event()

    async def get(stream: Any, reader: Any, n: int) -> None:
        target = f"/{view}?n={n}&parts={parts}"
        await stream.send(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        status, headers, body = await read_response(reader)
        if status != 200:
            raise RuntimeError(f"GET {target}: status {status}: {body[:500]!r}")
        if body != expected_body(view, n, parts):
            raise RuntimeError(f"GET {target}: wrong body {body[:500]!r}")
        if headers.get("connection", "").lower() == "close":
            raise RuntimeError(f"GET {target}: the server closed the connection")

    async def client(index: int) -> None:
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            reader = BufferedByteReceiveStream(stream)
            # Untimed: the connection and the first request (lazy imports, URL resolver,
            # thread start-up) are not what this measures.
            await get(stream, reader, -1 - index)
            connected[0] += 1
            if connected[0] == connections:
                go.set()
            await go.wait()
            for request in range(params["requests"]):
                sent = time.perf_counter()
                await get(stream, reader, index * params["requests"] + request)
                latencies.append(time.perf_counter() - sent)
                served[0] += 1

    async with anyio.create_task_group() as group:
        for index in range(connections):
            group.start_soon(client, index)
        await go.wait()
        started = time.perf_counter()
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests_per_s": len(latencies) / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "requests": served[0],
        "elapsed_s": elapsed,
    }


async def read_response(reader: Any) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response: status, headers (lower-cased names) and the whole body,
    framed by ``Content-Length`` or chunked."""
    head = (await reader.receive_until(b"\r\n\r\n", 65536)).decode("latin-1")
    status_line, *lines = head.split("\r\n")
    version, status, *_ = status_line.split(" ", 2)
    if version != "HTTP/1.1":
        raise RuntimeError(f"unexpected status line {status_line!r}")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        return int(status), headers, await reader.receive_exactly(int(headers["content-length"]))
    if headers.get("transfer-encoding", "").lower() != "chunked":
        raise RuntimeError(f"response has no framing: {headers}")
    body = bytearray()
    while True:
        size = int((await reader.receive_until(b"\r\n", 1024)).split(b";")[0], 16)
        if size == 0:
            while await reader.receive_until(b"\r\n", 65536):  # trailers, then a blank line
                pass
            return int(status), headers, bytes(body)
        body += await reader.receive_exactly(size)
        if await reader.receive_exactly(2) != b"\r\n":
            raise RuntimeError("chunk not followed by CRLF")


# -- entry point ----------------------------------------------------------------------------

WORKLOADS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    # Upstream's default capacity (100) everywhere; the workloads pace themselves to it.
    "p2p": layer_workload("inmemory", {}, point_to_point),
    "fanout": layer_workload("inmemory", {}, fan_out),
    "many": layer_workload("inmemory", {}, many_channels),
    "redis-p2p": layer_workload("redis", {}, point_to_point),
    "redis-p2p-between": layer_workload("redis", {}, point_to_point_between_layers),
    "redis-fanout": layer_workload("redis", {}, fan_out),
    "fanout-history": layer_workload("inmemory", HISTORY_CONFIG, fan_out),
    "recovery": layer_workload("inmemory", HISTORY_CONFIG, recovery),
    "redis-fanout-history": layer_workload("redis", HISTORY_CONFIG, fan_out),
    "redis-recovery": layer_workload("redis", HISTORY_CONFIG, recovery),
    "redis-pubsub-p2p": layer_workload("redis-pubsub", {}, point_to_point),
    "redis-pubsub-fanout": layer_workload("redis-pubsub", {}, fan_out),
    "redis-cluster-p2p": layer_workload("redis-cluster", {}, point_to_point),
    "redis-cluster-fanout": layer_workload("redis-cluster", {}, fan_out),
    "multiprocess-fanout": multiprocess_fan_out,
    "ws-echo": websocket_echo,
    "ws-broadcast": ws_broadcast,
    "ws-idle": ws_idle,
    "django-http": django_http,
}


def versions() -> dict[str, str]:
    found = {}
    for name in ("channels", "channels-anyio", "channels-redis", "django", "anyio", "trio"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[name] = importlib.metadata.version(name)
    return found


def main() -> None:
    spec = json.loads(sys.argv[1])
    if spec.get("role") == "member":
        fan_out_member(spec)
        return
    result: dict[str, Any]
    baseline = peak_rss_kib()
    try:
        metrics = WORKLOADS[spec["workload"]](spec)
    except Unavailable as exc:
        result = {"ok": False, "unavailable": str(exc)}
    except Exception:
        result = {"ok": False, "error": traceback.format_exc()}
    else:
        result = {
            "ok": True,
            "metrics": metrics,
            "peak_rss_kib": metrics.pop("server_peak_rss_kib", None) or peak_rss_kib(),
            "startup_rss_kib": baseline,
        }
    import channels

    result["channels_file"] = channels.__file__
    result["versions"] = versions()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
