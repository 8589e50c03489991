"""Work that lives as long as the server, from docs/topics/routing.md."""

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio

from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer
from channels.routing import ProtocolTypeRouter


class ClockConsumer(AsyncJsonWebsocketConsumer):
    groups = ["clock"]

    async def clock_tick(self, event: dict[str, Any]) -> None:
        await self.send_json({"time": event["time"]})


# [lifespan]
async def tick_every_second() -> None:
    layer = get_channel_layer()
    while True:
        await layer.group_send("clock", {"type": "clock.tick", "time": time.time()})
        await anyio.sleep(1)


@asynccontextmanager
async def lifespan() -> AsyncIterator[None]:
    # Entered when the server starts, exited when it stops: the task runs in between.
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(tick_every_second)
        yield
        tasks.cancel_scope.cancel()


application = ProtocolTypeRouter({"websocket": ClockConsumer.as_asgi()}, lifespan=lifespan)
# [/lifespan]
