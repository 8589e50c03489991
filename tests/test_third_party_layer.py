"""A layer written by someone else, on ``BaseChannelLayer`` only, still drives consumers,
groups and the worker, as third-party Channels layers do; and it passes the conformance kit,
run here as its author would (both from docs/snippets/third_party_layer.py)."""

from __future__ import annotations

from typing import Any

import anyio
from django.test import override_settings

from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from channels.routing import ChannelNameRouter
from channels.testing import WebsocketCommunicator
from channels.types import ChannelLayer, Message
from channels.worker import Worker

# Collected here: the docs' conformance class for the docs' layer.
from docs.snippets.test_stream_layer import (
    TestStreamLayerConformance as TestStreamLayerConformance,
)
from docs.snippets.third_party_layer import StreamLayer

LAYERS = {
    "default": {
        "BACKEND": "docs.snippets.third_party_layer.StreamLayer",
        "CONFIG": {"capacity": 10},
    }
}


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
