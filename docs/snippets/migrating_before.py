"""A sync consumer as written for Channels 4.3 (docs/migrating.md): asgiref's bridge."""

# [consumer]
from typing import Any

from asgiref.sync import async_to_sync

from channels.generic.websocket import WebsocketConsumer


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


# [/consumer]
