"""Iterating a sync iterator from async code, in batches, in one sync call; and an async
iterator in a task of its own, in batches, so that what it makes while the consumer is
busy goes out together."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable, Iterable
from typing import Generic, TypeVar

import anyio
import anyio.lowlevel

from ._threads import run_sync
from .utils import unwrap_exception_groups

__all__ = ["iterate_ahead", "iterate_in_thread"]

_R = TypeVar("_R")


class _Batches(Generic[_R]):
    """Items a thread produces, handed to the event loop in batches.

    The thread appends under a lock and wakes the loop only if the loop is waiting, so a
    fast iterator costs one wake-up per batch, not a round trip per item; it pauses while
    the items not yet taken weigh ``limit`` or more.
    """

    def __init__(
        self, limit: int, weight: Callable[[_R], int], token: anyio.lowlevel.EventLoopToken
    ) -> None:
        self._room = threading.Condition()
        self._pending: list[_R] = []
        self._load = 0
        self._limit = limit
        self._weight = weight
        self._token = token
        self._waiting: anyio.Event | None = None  # the loop waits on it for the next batch
        self._stopping = False
        self._finished = False

    def produce(self, items: Iterable[_R]) -> None:
        """Runs in the thread: the whole iteration, or until :meth:`stop`."""
        for item in items:
            with self._room:
                while self._load >= self._limit and not self._stopping:
                    self._room.wait()
                if self._stopping:
                    return
                self._pending.append(item)
                self._load += self._weight(item)
                waiting, self._waiting = self._waiting, None
            if waiting is not None:
                self._token.backend_class.run_sync_soon(waiting.set, (), self._token.native_token)

    def stop(self) -> None:
        with self._room:
            self._stopping = True
            self._room.notify()

    def finish(self) -> None:
        """Called on the loop once the thread is done: the last batch is the one pending."""
        with self._room:
            self._finished = True
            waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.set()

    async def batches(self) -> AsyncGenerator[list[_R]]:
        while True:
            with self._room:
                batch, self._pending, self._load = self._pending, [], 0
                self._room.notify()
                if not batch:
                    if self._finished:
                        return
                    waiting = self._waiting = anyio.Event()
            if batch:
                yield batch
            else:
                await waiting.wait()


def _one(item: object) -> int:
    return 1


@contextlib.asynccontextmanager
async def iterate_in_thread(
    items: Iterable[_R],
    *,
    limit: int = 64,
    weight: Callable[[_R], int] = _one,
    thread_sensitive: bool = True,
) -> AsyncIterator[AsyncIterator[list[_R]]]:
    """Iterate ``items`` in a thread (see the module docstring for which), in batches.

    ``async with iterate_in_thread(rows) as batches: async for batch in batches: ...``;
    each batch is every item produced since the previous one (at least one), so a fast
    iterator costs a wake-up per batch where ``run_sync(next, ...)`` would cost a round
    trip per item, and a slow one still delivers each item as soon as it exists. The whole
    iteration is one sync call; the thread pauses while the items not yet taken weigh
    ``limit`` or more (each weighs ``weight(item)``, 1 by default).

    An exception raised by the iterator is raised by ``async for`` after the items before
    it. Leaving the block early (a ``break``, a cancellation) tells the thread to stop
    after the item it is producing, and the block waits for that, since a sync call cannot
    be interrupted: nothing outlives it. The iterator is not closed here; its owner does.

    Inside the block, do not wait for a thread-sensitive call: with ``thread_sensitive``
    the thread it needs is the one producing the items.

    :raises ValueError: if ``limit`` is less than 1.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    batches = _Batches(limit, weight, anyio.lowlevel.current_token())
    failure: list[Exception] = []

    async def produce() -> None:
        try:
            await run_sync(batches.produce, items, thread_sensitive=thread_sensitive)
        except Exception as exc:
            failure.append(exc)  # before finish(): the consumer then sees both
        finally:
            batches.finish()

    async def consume() -> AsyncGenerator[list[_R]]:
        async with contextlib.aclosing(batches.batches()) as source:
            async for batch in source:
                yield batch
        if failure:
            raise failure.pop()

    with unwrap_exception_groups():
        async with anyio.create_task_group() as group:
            group.start_soon(produce)
            consumer = consume()
            try:
                yield consumer
            finally:
                batches.stop()
                with anyio.CancelScope(shield=True):
                    await consumer.aclose()
    if failure:
        raise failure.pop()


