"""The demultiplexer: streams of JSON consumers over one socket, each its own instance."""

from __future__ import annotations

import threading
from typing import Any

import anyio
import pytest

from channels.generic.multiplex import AsyncJsonWebsocketDemultiplexer
from channels.generic.websocket import AsyncJsonWebsocketConsumer, JsonWebsocketConsumer
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from channels.types import Message

EVENTS: list[Any] = []


class Echo(AsyncJsonWebsocketConsumer):
    """Unchanged JSON consumer: echoes, replies, joins a group, crashes or closes on demand."""

    groups = ["echoes"]

    async def connect(self) -> None:
        EVENTS.append(("connect", self.scope["stream"], self.channel_name))
        await self.accept()

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        action = content.get("do")
        if action == "crash":
            raise RuntimeError("secret detail")
        if action == "close":
            await self.close(4003)
        elif action == "reply":
            await self.reply({"answer": content["n"] * 2})
        elif action == "reply-later":
            await anyio.sleep(0.05)
            await self.reply({"late": True})
        elif action == "binary":
            await self.send(bytes_data=b"x")
        elif action == "not-json":
            await self.send(text_data="plain")
        else:
            await self.send_json({"echo": content, "stream": self.scope["stream"]})

    async def group_echo(self, message: Message) -> None:
        await self.reply({"from_group": message["text"]})  # no request here: no ref

    async def disconnect(self, code: int) -> None:
        EVENTS.append(("disconnect", self.scope["stream"], code))


class SyncEcho(JsonWebsocketConsumer):
    def receive_json(self, content: Any, **kwargs: Any) -> None:
        self.reply({"thread": threading.current_thread() is not threading.main_thread()})


class Refuses(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        await self.close(4001)


class Mux(AsyncJsonWebsocketDemultiplexer):
    consumer_classes = {"a": Echo, "b": Echo, "sync": SyncEcho, "app": Echo.as_asgi()}


@pytest.fixture(autouse=True)
def clear_events() -> None:
    EVENTS.clear()


async def connected(app: Any = None) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(app or Mux.as_asgi(), "/ws/")
    assert await communicator.connect() == (True, None)
    return communicator


async def test_each_stream_is_its_own_instance_with_its_own_channel() -> None:
    communicator = await connected()
    await communicator.send_json_to({"stream": "a", "payload": {"x": 1}})
    assert await communicator.receive_json_from() == {
        "stream": "a",
        "payload": {"echo": {"x": 1}, "stream": "a"},
    }
    await communicator.send_json_to({"stream": "b", "payload": {"x": 2}})
    assert await communicator.receive_json_from() == {
        "stream": "b",
        "payload": {"echo": {"x": 2}, "stream": "b"},
    }
    connects = [event for event in EVENTS if event[0] == "connect"]
    assert sorted(event[1] for event in connects) == ["a", "app", "b"]
    assert len({event[2] for event in connects}) == 3  # three layer channels
    layer = get_channel_layer()
    assert len(layer.groups["echoes"]) == 3

    await communicator.disconnect(code=4321)
    assert sorted(e[1:] for e in EVENTS if e[0] == "disconnect") == [
        ("a", 4321),
        ("app", 4321),
        ("b", 4321),
    ]
    assert "echoes" not in layer.groups  # every stream left its groups


async def test_reply_carries_the_ref_of_the_request() -> None:
    communicator = await connected()
    await communicator.send_json_to({"stream": "a", "payload": {"do": "reply", "n": 4}, "ref": 7})
    assert await communicator.receive_json_from() == {
        "stream": "a",
        "payload": {"answer": 8},
        "ref": 7,
    }
    # Two requests in flight: each reply has its own ref, even one sent after a wait.
    await communicator.send_json_to({"stream": "a", "payload": {"do": "reply-later"}, "ref": "r1"})
    await communicator.send_json_to(
        {"stream": "b", "payload": {"do": "reply", "n": 1}, "ref": "r2"}
    )
    frames = [await communicator.receive_json_from() for _ in range(2)]
    assert {"stream": "b", "payload": {"answer": 2}, "ref": "r2"} in frames
    assert {"stream": "a", "payload": {"late": True}, "ref": "r1"} in frames
    # A handler of a layer message has no request: its reply has no ref.
    await get_channel_layer().group_send("echoes", {"type": "group.echo", "text": "hi"})
    frames = [await communicator.receive_json_from() for _ in range(3)]
    assert all("ref" not in frame for frame in frames)
    await communicator.disconnect()


async def test_sync_streams_reply_with_the_ref_from_their_thread() -> None:
    communicator = await connected()
    await communicator.send_json_to({"stream": "sync", "payload": {}, "ref": "s"})
    assert await communicator.receive_json_from() == {
        "stream": "sync",
        "payload": {"thread": True},
        "ref": "s",
    }
    await communicator.disconnect()


async def test_a_crashed_stream_ends_alone_and_restarts_on_the_next_frame() -> None:
    communicator = await connected()
    await communicator.send_json_to({"stream": "a", "payload": {"do": "crash"}})
    error = await communicator.receive_json_from()
    assert error["stream"] == "a"
    assert "crashed (RuntimeError)" in error["error"]
    assert "secret detail" not in error["error"]  # the client is not shown the message
    # The other stream never noticed.
    await communicator.send_json_to({"stream": "b", "payload": {"x": 1}})
    assert (await communicator.receive_json_from())["stream"] == "b"
    # The crashed one left its group, and comes back for the next frame.
    assert len(get_channel_layer().groups["echoes"]) == 2
    await communicator.send_json_to({"stream": "a", "payload": {"x": 2}})
    assert await communicator.receive_json_from() == {
        "stream": "a",
        "payload": {"echo": {"x": 2}, "stream": "a"},
    }
    assert [e[1] for e in EVENTS if e[0] == "connect"].count("a") == 2
    await communicator.disconnect()


async def test_a_stream_that_closes_ends_alone_with_its_code() -> None:
    communicator = await connected()
    await communicator.send_json_to({"stream": "a", "payload": {"do": "close"}})
    error = await communicator.receive_json_from()
    assert error["stream"] == "a"
    assert error["code"] == 4003
    assert "closed" in error["error"]
    assert ("disconnect", "a", 4003) in EVENTS
    await communicator.send_json_to({"stream": "a", "payload": {"x": 3}})
    assert (await communicator.receive_json_from())["payload"]["echo"] == {"x": 3}
    await communicator.disconnect()


async def test_a_stream_that_refuses_at_connect_does_not_refuse_the_socket() -> None:
    class WithRefusal(AsyncJsonWebsocketDemultiplexer):
        consumer_classes = {"no": Refuses, "a": Echo}

    communicator = await connected(WithRefusal.as_asgi())
    error = await communicator.receive_json_from()
    assert error["stream"] == "no"
    assert error["code"] == 4001
    await communicator.send_json_to({"stream": "a", "payload": {}})
    assert (await communicator.receive_json_from())["stream"] == "a"
    await communicator.disconnect()


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ("not json", {"error": "The frame is not valid JSON."}),
        (
            "[1, 2]",
            {"error": 'Frames must be JSON objects like {"stream": "name", "payload": {...}}.'},
        ),
        ('{"payload": {}}', {"error": 'The frame has no "stream" (a string naming the stream).'}),
        (
            '{"stream": "zzz", "payload": {}}',
            {"stream": "zzz", "error": "Unknown stream 'zzz'; this socket has: a, app, b, sync."},
        ),
        ('{"stream": "a"}', {"stream": "a", "error": 'The frame has no "payload".'}),
        (
            '{"stream": "a", "payload": {}, "ref": [1]}',
            {"stream": "a", "error": '"ref" must be a string or an integer.'},
        ),
    ],
)
async def test_bad_frames_get_an_error_and_the_socket_stays_open(
    frame: str, expected: dict[str, Any]
) -> None:
    communicator = await connected()
    await communicator.send_to(text_data=frame)
    assert await communicator.receive_json_from() == expected
    await communicator.send_to(bytes_data=b"\x00")
    assert "Binary frames" in (await communicator.receive_json_from())["error"]
    await communicator.send_json_to({"stream": "a", "payload": {"still": "open"}})
    assert (await communicator.receive_json_from())["payload"]["echo"] == {"still": "open"}
    await communicator.disconnect()


