"""One chat room per group: every message is stored, then broadcast to the room."""

from channels.consumer import AsyncConsumer
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer

from .models import Message

HISTORY = 20


@database_sync_to_async
def remember(room: str, text: str) -> None:
    Message.objects.create(room=room, text=text)


@database_sync_to_async
def recent(room: str) -> list[str]:
    latest = Message.objects.filter(room=room).order_by("-sent", "-id")[:HISTORY]
    return [message.text for message in reversed(latest)]


class ChatConsumer(AsyncConsumer):
    async def websocket_connect(self, event: dict) -> None:
        self.room = self.scope["url_route"]["kwargs"]["room"]
        self.group = f"chat_{self.room}"
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.send({"type": "websocket.accept"})
        for text in await recent(self.room):
            await self.send({"type": "websocket.send", "text": text})

    async def websocket_receive(self, event: dict) -> None:
        text = (event.get("text") or "").strip()[:1000]
        if text:
            await remember(self.room, text)
            await self.channel_layer.group_send(self.group, {"type": "chat.message", "text": text})

    async def chat_message(self, event: dict) -> None:
        await self.send({"type": "websocket.send", "text": event["text"]})

    async def websocket_disconnect(self, event: dict) -> None:
        await self.channel_layer.group_discard(self.group, self.channel_name)
        raise StopConsumer
