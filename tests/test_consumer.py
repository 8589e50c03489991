"""Consumers: dispatch, ordering, stopping, errors, and the sync consumer's thread."""

from __future__ import annotations

import asyncio  # the GraphQL-style consumer below spawns tasks as such libraries do
import contextvars
import json
import threading
from collections.abc import Callable, Generator
from typing import Any

import anyio
import anyio.lowlevel
import asgiref.sync
import pytest
import sniffio
import trio
from django.test import override_settings

from channels.concurrency import async_to_sync
from channels.consumer import AsyncConsumer, SyncConsumer, get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer
from channels.testing import ApplicationCommunicator, WebsocketCommunicator
from channels.types import Message, Receive, Scope, Send

from .harness import feed_and_run

SCOPE = {"type": "test"}


class Recorder(AsyncConsumer):
    """Records each handler's start and end, yielding in between to invite overlap."""

    def __init__(self, log: list[str] | None = None) -> None:
        self.log = log if log is not None else []

    async def test_message(self, message: Message) -> None:
        self.log.append(f"start {message['n']}")
        await anyio.lowlevel.checkpoint()
        await anyio.lowlevel.checkpoint()
        self.log.append(f"end {message['n']}")
        await self.send({"type": "test.done", "n": message["n"]})

    async def test_stop(self, message: Message) -> None:
        raise StopConsumer


def test_handler_names() -> None:
    assert get_handler_name({"type": "websocket.receive"}) == "websocket_receive"
    assert get_handler_name({"type": "chat.message.new"}) == "chat_message_new"
    with pytest.raises(ValueError, match="Incoming message has no 'type' attribute"):
        get_handler_name({"text": "hi"})
    with pytest.raises(ValueError, match="leading underscore"):
        get_handler_name({"type": "_private.method"})
    with pytest.raises(ValueError, match="leading underscore"):
        get_handler_name({"type": ".hidden"})
    with pytest.raises(TypeError, match="must be a dict, got str"):
        get_handler_name("websocket.receive")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must be a string"):
        get_handler_name({"type": 42})


async def test_handlers_run_one_at_a_time_in_arrival_order() -> None:
    layer = get_channel_layer()
    log: list[str] = []
    async with ApplicationCommunicator(Recorder.as_asgi(log=log), SCOPE) as app:
        for n in range(3):
            await app.send_input({"type": "test.message", "n": n})
        for n in range(3):
            assert (await app.receive_output())["n"] == n
        channel_name = next(iter(layer.channels))
        for n in range(3, 6):
            await layer.send(channel_name, {"type": "test.message", "n": n})
        for n in range(3, 6):
            assert (await app.receive_output())["n"] == n
        await app.send_input({"type": "test.stop"})
        await app.wait()
        assert app.future.result() is None

    assert log == [f"{edge} {n}" for n in range(6) for edge in ("start", "end")]


async def test_stop_consumer_ends_the_layer_listener_with_the_consumer() -> None:
    layer = get_channel_layer()
    seen: dict[str, Any] = {}

    class Remembers(AsyncConsumer):
        async def test_stop(self, message: Message) -> None:
            seen["channel_name"] = self.channel_name
            seen["channel_layer"] = self.channel_layer
            seen["scope"] = self.scope
            raise StopConsumer

    tasks_before = len(anyio.get_running_tasks())
    async with ApplicationCommunicator(Remembers.as_asgi(), SCOPE) as app:
        await anyio.wait_all_tasks_blocked()
        (waiting,) = layer.channels.values()
        assert len(waiting.waiters) == 1  # the layer listener is waiting
        await app.send_input({"type": "test.stop"})
        await app.wait()
        assert layer.channels == {}, "the cancelled layer receive left its channel behind"
    assert len(anyio.get_running_tasks()) == tasks_before
    assert seen["channel_layer"] is layer
    assert seen["channel_name"].startswith("specific..inmemory!")
    assert seen["scope"] is SCOPE


async def test_no_handler_starts_after_stop_consumer() -> None:
    layer = get_channel_layer()
    ran: list[str] = []

    class Stops(AsyncConsumer):
        async def test_stop(self, message: Message) -> None:
            ran.append("stop")
            await layer.send(self.channel_name, {"type": "test.late"})
            # The layer listener takes the message and waits for its turn meanwhile.
            await anyio.wait_all_tasks_blocked()
            raise StopConsumer

        async def test_late(self, message: Message) -> None:
            ran.append("late")

    await feed_and_run(Stops.as_asgi(), SCOPE, {"type": "test.stop"})
    assert ran == ["stop"]


