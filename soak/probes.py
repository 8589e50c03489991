"""The probes: each does one kind of harm to a served project and judges what is left.

A probe gets a :class:`Target` (a running ``python -m channels.serving`` process of
:mod:`soak.project`, its port, its Redis and the :class:`Plan`) and returns an
:class:`Outcome`: PASS or FAIL, the figures that decided it, and the raw numbers (which
the harness's own tests read). Every figure comes from the server process (its
``/soak/stats``, its exit status) or from real sockets.

The bounds below are what "cleaned up in time" and "kept its latency" mean here. They are
generous for a loaded 2-core machine: a probe that fails them has found a real problem,
not a slow run.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from tests.redis_server import RedisServer
from tests.server_process import ServerProcess

from .client import PATIENCE, RawWebSocket, Stats, echo, get, open_echo, stats, wait_for_stats

#: Seconds a server gets to notice a FIN or an RST and clean up after it: the kernel tells
#: it at once, so anything close to this bound is a bug.
CLEANUP_BOUND = 2.0
#: Seconds the access log gets to hold every line of the probe's requests and connections
#: (a WebSocket's DISCONNECT line is written once its consumer has ended).
ACCESS_LOG_BOUND = 5.0
#: Seconds from the start of a bad frame's send until its consumer is gone (a 17 MiB
#: frame must arrive first), and until the client has the server's close frame.
BAD_FRAME_BOUND = 5.0
#: Seconds leftovers get to go after the churn, before what remains counts as leaked.
SETTLE_BOUND = 5.0
#: Beyond ping interval + ping timeout, seconds a frozen client may stay.
FROZEN_MARGIN = 2.0
#: Seconds a group gets to deliver to every member again after Redis is back.
RECOVERY_BOUND = 15.0
#: Beyond the graceful timeout, seconds a stop may take with a stuck client.
STOP_MARGIN = 2.0
#: RSS growth over the churn, after warm-up, still called flat (KiB).
RSS_GROWTH_LIMIT_KIB = 8 * 1024
#: A healthy client's worst round trip while a bad frame is handled, at most this many
#: times its p99 before, or the floor (ms), whichever is larger.
LATENCY_FACTOR = 10.0
LATENCY_FLOOR_MS = 250.0
#: Seconds of healthy round trips measured before the bad frame, and after its cleanup.
LATENCY_WINDOW = 0.5


@dataclass(frozen=True)
class Plan:
    """How hard the probes push: the full run, or the short form CI runs."""

    churn: int  # connect/echo/close cycles
    warmup: int  # cycles before the idle baseline is taken
    concurrency: int  # cycles at a time
    abrupt: int  # clients per abrupt-disconnect probe
    members: int  # group members in the Redis restart probes
    ping_interval: float
    ping_timeout: float
    graceful_timeout: float
    access: int = 50  # HTTP requests, and WebSocket connections, in the access-log probe


FULL = Plan(
    churn=3000,
    warmup=300,
    concurrency=10,
    abrupt=20,
    members=20,
    ping_interval=2.0,
    ping_timeout=2.0,
    graceful_timeout=2.0,
    access=200,
)
QUICK = Plan(
    churn=400,
    warmup=50,
    concurrency=5,
    abrupt=5,
    members=5,
    ping_interval=1.0,
    ping_timeout=1.0,
    graceful_timeout=2.0,
)


@dataclass
class Outcome:
    passed: bool
    figures: list[str]
    values: dict[str, Any] = field(default_factory=dict)


@dataclass
class Target:
    """A served soak project, as the probes see it."""

    process: ServerProcess
    port: int
    backend: str
    layer: str
    plan: Plan
    redis: RedisServer | None
    #: The server was started with ``--ping-interval``/``--ping-timeout``.
    pings: bool
    #: ``/soak/stats`` with no client connected, after the warm-up.
    idle: Stats = field(default_factory=dict)
    #: The file the server writes its access log to (``--access-log``), if it does.
    access_log: Path | None = None


# -- helpers ---------------------------------------------------------------------------------

#: The stats that must come back to a reference value once clients are gone.
LEFTOVERS = ("consumers", "consumers_alive", "memberships", "channels", "tasks")


def back_to(reference: Stats) -> Callable[[Stats], bool]:
    """Whether stats are back to ``reference`` (``consumers_alive`` if both counted it)."""
    return lambda current: all(
        current[key] == reference[key]
        for key in LEFTOVERS
        if current[key] is not None and reference[key] is not None
    )


def leftovers(current: Stats, reference: Stats) -> str:
    alive = ""
    if current["consumers_alive"] is not None and reference["consumers_alive"] is not None:
        alive = f" ({current['consumers_alive'] - reference['consumers_alive']} alive)"
    return (
        f"left: {current['consumers'] - reference['consumers']} consumers{alive}, "
        f"{current['memberships'] - reference['memberships']} members, "
        f"{current['channels'] - reference['channels']} channels, "
        f"{current['tasks'] - reference['tasks']:+d} tasks"
    )


async def settle(port: int) -> Stats:
    """Stats once no consumer runs or is alive and the task count has held still for a
    second (tasks of closed connections may take a moment to end), at most 10 s."""
    await wait_for_stats(
        port, lambda s: s["consumers"] == s["consumers_alive"] == 0, 10, collect=True
    )
    return await steady(port)


async def steady(port: int) -> Stats:
    """Stats once the task count has held still for a second (at most 10 s): the
    reference a probe compares with, taken when no earlier connection is still ending."""
    deadline = time.monotonic() + 10
    current = await stats(port, collect=True)
    still_since = time.monotonic()
    while time.monotonic() - still_since < 1.0 and time.monotonic() < deadline:
        await anyio.sleep(0.25)
        previous, current = current, await stats(port, collect=True)
        if current["tasks"] != previous["tasks"]:
            still_since = time.monotonic()
    return current


async def cycles(port: int, count: int, concurrency: int) -> None:
    """``count`` connect/echo/close cycles, ``concurrency`` at a time."""
    remaining = [count]

    async def worker() -> None:
        while remaining[0] > 0:
            remaining[0] -= 1
            ws = await open_echo(port)
            try:
                await echo(ws, remaining[0])
            finally:
                await ws.close()

    async with anyio.create_task_group() as group:
        for _ in range(concurrency):
            group.start_soon(worker)


async def raw_sockets(port: int, count: int) -> list[RawWebSocket]:
    return [await anyio.to_thread.run_sync(RawWebSocket, port) for _ in range(count)]


async def joined(port: int, reference: Stats, count: int) -> Stats:
    """Wait until ``count`` more consumers than ``reference`` run and are in the group."""
    ok, _, current = await wait_for_stats(
        port,
        lambda s: (
            s["consumers"] == reference["consumers"] + count
            and s["memberships"] == reference["memberships"] + count
        ),
        PATIENCE,
    )
    if not ok:
        raise RuntimeError(f"{count} clients did not all join: {current}")
    return current


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f} MiB"


# -- connection churn ------------------------------------------------------------------------


async def churn(target: Target) -> Outcome:
    plan, port = target.plan, target.port
    rss = [target.idle["rss_kib"]]
    started = time.monotonic()
    for _ in range(4):
        await cycles(port, plan.churn // 4, plan.concurrency)
        rss.append((await stats(port))["rss_kib"])
    rate = (plan.churn // 4 * 4) / (time.monotonic() - started)
    clean, waited, left = await wait_for_stats(
        port, back_to(target.idle), SETTLE_BOUND, collect=True
    )
    rss.append(left["rss_kib"])  # once what was left has gone (or the bound has passed)
    growth = rss[-1] - rss[0]
    flat = growth <= RSS_GROWTH_LIMIT_KIB
    figures = [
        f"{plan.churn // 4 * 4} cycles, {rate:.0f}/s",
        leftovers(left, target.idle) + (f" ({waited:.1f} s after)" if clean else ""),
        "RSS by quarter, settled: " + " ".join(f"{kib / 1024:.1f}" for kib in rss) + " MiB",
        f"({growth:+d} KiB after warm-up, limit {RSS_GROWTH_LIMIT_KIB // 1024} MiB)",
    ]
    values = {
        "cycles": plan.churn // 4 * 4,
        "per_s": rate,
        "rss_kib": rss,
        **{f"{key}_left": left[key] - target.idle[key] for key in LEFTOVERS},
        "clean_after_s": waited if clean else None,
    }
    return Outcome(clean and flat, figures, values)


# -- abrupt disconnects ----------------------------------------------------------------------


async def leave_abruptly(target: Target, how: str) -> Outcome:
    """``abrupt`` raw clients join, then all leave by ``how`` (``fin`` or ``rst``)."""
    port, count = target.port, target.plan.abrupt
    sockets = await raw_sockets(port, count)
    await joined(port, target.idle, count)
    for sock in sockets:
        sock.leave_with_fin() if how == "fin" else sock.leave_with_rst()
    clean, took, left = await wait_for_stats(port, back_to(target.idle), CLEANUP_BOUND)
    figure = f"{count} cleaned up in {took:.2f} s" if clean else leftovers(left, target.idle)
    return Outcome(
        clean,
        [figure, f"bound {CLEANUP_BOUND:g} s"],
        {"cleaned": clean, "seconds": took, "consumers_left": left["consumers"]},
    )


async def fin(target: Target) -> Outcome:
    return await leave_abruptly(target, "fin")


async def rst(target: Target) -> Outcome:
    return await leave_abruptly(target, "rst")


async def frozen(target: Target) -> Outcome:
    """Raw clients that never read again, so never answer a ping: the server's pings
    must find them dead within ping interval + ping timeout."""
    plan, port, count = target.plan, target.port, target.plan.abrupt
    bound = plan.ping_interval + plan.ping_timeout + FROZEN_MARGIN
    sockets = await raw_sockets(port, count)
    try:
        await joined(port, target.idle, count)
        clean, took, left = await wait_for_stats(port, back_to(target.idle), bound)
    finally:
        for sock in sockets:
            sock.leave_with_rst()
    figures = [
        f"{count} cleaned up in {took:.2f} s"
        if clean
        else f"{left['consumers'] - target.idle['consumers']}/{count} still served "
        f"after {took:.1f} s",
        f"bound {bound:.0f} s (ping {plan.ping_interval:g} + {plan.ping_timeout:g} s)",
    ]
    if not target.pings:
        figures.append("channels.serving has no --ping-interval")
    if not clean:  # what is left goes now that the sockets are reset
        await wait_for_stats(port, back_to(target.idle), CLEANUP_BOUND)
    return Outcome(clean, figures, {"cleaned": clean, "seconds": took})


# -- bad frames ------------------------------------------------------------------------------


class Healthy:
    """A well-behaved client doing echo round trips back to back, timing each."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.samples: list[tuple[float, float]] = []  # (sent at, round trip in s)
        self.error: BaseException | None = None

    async def run(self) -> None:
        n = 0
        try:
            while True:
                sent = time.monotonic()
                await echo(self.ws, n)
                self.samples.append((sent, time.monotonic() - sent))
                n += 1
                await anyio.sleep(0.005)
        except Exception as exc:  # what went wrong is the probe's finding
            self.error = exc

    def latencies_ms(self, start: float, end: float) -> list[float]:
        return sorted(rtt * 1000 for sent, rtt in self.samples if start <= sent < end)