@pytest.mark.parametrize("action", ["binary", "not-json"])
async def test_a_stream_sending_what_json_cannot_carry_crashes_alone(action: str) -> None:
    communicator = await connected()
    await communicator.send_json_to({"stream": "a", "payload": {"do": action}})
    error = await communicator.receive_json_from()
    assert error["stream"] == "a"
    assert "crashed (ValueError)" in error["error"]
    await communicator.disconnect()


async def test_a_stream_stuck_in_disconnect_is_cancelled_after_the_timeout() -> None:
    finished = anyio.Event()

    class Stuck(AsyncJsonWebsocketConsumer):
        async def disconnect(self, code: int) -> None:
            try:
                await anyio.sleep_forever()
            finally:
                finished.set()

    class Impatient(AsyncJsonWebsocketDemultiplexer):
        consumer_classes = {"stuck": Stuck}
        stream_close_timeout = 0.1

    communicator = await connected(Impatient.as_asgi())
    await communicator.disconnect(timeout=5)  # the application ended: nothing outlived it
    assert finished.is_set()


async def test_bad_consumer_classes_are_a_clear_error() -> None:
    class Empty(AsyncJsonWebsocketDemultiplexer):
        consumer_classes = {}

    class NotAConsumer(AsyncJsonWebsocketDemultiplexer):
        consumer_classes = {"x": int}

    for app, message in [
        (Empty, "consumer_classes must be a non-empty dict"),
        (NotAConsumer, "must be a consumer class or an ASGI application, got builtins.int"),
    ]:
        communicator = WebsocketCommunicator(app.as_asgi(), "/ws/")
        with pytest.raises(TypeError, match=message):
            await communicator.connect()
