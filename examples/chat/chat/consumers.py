"""One WebSocket per visitor of a room, carrying two streams (``channels.js`` on the page).

``/ws/chat/<room>/`` is served by :class:`ChatSocket`, a demultiplexer: frames are
``{"stream": ..., "payload": ...}`` and each stream has its own consumer.

The ``chat`` stream (:class:`ChatConsumer`):
  - on connect, joins the room's group ``chat_<room>`` from the position the client sent
    in the query string (``?positions=``, which channels.js adds when it reconnects). The
    group keeps history (``group_history`` in the settings), so the messages sent while
    the client was away are replayed, in order, once. It tells the client how that went
    (``{"__recovery__": {...}}``); when they could not be replayed (a first visit, or a
    server restart with the in-memory layer) it sends the latest messages from the
    database instead: ``{"type": "chat.history", "messages": [...]}``.
  - is present in the room with the visitor's name; the client keeps the list from a
    ``presence.snapshot`` and the ``presence.join``/``presence.leave`` events.
  - a visitor sends ``{"message": "hi"}`` as a request; the reply is ``{"ok": true, "id":
    ...}``, or ``{"error": "..."}`` for an empty, too long or malformed message, which is
    neither stored nor broadcast. Everyone in the room, the sender included, receives
    ``{"type": "chat.message", "id", "name", "text", "group", "__position__"}``. The
    message reaches the room through :class:`chat.observers.MessageObserver` once it is
    committed, so one saved anywhere else (the Django admin, a shell) reaches it too.

The ``notifications`` stream (:class:`NotificationConsumer`) tells a visitor about
messages in the other rooms: ``{"room", "name", "text"}``.
"""

from typing import Any, cast
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.multiplex import AsyncJsonWebsocketDemultiplexer
from channels.generic.recovery import positions_from_scope, recovery_status
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.types import Message as Event
from channels.types import PresenceChannelLayer, Scope

from .models import MAX_MESSAGE_LENGTH, MAX_NAME_LENGTH, Message

HISTORY_LENGTH = 50
NOTIFICATIONS_GROUP = "notifications"


@database_sync_to_async
def save_message(room: str, name: str, text: str) -> Message:
    return Message.objects.create(room=room, name=name, text=text)


@database_sync_to_async
def latest_messages(room: str) -> list[Message]:
    latest = Message.objects.filter(room=room).order_by("-id")[:HISTORY_LENGTH]
    return list(reversed(latest))


def visitor_name(scope: Scope) -> str:
    """The name the page chose (``?name=``), trimmed to a sane length; "guest" if none."""
    query = scope.get("query_string", b"").decode("latin-1")
    name = " ".join(parse_qs(query).get("name", [""])[-1].split())[:MAX_NAME_LENGTH]
    return name or "guest"


class ChatConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        self.room_name = self.scope["url_route"]["kwargs"]["room_name"]
        self.room_group_name = f"chat_{self.room_name}"
        self.visitor = visitor_name(self.scope)
        await self.accept()
        try:
            positions = positions_from_scope(self.scope)
        except ValueError:
            positions = {}  # a mangled URL: start afresh, as on a first visit
        group = self.room_group_name
        history = await self.group_join(group, after=positions.get(group))
        await self.send_json(recovery_status(group, history))
        # A live message already in the history sent below is skipped by its id.
        self.seen_up_to = 0
        if not history.recovered:
            messages = await latest_messages(self.room_name)
            self.seen_up_to = messages[-1].id if messages else 0
            await self.send_json(
                {
                    "type": "chat.history",
                    "group": group,
                    "messages": [m.as_dict() for m in messages],
                }
            )
        await self.presence_join(group, {"name": self.visitor})
        layer = cast(PresenceChannelLayer, self.channel_layer)  # the settings' layer has it
        members = await layer.presence(group)
        await self.send_json({"type": "presence.snapshot", "group": group, "members": members})

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        try:
            text = message_text(content)
        except ValueError as error:
            await self.reply({"error": str(error)})
            return
        # chat.observers.MessageObserver sends it to the room once it is committed.
        message = await save_message(self.room_name, self.visitor, text)
        await self.channel_layer.group_send(
            NOTIFICATIONS_GROUP,
            {"type": "room.activity", "room": self.room_name, "name": self.visitor, "text": text},
        )
        await self.reply({"ok": True, "id": message.id})

    async def model_created(self, event: Event) -> None:
        """A message saved anywhere (here, the admin, a shell), from the observer."""
        await self.chat_message(
            {"type": "chat.message", **event["data"], "__position__": event["__position__"]}
        )

    async def chat_message(self, event: Event) -> None:
        """A message sent to the room's group by code that stores none (a bot, say)."""
        if event["id"] > self.seen_up_to:
            await self.send_json({**event, "group": self.room_group_name})

    async def model_updated(self, event: Event) -> None:
        """An edited message: the page shows messages as they arrived, so nothing to do."""

    async def model_deleted(self, event: Event) -> None:
        """A deleted message: likewise left on pages that show it."""

    async def presence_event(self, event: Event) -> None:
        """Someone came or went (``presence.join``/``presence.leave`` from the layer)."""
        await self.send_json(event)


class NotificationConsumer(AsyncJsonWebsocketConsumer):
    groups = [NOTIFICATIONS_GROUP]

    async def room_activity(self, event: Event) -> None:
        if event["room"] != self.scope["url_route"]["kwargs"]["room_name"]:
            await self.send_json({key: event[key] for key in ("room", "name", "text")})


class ChatSocket(AsyncJsonWebsocketDemultiplexer):
    consumer_classes = {"chat": ChatConsumer, "notifications": NotificationConsumer}


def message_text(content: Any) -> str:
    """The text of a ``{"message": ...}`` payload; ValueError says what is wrong with it."""
    message = content.get("message") if isinstance(content, dict) else None
    if not isinstance(message, str):
        raise ValueError('Send a payload like {"message": "hello"}.')
    text = message.strip()
    if not text:
        raise ValueError("Empty messages are not sent.")
    if len(text) > MAX_MESSAGE_LENGTH:
        raise ValueError(f"Messages are limited to {MAX_MESSAGE_LENGTH} characters.")
    return text
