"""The demultiplexer and the client's recovery, from docs/topics/multiplexing.md and
docs/topics/client.md (exercised in tests/test_docs_snippets.py)."""

from __future__ import annotations

from typing import Any

from channels.generic.multiplex import AsyncJsonWebsocketDemultiplexer
from channels.generic.recovery import positions_from_scope, recovery_status
from channels.generic.websocket import AsyncJsonWebsocketConsumer


class NotificationConsumer(AsyncJsonWebsocketConsumer):
    groups = ["notifications"]

    async def notify(self, event: dict[str, Any]) -> None:
        await self.send_json({"text": event["text"]})


# [consumer]
class ChatConsumer(AsyncJsonWebsocketConsumer):
    group = "chat_lobby"

    async def connect(self) -> None:
        await self.accept()
        try:
            positions = positions_from_scope(self.scope)  # ?positions= from channels.js
        except ValueError:
            positions = {}  # a mangled URL: start afresh
        history = await self.group_join(self.group, after=positions.get(self.group))
        # Tells the client how it went; the missed messages, if any, follow.
        await self.send_json(recovery_status(self.group, history))
        if not history.recovered:
            await self.send_json({"type": "reload"})  # send the state afresh instead

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        await self.channel_layer.group_send(
            self.group, {"type": "chat.message", "text": str(content.get("text", ""))}
        )
        # Answers the client's stream.request() (the frame carries the request's ref).
        await self.reply({"ok": True})

    async def chat_message(self, event: dict[str, Any]) -> None:
        # "group" tells the client whose position "__position__" is.
        await self.send_json({**event, "group": self.group})


# [/consumer]


# [multiplexer]
class Multiplexer(AsyncJsonWebsocketDemultiplexer):
    consumer_classes = {
        "chat": ChatConsumer,
        "notifications": NotificationConsumer,
    }


# In routing.py: websocket_urlpatterns = [path("ws/", Multiplexer.as_asgi())]
# [/multiplexer]

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels.layers.InMemoryChannelLayer",
        "CONFIG": {"group_history": {"chat_*": {"size": 100, "ttl": 3600}}},
    }
}
