from __future__ import annotations

import json

from channels.generic.http import AsyncHttpConsumer
from channels.generic.websocket import AsyncWebsocketConsumer


class ChatConsumer(AsyncWebsocketConsumer):
    """The tutorial's chat: everything sent to a room goes to everyone in it."""

    async def connect(self) -> None:
        self.group = f"chat_{self.scope['url_route']['kwargs']['room']}"
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        message = json.loads(text_data or "{}")["message"]
        event = {"type": "chat.message", "message": message}
        await self.channel_layer.group_send(self.group, event)

    async def chat_message(self, event: dict[str, str]) -> None:
        await self.send(text_data=json.dumps({"message": event["message"]}))


class HelloConsumer(AsyncHttpConsumer):
    """An HTTP endpoint served by a consumer rather than a Django view."""

    async def handle(self, body: bytes) -> None:
        await self.send_response(
            200, b"hello from a consumer", headers=[(b"content-type", b"text/plain")]
        )
