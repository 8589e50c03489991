"""A layer written by someone else, on ``BaseChannelLayer`` only, still drives consumers,
groups and the worker, as third-party Channels layers do."""

from __future__ import annotations

import contextlib
import copy
import math
import uuid
from collections import defaultdict
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from django.test import override_settings

from channels.exceptions import ChannelFull
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import BaseChannelLayer, get_channel_layer
from channels.routing import ChannelNameRouter
from channels.testing import WebsocketCommunicator
from channels.testing.layers import ChannelLayerConformance
from channels.types import ChannelLayer, Message
from channels.worker import Worker


class StreamLayer(BaseChannelLayer):
    """Channels as anyio memory streams bounded by ``capacity``, groups as sets: nothing of
    ours but the base class. The conformance kit checks it (below); it has no expiry."""

    extensions = ["groups"]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.streams: dict[
            str, tuple[MemoryObjectSendStream[Message], MemoryObjectReceiveStream[Message]]
        ] = {}
        self.groups: defaultdict[str, set[str]] = defaultdict(set)

    def _stream(
        self, channel: str
    ) -> tuple[MemoryObjectSendStream[Message], MemoryObjectReceiveStream[Message]]:
        if channel not in self.streams:
            self.require_valid_channel_name(channel)
            capacity = self.get_capacity(channel)
            self.streams[channel] = anyio.create_memory_object_stream[Message](
                capacity if capacity > 0 else math.inf
            )
        return self.streams[channel]

    async def send(self, channel: str, message: Message) -> None:
        self.require_valid_message(message)
        try:
            # A deep copy: neither the sender nor a receiver changing theirs affects others.
            self._stream(channel)[0].send_nowait(copy.deepcopy(message))
        except anyio.WouldBlock:
            raise ChannelFull(channel) from None

    async def receive(self, channel: str) -> Message:
        message: Message = await self._stream(channel)[1].receive()
        return message

    async def new_channel(self, prefix: str = "specific.") -> str:
        return f"{prefix}stream!{uuid.uuid4().hex}"

    async def group_add(self, group: str, channel: str) -> None:
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        self.groups[group].add(channel)

    async def group_discard(self, group: str, channel: str) -> None:
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        self.groups[group].discard(channel)

    async def group_send(self, group: str, message: Message) -> None:
        self.require_valid_group_name(group)
        self.require_valid_message(message)
        for channel in self.groups[group]:
            with contextlib.suppress(ChannelFull):  # a full member is skipped
                await self.send(channel, message)

    async def close(self) -> None:
        for send, receive in self.streams.values():
            send.close()
            receive.close()
        self.streams.clear()


LAYERS = {"default": {"BACKEND": f"{__name__}.StreamLayer", "CONFIG": {"capacity": 10}}}


class Chat(AsyncWebsocketConsumer):
    groups = ["room"]

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.channel_layer.group_send("room", {"type": "chat.line", "text": text_data})

    async def chat_line(self, event: Message) -> None:
        await self.send(text_data=event["text"])


@override_settings(CHANNEL_LAYERS=LAYERS)
async def test_consumers_groups_and_the_worker_on_a_third_party_layer() -> None:
    layer = get_channel_layer()
    assert isinstance(layer, StreamLayer)
    assert isinstance(layer, ChannelLayer)
    try:
        one = WebsocketCommunicator(Chat.as_asgi(), "/")
        two = WebsocketCommunicator(Chat.as_asgi(), "/")
        assert (await one.connect())[0]
        assert (await two.connect())[0]
        assert len(layer.groups["room"]) == 2
        await one.send_to(text_data="hello")
        assert await one.receive_from() == "hello"
        assert await two.receive_from() == "hello"
        await one.disconnect()
        await two.disconnect()
        assert not layer.groups["room"]

        seen: list[Any] = []
        both_seen = anyio.Event()

        async def job(scope: Any, receive: Any, send: Any) -> None:
            while True:
                seen.append((await receive())["n"])
                if len(seen) == 2:
                    both_seen.set()

        await layer.send("jobs", {"type": "job", "n": 1})
        await layer.send("jobs", {"type": "job", "n": 2})
        with anyio.fail_after(5):
            async with anyio.create_task_group() as group:
                group.start_soon(Worker(ChannelNameRouter({"jobs": job}), ["jobs"], layer).arun)
                await both_seen.wait()
                group.cancel_scope.cancel()
        assert seen == [1, 2]
    finally:
        await layer.close()


class TestStreamLayerConformance(ChannelLayerConformance):
    """The conformance kit on the layer above, as its author would run it."""

    expected_extensions = ("groups",)  # no flush, history or presence tests generated
    lacks = {
        "message_expiry": "messages wait in their stream until received",
        "group_expiry": "memberships last until discarded (the layer takes no group_expiry)",
    }

    async def make_layer(self, **config: Any) -> ChannelLayer:
        return StreamLayer(**config)
