from __future__ import annotations

import inspect
from typing import Any

import pytest


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every async test runs once on asyncio and once on trio."""
    return request.param  # type: ignore[no-any-return]


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: Any) -> None:
    """Hand every ``async def`` test to anyio's plugin, so none can miss a backend."""
    if inspect.iscoroutinefunction(obj) and collector.istestfunction(obj, name):  # type: ignore[attr-defined]
        pytest.mark.anyio(obj)


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
