"""Durable groups from docs/topics/durable_groups.md (exercised in tests/test_docs_snippets.py)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer
from channels.types import HistoryChannelLayer, PresenceChannelLayer

# [settings]
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels.layers.InMemoryChannelLayer",  # or a Redis layer
        "CONFIG": {
            # Groups named chat_* keep their last 100 messages, none older than an hour.
            "group_history": {"chat_*": {"size": 100, "ttl": 3600}},
            # Joins and leaves in chat_* groups are sent to the group.
            "presence_events": ["chat_*"],
            # Redis layers: a vanished process's presence entries go after 30 s.
            "presence_timeout": 30,
        },
    },
}
# [/settings]


# [consumer]
class ChatConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        self.room = "chat_" + self.scope["url_route"]["kwargs"]["room"]
        # The client reconnects to ws/chat/lobby/?epoch=...&offset=... with the
        # __position__ of the last message it showed.
        query = parse_qs(self.scope["query_string"].decode())
        after = None
        if "epoch" in query and "offset" in query:
            after = {"epoch": query["epoch"][0], "offset": int(query["offset"][0])}
        await self.accept()
        history = await self.group_join(self.room, after=after)
        user = self.scope.get("user")
        await self.presence_join(self.room, {"name": getattr(user, "username", "") or "guest"})
        layer = self.channel_layer
        assert isinstance(layer, PresenceChannelLayer)  # narrows the type, for type checkers
        # Sent before any missed message: the replay starts once connect() returns.
        await self.send_json(
            {
                "type": "joined",
                "recovered": history.recovered,  # False: reload the room's state
                "present": await layer.presence(self.room),
            }
        )

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        await self.channel_layer.group_send(
            self.room, {"type": "chat.message", "text": str(content.get("text", ""))}
        )

    async def chat_message(self, event: dict[str, Any]) -> None:
        # Missed messages come through here too, each once, in order.
        await self.send_json(
            {"type": "message", "text": event["text"], "position": event["__position__"]}
        )

    async def presence_event(self, event: dict[str, Any]) -> None:
        # presence.join / presence.leave of the room.
        await self.send_json(
            {"type": event["type"], "channel": event["channel"], "info": event["info"]}
        )


# [/consumer]


# [script]
async def last_messages(room: str) -> list[str]:
    """What a view, a script or a management command can read: the room's history."""
    layer = get_channel_layer()
    assert isinstance(layer, HistoryChannelLayer)
    history = await layer.group_history("chat_" + room, limit=20)
    # Presence events of chat_* groups are in the history too: keep the messages.
    return [message["text"] for message in history.messages if "text" in message]


# [/script]
