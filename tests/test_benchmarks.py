"""The benchmark workloads (``benchmarks/workloads.py``) run correctly on this package.

``make bench`` is not part of CI; this keeps its workload code honest there, at sizes that
take milliseconds. Speed is not asserted: only that every message arrives, in order, and
that every HTTP response is checked (a wrong one fails the run).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio.lowlevel
import pytest

from channels.layers import InMemoryChannelLayer


@pytest.fixture(scope="module")
def workloads() -> ModuleType:
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "workloads.py"
    spec = importlib.util.spec_from_file_location("bench_workloads", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def test_point_to_point_delivers_everything_in_order(workloads: ModuleType) -> None:
    result = await workloads.point_to_point(InMemoryChannelLayer(), count=1_000)
    assert result["received"] == 1_000
    assert result["out_of_order"] == 0
    assert result["msgs_per_s"] > 0


@pytest.mark.parametrize(("members", "sends"), [(5, 30), (50, 3)])
async def test_fan_out_counts_deliveries_and_drops(
    workloads: ModuleType, members: int, sends: int
) -> None:
    result = await workloads.fan_out(InMemoryChannelLayer(), members=members, sends=sends)
    assert result["delivered"] + result["drops"] == members * sends
    assert result["drops"] == 0  # members keep up at the default capacity


class LaggingLayer(InMemoryChannelLayer):
    """Its receivers take a few scheduler turns to come back for each message."""

    async def receive(self, channel: str) -> dict[str, Any]:
        for _ in range(3):
            await anyio.lowlevel.checkpoint()
        return await super().receive(channel)


async def test_fan_out_counts_drops_when_members_lag(workloads: ModuleType) -> None:
    # Capacity 1 and members slower than the sender: some sends find a member's channel
    # full. They are counted as drops, and the run still ends.
    result = await workloads.fan_out(LaggingLayer(capacity=1), members=3, sends=20)
    assert result["drops"] > 0
    assert result["delivered"] + result["drops"] == 60


async def test_many_channels_reads_back_every_message(workloads: ModuleType) -> None:
    result = await workloads.many_channels(InMemoryChannelLayer(), channels=50, per_channel=10)
    assert result["out_of_order"] == 0
    assert result["receive_msgs_per_s"] > 0


# -- Django over HTTP: the harness's load generator against real hypercorn servers ----------

VIEWS = ["sync", "async", "sync-slow", "stream", "sync-stream"]


@pytest.fixture(scope="module")
def http_servers(workloads: ModuleType) -> Iterator[dict[str, int]]:
    """``channels.http`` on hypercorn-asyncio and hypercorn-trio, and the bare ASGI app."""
    servers = {
        "asyncio": ("asyncio", "channels_http_app"),
        "trio": ("trio", "channels_http_app"),
        "bare": ("asyncio", "bare_app"),
    }
    with contextlib.ExitStack() as stack:
        ports = {}
        for name, (backend, app) in servers.items():
            spec = {"backend": backend, "params": {"server": "hypercorn"}}
            ports[name], _ = stack.enter_context(workloads.serving(spec, app))
        yield ports


@pytest.mark.parametrize("view", VIEWS)
async def test_http_client_gets_every_answer_right(
    workloads: ModuleType, http_servers: dict[str, int], anyio_backend: str, view: str
) -> None:
    # The server runs on the test's backend, and so does the client.
    params = {"view": view, "parts": 3, "connections": 3, "requests": 4}
    result = await workloads.http_client(http_servers[anyio_backend], params)
    assert result["requests"] == 12
    assert 0 < result["p50_ms"] <= result["p99_ms"]


def messages(group: BaseException) -> list[str]:
    if isinstance(group, BaseExceptionGroup):
        return [text for exc in group.exceptions for text in messages(exc)]
    return [str(group)]


async def test_http_client_fails_on_an_error_status(
    workloads: ModuleType, http_servers: dict[str, int], anyio_backend: str
) -> None:
    params = {"view": "missing", "connections": 2, "requests": 2}
    with pytest.raises(BaseExceptionGroup) as caught:
        await workloads.http_client(http_servers[anyio_backend], params)
    assert any("status 404" in text for text in messages(caught.value))


async def test_http_client_fails_on_a_wrong_body(
    workloads: ModuleType, http_servers: dict[str, int]
) -> None:
    # The bare app answers every request as the sync view does; asked for the async view,
    # its answer is wrong and must fail the run rather than be counted.
    params = {"view": "async", "connections": 2, "requests": 2}
    with pytest.raises(BaseExceptionGroup) as caught:
        await workloads.http_client(http_servers["bare"], params)
    assert any("wrong body" in text for text in messages(caught.value))


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_django_http_workload_counts_every_request(workloads: ModuleType, backend: str) -> None:
    spec = {
        "side": "ours",
        "backend": backend,
        "params": {"server": "hypercorn", "view": "sync-slow", "connections": 4, "requests": 3},
    }
    result = workloads.django_http(spec)
    assert result["requests"] == 12
    assert result["server_peak_rss_kib"] > 0


# -- the WebSocket broadcast and idle workloads: real servers, the raw load generator --------


def load_module(name: str) -> ModuleType:
    path = Path(__file__).resolve().parent.parent / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_every_case_names_a_workload_and_every_new_case_is_there(workloads: ModuleType) -> None:
    run = load_module("run")
    ids = {case.id for case in run.CASES}
    assert {"ws-broadcast", "ws-broadcast-daphne", "ws-broadcast-bare", "ws-idle"} <= ids
    for case in run.CASES:
        assert case.workload in workloads.WORKLOADS, case.id
        assert set(case.quick) <= set(case.params) | {"parts"}, case.id


BROADCAST_QUICK = {"connections": 20, "processes": 2, "sends": 3, "payload": 16}


@pytest.mark.parametrize(
    ("server", "app"),
    [
        ("hypercorn", "broadcast_app"),
        ("hypercorn", "bare_broadcast_app"),
        ("channels", "broadcast_app"),
    ],
)
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_ws_broadcast_workload_counts_every_frame_at_every_client(
    workloads: ModuleType, backend: str, server: str, app: str
) -> None:
    spec = {"side": "ours", "backend": backend, "params": {"server": server, "app": app}}
    spec["params"].update(BROADCAST_QUICK)
    result = workloads.ws_broadcast(spec)
    assert result["connected"] == 20
    assert result["delivered"] == 20 * 3
    assert 0 < result["p50_ms"] <= result["p99_ms"]
    assert result["client_cpu_s"] > 0
    assert result["server_cpu_cores"] >= 0
    assert result["server_peak_rss_kib"] > 0


@pytest.mark.parametrize(("server", "app"), [("hypercorn", "idle_app"), ("hypercorn", "bare_app")])
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_ws_idle_workload_measures_memory_per_open_connection(
    workloads: ModuleType, backend: str, server: str, app: str
) -> None:
    params = {"server": server, "app": app, "connections": 40, "processes": 2, "settle_s": 0.1}
    result = workloads.ws_idle({"side": "ours", "backend": backend, "params": params})
    assert result["connected"] == 40
    assert result["connects_per_s"] > 0
    assert result["server_rss_mib"] > 0
    assert isinstance(result["rss_per_connection_kib"], float)


def test_the_open_files_limit_is_raised_up_to_the_hard_limit(workloads: ModuleType) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        workloads.raise_open_files_limit(1000)
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == min(1000, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_an_open_files_need_past_the_hard_limit_is_unavailable_not_a_crash(
    workloads: ModuleType,
) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        if hard == resource.RLIM_INFINITY:  # any need can be met: the limit only rises
            workloads.raise_open_files_limit(soft + 1)
            assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= soft + 1
        else:
            with pytest.raises(workloads.Unavailable, match="hard limit"):
                workloads.raise_open_files_limit(hard + 1)
            assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_load_generator_parses_frames_and_refuses_fragments() -> None:
    wsclient = load_module("wsclient")
    import socket as socket_module

    left, right = socket_module.socketpair()
    with left, right:
        connection = wsclient.Connection(left)
        long = b"y" * 300
        connection.buffer += (
            bytes([0x81, 5]) + b"hello" + bytes([0x82, 126]) + (300).to_bytes(2, "big")
        )
        connection.buffer += long + bytes([0x81, 10]) + b"part"  # the last one incomplete
        assert connection.frames() == [(0x1, b"hello"), (0x2, long)]
        assert connection.frames() == []
        connection.buffer += b"ial!!!"
        assert connection.frames() == [(0x1, b"partial!!!")]
        connection.buffer += bytes([0x01, 3]) + b"abc"  # no FIN bit: a fragment
        with pytest.raises(RuntimeError, match="fragmented"):
            connection.frames()


# -- Redis fan-out across processes (make bench's mp-fanout rows), on real servers ----------


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("layer", ["redis-pubsub", "redis-cluster"])
def test_multiprocess_fan_out_collects_every_delivery(
    redis_url: str, redis_cluster_urls: list[str], layer: str, backend: str
) -> None:
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "workloads.py"
    params = {"layer": layer, "processes": 2, "members": 6, "sends": 5, "rate": 200}
    spec = {
        "workload": "multiprocess-fanout",
        "side": "ours",
        "backend": backend,
        "params": params,
        "redis_url": redis_url,
        "redis_cluster": redis_cluster_urls,
    }
    done = subprocess.run(
        [sys.executable, str(path), json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=path.parent,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["ok"], result
    metrics = result["metrics"]
    assert metrics["delivered"] == 30
    assert metrics["drops"] == 0
    assert 0 < metrics["p50_ms"] <= metrics["p99_ms"]


async def test_fan_out_with_history_records_every_send(workloads: ModuleType) -> None:
    layer = InMemoryChannelLayer(**workloads.HISTORY_CONFIG)
    result = await workloads.fan_out(layer, members=5, sends=30)
    assert result["delivered"] == 150
    assert result["sends_per_s"] > 0
    history = await layer.group_history("bench-fanout")
    assert history.position is not None
    assert history.position.offset >= 30


async def test_recovery_replays_every_missed_message(workloads: ModuleType) -> None:
    result = await workloads.recovery(
        InMemoryChannelLayer(**workloads.HISTORY_CONFIG), missed=100, reads=3
    )
    assert result["recoveries_per_s"] > 0
    assert result["ms_per_recovery"] > 0


async def test_recovery_on_the_redis_core_layer(
    workloads: ModuleType, redis_url: str, prefix: str
) -> None:
    from channels.layers.redis import RedisChannelLayer

    layer = RedisChannelLayer(hosts=[redis_url], prefix=prefix, **workloads.HISTORY_CONFIG)
    try:
        result = await workloads.recovery(layer, missed=100, reads=2)
        assert result["recoveries_per_s"] > 0
    finally:
        await layer.flush()
        await layer.close()


async def test_a_failed_recovery_fails_the_run(workloads: ModuleType) -> None:
    small = {"group_history": {"bench-*": {"size": 50, "ttl": 600}}}
    with pytest.raises(RuntimeError, match="recovery failed"):
        await workloads.recovery(InMemoryChannelLayer(**small), missed=100, reads=1)
