"""An application for the stop-deadline and keepalive tests (tests/test_serving_reliability.py).

Served as ``tests.serverproject.reliability:application`` (by ``channels.serving``) or as
runserver's ``ASGI_APPLICATION`` (settings ``tests.serverproject.reliability_settings``).
What ran is written as marker files in ``$CHANNELS_TEST_MARKERS``: the test reads them
after the process has ended, which output lines alone could not show for a killed one.

- ``/ws/flood/``: joins group ``watched``; on the text ``flood``, sends 64 KiB frames
  until it has sent 256 MiB, far more than a client that does not read can buffer.
- ``/ws/watched/``: joins group ``watched`` and echoes; on the text ``close``, closes
  with code 4000 instead.
- ``/ws/spin/``: on the text ``spin``, sends frames in a loop that never ends and has no
  checkpoint of its own: only the sends' own can let the event loop run.
- ``/groups/``: how many channels group ``watched`` has (this process's layer).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.serverproject.settings")

import django
from django.apps import apps

if not apps.ready:  # served by channels.serving; runserver has set Django up already
    django.setup(set_prefix=False)

from django.urls import path

from channels.generic.http import AsyncHttpConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from channels.routing import ProtocolTypeRouter, URLRouter

FRAME = "x" * 65536


def mark(name: str) -> None:
    """Create the marker file ``name`` (and say so on stdout)."""
    print(f"marker: {name}", flush=True)
    directory = os.environ.get("CHANNELS_TEST_MARKERS")
    if directory:
        Path(directory, name).touch()


class WatchedConsumer(AsyncWebsocketConsumer):
    groups = ["watched"]

    async def receive(self, text_data: str | None = None, bytes_data: Any = None) -> None:
        if text_data == "close":
            await self.close(code=4000)
            mark("closed")
        else:
            await self.send(text_data=f"echo: {text_data}")

    async def disconnect(self, code: int) -> None:
        mark(f"disconnect-{code}")


class FloodConsumer(WatchedConsumer):
    async def receive(self, text_data: str | None = None, bytes_data: Any = None) -> None:
        if text_data == "flood":
            mark("flooding")
            for _ in range(4096):
                await self.send(text_data=FRAME)
            mark("flood-sent")


class SpinConsumer(WatchedConsumer):
    async def receive(self, text_data: str | None = None, bytes_data: Any = None) -> None:
        if text_data == "spin":
            mark("spinning")
            while True:
                await self.send(text_data="spin")


class GroupSize(AsyncHttpConsumer):
    async def handle(self, body: bytes) -> None:
        layer: Any = get_channel_layer()
        size = len(layer.groups.get("watched", {}))
        await self.send_response(200, str(size).encode())


@contextlib.asynccontextmanager
async def lifespan() -> AsyncIterator[None]:
    mark("lifespan-startup")
    yield
    mark("lifespan-shutdown")


application = ProtocolTypeRouter(
    {
        "http": URLRouter([path("groups/", GroupSize.as_asgi())]),
        "websocket": URLRouter(
            [
                path("ws/flood/", FloodConsumer.as_asgi()),
                path("ws/watched/", WatchedConsumer.as_asgi()),
                path("ws/spin/", SpinConsumer.as_asgi()),
            ]
        ),
    },
    lifespan=lifespan,
)
