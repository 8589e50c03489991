"""Trusting a reverse proxy's X-Forwarded-* headers (docs/topics/deploying.md)."""

from channels.generic.websocket import AsyncJsonWebsocketConsumer


class WhereFromConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        await self.accept()
        await self.send_json({"client": self.scope["client"][0], "scheme": self.scope["scheme"]})


application = WhereFromConsumer.as_asgi()

# [proxy]
from hypercorn.middleware import ProxyFixMiddleware  # noqa: E402

# At the end of asgi.py: one trusted proxy in front of hypercorn.
application = ProxyFixMiddleware(application, mode="legacy", trusted_hops=1)
# [/proxy]
