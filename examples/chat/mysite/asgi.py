"""The ASGI entry point: Django's pages over HTTP, the chat consumer over WebSockets.

Serve it with ``python manage.py runserver --backend asyncio|trio``, or in production with
``hypercorn --worker-class asyncio|trio mysite.asgi:application``.
"""

import os

from channels.auth import AuthMiddlewareStack
from channels.http import get_asgi_application
from channels.routing import ProtocolTypeRouter, URLRouter
from channels.security.websocket import AllowedHostsOriginValidator

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
# Set Django up before importing code that imports models, such as the consumers.
django_asgi_app = get_asgi_application()

from chat.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
