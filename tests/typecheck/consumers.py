"""A subclass of every generic consumer, as a project writes them."""

from __future__ import annotations

from typing import Any, assert_type

from channels.concurrency import async_to_sync
from channels.consumer import AsyncConsumer, SyncConsumer
from channels.db import database_sync_to_async
from channels.exceptions import DenyConnection, StopConsumer
from channels.generic.http import AsyncHttpConsumer
from channels.generic.websocket import (
    AsyncJsonWebsocketConsumer,
    AsyncWebsocketConsumer,
    JsonWebsocketConsumer,
    WebsocketConsumer,
)
from channels.types import ASGIApp, ChannelLayer, Message, Scope


class EchoConsumer(WebsocketConsumer):
    groups = ["broadcast"]

    def connect(self) -> None:
        assert_type(self.scope, Scope)
        assert_type(self.channel_name, str)
        if self.scope["path"] == "/closed/":
            raise DenyConnection
        # Sync consumers reach the layer through async_to_sync, as upstream's tutorial does.
        async_to_sync(self.channel_layer.group_add)("chat", self.channel_name)
        async_to_sync(self.channel_layer.group_add)("chat")  # type: ignore[call-arg]
        self.accept(subprotocol="chat", headers=[(b"x-echo", b"1")])

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is not None:
            self.send(text_data=text_data.upper())
        elif bytes_data is not None:
            self.send(bytes_data=bytes_data[::-1], close=1000)

    def disconnect(self, code: int) -> None:
        self.close(code=4000, reason="bye")

    def chat_message(self, event: Message) -> None:
        assert_type(event, dict[str, Any])
        # A sync handler's send returns nothing to await.
        assert_type(self.send(text_data=event["text"]), None)


class ChatConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        assert_type(self.channel_layer, ChannelLayer)
        await self.channel_layer.group_add("chat", self.channel_name)
        await self.accept()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.channel_layer.group_send("chat", {"type": "chat.message", "text": text_data})

    async def chat_message(self, event: Message) -> None:
        await self.send(text_data=event["text"])

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard("chat", self.channel_name)

    @database_sync_to_async
    def count_messages(self, room: str) -> int:
        return len(room)

    async def use_the_database(self) -> None:
        # Decorated methods are awaited without ``self``, and keep their signature.
        assert_type(await self.count_messages("lobby"), int)
        await self.count_messages(room=1)  # type: ignore[arg-type]
        await self.count_messages()  # type: ignore[call-arg]


class TodoConsumer(JsonWebsocketConsumer):
    def receive_json(self, content: Any, **kwargs: Any) -> None:
        self.send_json({"echo": content}, close=False)

    @classmethod
    def encode_json(cls, content: Any) -> str:
        assert_type(super().encode_json(content), str)
        return super().encode_json(content)


class LiveConsumer(AsyncJsonWebsocketConsumer):
    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        assert_type(await self.decode_json("{}"), Any)
        await self.send_json(content)

    async def notify(self) -> None:
        # Async send methods must be awaited: they return coroutines.
        self.send_json({})  # type: ignore[unused-coroutine]


class LongPollConsumer(AsyncHttpConsumer):
    async def handle(self, body: bytes) -> None:
        assert_type(self.body, list[bytes])
        await self.send_headers(status=200, headers=[(b"content-type", b"text/plain")])
        await self.send_body(b"partial", more_body=True)

    async def update(self, event: Message) -> None:
        await self.send_body(event["text"].encode())

    async def fail(self) -> None:
        await self.send_response(500, b"no", headers={b"x-reason": b"demo"})
        await self.send_body("text")  # type: ignore[arg-type]


class PingConsumer(SyncConsumer):
    def websocket_connect(self, message: Message) -> None:
        self.send({"type": "websocket.accept"})

    def websocket_disconnect(self, message: Message) -> None:
        raise StopConsumer


class TaskConsumer(AsyncConsumer):
    async def thumbnail(self, message: Message) -> None:
        await self.send({"type": "thumbnail.done", "id": message["id"]})


def applications() -> list[ASGIApp]:
    """``as_asgi()`` gives ASGI applications, whatever the consumer."""
    assert_type(AsyncWebsocketConsumer.groups, list[str] | None)
    echo = EchoConsumer.as_asgi()
    assert_type(echo.consumer_class, type[AsyncConsumer])
    assert_type(echo.consumer_initkwargs, dict[str, Any])
    return [
        echo,
        ChatConsumer.as_asgi(),
        TodoConsumer.as_asgi(),
        LiveConsumer.as_asgi(),
        LongPollConsumer.as_asgi(),
        PingConsumer.as_asgi(),
        TaskConsumer.as_asgi(extra="passed to __init__"),
    ]
