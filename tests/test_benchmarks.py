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
