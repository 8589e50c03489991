"""WebSocket consumers: connect, frames in and out, close, and group membership.

Each class keeps the upstream Channels methods and their meaning. One addition: groups
joined on connect are left when the consumer ends for any reason (a crash, or the server
cancelling it), not only on ``websocket.disconnect``, so a dead connection never lingers
in a group until the group expires.

Bad frames in the JSON consumers (a binary frame, or text that is not JSON) raise
``ValueError`` from the handler, as upstream: the consumer ends, its groups are left, and
the server closes the socket (hypercorn and daphne send close code 1011). Override
``receive`` or ``decode_json`` to answer bad input differently, for example by sending an
error frame or closing with 1007.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import anyio

from ..concurrency import async_to_sync
from ..consumer import AsyncConsumer, SyncConsumer
from ..exceptions import (
    AcceptConnection,
    DenyConnection,
    InvalidChannelLayerError,
    StopConsumer,
)
from ..types import ChannelLayer, Message, Receive, Scope, Send

__all__ = [
    "AsyncJsonWebsocketConsumer",
    "AsyncWebsocketConsumer",
    "JsonWebsocketConsumer",
    "WebsocketConsumer",
]

Headers = Iterable[tuple[bytes, bytes]]

#: The key a JSON consumer's ``reply()`` sets on its ``websocket.send`` message when a
#: demultiplexer runs it (``"stream"`` in its scope): the demultiplexer then adds the ref of
#: the frame being handled. Servers never see it.
REPLY_KEY = "channels.reply"

# How long leaving groups may take when a consumer ends abnormally (shielded from the
# cancellation that may be ending it).
_GROUP_CLEANUP_TIMEOUT = 5.0


def _accept_message(subprotocol: str | None, headers: Headers | None) -> Message:
    message: Message = {"type": "websocket.accept", "subprotocol": subprotocol}
    if headers:
        message["headers"] = list(headers)
    return message


def _frame_message(text_data: str | None, bytes_data: bytes | None) -> Message:
    if text_data is not None:
        return {"type": "websocket.send", "text": text_data}
    if bytes_data is not None:
        return {"type": "websocket.send", "bytes": bytes_data}
    raise ValueError("You must pass one of bytes_data or text_data")


def _close_message(code: int | bool | None, reason: str | None) -> Message:
    message: Message = {"type": "websocket.close"}
    # send(close=True) passes True through as the code: it means "no particular code".
    if code is not None and code is not True:
        message["code"] = code
    if reason:
        message["reason"] = reason
    return message


def _no_groups_error() -> InvalidChannelLayerError:
    return InvalidChannelLayerError(
        "BACKEND is unconfigured or doesn't support groups: this consumer lists groups, "
        "so CHANNEL_LAYERS must configure a layer with the 'groups' extension"
    )


class _GroupMembership:
    """Joins and leaves a consumer's ``groups``, and leaves them if it ends abruptly."""

    groups: list[str] | None = None
    channel_layer: ChannelLayer
    channel_name: str
    _joined: list[str]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if self.groups is None:
            self.groups = []

    async def _join_groups(self) -> None:
        self._joined = []
        if not self.groups:
            return
        layer = self.channel_layer
        if layer is None or not hasattr(layer, "group_add"):
            raise _no_groups_error()
        for group in self.groups:
            await layer.group_add(group, self.channel_name)
            self._joined.append(group)

    async def _leave_groups(self) -> None:
        if not self.groups:
            return
        layer = self.channel_layer
        if layer is None or not hasattr(layer, "group_discard"):
            raise _no_groups_error()
        for group in self.groups:
            await layer.group_discard(group, self.channel_name)
        self._joined = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._joined = []
        try:
            await super().__call__(scope, receive, send)  # type: ignore[misc]  # the consumer's
        finally:
            if getattr(self, "_joined", None):
                await self._leave_joined_groups()

    async def _leave_joined_groups(self) -> None:
        """Leave what is still joined, as the consumer ends (its ``__call__``'s ``finally``:
        written there rather than around it, so a connection holds one coroutine fewer)."""
        with anyio.move_on_after(_GROUP_CLEANUP_TIMEOUT, shield=True):
            for group in self._joined:
                await self.channel_layer.group_discard(group, self.channel_name)


class WebsocketConsumer(_GroupMembership, SyncConsumer):
    """A WebSocket consumer whose methods are synchronous, run in the worker thread."""

    def websocket_connect(self, message: Message) -> None:
        """Join ``groups``, then run :meth:`connect`."""
        async_to_sync(self._join_groups)()
        try:
            self.connect()
        except AcceptConnection:
            self.accept()
        except DenyConnection:
            self.close()

    def connect(self) -> None:
        """Called when a client opens the connection; accepts it unless overridden."""
        self.accept()

    def accept(self, subprotocol: str | None = None, headers: Headers | None = None) -> None:
        """Accept the connection, optionally choosing a subprotocol and adding headers."""
        super().send(_accept_message(subprotocol, headers))

    def websocket_receive(self, message: Message) -> None:
        if message.get("text") is not None:
            self.receive(text_data=message["text"])
        else:
            self.receive(bytes_data=message["bytes"])

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Called with each frame from the client: text as ``str``, binary as ``bytes``."""

    def send(  # type: ignore[override]
        self,
        text_data: str | None = None,
        bytes_data: bytes | None = None,
        close: bool | int = False,
    ) -> None:
        """Send a frame; with ``close`` (True, or a close code), close the socket after it."""
        super().send(_frame_message(text_data, bytes_data))
        if close:
            self.close(close)

    def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        """Close the connection from the server's side, or reject it during connect."""
        super().send(_close_message(code, reason))

    def websocket_disconnect(self, message: Message) -> None:
        """Leave ``groups``, run :meth:`disconnect`, then stop the consumer."""
        async_to_sync(self._leave_groups)()
        self.disconnect(message.get("code", 1005))
        raise StopConsumer()

    def disconnect(self, code: int) -> None:
        """Called when the connection has closed, with its close code."""


