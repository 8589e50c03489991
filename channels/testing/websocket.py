"""A communicator that plays the client of a WebSocket connection."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote, urlparse

from ..types import ASGIApp
from .application import ApplicationCommunicator

__all__ = ["WebsocketCommunicator"]


class WebsocketCommunicator(ApplicationCommunicator):
    """Opens a WebSocket to ``application`` at ``path`` (which may carry a query string).

    ``headers`` is a list of ``(name, value)`` byte pairs, as in the ASGI scope.
    """

    def __init__(
        self,
        application: ASGIApp,
        path: str,
        headers: Iterable[tuple[bytes, bytes]] | None = None,
        subprotocols: Iterable[str] | None = None,
        spec_version: str | None = None,
    ) -> None:
        if not isinstance(path, str):
            raise TypeError(f"Expected str, got {type(path).__name__}")
        parsed = urlparse(path)
        scope: dict[str, Any] = {
            "type": "websocket",
            "path": unquote(parsed.path),
            "query_string": parsed.query.encode("utf-8"),
            "headers": list(headers or []),
            "subprotocols": list(subprotocols or []),
        }
        if spec_version:
            scope["spec_version"] = spec_version
        super().__init__(application, scope)
        self.response_headers: list[tuple[bytes, bytes]] | None = None

    async def connect(self, timeout: float = 1) -> tuple[bool, str | int | None]:
        """Open the connection.

        Returns ``(True, subprotocol)`` if the application accepted, ``(False, close_code)``
        if it closed instead (1000 when it gave no code).
        """
        await self.send_input({"type": "websocket.connect"})
        response = await self.receive_output(timeout)
        if response["type"] == "websocket.close":
            return False, response.get("code", 1000)
        if response["type"] != "websocket.accept":
            raise AssertionError(
                f"Expected 'websocket.accept' or 'websocket.close', got {response['type']!r}"
            )
        self.response_headers = list(response.get("headers", []))
        return True, response.get("subprotocol")

    async def send_to(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Send one frame: exactly one of ``text_data`` or ``bytes_data``."""
        if (text_data is None) == (bytes_data is None):
            raise TypeError("Pass exactly one of text_data or bytes_data")
        if text_data is not None:
            if not isinstance(text_data, str):
                raise TypeError(f"text_data must be a str, got {type(text_data).__name__}")
            await self.send_input({"type": "websocket.receive", "text": text_data})
        else:
            if not isinstance(bytes_data, bytes):
                raise TypeError(f"bytes_data must be bytes, got {type(bytes_data).__name__}")
            await self.send_input({"type": "websocket.receive", "bytes": bytes_data})

    async def send_json_to(self, data: Any) -> None:
        """Send ``data`` encoded as JSON in a text frame."""
        await self.send_to(text_data=json.dumps(data))

    async def receive_from(self, timeout: float = 1) -> str | bytes:
        """The next frame the application sends: ``str`` for text, ``bytes`` for binary."""
        response = await self.receive_output(timeout)
        if response["type"] != "websocket.send":
            raise AssertionError(f"Expected type 'websocket.send', but was {response['type']!r}")
        if ("text" in response) == ("bytes" in response):
            raise AssertionError("The response needs exactly one of 'text' or 'bytes'")
        if "text" in response:
            if not isinstance(response["text"], str):
                raise AssertionError(f"Text frame payload is not str: {response['text']!r}")
            return response["text"]
        if not isinstance(response["bytes"], bytes):
            raise AssertionError(f"Binary frame payload is not bytes: {response['bytes']!r}")
        return response["bytes"]

    async def receive_json_from(self, timeout: float = 1) -> Any:
        """The next frame, decoded from JSON; it must be a text frame."""
        payload = await self.receive_from(timeout)
        if not isinstance(payload, str):
            raise AssertionError("JSON data is not a text frame")
        return json.loads(payload)

    async def disconnect(self, code: int = 1000, timeout: float = 1) -> None:
        """Close the connection from the client's side and wait for the application to end."""
        await self.send_input({"type": "websocket.disconnect", "code": code})
        await self.wait(timeout)
