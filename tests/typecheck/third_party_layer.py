"""A channel layer written against the ``ChannelLayer`` Protocol alone, with no base class
from this package: what a third-party layer type-checks against."""

from __future__ import annotations

import math
import uuid
from collections import defaultdict

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from channels.layers import channel_layers
from channels.types import ChannelLayer, Message
from channels.worker import Worker

from .consumers import applications


class StreamLayer:
    """Channels as anyio memory streams; groups as sets."""

    extensions = ("groups", "flush")

    def __init__(self) -> None:
        self.streams: dict[
            str, tuple[MemoryObjectSendStream[Message], MemoryObjectReceiveStream[Message]]
        ] = {}
        self.groups: defaultdict[str, set[str]] = defaultdict(set)

    def _stream(
        self, channel: str
    ) -> tuple[MemoryObjectSendStream[Message], MemoryObjectReceiveStream[Message]]:
        if channel not in self.streams:
            self.streams[channel] = anyio.create_memory_object_stream[Message](math.inf)
        return self.streams[channel]

    async def send(self, channel: str, message: Message) -> None:
        self._stream(channel)[0].send_nowait(dict(message))

    async def receive(self, channel: str) -> Message:
        return await self._stream(channel)[1].receive()

    async def new_channel(self, prefix: str = "specific.") -> str:
        return f"{prefix}stream!{uuid.uuid4().hex}"

    async def group_add(self, group: str, channel: str) -> None:
        self.groups[group].add(channel)

    async def group_discard(self, group: str, channel: str) -> None:
        self.groups[group].discard(channel)

    async def group_send(self, group: str, message: Message) -> None:
        for channel in self.groups[group]:
            await self.send(channel, message)

    async def flush(self) -> None:
        self.streams.clear()
        self.groups.clear()

    async def close(self) -> None:
        for sender, receiver in self.streams.values():
            await sender.aclose()
            await receiver.aclose()


class HalfALayer:
    """Missing most of the API: not a channel layer."""

    extensions = ()

    async def send(self, channel: str, message: Message) -> None:
        pass


class WrongSignatures(StreamLayer):
    async def receive(self, channel: str) -> bytes:  # type: ignore[override]
        return b""


def plug_in() -> Worker:
    layer: ChannelLayer = StreamLayer()
    channel_layers.set("stream", layer)
    missing: ChannelLayer = HalfALayer()  # type: ignore[assignment]
    wrong: ChannelLayer = WrongSignatures()  # type: ignore[assignment]
    del missing, wrong
    return Worker(applications()[-1], ["thumbnails"], channel_layer=layer)
