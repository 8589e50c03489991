"""URL routing from docs/topics/routing.md (a project's ``routing.py``)."""

from django.urls import path, re_path

from channels.routing import URLRouter

from .consumers import RoomConsumer, TimeConsumer, UpperConsumer

# [patterns]
websocket_urlpatterns = [
    re_path(r"^ws/room/(?P<room>\w+)/$", RoomConsumer.as_asgi()),
    path("ws/upper/", UpperConsumer.as_asgi()),
]
# [/patterns]

# [nested]
api = URLRouter([path("time/", TimeConsumer.as_asgi())])

http_router = URLRouter([path("api/", api)])  # serves /api/time/
# [/nested]

# [middleware]
from typing import Any  # noqa: E402
from urllib.parse import parse_qs  # noqa: E402

from channels.middleware import BaseMiddleware  # noqa: E402
from channels.types import Receive, Scope, Send  # noqa: E402


class QueryStringMiddleware(BaseMiddleware):
    """Puts the parsed query string in ``scope["query"]``."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        query = parse_qs(scope.get("query_string", b"").decode())
        return await super().__call__(dict(scope, query=query), receive, send)


# [/middleware]
