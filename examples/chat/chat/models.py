"""What the chat remembers: every message, by room, so people joining see the latest."""

from django.db import models

ROOM_NAME_PATTERN = r"[-a-zA-Z0-9_]{1,50}"
MAX_MESSAGE_LENGTH = 1000
MAX_NAME_LENGTH = 30


class Message(models.Model):
    room = models.CharField(max_length=50, db_index=True)
    text = models.CharField(max_length=MAX_MESSAGE_LENGTH)
    name = models.CharField(max_length=MAX_NAME_LENGTH, default="")
    sent = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.room}: {self.text}"

    def as_dict(self) -> dict[str, object]:
        """What the browser gets: ``{"id", "name", "text"}``."""
        return {"id": self.id, "name": self.name, "text": self.text}