class JsonWebsocketConsumer(WebsocketConsumer):
    """A :class:`WebsocketConsumer` that speaks JSON in text frames."""

    def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any
    ) -> None:
        if text_data is None:
            raise ValueError("No text section for incoming WebSocket frame!")
        self.receive_json(self.decode_json(text_data), **kwargs)

    def receive_json(self, content: Any, **kwargs: Any) -> None:
        """Called with each decoded JSON message from the client."""

    def send_json(self, content: Any, close: bool | int = False) -> None:
        """Send ``content`` encoded as JSON in a text frame."""
        super().send(text_data=self.encode_json(content), close=close)

    def reply(self, content: Any) -> None:
        """Answer the client frame being handled with ``content``.

        Run by a :class:`~channels.generic.multiplex.AsyncJsonWebsocketDemultiplexer`, the
        frame sent carries the ``ref`` of the request (so a client's ``request()``
        resolves with it); elsewhere it is :meth:`send_json`.
        """
        if "stream" in self.scope:
            text = self.encode_json(content)
            SyncConsumer.send(self, {"type": "websocket.send", "text": text, REPLY_KEY: True})
        else:
            self.send_json(content)

    @classmethod
    def decode_json(cls, text_data: str) -> Any:
        """:raises ValueError: if the frame is not valid JSON."""
        return json.loads(text_data)

    @classmethod
    def encode_json(cls, content: Any) -> str:
        return json.dumps(content)


class AsyncWebsocketConsumer(_GroupMembership, AsyncConsumer):
    """A WebSocket consumer whose methods are coroutines, run on the event loop."""

    async def websocket_connect(self, message: Message) -> None:
        """Join ``groups``, then run :meth:`connect`."""
        await self._join_groups()
        try:
            await self.connect()
        except AcceptConnection:
            await self.accept()
        except DenyConnection:
            await self.close()

    async def connect(self) -> None:
        """Called when a client opens the connection; accepts it unless overridden."""
        await self.accept()

    async def accept(self, subprotocol: str | None = None, headers: Headers | None = None) -> None:
        """Accept the connection, optionally choosing a subprotocol and adding headers."""
        await super().send(_accept_message(subprotocol, headers))

    async def websocket_receive(self, message: Message) -> None:
        if message.get("text") is not None:
            await self.receive(text_data=message["text"])
        else:
            await self.receive(bytes_data=message["bytes"])

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Called with each frame from the client: text as ``str``, binary as ``bytes``."""

    async def send(  # type: ignore[override]
        self,
        text_data: str | None = None,
        bytes_data: bytes | None = None,
        close: bool | int = False,
    ) -> None:
        """Send a frame; with ``close`` (True, or a close code), close the socket after it."""
        await super().send(_frame_message(text_data, bytes_data))
        if close:
            await self.close(close)

    async def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        """Close the connection from the server's side, or reject it during connect."""
        await super().send(_close_message(code, reason))

    async def websocket_disconnect(self, message: Message) -> None:
        """Leave ``groups``, run :meth:`disconnect`, then stop the consumer."""
        await self._leave_groups()
        await self.disconnect(message.get("code", 1005))
        raise StopConsumer()

    async def disconnect(self, code: int) -> None:
        """Called when the connection has closed, with its close code."""


class AsyncJsonWebsocketConsumer(AsyncWebsocketConsumer):
    """An :class:`AsyncWebsocketConsumer` that speaks JSON in text frames."""

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any
    ) -> None:
        if text_data is None:
            raise ValueError("No text section for incoming WebSocket frame!")
        await self.receive_json(await self.decode_json(text_data), **kwargs)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """Called with each decoded JSON message from the client."""

    async def send_json(self, content: Any, close: bool | int = False) -> None:
        """Send ``content`` encoded as JSON in a text frame."""
        await super().send(text_data=await self.encode_json(content), close=close)

    async def reply(self, content: Any) -> None:
        """Answer the client frame being handled with ``content``.

        Run by a :class:`~channels.generic.multiplex.AsyncJsonWebsocketDemultiplexer`, the
        frame sent carries the ``ref`` of the request (so a client's ``request()``
        resolves with it); elsewhere it is :meth:`send_json`.
        """
        if "stream" in self.scope:
            text = await self.encode_json(content)
            await AsyncConsumer.send(
                self, {"type": "websocket.send", "text": text, REPLY_KEY: True}
            )
        else:
            await self.send_json(content)

    @classmethod
    async def decode_json(cls, text_data: str) -> Any:
        """:raises ValueError: if the frame is not valid JSON."""
        return json.loads(text_data)

    @classmethod
    async def encode_json(cls, content: Any) -> str:
        return json.dumps(content)
