"""A third-party channel layer, from docs/topics/testing_layers.md: its conformance tests
are docs/snippets/test_stream_layer.py (tests/test_third_party_layer.py runs them)."""

from __future__ import annotations

import contextlib
import copy
import math
import uuid
from collections import defaultdict
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer
from channels.types import Message


# [layer]
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


# [/layer]
