"""The served consumers: a JSON echo that lives in one group, and two HTTP endpoints.

:class:`EchoConsumer` is what a Channels project writes: it joins the ``soak`` group on
connect (``groups``) and answers ``{"echo": x}`` with ``{"echo": x}``. Group messages come
back as ``{"broadcast": text}``. ``{"flood": size}`` makes it send frames of ``size``
bytes for as long as the socket takes them: with a client that stops reading, the server
ends up blocked writing to it, which is what the stop probe needs.

The HTTP endpoints are the harness's side channel into the server process:
``/soak/stats`` (see :mod:`soak.project.introspect`; ``?gc=1`` collects garbage first)
and ``/soak/broadcast?text=...`` (one ``group_send`` to the group).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

from django.conf import settings

from channels.generic.http import AsyncHttpConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer
from channels.types import Receive, Scope, Send

from . import introspect

GROUP = "soak"


class EchoConsumer(AsyncJsonWebsocketConsumer):
    groups = [GROUP]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with introspect.running(self):
            await super().__call__(scope, receive, send)

    async def connect(self) -> None:
        if getattr(settings, "SOAK_FAULT", "") == "leak-membership":
            # A group joined by hand and never left: the leak the churn probe must catch.
            await self.channel_layer.group_add(f"{GROUP}-leaked", self.channel_name)
        await self.accept()

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if "echo" in content:
            await self.send_json({"echo": content["echo"]})
        elif "flood" in content:
            frame = "x" * int(content["flood"])
            while True:
                # No checkpoint of its own: once the server has given up on the socket,
                # only the send's own lets the event loop run (and the stop end).
                await self.send(text_data=frame)

    async def soak_broadcast(self, message: dict[str, Any]) -> None:
        await self.send_json({"broadcast": message["text"]})


class StatsConsumer(AsyncHttpConsumer):
    async def handle(self, body: bytes) -> None:
        query = parse_qs(self.scope["query_string"].decode())
        stats = await introspect.snapshot(collect=query.get("gc") == ["1"])
        await self.send_response(
            200, json.dumps(stats).encode(), headers=[(b"content-type", b"application/json")]
        )


class BroadcastConsumer(AsyncHttpConsumer):
    async def handle(self, body: bytes) -> None:
        query = parse_qs(self.scope["query_string"].decode())
        layer = get_channel_layer()
        assert layer is not None
        try:
            await layer.group_send(GROUP, {"type": "soak.broadcast", "text": query["text"][0]})
        except ConnectionError as exc:
            await self.send_response(503, str(exc).encode())
        else:
            await self.send_response(200, b"sent")
