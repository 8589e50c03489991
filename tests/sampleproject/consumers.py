"""Consumers written as a Channels 4.3 project writes them (the tutorial's shapes)."""

from __future__ import annotations

import json
from typing import Any

from channels.auth import login, logout
from channels.concurrency import async_to_sync
from channels.consumer import SyncConsumer
from channels.db import database_sync_to_async
from channels.generic.http import AsyncHttpConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer, WebsocketConsumer
from channels.types import Message

from ..testapp.models import Note


class ChatConsumer(AsyncJsonWebsocketConsumer):
    """Async chat: one group per room, messages signed with the logged-in user's name, an
    audit record sent to the worker for each message."""

    async def connect(self) -> None:
        self.room = self.scope["url_route"]["kwargs"]["room"]
        self.group = f"chat_{self.room}"
        if self.room == "members" and not self.scope["user"].is_authenticated:
            await self.close(code=4003)
            return
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        command = content.get("command")
        if command == "login":
            user = await database_sync_to_async(_get_user)(content["username"])
            await login(self.scope, user)
            await database_sync_to_async(self.scope["session"].save)()
            await self.send_json({"logged_in": user.username})
        elif command == "logout":
            await logout(self.scope)
            await self.send_json({"logged_out": True})
        elif command == "count":
            visits = self.scope["session"].get("messages", 0)
            await self.send_json({"messages_in_session": visits})
        else:
            self.scope["session"]["messages"] = self.scope["session"].get("messages", 0) + 1
            user = self.scope["user"]
            author = user.username if user.is_authenticated else "anonymous"
            await self.channel_layer.group_send(
                self.group, {"type": "chat.message", "author": author, "text": content["text"]}
            )
            await self.channel_layer.send(
                "audit", {"type": "audit.record", "text": f"{author}: {content['text']}"}
            )

    async def chat_message(self, event: Message) -> None:
        await self.send_json({"author": event["author"], "text": event["text"]})


class SyncChatConsumer(WebsocketConsumer):
    """The tutorial's synchronous chat consumer, with the bridge that works on trio too."""

    def connect(self) -> None:
        self.group = "chat_" + self.scope["url_route"]["kwargs"]["room"]
        async_to_sync(self.channel_layer.group_add)(self.group, self.channel_name)
        self.accept()

    def disconnect(self, code: int) -> None:
        async_to_sync(self.channel_layer.group_discard)(self.group, self.channel_name)

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        message = json.loads(text_data or "{}")["text"]
        Note.objects.create(text=f"sync: {message}")  # handlers may use the ORM directly
        async_to_sync(self.channel_layer.group_send)(
            self.group, {"type": "chat.message", "author": "sync", "text": message}
        )

    def chat_message(self, event: Message) -> None:
        self.send(text_data=json.dumps({"author": event["author"], "text": event["text"]}))


class NotesConsumer(AsyncHttpConsumer):
    """A small JSON endpoint: the notes the worker has written."""

    async def handle(self, body: bytes) -> None:
        notes = await database_sync_to_async(
            lambda: list(Note.objects.order_by("pk").values_list("text", flat=True))
        )()
        payload = {"user": str(self.scope["user"]), "notes": notes}
        await self.send_response(
            200, json.dumps(payload).encode(), headers=[(b"content-type", b"application/json")]
        )


class AuditConsumer(SyncConsumer):
    """Run by the worker: records each chat message in the database."""

    def audit_record(self, message: Message) -> None:
        Note.objects.create(text=message["text"])


def _get_user(username: str) -> Any:
    from django.contrib.auth import get_user_model

    return get_user_model().objects.get(username=username)
