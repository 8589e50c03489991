"""The servers' side of the end-to-end benchmark: what hypercorn or daphne serves.

``channels_app`` is an echo ``AsyncWebsocketConsumer`` as a Channels user writes it, behind
``ProtocolTypeRouter``, with the in-memory layer configured (so each connection also gets a
layer channel and its listener, as in a real project). ``bare_app`` is the same echo as a
plain ASGI callable: the ceiling a server reaches without Channels.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

settings.configure(
    INSTALLED_APPS=[],
    ALLOWED_HOSTS=["*"],
    CHANNEL_LAYERS={"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}},
    LOGGING_CONFIG=None,
)

import django  # noqa: E402

django.setup()


async def bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "websocket":
        return
    while True:
        message = await receive()
        if message["type"] == "websocket.connect":
            await send({"type": "websocket.accept"})
        elif message["type"] == "websocket.receive":
            if message.get("text") is not None:
                await send({"type": "websocket.send", "text": message["text"]})
            else:
                await send({"type": "websocket.send", "bytes": message["bytes"]})
        elif message["type"] == "websocket.disconnect":
            return


try:
    from channels.generic.websocket import AsyncWebsocketConsumer  # isort: skip
    from channels.routing import ProtocolTypeRouter
except ImportError:  # not on this branch yet: the benchmark reports "not available"
    pass
else:

    class EchoConsumer(AsyncWebsocketConsumer):
        async def receive(
            self, text_data: str | None = None, bytes_data: bytes | None = None
        ) -> None:
            await self.send(text_data=text_data, bytes_data=bytes_data)

    channels_app = ProtocolTypeRouter({"websocket": EchoConsumer.as_asgi()})