async def test_handler_errors_reach_the_server_unwrapped() -> None:
    class Broken(AsyncConsumer):
        async def test_break(self, message: Message) -> None:
            raise ZeroDivisionError("handler failed")

    class BrokenSync(SyncConsumer):
        def test_break(self, message: Message) -> None:
            raise ZeroDivisionError("sync handler failed")

    for consumer, text in [(Broken, "handler failed"), (BrokenSync, "sync handler failed")]:
        with pytest.raises(ZeroDivisionError, match=text):
            await feed_and_run(consumer.as_asgi(), SCOPE, {"type": "test.break"})


async def test_unwrapped_errors_keep_their_own_context_and_groups_stay_whole() -> None:
    class HandlesBadly(AsyncConsumer):
        async def test_lookup(self, message: Message) -> None:
            try:
                {}["missing"]
            except KeyError:
                if message.get("hide"):
                    raise ValueError("while handling a KeyError") from None
                raise ValueError("while handling a KeyError")  # noqa: B904 - on purpose

        async def test_group(self, message: Message) -> None:
            async with anyio.create_task_group() as group:
                group.start_soon(self._fail)

        async def _fail(self) -> None:
            raise LookupError("from the handler's own task")

    with pytest.raises(ValueError, match="while handling a KeyError") as caught:
        await feed_and_run(HandlesBadly.as_asgi(), SCOPE, {"type": "test.lookup"})
    assert isinstance(caught.value.__context__, KeyError)
    assert not caught.value.__suppress_context__

    with pytest.raises(ValueError, match="while handling") as caught:
        await feed_and_run(HandlesBadly.as_asgi(), SCOPE, {"type": "test.lookup", "hide": True})
    assert caught.value.__suppress_context__

    with pytest.raises(ExceptionGroup) as group_caught:
        await feed_and_run(HandlesBadly.as_asgi(), SCOPE, {"type": "test.group"})
    assert group_caught.group_contains(LookupError, match="own task")


async def test_stop_consumer_from_receive_ends_the_consumer_cleanly() -> None:
    async def receive() -> Message:
        raise StopConsumer

    async def send(message: Message) -> None:
        raise AssertionError("nothing should be sent")

    with anyio.fail_after(5):
        assert await Recorder.as_asgi()(SCOPE, receive, send) is None
    assert get_channel_layer().channels == {}


async def test_bad_messages_raise_clear_errors() -> None:
    bad: list[tuple[Any, type[Exception], str]] = [
        ({"type": "test.unknown"}, ValueError, "No handler for message type test.unknown"),
        ({"no": "type"}, ValueError, "Incoming message has no 'type' attribute"),
        ({"type": "_secret"}, ValueError, "leading underscore"),
        (["not", "a", "dict"], TypeError, "must be a dict, got list"),
    ]
    for consumer in (Recorder, SyncConsumer):
        for message, error, text in bad:
            with pytest.raises(error, match=text):
                await feed_and_run(consumer.as_asgi(), SCOPE, message)


async def test_cancellation_from_the_server_is_not_swallowed() -> None:
    reached_after: list[bool] = []
    tasks_before = len(anyio.get_running_tasks())
    inputs_send, inputs_receive = anyio.create_memory_object_stream[Message](1)
    with inputs_send, inputs_receive, anyio.CancelScope() as scope:

        async def send(message: Message) -> None:
            pass

        async with anyio.create_task_group() as group:
            group.start_soon(Recorder.as_asgi(), SCOPE, inputs_receive.receive, send)
            await anyio.wait_all_tasks_blocked()
            scope.cancel()
        reached_after.append(True)
    assert scope.cancelled_caught
    assert reached_after == []
    assert len(anyio.get_running_tasks()) == tasks_before
    assert get_channel_layer().channels == {}


