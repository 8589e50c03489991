"""The servers' side of the end-to-end benchmark: what hypercorn or daphne serves.

``channels_app`` is an echo ``AsyncWebsocketConsumer`` as a Channels user writes it, behind
``ProtocolTypeRouter``, with the in-memory layer configured (so each connection also gets a
layer channel and its listener, as in a real project). ``bare_app`` is the same echo as a
plain ASGI callable: the ceiling a server reaches without Channels (it also answers the
HTTP cases' sync view, the ceiling without Django).

``broadcast_app`` is a group broadcast as a chat or a live dashboard does it: every
connection to ``/`` is an ``AsyncJsonWebsocketConsumer`` in one group, and a connection to
``/send`` asks for ``sends`` ``group_send``s of one JSON payload, which each member's
handler sends to its client. ``bare_broadcast_app`` does the same fan-out without
Channels (the payload encoded once, a queue per connection): the ceiling. ``idle_app`` is
the JSON consumer in one group that does nothing else, for counting what an open
connection costs.

For plain HTTP, the same few Django views (this module is also the URLconf) are served by
``django_http_app``, Django's own ``get_asgi_application()`` (what upstream Channels
projects put in their router's ``"http"`` slot), and by ``channels_http_app``, this
package's ``channels.http.get_asgi_application()``. No middleware and no database: the
numbers are the handlers' and the views', equal on both sides.
"""

from __future__ import annotations

import importlib.util
import json
from typing import Any
from urllib.parse import parse_qs

from django.conf import settings

