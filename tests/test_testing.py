"""The testing communicators: running an application beside the test, on both backends."""

from __future__ import annotations

import asyncio  # ApplicationCancelled is an asyncio.CancelledError, as asgiref's is
import concurrent.futures
import contextvars
import gc
import json
from typing import Any

import anyio
import pytest
from django.db import connection
from django.test import TestCase

from channels.consumer import AsyncConsumer, SyncConsumer
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import WebsocketConsumer
from channels.testing import (
    ApplicationCancelled,
    ApplicationCommunicator,
    HttpCommunicator,
    WebsocketCommunicator,
)
from channels.types import Message, Receive, Scope, Send

from .testapp.models import Note

SCOPE = {"type": "test"}
visible_in_app: contextvars.ContextVar[str] = contextvars.ContextVar("visible_in_app", default="")


class Echo(AsyncConsumer):
    async def test_echo(self, message: Message) -> None:
        await self.send({"type": "test.echoed", "value": message["value"]})

    async def test_crash(self, message: Message) -> None:
        raise KeyError(message["value"])

    async def test_stop(self, message: Message) -> None:
        raise StopConsumer


class Lifecycle:
    """An app that records how it ended."""

    def __init__(self) -> None:
        self.started = anyio.Event()
        self.ended = anyio.Event()
        self.cancelled = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.started.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            self.cancelled = True
            raise
        finally:
            self.ended.set()


async def test_plain_use_talks_to_the_app_and_sees_it_stop() -> None:
    communicator = ApplicationCommunicator(Echo.as_asgi(), SCOPE)
    await communicator.send_input({"type": "test.echo", "value": 1})
    await communicator.send_input({"type": "test.echo", "value": 2})
    assert await communicator.receive_output() == {"type": "test.echoed", "value": 1}
    assert await communicator.receive_output() == {"type": "test.echoed", "value": 2}
    assert not communicator.future.done()
    await communicator.send_input({"type": "test.stop"})
    await communicator.wait()
    assert communicator.future.done()
    assert communicator.future.result() is None
    assert await communicator.future is None


async def test_a_dropped_communicator_cancels_its_app() -> None:
    app = Lifecycle()
    communicator = ApplicationCommunicator(app, SCOPE)
    assert await communicator.receive_nothing(timeout=0.01)
    await app.started.wait()
    del communicator
    gc.collect()
    with anyio.fail_after(2):
        await app.ended.wait()
    assert app.cancelled


async def test_async_with_runs_the_app_in_a_task_group_and_cancels_it_on_exit() -> None:
    app = Lifecycle()
    async with ApplicationCommunicator(app, SCOPE) as communicator:
        await app.started.wait()
        assert not communicator.future.done()
    assert app.ended.is_set()
    assert app.cancelled
    assert communicator.future.cancelled()
    with pytest.raises(ApplicationCancelled):
        communicator.future.result()


async def test_async_with_reraises_a_crash_nobody_saw() -> None:
    crashing = anyio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await receive()
            raise KeyError("unseen")
        finally:
            crashing.set()

    async def crash_unseen() -> None:
        async with ApplicationCommunicator(app, SCOPE) as communicator:
            await communicator.send_input({"type": "go"})
            await crashing.wait()

    with pytest.raises(KeyError, match="unseen"):
        await crash_unseen()

    # Once a call has raised it, leaving the block does not raise it again.
    async with ApplicationCommunicator(Echo.as_asgi(), SCOPE) as communicator:
        await communicator.send_input({"type": "test.crash", "value": "seen"})
        with pytest.raises(KeyError, match="seen"):
            await communicator.receive_output()


async def test_the_apps_own_exception_reaches_every_call_unwrapped() -> None:
    communicator = ApplicationCommunicator(Echo.as_asgi(), SCOPE)
    await communicator.send_input({"type": "test.crash", "value": "boom"})
    with pytest.raises(KeyError, match="boom") as raised:
        await communicator.receive_output()
    assert type(raised.value) is KeyError
    with pytest.raises(KeyError, match="boom"):
        await communicator.send_input({"type": "test.echo", "value": 1})
    with pytest.raises(KeyError, match="boom"):
        await communicator.receive_nothing()
    with pytest.raises(KeyError, match="boom"):
        await communicator.wait()
    assert communicator.future.exception() is raised.value
    with pytest.raises(KeyError, match="boom"):
        await communicator.future


