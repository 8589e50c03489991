"""The application the ``runworker`` tests serve, and a layer that starts with messages.

Each process has its own in-memory layer, so the layer is seeded from settings: the
worker then really receives those messages through the layer, the router and a consumer.
"""

from __future__ import annotations

from typing import Any

from channels.consumer import AsyncConsumer
from channels.layers import InMemoryChannelLayer
from channels.routing import ChannelNameRouter, ProtocolTypeRouter
from channels.types import Message


class SeededLayer(InMemoryChannelLayer):
    def __init__(self, seed: list[tuple[str, Message]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seed = seed

    async def receive(self, channel: str) -> Message:
        seed, self.seed = self.seed, []
        for target, message in seed:
            await self.send(target, message)
        return await super().receive(channel)


class Jobs(AsyncConsumer):
    async def job_run(self, message: Message) -> None:
        print(f"done {message['n']} on {self.scope['channel']}", flush=True)


application = ProtocolTypeRouter(
    {"channel": ChannelNameRouter({"jobs": Jobs.as_asgi(), "more-jobs": Jobs.as_asgi()})}
)
