"""Consumers from docs/topics/consumers.md; tests/test_docs_snippets.py drives each one."""

from typing import Any

from channels.consumer import AsyncConsumer, SyncConsumer
from channels.exceptions import StopConsumer
from channels.generic.http import AsyncHttpConsumer
from channels.generic.websocket import (
    AsyncJsonWebsocketConsumer,
    AsyncWebsocketConsumer,
    WebsocketConsumer,
)


# [raw-sync]
class EchoConsumer(SyncConsumer):
    def websocket_connect(self, event: dict[str, Any]) -> None:
        self.send({"type": "websocket.accept"})

    def websocket_receive(self, event: dict[str, Any]) -> None:
        self.send({"type": "websocket.send", "text": event["text"]})

    def websocket_disconnect(self, event: dict[str, Any]) -> None:
        raise StopConsumer()


# [/raw-sync]


# [raw-async]
class AsyncEchoConsumer(AsyncConsumer):
    async def websocket_connect(self, event: dict[str, Any]) -> None:
        await self.send({"type": "websocket.accept"})

    async def websocket_receive(self, event: dict[str, Any]) -> None:
        await self.send({"type": "websocket.send", "text": event["text"]})

    async def websocket_disconnect(self, event: dict[str, Any]) -> None:
        raise StopConsumer()


# [/raw-async]


# [websocket]
class UpperConsumer(WebsocketConsumer):
    def connect(self) -> None:
        # Reject the connection by calling self.close() here instead.
        self.accept()

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is not None:
            self.send(text_data=text_data.upper())
        else:
            self.send(bytes_data=bytes_data)

    def disconnect(self, code: int) -> None:
        pass


# [/websocket]


# [async-websocket]
class RoomConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        self.room = self.scope["url_route"]["kwargs"]["room"]
        await self.channel_layer.group_add(f"room_{self.room}", self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(f"room_{self.room}", self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        # "room.message" is dispatched to room_message() on every member of the group.
        await self.channel_layer.group_send(
            f"room_{self.room}", {"type": "room.message", "text": text_data}
        )

    async def room_message(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["text"])


# [/async-websocket]


# [groups]
class AnnouncementsConsumer(AsyncWebsocketConsumer):
    groups = ["announcements"]  # joined on connect, left on disconnect

    async def announcement(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["text"])


# [/groups]


# [json]
class CounterConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        self.count = 0
        await self.accept()

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        self.count += int(content.get("add", 0))
        await self.send_json({"count": self.count})


# [/json]


# [http]
class TimeConsumer(AsyncHttpConsumer):
    async def handle(self, body: bytes) -> None:
        await self.send_response(
            200,
            b'{"ok": true}',
            headers=[(b"Content-Type", b"application/json")],
        )


# [/http]


# [long-poll]
class WaitConsumer(AsyncHttpConsumer):
    """Holds the request open until a ``notify`` message arrives on the layer."""

    async def handle(self, body: bytes) -> None:
        await self.channel_layer.group_add("waiters", self.channel_name)
        await self.send_headers(headers=[(b"Content-Type", b"text/plain")])
        await self.send_body(b"", more_body=True)  # started, not finished: keep running

    async def notify(self, event: dict[str, Any]) -> None:
        await self.send_body(event["text"].encode())  # the last part: the consumer stops

    async def disconnect(self) -> None:
        await self.channel_layer.group_discard("waiters", self.channel_name)


# [/long-poll]