async def test_a_receive_output_timeout_cancels_the_app_as_asgiref_does() -> None:
    communicator = ApplicationCommunicator(Echo.as_asgi(), SCOPE)
    await communicator.send_input({"type": "test.echo", "value": "first"})
    assert (await communicator.receive_output())["value"] == "first"
    with pytest.raises(TimeoutError, match=r"sent nothing within 0\.05 seconds"):
        await communicator.receive_output(timeout=0.05)
    assert communicator.future.cancelled()
    # Channels' own suite expects asyncio.CancelledError from the next call.
    with pytest.raises(asyncio.CancelledError):
        await communicator.send_input({"type": "test.echo", "value": "too late"})
    with pytest.raises(ApplicationCancelled):
        await communicator.receive_output()
    with pytest.raises(ApplicationCancelled):
        await communicator.receive_nothing()
    with pytest.raises(ApplicationCancelled):
        communicator.future.result()
    await communicator.wait()  # ended: nothing to wait for, nothing raised


async def test_receive_output_after_the_app_ended_normally() -> None:
    communicator = ApplicationCommunicator(Echo.as_asgi(), SCOPE)
    await communicator.send_input({"type": "test.echo", "value": 1})
    await communicator.send_input({"type": "test.stop"})
    await communicator.wait()
    assert (await communicator.receive_output())["value"] == 1  # still delivered
    with pytest.raises(TimeoutError, match="ended without sending"):
        await communicator.receive_output(timeout=30)


async def test_receive_nothing_looks_without_taking() -> None:
    communicator = ApplicationCommunicator(Echo.as_asgi(), SCOPE)
    assert await communicator.receive_nothing(timeout=0.02) is True
    await communicator.send_input({"type": "test.echo", "value": "x"})
    # Wakes as soon as the message is sent, however long the timeout.
    with anyio.fail_after(5):
        assert await communicator.receive_nothing(timeout=30) is False
    assert (await communicator.receive_output())["value"] == "x"
    assert await communicator.receive_nothing(timeout=0.02) is True


async def test_wait_cancels_an_app_that_outlives_the_timeout() -> None:
    app = Lifecycle()
    communicator = ApplicationCommunicator(app, SCOPE)
    with pytest.raises(TimeoutError, match=r"still running after 0\.05 seconds"):
        await communicator.wait(timeout=0.05)
    assert app.ended.is_set()
    assert app.cancelled
    assert communicator.future.cancelled()


async def test_future_cancel_and_state() -> None:
    app = Lifecycle()
    communicator = ApplicationCommunicator(app, SCOPE)
    future = communicator.future
    with pytest.raises(concurrent.futures.InvalidStateError):
        future.result()
    await app.started.wait()
    assert future.cancel() is True
    with pytest.raises(ApplicationCancelled):
        await future
    assert future.done()
    assert future.cancel() is False


async def test_the_app_runs_in_a_copy_of_the_tests_context() -> None:
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(visible_in_app.get())
        visible_in_app.set("the app's value")
        await send({"type": "done"})

    visible_in_app.set("the test's value")
    await ApplicationCommunicator(app, SCOPE).receive_output()
    async with ApplicationCommunicator(app, SCOPE) as communicator:
        await communicator.receive_output()
    assert seen == ["the test's value", "the test's value"]
    assert visible_in_app.get() == "the test's value"


class ConnectionWatcher(SyncConsumer):
    """Reports the identity of the worker thread's database connection after a query."""

    def test_query(self, message: Message) -> None:
        Note.objects.count()
        self.send({"type": "connection", "id": id(connection.connection)})


@pytest.mark.django_db(transaction=True)
async def test_database_connections_stay_open_while_a_communicator_drives_the_app() -> None:
    async with ApplicationCommunicator(ConnectionWatcher.as_asgi(), SCOPE) as communicator:
        await communicator.send_input({"type": "test.query"})
        first = await communicator.receive_output()
        await communicator.send_input({"type": "test.query"})
        second = await communicator.receive_output()
    # With CONN_MAX_AGE = 0 every handler would otherwise close and reopen it.
    assert first["id"] == second["id"]
    # Once the application has ended, the connection it kept is closed.
    assert await database_sync_to_async(lambda: connection.connection)() is None


