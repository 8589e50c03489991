"""An HTTP consumer for endpoints that Django views are not a good fit for: long polling,
server-sent events, responses fed by channel layer messages."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..consumer import AsyncConsumer
from ..db import aclose_old_connections
from ..exceptions import StopConsumer
from ..types import Message

__all__ = ["AsyncHttpConsumer"]

HeaderList = Iterable[tuple[bytes, bytes]] | Mapping[bytes, bytes]


class AsyncHttpConsumer(AsyncConsumer):
    """Assembles the request body, hands it to :meth:`handle`, and sends the response.

    The consumer stops once the response is complete. If :meth:`handle` returns having
    started a response it has not finished (``send_body(..., more_body=True)``), the
    consumer keeps running, so handlers for channel layer messages can send the rest; it
    stops when one of them sends the last part, or when the client disconnects. If
    :meth:`handle` returns without starting a response, the consumer stops and the server
    answers with an error, as upstream Channels does.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.body: list[bytes] = []
        self._response_started = False
        self._response_complete = False

    async def send_headers(self, *, status: int = 200, headers: HeaderList | None = None) -> None:
        """Start the response. Servers send it only once the first body part follows.

        ``headers`` is a list of ``(name, value)`` byte pairs or a dict of them.
        """
        if headers is None:
            header_list = []
        elif isinstance(headers, Mapping):
            header_list = list(headers.items())
        else:
            header_list = list(headers)
        await self.send({"type": "http.response.start", "status": status, "headers": header_list})
        self._response_started = True

    async def send_body(self, body: bytes, *, more_body: bool = False) -> None:
        """Send a part of the body; the response ends with the part whose ``more_body`` is
        false, and the consumer stops after the handler that sent it.

        :raises TypeError: if ``body`` is not bytes.
        """
        if not isinstance(body, bytes):
            raise TypeError(f"Response body must be bytes, got {type(body).__name__}")
        await self.send({"type": "http.response.body", "body": body, "more_body": more_body})
        if not more_body:
            self._response_complete = True

    async def send_response(
        self, status: int, body: bytes, *, headers: HeaderList | None = None
    ) -> None:
        """Send a whole response at once."""
        await self.send_headers(status=status, headers=headers)
        await self.send_body(body)

    async def handle(self, body: bytes) -> None:
        """Called with the whole request body; respond with the ``send_*`` methods."""
        raise NotImplementedError(
            "Subclasses of AsyncHttpConsumer must provide a handle() method."
        )

    async def disconnect(self) -> None:
        """Called once when the consumer stops, after the response or a client disconnect.
        Nothing can be sent from here."""

    async def dispatch(self, message: Message) -> None:
        await super().dispatch(message)
        if self._response_complete:
            await self.disconnect()
            raise StopConsumer()

    async def http_request(self, message: Message) -> None:
        """Collect body parts; hand the complete body to :meth:`handle`."""
        if "body" in message:
            self.body.append(message["body"])
        if message.get("more_body"):
            return
        try:
            await self.handle(b"".join(self.body))
        except BaseException:
            await self.disconnect()
            raise
        if not self._response_started:
            await self.disconnect()
            raise StopConsumer()

    async def http_disconnect(self, message: Message) -> None:
        """The client went away: run :meth:`disconnect` and stop."""
        await self.disconnect()
        await aclose_old_connections()
        raise StopConsumer()
