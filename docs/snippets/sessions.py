"""Sessions from docs/topics/sessions.md."""

from typing import Any

from django.urls import path

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.routing import URLRouter
from channels.sessions import SessionMiddlewareStack


# [consumer]
@database_sync_to_async
def count_message(session: Any) -> int:
    # Reading a session loads it from the session store: do it in the database thread.
    session["messages"] = session.get("messages", 0) + 1
    return int(session["messages"])


class VisitsConsumer(AsyncWebsocketConsumer):
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        count = await count_message(self.scope["session"])
        # The changed session is saved when this consumer sends its next message.
        await self.send(text_data=str(count))


# [/consumer]

# [stack]
application = SessionMiddlewareStack(URLRouter([path("ws/visits/", VisitsConsumer.as_asgi())]))
# [/stack]