async def test_http_communicator_builds_the_scope_and_assembles_the_response() -> None:
    seen: dict[str, Any] = {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen["scope"] = scope
        seen["request"] = await receive()
        await send({"type": "http.response.start", "status": 201, "headers": [(b"a", b"1")]})
        await send({"type": "http.response.body", "body": b"hel", "more_body": True})
        await send({"type": "http.response.body", "body": b"lo"})

    communicator = HttpCommunicator(
        app, "post", "/a%20b/?q=1&r=2", body=b"payload", headers=[(b"x-test", b"yes")]
    )
    response = await communicator.get_response()
    assert response == {"status": 201, "headers": [(b"a", b"1")], "body": b"hello"}
    scope = seen["scope"]
    assert (scope["type"], scope["method"], scope["http_version"]) == ("http", "POST", "1.1")
    assert (scope["path"], scope["query_string"]) == ("/a b/", b"q=1&r=2")
    assert scope["headers"] == [(b"x-test", b"yes")]
    assert seen["request"] == {"type": "http.request", "body": b"payload"}

    with pytest.raises(TypeError, match="body must be bytes, got str"):
        HttpCommunicator(app, "GET", "/", body="text")  # type: ignore[arg-type]


async def test_websocket_communicator_plays_the_client() -> None:
    seen: dict[str, Any] = {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen["scope"] = scope
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept", "subprotocol": "v2", "headers": [(b"k", b"v")]})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                seen["close_code"] = message["code"]
                return
            if "text" in message:
                await send({"type": "websocket.send", "text": message["text"].upper()})
            else:
                await send({"type": "websocket.send", "bytes": message["bytes"][::-1]})

    communicator = WebsocketCommunicator(
        app, "/ws/r%C3%A9/?token=abc", headers=[(b"origin", b"http://x")], subprotocols=["v2"]
    )
    assert await communicator.connect() == (True, "v2")
    assert communicator.response_headers == [(b"k", b"v")]
    scope = seen["scope"]
    assert (scope["path"], scope["query_string"]) == ("/ws/ré/", b"token=abc")
    assert (scope["headers"], scope["subprotocols"]) == ([(b"origin", b"http://x")], ["v2"])

    await communicator.send_to(text_data="hi")
    assert await communicator.receive_from() == "HI"
    await communicator.send_to(bytes_data=b"abc")
    assert await communicator.receive_from() == b"cba"
    await communicator.send_json_to({"k": "v"})
    assert await communicator.receive_json_from() == {"K": "V"}
    await communicator.send_to(bytes_data=b"{}")
    with pytest.raises(AssertionError, match="JSON data is not a text frame"):
        await communicator.receive_json_from()

    with pytest.raises(TypeError, match="exactly one of text_data or bytes_data"):
        await communicator.send_to()
    with pytest.raises(TypeError, match="exactly one of text_data or bytes_data"):
        await communicator.send_to(text_data="a", bytes_data=b"b")
    with pytest.raises(TypeError, match="text_data must be a str"):
        await communicator.send_to(text_data=b"a")  # type: ignore[arg-type]

    await communicator.disconnect(code=4001)
    assert seen["close_code"] == 4001
    with pytest.raises(TypeError, match="Expected str, got bytes"):
        WebsocketCommunicator(app, b"/ws/")  # type: ignore[arg-type]


async def test_websocket_connect_reports_a_rejection_and_its_code() -> None:
    async def refuse(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.close", "code": 4003})

    async def refuse_without_code(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.close"})

    async def answer_wrongly(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.send", "text": json.dumps("too early")})

    assert await WebsocketCommunicator(refuse, "/").connect() == (False, 4003)
    assert await WebsocketCommunicator(refuse_without_code, "/").connect() == (False, 1000)
    with pytest.raises(AssertionError, match=r"got 'websocket\.send'"):
        await WebsocketCommunicator(answer_wrongly, "/").connect()


class NoteEcho(WebsocketConsumer):
    """A sync consumer that reads the database, as a project's consumer under test would."""

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        Note.objects.create(text=text_data or "")
        self.send(text_data=json.dumps(sorted(Note.objects.values_list("text", flat=True))))


class CommunicatorsInDjangoTestCase(TestCase):
    """Projects' suites drive consumers from Django's async ``TestCase`` (asyncio only, run
    by asgiref): the consumer sees the test's transaction and fixtures, and the test's
    connection survives the consumer."""

    async def test_a_websocket_consumer_sees_the_test_transaction(self) -> None:
        await Note.objects.acreate(text="fixture")
        communicator = WebsocketCommunicator(NoteEcho.as_asgi(), "/ws/")
        assert await communicator.connect() == (True, None)
        await communicator.send_to(text_data="from the socket")
        assert json.loads(await communicator.receive_from()) == ["fixture", "from the socket"]
        await communicator.disconnect()
        assert await Note.objects.acount() == 2