def p99(values: list[float]) -> float:
    return values[min(len(values) - 1, int(len(values) * 0.99))] if values else float("nan")


BAD_FRAMES: dict[str, Callable[[], str | bytes]] = {
    "not-json": lambda: "this is { not JSON",
    "binary": lambda: b"\x00\xff" * 64,
    # Valid JSON, too big: hypercorn's limit is 16 MiB.
    "huge": lambda: json.dumps({"echo": "x" * (17 << 20)}),
    "nested": lambda: "[" * 100_000 + "]" * 100_000,
}


async def bad_frame(target: Target, kind: str) -> Outcome:
    """One client sends a bad frame while a healthy one does round trips: the bad one
    alone is closed, its consumer cleaned up, and the healthy one keeps its latency."""
    port = target.port
    frame = BAD_FRAMES[kind]()
    async with contextlib.AsyncExitStack() as stack:
        healthy = Healthy(await open_echo(port))
        stack.push_async_callback(healthy.ws.close)
        group = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(group.cancel_scope.cancel)
        group.start_soon(healthy.run)
        await joined(port, target.idle, 1)
        with_healthy = await steady(port)
        offender = await open_echo(port)
        stack.push_async_callback(offender.close)
        await joined(port, target.idle, 2)
        sent_at = time.monotonic()
        with contextlib.suppress(ConnectionClosed):  # a server may close while it arrives
            await offender.send(frame)
        clean, _, left = await wait_for_stats(port, back_to(with_healthy), BAD_FRAME_BOUND)
        cleaned_in = time.monotonic() - sent_at
        # The server's close frame, as the client got it. (Not the end of the closing
        # handshake: with a frame the server refused half-read, that is up to the client.)
        with anyio.move_on_after(max(0.0, sent_at + BAD_FRAME_BOUND - time.monotonic())):
            # websockets has no event for "close frame received"; poll its protocol state.
            while offender.protocol.close_rcvd is None:  # noqa: ASYNC110
                await anyio.sleep(0.01)
        received = offender.protocol.close_rcvd
        close_code = None if received is None else received.code
        offender.transport.abort()
        await anyio.sleep(LATENCY_WINDOW)
        ended_at = time.monotonic()
        before = healthy.latencies_ms(sent_at - LATENCY_WINDOW, sent_at)
        during = healthy.latencies_ms(sent_at, ended_at)
    limit = max(LATENCY_FACTOR * p99(before), LATENCY_FLOOR_MS)
    worst = during[-1] if during else float("inf")
    kept = healthy.error is None and worst <= limit
    figures = [
        f"closed with {close_code}" if close_code is not None else "no close frame",
        f"consumer gone in {cleaned_in:.2f} s" if clean else leftovers(left, with_healthy),
        f"healthy: p99 {p99(before):.1f} -> worst {worst:.1f} ms"
        if healthy.error is None
        else f"healthy client failed: {healthy.error!r}",
    ]
    values = {
        "close_code": close_code,
        "cleaned": clean,
        "healthy_error": repr(healthy.error) if healthy.error else None,
        "healthy_round_trips": len(during),
        "healthy_worst_ms": worst,
    }
    return Outcome(close_code is not None and clean and kept, figures, values)


