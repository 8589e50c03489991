"""Moving between sync and async code, and running a worker."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, assert_type

from channels.concurrency import SyncToAsync, async_to_sync, run_sync, sync_to_async
from channels.db import DatabaseSyncToAsync, aclose_old_connections, database_sync_to_async
from channels.layers import get_channel_layer
from channels.worker import Worker

from .consumers import TaskConsumer


def count_rows(table: str, *, limit: int = 10) -> int:
    return limit


async def fetch(url: str) -> bytes:
    return url.encode()


@sync_to_async
def decorated(flag: bool) -> str:
    return str(flag)


@sync_to_async(thread_sensitive=False)
def decorated_with_arguments(value: float) -> float:
    return value


@database_sync_to_async
def get_name(pk: int) -> str:
    return str(pk)


async def from_async_code() -> None:
    # The wrapper keeps the signature (parameter names too, so assert_type cannot spell
    # it): it is a callable taking the same arguments and returning an awaitable.
    wrapped: Callable[[str], Awaitable[int]] = sync_to_async(count_rows)
    assert isinstance(wrapped, SyncToAsync)
    assert_type(await sync_to_async(count_rows)("users", limit=5), int)
    assert_type(await decorated(True), str)
    assert_type(await decorated_with_arguments(1.5), float)
    assert_type(await run_sync(count_rows, "users", thread_sensitive=False), int)
    assert isinstance(get_name, DatabaseSyncToAsync)
    assert_type(await get_name(1), str)
    assert_type(await database_sync_to_async(count_rows)("users"), int)
    await aclose_old_connections()
    await decorated("yes")  # type: ignore[arg-type]
    await sync_to_async(count_rows)(limit=5)  # type: ignore[call-arg]


def from_sync_code() -> None:
    fetch_now = async_to_sync(fetch)
    as_callable: Callable[[str], bytes] = fetch_now
    del as_callable
    assert_type(fetch_now("https://example.com"), bytes)
    assert_type(async_to_sync(fetch, backend="trio")("x"), bytes)
    async_to_sync(count_rows)  # type: ignore[arg-type]


async def method_decorators() -> Callable[[int], Coroutine[Any, Any, str]]:
    class Repository:
        @database_sync_to_async
        def name_of(self, pk: int) -> str:
            return str(pk)

    assert_type(await Repository().name_of(1), str)
    return Repository().name_of


def start_worker() -> None:
    worker = Worker(TaskConsumer.as_asgi(), ["thumbnails"], get_channel_layer())
    assert_type(worker.channels, list[str])
    worker.run(backend="trio")
    Worker(TaskConsumer.as_asgi(), ["thumbnails"], "default")  # type: ignore[arg-type]