async def test_as_asgi_makes_a_new_instance_per_connection_with_initkwargs() -> None:
    instances: list[Any] = []

    class Configured(AsyncConsumer):
        def __init__(self, greeting: str) -> None:
            self.greeting = greeting
            instances.append(self)

        async def test_hello(self, message: Message) -> None:
            await self.send({"type": "test.reply", "text": self.greeting})
            raise StopConsumer

    app = Configured.as_asgi(greeting="hi")
    assert app.consumer_class is Configured
    assert app.consumer_initkwargs == {"greeting": "hi"}
    assert app.__name__ == "Configured"
    assert asgiref.sync.iscoroutinefunction(app)
    for _ in range(2):
        output = await feed_and_run(app, SCOPE, {"type": "test.hello"})
        assert output == [{"type": "test.reply", "text": "hi"}]
    assert len(instances) == 2
    assert instances[0] is not instances[1]


async def test_channel_layer_alias() -> None:
    seen: list[Any] = []

    class OnOtherLayer(AsyncConsumer):
        channel_layer_alias = "other"

        async def test_hello(self, message: Message) -> None:
            seen.append((self.channel_layer, getattr(self, "channel_name", None)))
            raise StopConsumer

    layers = {
        "default": {"BACKEND": "channels.layers.InMemoryChannelLayer"},
        "other": {"BACKEND": "channels.layers.InMemoryChannelLayer"},
    }
    with override_settings(CHANNEL_LAYERS=layers):
        await feed_and_run(OnOtherLayer.as_asgi(), SCOPE, {"type": "test.hello"})
        assert seen[0][0] is get_channel_layer("other")
        assert seen[0][0] is not get_channel_layer()
        assert seen[0][1] is not None
    with override_settings(CHANNEL_LAYERS={}):
        await feed_and_run(OnOtherLayer.as_asgi(), SCOPE, {"type": "test.hello"})
        assert seen[1] == (None, None)


async def test_receive_may_return_any_awaitable() -> None:
    class Ready:
        """An awaitable that is not a coroutine, like the futures some servers return."""

        def __init__(self, message: Message) -> None:
            self.message = message

        def __await__(self) -> Generator[Any, None, Message]:
            yield from anyio.lowlevel.checkpoint().__await__()
            return self.message

    queue = [{"type": "test.message", "n": 1}, {"type": "test.stop"}]
    sent: list[Message] = []

    def receive() -> Ready:
        return Ready(queue.pop(0))

    def send(message: Message) -> Ready:
        sent.append(message)
        return Ready(message)

    with anyio.fail_after(5):
        await Recorder.as_asgi()(SCOPE, receive, send)  # type: ignore[arg-type]
    assert sent == [{"type": "test.done", "n": 1}]


class ThreadReporter(SyncConsumer):
    def test_where(self, message: Message) -> None:
        self.send({"type": "test.thread", "ident": threading.get_ident()})

    def test_stop(self, message: Message) -> None:
        raise StopConsumer


async def test_sync_consumer_handlers_run_in_the_thread_sensitive_worker() -> None:
    output = await feed_and_run(
        ThreadReporter.as_asgi(),
        SCOPE,
        {"type": "test.where"},
        {"type": "test.where"},
        {"type": "test.stop"},
    )
    idents = {message["ident"] for message in output}
    assert len(output) == 2
    assert len(idents) == 1
    assert threading.get_ident() not in idents


async def test_sync_consumer_reaches_the_layer_through_either_bridge() -> None:
    layer = get_channel_layer()
    await layer.group_add("room", "listener")

    bridge: list[Any] = [async_to_sync]

    class Announcer(SyncConsumer):
        def test_announce(self, message: Message) -> None:
            bridge[0](self.channel_layer.group_send)("room", {"type": "hello", "n": 1})
            raise StopConsumer

    await feed_and_run(Announcer.as_asgi(), SCOPE, {"type": "test.announce"})
    assert await layer.receive("listener") == {"type": "hello", "n": 1}

    # asgiref's bridge too, on trio as well once Django is set up (channels._django_trio).
    bridge[0] = asgiref.sync.async_to_sync
    await feed_and_run(Announcer.as_asgi(), SCOPE, {"type": "test.announce"})
    assert await layer.receive("listener") == {"type": "hello", "n": 1}
    await layer.flush()


