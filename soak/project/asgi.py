"""The soak's ASGI application, served by ``python -m channels.serving``."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "soak.project.settings")

import django

django.setup()

from django.urls import path  # noqa: E402

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from .consumers import BroadcastConsumer, EchoConsumer, StatsConsumer  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": URLRouter(
            [
                path("soak/stats", StatsConsumer.as_asgi()),
                path("soak/broadcast", BroadcastConsumer.as_asgi()),
            ]
        ),
        "websocket": URLRouter([path("ws/echo/", EchoConsumer.as_asgi())]),
    }
)
