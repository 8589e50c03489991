"""The served application: a ProtocolTypeRouter with a lifespan hook that says when it
runs (the tests read those lines from the server's output)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.serverproject.settings")

from channels.http import get_asgi_application

django_application = get_asgi_application()

from django.urls import path, re_path  # noqa: E402

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from .consumers import (  # noqa: E402
    EchoConsumer,
    HelloConsumer,
    LabDemultiplexer,
    NotesConsumer,
)


@contextlib.asynccontextmanager
async def lifespan() -> AsyncIterator[None]:
    print("lifespan: startup", flush=True)
    yield
    print("lifespan: shutdown", flush=True)


application = ProtocolTypeRouter(
    {
        "http": URLRouter(
            [
                path("hello/", HelloConsumer.as_asgi()),
                path("notes/", NotesConsumer.as_asgi()),
                re_path(r"^", django_application),  # everything else: Django's URLconf
            ]
        ),
        "websocket": URLRouter(
            [
                path("ws/echo/", EchoConsumer.as_asgi()),
                path("ws/lab/", LabDemultiplexer.as_asgi()),
            ]
        ),
    },
    lifespan=lifespan,
)
