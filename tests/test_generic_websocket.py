"""The WebSocket consumers, sync and async, through the communicator as a user tests them."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from django.test import override_settings

from channels.consumer import AsyncConsumer
from channels.exceptions import AcceptConnection, DenyConnection, InvalidChannelLayerError
from channels.generic.websocket import (
    AsyncJsonWebsocketConsumer,
    AsyncWebsocketConsumer,
    JsonWebsocketConsumer,
    WebsocketConsumer,
)
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from channels.types import Message

# Each behaviour is written twice, once per flavour, the way users write them; the tests
# are parametrized over the pair.


class SyncChat(WebsocketConsumer):
    groups = ["lobby"]
    log: list[Any]

    def connect(self) -> None:
        mode = self.scope["query_string"].decode()
        if mode == "deny":
            raise DenyConnection
        if mode == "accept-exception":
            raise AcceptConnection
        if mode == "subprotocol":
            self.accept("chat.v2", headers=[(b"x-room", b"lobby")])
        elif mode == "close-with-code":
            self.close(code=4004, reason="no such room")
        else:
            self.accept()

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        self.log.append(("receive", text_data, bytes_data, threading.get_ident()))
        if text_data == "bye":
            self.send(text_data="closing", close=True)
        elif text_data == "bye-4000":
            self.send(text_data="closing", close=4000)
        elif text_data == "close":
            self.close(code=4001, reason="done")
        elif text_data == "nothing":
            self.send()
        elif text_data == "crash":
            raise RuntimeError("handler failed")
        elif text_data is not None:
            self.send(text_data=text_data.upper())
        else:
            assert bytes_data is not None
            self.send(bytes_data=bytes_data[::-1])

    def chat_message(self, message: Message) -> None:
        self.send(text_data=message["text"])

    def disconnect(self, code: int) -> None:
        self.log.append(("disconnect", code))


class AsyncChat(AsyncWebsocketConsumer):
    groups = ["lobby"]
    log: list[Any]

    async def connect(self) -> None:
        mode = self.scope["query_string"].decode()
        if mode == "deny":
            raise DenyConnection
        if mode == "accept-exception":
            raise AcceptConnection
        if mode == "subprotocol":
            await self.accept("chat.v2", headers=[(b"x-room", b"lobby")])
        elif mode == "close-with-code":
            await self.close(code=4004, reason="no such room")
        else:
            await self.accept()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        self.log.append(("receive", text_data, bytes_data, threading.get_ident()))
        if text_data == "bye":
            await self.send(text_data="closing", close=True)
        elif text_data == "bye-4000":
            await self.send(text_data="closing", close=4000)
        elif text_data == "close":
            await self.close(code=4001, reason="done")
        elif text_data == "nothing":
            await self.send()
        elif text_data == "crash":
            raise RuntimeError("handler failed")
        elif text_data is not None:
            await self.send(text_data=text_data.upper())
        else:
            assert bytes_data is not None
            await self.send(bytes_data=bytes_data[::-1])

    async def chat_message(self, message: Message) -> None:
        await self.send(text_data=message["text"])

    async def disconnect(self, code: int) -> None:
        self.log.append(("disconnect", code))


@pytest.fixture(params=[SyncChat, AsyncChat], ids=["sync", "async"])
def chat(request: pytest.FixtureRequest) -> Any:
    consumer: Any = request.param
    log: list[Any] = []
    return consumer.as_asgi(), consumer, log


def with_log(app: Any, consumer: Any, log: list[Any]) -> Any:
    class Logged(consumer):  # type: ignore[misc, valid-type]
        pass

    Logged.log = log
    return Logged.as_asgi()


async def test_connect_frames_groups_and_disconnect(chat: Any) -> None:
    _, consumer, log = chat
    communicator = WebsocketCommunicator(with_log(None, consumer, log), "/ws/")
    assert await communicator.connect() == (True, None)
    layer = get_channel_layer()
    assert len(layer.groups["lobby"]) == 1

    await communicator.send_to(text_data="hello")
    assert await communicator.receive_from() == "HELLO"
    await communicator.send_to(bytes_data=b"\x01\x02")
    assert await communicator.receive_from() == b"\x02\x01"

    await layer.group_send("lobby", {"type": "chat.message", "text": "from the group"})
    assert await communicator.receive_from() == "from the group"

    await communicator.disconnect(code=4321)
    assert log[-1] == ("disconnect", 4321)
    assert "lobby" not in layer.groups


async def test_sync_handlers_run_off_the_event_loop_and_async_ones_on_it(chat: Any) -> None:
    _, consumer, log = chat
    communicator = WebsocketCommunicator(with_log(None, consumer, log), "/ws/")
    await communicator.connect()
    await communicator.send_to(text_data="x")
    await communicator.receive_from()
    handler_thread = log[0][3]
    assert (handler_thread != threading.get_ident()) is (consumer is SyncChat)
    await communicator.disconnect()


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("deny", (False, 1000)),
        ("accept-exception", (True, None)),
        ("subprotocol", (True, "chat.v2")),
        ("close-with-code", (False, 4004)),
    ],
)
async def test_connect_outcomes(chat: Any, mode: str, expected: tuple[bool, Any]) -> None:
    _, consumer, log = chat
    communicator = WebsocketCommunicator(with_log(None, consumer, log), f"/ws/?{mode}")
    assert await communicator.connect() == expected
    if mode == "subprotocol":
        assert communicator.response_headers == [(b"x-room", b"lobby")]
    if mode == "close-with-code":
        await communicator.disconnect()


async def test_closing_from_the_server(chat: Any) -> None:
    _, consumer, log = chat
    app = with_log(None, consumer, log)

    communicator = WebsocketCommunicator(app, "/ws/")
    await communicator.connect()
    await communicator.send_to(text_data="bye")
    assert await communicator.receive_from() == "closing"
    assert await communicator.receive_output() == {"type": "websocket.close"}
    await communicator.disconnect()

    communicator = WebsocketCommunicator(app, "/ws/")
    await communicator.connect()
    await communicator.send_to(text_data="bye-4000")
    assert await communicator.receive_from() == "closing"
    assert await communicator.receive_output() == {"type": "websocket.close", "code": 4000}
    await communicator.disconnect()

    communicator = WebsocketCommunicator(app, "/ws/")
    await communicator.connect()
    await communicator.send_to(text_data="close")
    assert await communicator.receive_output() == {
        "type": "websocket.close",
        "code": 4001,
        "reason": "done",
    }
    await communicator.disconnect()


async def test_sending_nothing_is_an_error(chat: Any) -> None:
    _, consumer, log = chat
    communicator = WebsocketCommunicator(with_log(None, consumer, log), "/ws/")
    await communicator.connect()
    await communicator.send_to(text_data="nothing")
    with pytest.raises(ValueError, match="one of bytes_data or text_data"):
        await communicator.receive_output()


async def test_a_crashed_consumer_leaves_its_groups(chat: Any) -> None:
    _, consumer, log = chat
    communicator = WebsocketCommunicator(with_log(None, consumer, log), "/ws/")
    await communicator.connect()
    layer = get_channel_layer()
    assert "lobby" in layer.groups
    await communicator.send_to(text_data="crash")
    with pytest.raises(RuntimeError, match="handler failed"):
        await communicator.receive_output()
    assert "lobby" not in layer.groups
    assert not [entry for entry in log if entry[0] == "disconnect"]  # for closed sockets only


@override_settings(CHANNEL_LAYERS={})
async def test_groups_without_a_layer_are_a_clear_error(chat: Any) -> None:
    _, consumer, log = chat
    communicator = WebsocketCommunicator(with_log(None, consumer, log), "/ws/")
    with pytest.raises(InvalidChannelLayerError, match="doesn't support groups"):
        await communicator.connect()


@override_settings(CHANNEL_LAYERS={})
async def test_no_groups_need_no_layer() -> None:
    class Plain(AsyncWebsocketConsumer):
        async def receive(
            self, text_data: str | None = None, bytes_data: bytes | None = None
        ) -> None:
            await self.send(text_data=text_data)

    communicator = WebsocketCommunicator(Plain.as_asgi(), "/")
    assert await communicator.connect() == (True, None)
    await communicator.send_to(text_data="ok")
    assert await communicator.receive_from() == "ok"
    await communicator.disconnect()


class GroupsOnlyLayer:
    """A layer without group support, like a third-party layer that lacks the extension."""

    extensions: list[str] = []

    async def new_channel(self, prefix: str = "specific.") -> str:
        return prefix + "only!x"

    async def receive(self, channel: str) -> Message:
        import anyio

        await anyio.sleep_forever()
        raise AssertionError


async def test_a_layer_without_groups_is_a_clear_error(chat: Any) -> None:
    _, consumer, log = chat

    class NoGroupsLayer(consumer):  # type: ignore[misc, valid-type]
        channel_layer_alias = "nogroups"

    from channels.layers import channel_layers

    channel_layers.set("nogroups", GroupsOnlyLayer())
    NoGroupsLayer.log = log
    communicator = WebsocketCommunicator(NoGroupsLayer.as_asgi(), "/")
    with pytest.raises(InvalidChannelLayerError, match="doesn't support groups"):
        await communicator.connect()


class SyncJson(JsonWebsocketConsumer):
    groups = ["json"]

    def receive_json(self, content: Any, **kwargs: Any) -> None:
        self.send_json({"echo": content}, close=content == "last")


class AsyncJson(AsyncJsonWebsocketConsumer):
    groups = ["json"]

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        await self.send_json({"echo": content}, close=content == "last")


@pytest.fixture(params=[SyncJson, AsyncJson], ids=["sync", "async"])
def json_consumer(request: pytest.FixtureRequest) -> Any:
    return request.param


async def test_json_round_trip(json_consumer: Any) -> None:
    communicator = WebsocketCommunicator(json_consumer.as_asgi(), "/")
    await communicator.connect()
    await communicator.send_json_to({"a": [1, 2.5, None, "é"]})
    assert await communicator.receive_json_from() == {"echo": {"a": [1, 2.5, None, "é"]}}
    await communicator.send_json_to("last")
    assert await communicator.receive_json_from() == {"echo": "last"}
    assert await communicator.receive_output() == {"type": "websocket.close"}
    await communicator.disconnect()


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        ({"bytes_data": b"{}"}, "No text section for incoming WebSocket frame"),
        ({"text_data": "{not json"}, "Expecting property name"),
        ({"text_data": ""}, "Expecting value"),
    ],
)
async def test_bad_json_frames_raise_and_leave_groups(
    json_consumer: Any, frame: dict[str, Any], error: str
) -> None:
    communicator = WebsocketCommunicator(json_consumer.as_asgi(), "/")
    await communicator.connect()
    assert "json" in get_channel_layer().groups
    await communicator.send_to(**frame)
    with pytest.raises(ValueError, match=error):
        await communicator.receive_output()
    assert "json" not in get_channel_layer().groups


class CustomCodecSync(JsonWebsocketConsumer):
    @classmethod
    def decode_json(cls, text_data: str) -> Any:
        return json.loads(text_data[len("json:") :])

    @classmethod
    def encode_json(cls, content: Any) -> str:
        return "json:" + json.dumps(content, sort_keys=True)

    def receive_json(self, content: Any, **kwargs: Any) -> None:
        self.send_json(content)


class CustomCodecAsync(AsyncJsonWebsocketConsumer):
    @classmethod
    async def decode_json(cls, text_data: str) -> Any:
        return json.loads(text_data[len("json:") :])

    @classmethod
    async def encode_json(cls, content: Any) -> str:
        return "json:" + json.dumps(content, sort_keys=True)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        await self.send_json(content)


@pytest.mark.parametrize("consumer", [CustomCodecSync, CustomCodecAsync], ids=["sync", "async"])
async def test_json_codec_is_overridable(consumer: Any) -> None:
    communicator = WebsocketCommunicator(consumer.as_asgi(), "/")
    await communicator.connect()
    await communicator.send_to(text_data='json:{"b": 1, "a": 2}')
    assert await communicator.receive_from() == 'json:{"a": 2, "b": 1}'
    await communicator.disconnect()


async def test_initkwargs_reach_the_consumer() -> None:
    class Greeter(AsyncWebsocketConsumer):
        def __init__(self, greeting: str = "hi", **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.greeting = greeting

        async def receive(
            self, text_data: str | None = None, bytes_data: bytes | None = None
        ) -> None:
            await self.send(text_data=f"{self.greeting} {text_data}")

    communicator = WebsocketCommunicator(Greeter.as_asgi(greeting="hello"), "/")
    await communicator.connect()
    await communicator.send_to(text_data="you")
    assert await communicator.receive_from() == "hello you"
    await communicator.disconnect()


def test_generic_consumers_are_consumers() -> None:
    for consumer in (WebsocketConsumer, AsyncWebsocketConsumer, JsonWebsocketConsumer):
        assert issubclass(consumer, AsyncConsumer)
    assert WebsocketConsumer.groups is None
