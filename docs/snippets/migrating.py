"""Sync consumers calling the layer, before and after the move (docs/migrating.md)."""

from typing import Any

from asgiref.sync import async_to_sync as asgiref_async_to_sync

from channels.concurrency import async_to_sync
from channels.generic.websocket import WebsocketConsumer


# [after]
class ChatConsumer(WebsocketConsumer):
    def connect(self) -> None:
        async_to_sync(self.channel_layer.group_add)("chat", self.channel_name)
        self.accept()

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        async_to_sync(self.channel_layer.group_send)(
            "chat", {"type": "chat.message", "text": text_data}
        )

    def chat_message(self, event: dict[str, Any]) -> None:
        self.send(text_data=event["text"])

    def disconnect(self, code: int) -> None:
        async_to_sync(self.channel_layer.group_discard)("chat", self.channel_name)


# [/after]


# [before]
class LegacyChatConsumer(WebsocketConsumer):
    """Upstream's tutorial style: asgiref's bridge works on asyncio, refuses under trio."""

    def connect(self) -> None:
        asgiref_async_to_sync(self.channel_layer.group_add)("chat", self.channel_name)
        self.accept()


# [/before]
