"""Backend-neutral async code in a consumer (docs/topics/troubleshooting.md)."""

import anyio

from channels.generic.websocket import AsyncWebsocketConsumer


# [portable]
class CountdownConsumer(AsyncWebsocketConsumer):
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        # anyio, not asyncio: this runs unchanged on asyncio and on trio.
        with anyio.move_on_after(5):  # instead of asyncio.wait_for / asyncio.timeout
            async with anyio.create_task_group() as tasks:  # instead of asyncio.gather
                for n in range(int(text_data or 0), 0, -1):
                    tasks.start_soon(self.tick, n)
        await self.send(text_data="done")

    async def tick(self, n: int) -> None:
        await anyio.sleep(n / 100)  # instead of asyncio.sleep
        await self.send(text_data=str(n))


# [/portable]