def bad_frame_probe(kind: str) -> Callable[[Target], Awaitable[Outcome]]:
    async def probe(target: Target) -> Outcome:
        return await bad_frame(target, kind)

    return probe


# -- Redis restarts --------------------------------------------------------------------------


class Member:
    """A client in the group, keeping every broadcast it receives."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.broadcasts: list[str] = []
        self._news = anyio.Event()

    async def run(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for frame in self.ws:
                message = json.loads(frame)
                if "broadcast" in message:
                    self.broadcasts.append(message["broadcast"])
                    self._news.set()

    def got(self, tag: str) -> bool:
        return any(text.startswith(tag) for text in self.broadcasts)

    async def wait_for(self, tag: str) -> None:
        while not self.got(tag):
            self._news = anyio.Event()
            await self._news.wait()


async def broadcast_until(port: int, members: list[Member], tag: str, bound: float) -> float:
    """Broadcast ``tag-N`` every quarter second until every member got one; the seconds
    that took, or ``inf`` after ``bound``."""
    started = time.monotonic()
    n = 0
    while time.monotonic() - started < bound:
        with contextlib.suppress(OSError):
            await get(port, f"/soak/broadcast?text={tag}-{n}")
        n += 1
        with anyio.move_on_after(0.25):
            for member in members:
                await member.wait_for(tag)
        if all(member.got(tag) for member in members):
            return time.monotonic() - started
    return float("inf")


async def redis_restart(target: Target, persist: bool) -> Outcome:
    if target.redis is None or target.layer == "memory":
        return Outcome(False, ["needs a Redis layer"])
    port, count = target.port, target.plan.members
    async with contextlib.AsyncExitStack() as stack:
        members = [Member(await open_echo(port)) for _ in range(count)]
        for member in members:
            stack.push_async_callback(member.ws.close)
        group = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(group.cancel_scope.cancel)
        for member in members:
            group.start_soon(member.run)
        before = await joined(port, target.idle, count)
        if await broadcast_until(port, members, "before", PATIENCE) == float("inf"):
            return Outcome(False, ["the group did not deliver before the restart"])
        down_at = time.monotonic()
        await anyio.to_thread.run_sync(lambda: target.redis.restart(persist=persist))  # type: ignore[union-attr]
        down = time.monotonic() - down_at
        took = await broadcast_until(port, members, "after", RECOVERY_BOUND)
        reached = sum(member.got("after") for member in members)
        after = await stats(port)
        still_open = sum(m.ws.close_code is None for m in members)
        fresh_ok = True
        try:
            with anyio.fail_after(PATIENCE):
                ws = await open_echo(port)
                try:
                    await echo(ws, "after restart")
                finally:
                    await ws.close()
        except Exception:
            fresh_ok = False
    recovered = took != float("inf")
    figures = [
        f"Redis down {down:.2f} s",
        f"{reached}/{count} members reached"
        + (f" {took:.2f} s after" if recovered else f" in {RECOVERY_BOUND:.0f} s"),
        f"memberships {before['memberships'] - target.idle['memberships']} -> "
        f"{after['memberships'] - target.idle['memberships']}",
    ]
    if still_open < count:
        figures.append(f"{count - still_open} members were disconnected")
    if not fresh_ok:
        figures.append("a new connection failed")
    values = {"reached": reached, "seconds": took, "still_open": still_open, "fresh_ok": fresh_ok}
    passed = recovered and still_open == count and fresh_ok
    await settle(port)
    return Outcome(passed, figures, values)


async def redis_restart_persisted(target: Target) -> Outcome:
    return await redis_restart(target, persist=True)


async def redis_restart_emptied(target: Target) -> Outcome:
    return await redis_restart(target, persist=False)


# -- stopping --------------------------------------------------------------------------------


async def stop_with_stuck_client(target: Target) -> Outcome:
    """SIGTERM while the server is blocked writing to a client that stopped reading; the
    process must end within the graceful timeout plus a margin, with status 0, and a
    healthy client must get its 1001. This probe ends the server."""
    plan, port = target.plan, target.port
    bound = plan.graceful_timeout + STOP_MARGIN
    healthy = await open_echo(port)
    await echo(healthy, "before the stop")
    stuck = await anyio.to_thread.run_sync(RawWebSocket, port)
    stuck.send_text(json.dumps({"flood": 65536}))
    await anyio.sleep(1.0)  # long enough to fill the socket's buffers both ends
    stopped_at = time.monotonic()
    target.process.send_signal(signal.SIGTERM)
    with anyio.move_on_after(bound + 3):
        await healthy.wait_closed()
    healthy_code = healthy.close_code
    process = target.process.process

    def wait_exit() -> int | None:
        try:
            return process.wait(timeout=max(0.0, bound + 3 - (time.monotonic() - stopped_at)))
        except subprocess.TimeoutExpired:
            return None

    code = await anyio.to_thread.run_sync(wait_exit)
    took = time.monotonic() - stopped_at
    stuck.leave_with_rst()
    ended = code is not None and took <= bound
    figures = [
        f"exited {code} after {took:.1f} s" if code is not None else f"still running {took:.0f} s",
        f"bound {bound:.0f} s (graceful {plan.graceful_timeout:g} + {STOP_MARGIN:g} s)",
        f"healthy client closed with {healthy_code}",
    ]
    values = {"exit_code": code, "seconds": took, "healthy_code": healthy_code}
    return Outcome(ended and code == 0 and healthy_code == 1001, figures, values)


# -- the access log --------------------------------------------------------------------------

#: The lines of ``--access-log``: Django's runserver format, ``[date] `` then daphne's line.
ACCESS_LINE = re.compile(
    r"\[\d\d/[A-Z][a-z]{2}/\d{4} \d\d:\d\d:\d\d\] (?:"
    r"HTTP (?P<method>GET) (?P<path>/\S*) (?P<status>\d{3}) \[\d+\.\d\d, (?P<client>[\d.]+:\d+)\]"
    r"|WebSocket (?P<event>HANDSHAKING|CONNECT|REJECT|DISCONNECT) (?P<ws_path>/\S*) "
    r"\[(?P<ws_client>[\d.]+:\d+)\])"
)


def access_lines(log: Path, offset: int) -> list[str]:
    with log.open("rb") as file:
        file.seek(offset)
        return file.read().decode("utf-8").splitlines()


async def access_log(target: Target) -> Outcome:
    """``access`` HTTP requests and ``access`` WebSocket connections (connect, echo,
    close): the log must hold one line per request and three per connection
    (HANDSHAKING, CONNECT, DISCONNECT, each naming that connection's client), in
    runserver's format, and nothing else. Counted, not timed."""
    if target.access_log is None:
        return Outcome(False, ["the server was started without --access-log"])
    log, count, port = target.access_log, target.plan.access, target.port
    offset = log.stat().st_size  # the warm-up's lines are before this
    for n in range(count):
        status, _ = await get(port, f"/soak/broadcast?text=access-{n}")
        if status != 200:
            return Outcome(False, [f"/soak/broadcast answered {status}"])
    for n in range(count):
        ws = await open_echo(port)
        try:
            await echo(ws, n)
        finally:
            await ws.close()
    expected = {"HTTP": count, "HANDSHAKING": count, "CONNECT": count, "DISCONNECT": count}
    started = time.monotonic()
    while True:
        lines = access_lines(log, offset)
        counted = {"HTTP": 0, "HANDSHAKING": 0, "CONNECT": 0, "DISCONNECT": 0, "REJECT": 0}
        malformed: list[str] = []
        clients: dict[str, set[str]] = {}
        for line in lines:
            match = ACCESS_LINE.fullmatch(line)
            if match is None:
                malformed.append(line)
            elif match["event"] is None and match["path"].startswith("/soak/stats"):
                continue  # the harness's last look before the probe may land after offset
            elif match["event"] is None:
                ok = match["path"].startswith("/soak/broadcast?") and match["status"] == "200"
                counted["HTTP"] += 1
                if not ok:
                    malformed.append(line)
            else:
                counted[match["event"]] += 1
                clients.setdefault(match["ws_client"], set()).add(match["event"])
                if match["ws_path"] != "/ws/echo/":
                    malformed.append(line)
        done = all(counted[key] >= value for key, value in expected.items())
        if done or time.monotonic() - started > ACCESS_LOG_BOUND:
            break
        await anyio.sleep(0.05)
    whole = [client for client, events in clients.items() if len(events) == 3]
    exact = all(counted[key] == value for key, value in expected.items())
    passed = exact and not counted["REJECT"] and not malformed and len(whole) == count
    figures = [
        f"{count} requests -> {counted['HTTP']} HTTP lines",
        f"{count} WebSockets -> {counted['HANDSHAKING']} HANDSHAKING, "
        f"{counted['CONNECT']} CONNECT, {counted['DISCONNECT']} DISCONNECT",
    ]
    if len(whole) != count:
        figures.append(f"{len(whole)}/{count} clients with all three lines")
    if counted["REJECT"]:
        figures.append(f"{counted['REJECT']} REJECT")
    if malformed:
        figures.append(f"{len(malformed)} lines not as expected, first: {malformed[0][:120]!r}")
    values = {"counted": counted, "malformed": malformed[:5], "whole_clients": len(whole)}
    return Outcome(passed, figures, values)
