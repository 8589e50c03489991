"""A project's ``asgi.py`` (docs/topics/routing.md and docs/topics/deploying.md)."""

# [asgi]
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")

from channels.http import get_asgi_application

# Set Django up first: the imports below load models.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ChannelNameRouter, ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from .routing import websocket_urlpatterns  # noqa: E402
from .worker import EmailConsumer  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
        "channel": ChannelNameRouter({"email": EmailConsumer.as_asgi()}),
    }
)
# [/asgi]
