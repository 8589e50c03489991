"""Origin checks from docs/topics/security.md."""

from django.urls import path

from channels.routing import URLRouter
from channels.security.websocket import AllowedHostsOriginValidator, OriginValidator

from .consumers import UpperConsumer

websocket_routes = URLRouter([path("ws/upper/", UpperConsumer.as_asgi())])

# [allowed-hosts]
application = AllowedHostsOriginValidator(websocket_routes)
# [/allowed-hosts]

# [explicit]
explicit = OriginValidator(
    websocket_routes,
    ["https://example.com", ".example.org", "http://localhost:*"],
)
# [/explicit]