class Subscriptions(AsyncJsonWebsocketConsumer):
    """The shape of a GraphQL-over-WebSocket consumer: ``subscribe`` starts a task that
    registers the operation; ``stop`` ends the registered operation, and an unknown id is
    an error. On asyncio the handler uses ``asyncio.create_task``, as those libraries do;
    on trio, a nursery the consumer owns."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.operations: dict[str, Callable[[], object]] = {}
        self.backend = sniffio.current_async_library()
        if self.backend == "trio":
            async with trio.open_nursery() as self.nursery:
                await super().__call__(scope, receive, send)
                self.nursery.cancel_scope.cancel()
        else:
            self.tasks: set[asyncio.Task[None]] = set()
            try:
                await super().__call__(scope, receive, send)
            finally:
                for task in self.tasks:
                    task.cancel()

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if content["type"] == "subscribe":
            if self.backend == "trio":
                self.nursery.start_soon(self.run_operation, content["id"])
            else:
                task = asyncio.create_task(self.run_operation(content["id"]))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
        elif content["type"] == "stop":
            stop = self.operations.pop(content["id"], None)
            if stop is None:
                await self.send_json({"type": "error", "id": content["id"]})
            else:
                stop()
                await self.send_json({"type": "complete", "id": content["id"]})

    async def run_operation(self, operation_id: str) -> None:
        with anyio.CancelScope() as scope:
            self.operations[operation_id] = scope.cancel  # registered in the task's first step
            await anyio.sleep_forever()


async def test_a_task_a_handler_starts_runs_before_the_next_queued_message() -> None:
    """Upstream's dispatch loop passes through the event loop between two messages, so the
    ``stop`` queued right behind a ``subscribe`` finds the subscription its task registered.
    Many pairs, because trio runs each batch of ready tasks in a random order."""
    communicator = WebsocketCommunicator(Subscriptions.as_asgi(), "/graphql/")
    assert await communicator.connect() == (True, None)
    for n in range(20):
        # Both queued before the consumer handles either.
        for kind in ("subscribe", "stop"):
            frame = json.dumps({"type": kind, "id": str(n)})
            communicator.input_queue.put_nowait({"type": "websocket.receive", "text": frame})
        assert await communicator.receive_json_from() == {"type": "complete", "id": str(n)}
    await communicator.disconnect()


async def test_an_idle_consumer_runs_no_task_but_its_own_until_its_channel_has_a_message() -> None:
    """The in-memory layer calls the consumer when its channel has a message: until then an
    idle consumer has no listener task (the ASGI receive is waited on by its own task)."""
    layer = get_channel_layer()
    tasks_before = len(anyio.get_running_tasks())
    async with ApplicationCommunicator(Recorder.as_asgi(), SCOPE) as app:
        await anyio.wait_all_tasks_blocked()
        # The communicator's task running the application is the consumer's own.
        assert len(anyio.get_running_tasks()) == tasks_before + 1
        (channel_name,) = layer.channels
        await layer.send(channel_name, {"type": "test.message", "n": 1})
        assert await app.receive_output() == {"type": "test.done", "n": 1}
        await anyio.wait_all_tasks_blocked()
        assert len(anyio.get_running_tasks()) == tasks_before + 2  # and now its listener
        await layer.send(channel_name, {"type": "test.message", "n": 2})
        assert await app.receive_output() == {"type": "test.done", "n": 2}
        await app.send_input({"type": "test.stop"})
        await app.wait()
    assert layer.channels == {}
    assert len(anyio.get_running_tasks()) == tasks_before


ORIGIN: contextvars.ContextVar[str] = contextvars.ContextVar("origin", default="none")


async def test_layer_messages_are_handled_in_the_consumers_context_not_the_senders() -> None:
    """The listener of the consumer's channel is started by whichever task sends it the
    first message: it must still run in the consumer's context, as a task the consumer
    started itself would."""
    layer = get_channel_layer()
    seen: list[str] = []

    class Contextual(AsyncConsumer):
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            ORIGIN.set("consumer")
            await super().__call__(scope, receive, send)

        async def test_message(self, message: Message) -> None:
            seen.append(ORIGIN.get())
            await self.send({"type": "test.done"})

        async def test_stop(self, message: Message) -> None:
            raise StopConsumer

    async with ApplicationCommunicator(Contextual.as_asgi(), SCOPE) as app:
        await anyio.wait_all_tasks_blocked()
        (channel_name,) = layer.channels

        async def sender() -> None:
            ORIGIN.set("sender")
            await layer.send(channel_name, {"type": "test.message"})

        async with anyio.create_task_group() as group:
            group.start_soon(sender)
        assert await app.receive_output() == {"type": "test.done"}
        await app.send_input({"type": "test.stop"})
        await app.wait()
    assert seen == ["consumer"]
