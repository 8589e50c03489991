from __future__ import annotations

import functools
import inspect
import subprocess
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

# Every async test is cancelled after this long, on both backends. pytest-timeout's signal
# cannot interrupt a trio run (its alarm lands in the trio runner's host loop), so a test
# hung on trio would stall the whole suite; a cancel scope ends it as a TimeoutError.
ASYNC_TEST_DEADLINE = 25.0


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every async test runs once on asyncio and once on trio."""
    return request.param  # type: ignore[no-any-return]


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: Any) -> None:
    """Hand every ``async def`` test to anyio's plugin, so none can miss a backend."""
    if inspect.iscoroutinefunction(obj) and collector.istestfunction(obj, name):  # type: ignore[attr-defined]
        pytest.mark.anyio(obj)


def _with_deadline(test: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(test)
    async def run_with_deadline(*args: Any, **kwargs: Any) -> Any:
        with anyio.fail_after(ASYNC_TEST_DEADLINE):
            return await test(*args, **kwargs)

    return run_with_deadline


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if isinstance(item, pytest.Function) and inspect.iscoroutinefunction(item.obj):
            item.obj = _with_deadline(item.obj)


@pytest.fixture(autouse=True)
def fresh_channel_layers() -> Any:
    """Each test starts with newly built channel layers, so no state leaks between tests."""
    from channels.layers import channel_layers

    channel_layers.backends = {}
    yield
    channel_layers.backends = {}


@pytest.fixture(scope="session")
def redis_url() -> Any:
    """A Redis server for the layer tests (see tests/redis_server.py)."""
    from tests.redis_server import shared_url

    url, server = shared_url()
    yield url
    if server is not None:
        server.close()


@pytest.fixture
def private_redis() -> Any:
    """A Redis server of this test's own, which it may restart."""
    from tests.redis_server import RedisServer

    server = RedisServer()
    yield server
    server.close()


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own, so tests sharing a Redis never see each other."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def private_cluster() -> Any:
    """A Redis Cluster of the suite's own (six nodes), which tests may fail over, kill
    and reshard; each such test leaves it healthy again (see tests/redis_cluster.py)."""
    from tests.redis_cluster import Cluster

    # Free ports are found by binding and releasing them: on a busy machine another
    # process may take one before its node binds it. A new set of ports then does.
    for attempt in range(3):
        try:
            cluster = Cluster()
            break
        except (RuntimeError, subprocess.CalledProcessError):
            if attempt == 2:
                raise
    yield cluster
    cluster.close()


@pytest.fixture(scope="session")
def redis_cluster_urls(request: pytest.FixtureRequest) -> list[str]:
    """Startup URLs of a Redis Cluster: ``CHANNELS_TEST_REDIS_CLUSTER``, or our own."""
    from tests.redis_cluster import external_cluster_urls

    urls = external_cluster_urls()
    if urls:
        return urls
    cluster = request.getfixturevalue("private_cluster")
    return list(cluster.urls)
