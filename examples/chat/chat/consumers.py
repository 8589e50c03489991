"""One WebSocket per visitor of a room; the room is a group, so a message reaches everyone.

Frames are JSON both ways. A visitor sends ``{"message": "hi"}``; every visitor of the room,
the sender included, receives ``{"message": "hi"}``. A frame that is not such a message, or
whose text is empty or too long, is answered to its sender alone with
``{"error": "..."}``; nothing is stored or broadcast and the connection stays open.
"""

import json
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from .models import MAX_MESSAGE_LENGTH, Message

HISTORY_LENGTH = 50


@database_sync_to_async
def save_message(room: str, text: str) -> int:
    return Message.objects.create(room=room, text=text).id


@database_sync_to_async
def latest_messages(room: str) -> list[Message]:
    latest = Message.objects.filter(room=room).order_by("-id")[:HISTORY_LENGTH]
    return list(reversed(latest))


class ChatConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        self.room_name = self.scope["url_route"]["kwargs"]["room_name"]
        self.room_group_name = f"chat_{self.room_name}"
        # Join the group before reading the history, so no message falls in between.
        await self.channel_layer.group_add(self.room_group_name, self.channel_name)
        await self.accept()
        history = await latest_messages(self.room_name)
        for message in history:
            await self.send(text_data=json.dumps({"message": message.text}))
        # A message saved before the history was read is in it already: skip its broadcast.
        self.seen_up_to = history[-1].id if history else 0

    async def disconnect(self, close_code: int) -> None:
        await self.channel_layer.group_discard(self.room_group_name, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            text = message_text(text_data)
        except ValueError as error:
            await self.send(text_data=json.dumps({"error": str(error)}))
            return
        # chat.observers.MessageObserver sends it to the room once it is committed.
        await save_message(self.room_name, text)

    async def model_created(self, event: dict[str, Any]) -> None:
        """A message saved anywhere (here, the admin, a shell), from the observer."""
        if event["pk"] > self.seen_up_to:
            await self.send(text_data=json.dumps({"message": event["data"]["text"]}))

    async def model_updated(self, event: dict[str, Any]) -> None:
        """An edited message: the page shows messages as they arrived, so nothing to do."""

    async def model_deleted(self, event: dict[str, Any]) -> None:
        """A deleted message: likewise left on pages that show it."""


def message_text(text_data: str | None) -> str:
    """The text of a ``{"message": ...}`` frame; ValueError says what is wrong with it."""
    try:
        content = json.loads(text_data) if text_data is not None else None
    except json.JSONDecodeError:
        content = None
    message = content.get("message") if isinstance(content, dict) else None
    if not isinstance(message, str):
        raise ValueError('Send JSON text like {"message": "hello"}.')
    text = message.strip()
    if not text:
        raise ValueError("Empty messages are not sent.")
    if len(text) > MAX_MESSAGE_LENGTH:
        raise ValueError(f"Messages are limited to {MAX_MESSAGE_LENGTH} characters.")
    return text
