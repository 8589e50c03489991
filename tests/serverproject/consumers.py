"""Consumers for the served project: plain HTTP, the database, a WebSocket echo."""

from __future__ import annotations

from typing import Any

import sniffio

from channels.db import database_sync_to_async
from channels.generic.http import AsyncHttpConsumer
from channels.generic.multiplex import AsyncJsonWebsocketDemultiplexer
from channels.generic.websocket import AsyncJsonWebsocketConsumer, AsyncWebsocketConsumer
from tests.testapp.models import Note


class HelloConsumer(AsyncHttpConsumer):
    async def handle(self, body: bytes) -> None:
        library = sniffio.current_async_library()
        await self.send_response(200, f"hello from {library}".encode())


class NotesConsumer(AsyncHttpConsumer):
    """The notes in the database the server uses: shows which database that is."""

    async def handle(self, body: bytes) -> None:
        texts = await database_sync_to_async(
            lambda: list(Note.objects.order_by("pk").values_list("text", flat=True))
        )()
        await self.send_response(200, ", ".join(texts).encode())


class EchoConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        await self.accept()

    async def receive(self, text_data: str | None = None, bytes_data: Any = None) -> None:
        if text_data == "notes":
            texts = await database_sync_to_async(
                lambda: list(Note.objects.order_by("pk").values_list("text", flat=True))
            )()
            await self.send(text_data=", ".join(texts))
        else:
            await self.send(text_data=f"echo: {text_data}")

    async def disconnect(self, code: int) -> None:
        # The serving tests read this line to see the consumer heard the close.
        print(f"echo consumer disconnected with code {code}", flush=True)


class LabStream(AsyncJsonWebsocketConsumer):
    """A stream for the browser client's tests: replies, stays silent, crashes on demand."""

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        action = content.get("do") if isinstance(content, dict) else None
        if action == "reply":
            await self.reply({"echo": content.get("value"), "stream": self.scope["stream"]})
        elif action == "crash":
            raise RuntimeError("crashed on demand")
        elif action == "silent":
            return
        else:
            await self.send_json({"got": content})


class LabDemultiplexer(AsyncJsonWebsocketDemultiplexer):
    consumer_classes = {"lab": LabStream, "other": LabStream}
