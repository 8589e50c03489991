"""A communicator that makes one HTTP request."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NotRequired, TypedDict, cast
from urllib.parse import unquote, urlparse

from ..types import ASGIApp
from .application import ApplicationCommunicator

__all__ = ["HttpCommunicator", "HttpResponse"]


class HttpResponse(TypedDict):
    """What :meth:`HttpCommunicator.get_response` returns: the response start's fields,
    and the body parts joined."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    #: Present when the application announced trailers in its response start.
    trailers: NotRequired[bool]


class HttpCommunicator(ApplicationCommunicator):
    """Sends one request to ``application`` and collects the response.

    ``path`` may carry a query string; ``headers`` is a list of ``(name, value)`` byte
    pairs, as in the ASGI scope.
    """

    def __init__(
        self,
        application: ASGIApp,
        method: str,
        path: str,
        body: bytes = b"",
        headers: Iterable[tuple[bytes, bytes]] | None = None,
    ) -> None:
        if not isinstance(body, bytes):
            raise TypeError(f"body must be bytes, got {type(body).__name__}")
        parsed = urlparse(path)
        scope = {
            "type": "http",
            "http_version": "1.1",
            "method": method.upper(),
            "path": unquote(parsed.path),
            "query_string": parsed.query.encode("utf-8"),
            "headers": list(headers or []),
        }
        super().__init__(application, scope)
        self.body = body
        self.sent_request: bool = False

    async def get_response(self, timeout: float = 1) -> HttpResponse:
        """The response as ``{"status": ..., "headers": [...], "body": b"..."}``, plus any
        other keys of the application's ``http.response.start``.

        ``timeout`` applies to each message of the response.
        """
        if not self.sent_request:
            self.sent_request = True
            await self.send_input({"type": "http.request", "body": self.body})
        start = await self.receive_output(timeout)
        if start["type"] != "http.response.start":
            raise AssertionError(f"Expected 'http.response.start', got {start['type']!r}")
        response: dict[str, Any] = {key: value for key, value in start.items() if key != "type"}
        response.setdefault("headers", [])
        body = []
        while True:
            chunk = await self.receive_output(timeout)
            if chunk["type"] != "http.response.body":
                raise AssertionError(f"Expected 'http.response.body', got {chunk['type']!r}")
            body.append(chunk.get("body", b""))
            if not chunk.get("more_body", False):
                break
        response["body"] = b"".join(body)
        # Every key of the start message is passed on, as upstream does; ASGI requires
        # the ones HttpResponse names.
        return cast(HttpResponse, response)
