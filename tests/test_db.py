"""The ORM bridge: queries from async code, connection hygiene, Django's test transactions."""

from __future__ import annotations

import threading

import pytest
from django.db import connection
from django.test import TestCase

from channels.concurrency import async_to_sync, sync_to_async
from channels.consumer import AsyncConsumer, SyncConsumer
from channels.db import aclose_old_connections, close_old_connections, database_sync_to_async
from channels.exceptions import StopConsumer
from channels.types import Message

from .harness import feed_and_run
from .testapp.models import Note

pytestmark = pytest.mark.django_db(transaction=True)


def worker_connection_is_open() -> bool:
    """Whether the thread-sensitive worker holds an open DB connection (asked there)."""
    return connection.connection is not None


@database_sync_to_async
def add_note(text: str) -> int:
    return Note.objects.create(text=text).pk


async def test_queries_from_async_code_as_decorator_and_wrapper() -> None:
    first = await add_note("one")
    second = await database_sync_to_async(Note.objects.create)(text="two")
    texts = await database_sync_to_async(
        lambda: list(Note.objects.order_by("pk").values_list("text", flat=True))
    )()
    assert texts == ["one", "two"]
    assert second.pk > first


async def test_connections_are_closed_before_and_after_each_call() -> None:
    # CONN_MAX_AGE is 0 (Django's default), so a connection is stale once a call ends.
    await sync_to_async(lambda: Note.objects.count())()
    assert await sync_to_async(worker_connection_is_open)()

    @database_sync_to_async
    def open_at_start_then_query() -> bool:
        was_open = worker_connection_is_open()
        Note.objects.count()
        return was_open

    assert await open_at_start_then_query() is False
    assert await sync_to_async(worker_connection_is_open)() is False


async def test_aclose_old_connections_closes_the_workers_stale_connection() -> None:
    await sync_to_async(lambda: Note.objects.count())()
    assert await sync_to_async(worker_connection_is_open)()
    await aclose_old_connections()
    assert await sync_to_async(worker_connection_is_open)() is False


@pytest.fixture
def only_workers_hold_connections(transactional_db: None) -> None:
    """Close the test thread's own connection (opened to set the database up), so that
    whether *any* thread holds a connection, which consumers check, is down to the code
    under test."""
    connection.close()
    close_old_connections()


@pytest.mark.usefixtures("only_workers_hold_connections")
async def test_consumers_close_stale_connections_before_each_handler(anyio_backend: str) -> None:
    class Quiet(AsyncConsumer):
        async def test_nothing(self, message: Message) -> None:
            raise StopConsumer

    openers = [sync_to_async(lambda: Note.objects.count())]
    if anyio_backend == "asyncio":
        openers.append(Note.objects.acount)  # Django's async ORM queries on that thread too
    for open_connection in openers:
        await open_connection()
        assert await sync_to_async(worker_connection_is_open)()
        await feed_and_run(Quiet.as_asgi(), {"type": "test"}, {"type": "test.nothing"})
        assert await sync_to_async(worker_connection_is_open)() is False


async def test_sync_handler_awaiting_async_orm_code_does_not_deadlock(anyio_backend: str) -> None:
    """A sync handler calls async service code, which uses the ORM: on asyncio through
    Django's async methods (asgiref's bridge), on trio through ours. Both must come back
    to the handler's thread, which is the one waiting."""

    async def count_notes() -> int:
        if anyio_backend == "asyncio":
            return await Note.objects.acount()
        return await database_sync_to_async(Note.objects.count)()

    class Counter(SyncConsumer):
        def test_count(self, message: Message) -> None:
            self.send({"type": "test.count", "count": async_to_sync(count_notes)()})
            raise StopConsumer

    await add_note("one")
    output = await feed_and_run(Counter.as_asgi(), {"type": "test"}, {"type": "test.count"})
    assert output == [{"type": "test.count", "count": 1}]


class NoteCounter(SyncConsumer):
    def test_count(self, message: Message) -> None:
        self.send({"type": "test.count", "count": Note.objects.count()})
        raise StopConsumer


async def test_sync_consumer_uses_the_orm_directly() -> None:
    await add_note("hello")
    output = await feed_and_run(NoteCounter.as_asgi(), {"type": "test"}, {"type": "test.count"})
    assert output == [{"type": "test.count", "count": 1}]


class TestCaseTransactions(TestCase):
    """Django's async test methods run inside a transaction on the test's thread; the
    code under test must see that transaction, or fixtures would be invisible to it."""

    async def test_thread_sensitive_calls_see_the_test_transaction(self) -> None:
        await Note.objects.acreate(text="made in the test")
        texts = await database_sync_to_async(
            lambda: list(Note.objects.values_list("text", flat=True))
        )()
        assert texts == ["made in the test"]
        ran_on = await sync_to_async(threading.get_ident)()
        assert ran_on == threading.main_thread().ident

    async def test_consumers_see_the_test_transaction(self) -> None:
        await Note.objects.acreate(text="fixture")
        output = await feed_and_run(
            NoteCounter.as_asgi(), {"type": "test"}, {"type": "test.count"}
        )
        assert output == [{"type": "test.count", "count": 1}]