settings.configure(
    INSTALLED_APPS=[],
    ALLOWED_HOSTS=["*"],
    CHANNEL_LAYERS={"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}},
    LOGGING_CONFIG=None,
    ROOT_URLCONF="e2e_app",
    MIDDLEWARE=[],
)

import django  # noqa: E402

django.setup()

import time  # noqa: E402
from collections.abc import AsyncIterator, Iterator  # noqa: E402

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse  # noqa: E402
from django.urls import path  # noqa: E402

#: How long the slow sync view blocks its thread, as a slow query would.
SLOW_VIEW_S = 0.005


def answer(view: str, request: HttpRequest) -> bytes:
    """A small JSON body that names the view and echoes the request's ``n``, so the
    client can tell a right answer from a wrong one."""
    return json.dumps({"view": view, "n": int(request.GET["n"])}).encode()


def sync_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse(answer("sync", request), content_type="application/json")


async def async_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse(answer("async", request), content_type="application/json")


def sync_slow_view(request: HttpRequest) -> HttpResponse:
    time.sleep(SLOW_VIEW_S)
    return HttpResponse(answer("sync-slow", request), content_type="application/json")


def stream_view(request: HttpRequest) -> StreamingHttpResponse:
    """``parts`` chunks from an async generator: what an async view streams."""
    n, parts = int(request.GET["n"]), int(request.GET["parts"])

    async def chunks() -> AsyncIterator[bytes]:
        for index in range(parts):
            yield f"{n}:{index};".encode()

    return StreamingHttpResponse(chunks(), content_type="text/plain")


def sync_stream_view(request: HttpRequest) -> StreamingHttpResponse:
    """The same chunks from a sync generator (a CSV export, a file)."""
    n, parts = int(request.GET["n"]), int(request.GET["parts"])

    def chunks() -> Iterator[bytes]:
        for index in range(parts):
            yield f"{n}:{index};".encode()

    return StreamingHttpResponse(chunks(), content_type="text/plain")


urlpatterns = [
    path("sync", sync_view),
    path("async", async_view),
    path("sync-slow", sync_slow_view),
    path("stream", stream_view),
    path("sync-stream", sync_stream_view),
]


class _BuiltOnFirstUse:
    """An HTTP handler built on its first request (the harness's untimed warm-up), so
    the WebSocket rows carry neither handler in their memory. (A module ``__getattr__``
    would not do: hypercorn looks the application up with ``eval`` in the module.)"""

    def __init__(self, build: Any) -> None:
        self._build = build
        self._app: Any = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await bare_app(scope, receive, send)  # neither handler speaks lifespan
            return
        if self._app is None:
            self._app = self._build()
        await self._app(scope, receive, send)


def _django_handler() -> Any:
    from django.core.asgi import get_asgi_application

    return get_asgi_application()


def _channels_handler() -> Any:
    from channels.http import get_asgi_application

    return get_asgi_application()


django_http_app = _BuiltOnFirstUse(_django_handler)
if importlib.util.find_spec("channels.http") is not None:  # upstream Channels 4 has none
    channels_http_app = _BuiltOnFirstUse(_channels_handler)


async def bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "http":  # the sync view's answer, without Django
        n = int(parse_qs(scope["query_string"].decode())["n"][0])
        while (await receive()).get("more_body"):
            pass
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        body = json.dumps({"view": "sync", "n": n}).encode()
        await send({"type": "http.response.body", "body": body})
        return
    if scope["type"] != "websocket":
        return
    while True:
        message = await receive()
        if message["type"] == "websocket.connect":
            await send({"type": "websocket.accept"})
        elif message["type"] == "websocket.receive":
            if message.get("text") is not None:
                await send({"type": "websocket.send", "text": message["text"]})
            else:
                await send({"type": "websocket.send", "bytes": message["bytes"]})
        elif message["type"] == "websocket.disconnect":
            return


class _BareGroup:
    """The bare broadcast's group: one queue per member connection, in this process."""

    def __init__(self) -> None:
        self.members: dict[int, Any] = {}


_bare_group = _BareGroup()


async def bare_broadcast_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The broadcast without Channels: ``/send`` encodes each payload once and queues the
    text for every member; each member's task sends what its queue holds. anyio, so it
    runs on hypercorn's asyncio and trio workers alike."""
    import anyio

    if scope["type"] == "lifespan":
        await bare_app(scope, receive, send)
        return
    if scope["type"] != "websocket":
        return
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    if scope["path"] == "/send":
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            request = json.loads(message["text"])
            for n in range(request["sends"]):
                text = json.dumps({"n": n, "t": time.time(), "x": request["x"]})
                for queue in list(_bare_group.members.values()):
                    queue.send_nowait(text)
            await send({"type": "websocket.send", "text": json.dumps({"sent": request["sends"]})})
    outgoing, incoming = anyio.create_memory_object_stream[str](1000)
    key = id(outgoing)
    _bare_group.members[key] = outgoing

    async def forward() -> None:
        async for text in incoming:
            await send({"type": "websocket.send", "text": text})

    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(forward)
            while (await receive())["type"] != "websocket.disconnect":
                pass
            tasks.cancel_scope.cancel()
    finally:
        del _bare_group.members[key]


try:
    from channels.generic.websocket import AsyncJsonWebsocketConsumer, AsyncWebsocketConsumer
    from channels.routing import ProtocolTypeRouter
except ImportError:  # not on this branch yet: the benchmark reports "not available"
    pass
else:

    class EchoConsumer(AsyncWebsocketConsumer):
        async def receive(
            self, text_data: str | None = None, bytes_data: bytes | None = None
        ) -> None:
            await self.send(text_data=text_data, bytes_data=bytes_data)

    channels_app = ProtocolTypeRouter({"websocket": EchoConsumer.as_asgi()})

    BROADCAST_GROUP = "bench-broadcast"

    class BroadcastMember(AsyncJsonWebsocketConsumer):
        """A client in the group: each group message goes to it as one JSON frame."""

        groups = [BROADCAST_GROUP]

        async def bench_broadcast(self, event: dict[str, Any]) -> None:
            await self.send_json(event["payload"])

    class BroadcastSender(AsyncJsonWebsocketConsumer):
        """Asked ``{"sends": n, "x": text}``, makes ``n`` group_sends, stamped with the
        wall clock (the clients, in other processes, subtract it from theirs), then
        answers ``{"sent": n}``."""

        async def receive_json(self, content: Any, **kwargs: Any) -> None:
            layer = self.channel_layer
            for n in range(content["sends"]):
                payload = {"n": n, "t": time.time(), "x": content["x"]}
                await layer.group_send(
                    BROADCAST_GROUP, {"type": "bench.broadcast", "payload": payload}
                )
            await self.send_json({"sent": content["sends"]})

    class IdleMember(AsyncJsonWebsocketConsumer):
        """Joins a group and waits: what each of many open connections costs."""

        groups = ["bench-idle"]

    broadcast_member = BroadcastMember.as_asgi()
    broadcast_sender = BroadcastSender.as_asgi()

    async def broadcast_route(scope: dict[str, Any], receive: Any, send: Any) -> None:
        app = broadcast_sender if scope["path"] == "/send" else broadcast_member
        await app(scope, receive, send)

    broadcast_app = ProtocolTypeRouter({"websocket": broadcast_route})
    idle_app = ProtocolTypeRouter({"websocket": IdleMember.as_asgi()})
