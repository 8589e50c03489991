"""What the chat remembers: every message, by room, so people joining see the latest."""

from django.db import models

ROOM_NAME_PATTERN = r"[-a-zA-Z0-9_]{1,50}"
MAX_MESSAGE_LENGTH = 1000


class Message(models.Model):
    room = models.CharField(max_length=50, db_index=True)
    text = models.CharField(max_length=MAX_MESSAGE_LENGTH)
    sent = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.room}: {self.text}"
