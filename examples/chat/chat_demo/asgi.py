"""The demo's ASGI application: Django for pages, a consumer for the chat socket."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chat_demo.settings")

from django.core.asgi import get_asgi_application

django_application = get_asgi_application()  # sets Django up before consumers import models

from django.urls import re_path  # noqa: E402

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from chat_demo.consumers import ChatConsumer  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_application,
        "websocket": URLRouter(
            [re_path(r"^ws/chat/(?P<room>[a-z0-9_-]{1,50})/$", ChatConsumer.as_asgi())]
        ),
    }
)