class _Ahead(Generic[_R]):
    """Items a task produces, handed to the consumer in batches (all on one event loop)."""

    def __init__(self, limit: int, weight: Callable[[_R], int]) -> None:
        self._pending: list[_R] = []
        self._load = 0
        self._limit = limit
        self._weight = weight
        self._ready: anyio.Event | None = None  # the consumer waits on it for items
        self._room: anyio.Event | None = None  # the producer waits on it for room
        self._finished = False

    async def produce(self, items: AsyncIterable[_R]) -> None:
        async for item in items:
            while self._load >= self._limit:
                self._room = room = anyio.Event()
                await room.wait()
            self._pending.append(item)
            self._load += self._weight(item)
            self._wake_consumer()

    def finish(self) -> None:
        self._finished = True
        self._wake_consumer()

    def _wake_consumer(self) -> None:
        ready, self._ready = self._ready, None
        if ready is not None:
            ready.set()

    async def batches(self) -> AsyncGenerator[list[_R]]:
        while True:
            batch, self._pending, self._load = self._pending, [], 0
            room, self._room = self._room, None
            if room is not None:
                room.set()
            if batch:
                yield batch
            elif self._finished:
                return
            else:
                self._ready = ready = anyio.Event()
                await ready.wait()


@contextlib.asynccontextmanager
async def iterate_ahead(
    items: AsyncIterable[_R], *, limit: int = 64, weight: Callable[[_R], int] = _one
) -> AsyncIterator[AsyncIterator[list[_R]]]:
    """Iterate ``items`` in a task of its own, in batches: :func:`iterate_in_thread` for
    an async iterator.

    Each batch is every item produced since the previous one (at least one): an
    iterator that makes many items without waiting, or makes them while the consumer
    is busy sending the last batch, costs the consumer one wake-up per batch, not one
    per item, and an item that is slow to come is still handed over as soon as it
    exists. The task pauses while the items not yet taken weigh ``limit`` or more.

    An exception raised by the iterator is raised by ``async for`` after the items
    before it. Leaving the block (a ``break``, a cancellation) cancels the task; the
    iterator is not closed here, its owner does that (after the block: it is no longer
    running then).

    :raises ValueError: if ``limit`` is less than 1.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    ahead = _Ahead(limit, weight)
    failure: list[Exception] = []
    # The producer's own scope, not the task group's: cancelling the group's would also
    # catch a cancellation from outside that is on its way out of the block.
    producing = anyio.CancelScope()

    async def produce() -> None:
        with producing:
            try:
                await ahead.produce(items)
            except Exception as exc:
                failure.append(exc)  # before finish(): the consumer then sees both
            # Not on a cancellation: the consumer is then being cancelled too, or leaving,
            # and must not take "finished" for the iterator's end (asyncio would let its
            # wait return, woken, rather than raise).
            ahead.finish()

    async def consume() -> AsyncGenerator[list[_R]]:
        async with contextlib.aclosing(ahead.batches()) as source:
            async for batch in source:
                yield batch
        if failure:
            raise failure.pop()

    with unwrap_exception_groups():
        async with anyio.create_task_group() as group:
            group.start_soon(produce)
            consumer = consume()
            try:
                yield consumer
            finally:
                producing.cancel()
                with anyio.CancelScope(shield=True):
                    await consumer.aclose()

    if failure:
        raise failure.pop()
