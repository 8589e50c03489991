"""The project's ASGI application, as ``asgi.py`` builds it in a Channels 4.3 project."""

from __future__ import annotations

from django.urls import path, re_path

from channels.auth import AuthMiddlewareStack
from channels.routing import ChannelNameRouter, ProtocolTypeRouter, URLRouter
from channels.security.websocket import AllowedHostsOriginValidator

from . import consumers

websocket_urlpatterns = [
    re_path(r"^ws/chat/(?P<room>\w+)/$", consumers.ChatConsumer.as_asgi()),
    re_path(r"^ws/sync-chat/(?P<room>\w+)/$", consumers.SyncChatConsumer.as_asgi()),
]


def build_application() -> ProtocolTypeRouter:
    """What the project's ``asgi.py`` assigns to ``application``."""
    return ProtocolTypeRouter(
        {
            "websocket": AllowedHostsOriginValidator(
                AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
            ),
            "http": AuthMiddlewareStack(
                URLRouter([path("notes/", consumers.NotesConsumer.as_asgi())])
            ),
            "channel": ChannelNameRouter({"audit": consumers.AuditConsumer.as_asgi()}),
        }
    )
