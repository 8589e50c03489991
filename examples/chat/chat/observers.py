"""Messages reach the room through an observer: saved anywhere (a visitor's WebSocket, the
Django admin, a shell), a message is sent to its room's group once it is committed."""

from typing import Any

from channels.observers import ModelObserver

from .models import Message


class MessageObserver(ModelObserver):
    model = Message

    def groups(self, instance: Message) -> list[str]:
        return [room_group(instance.room)]

    def serialize(self, instance: Message, action: str) -> dict[str, Any]:
        return instance.as_dict()


def room_group(room: str) -> str:
    return f"chat_{room}"
