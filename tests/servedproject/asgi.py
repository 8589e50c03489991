"""The project's ASGI application, as a Channels project writes it."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.servedproject.settings")

from django.urls import path, re_path

from channels.http import get_asgi_application

# Django is set up before anything imports models.
http_application = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from .consumers import ChatConsumer, HelloConsumer  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": URLRouter(
            [path("consumer/", HelloConsumer.as_asgi()), re_path(r"", http_application)]
        ),
        "websocket": URLRouter([path("ws/chat/<room>/", ChatConsumer.as_asgi())]),
    }
)
