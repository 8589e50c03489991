"""Refusing WebSocket connections from pages on other sites.

Browsers let any page open a WebSocket to any host and send the user's cookies with it;
the ``Origin`` header, which a page cannot forge, is what tells this site's pages from
others'. :class:`OriginValidator` checks it against a list of allowed origins and
:func:`AllowedHostsOriginValidator` against ``ALLOWED_HOSTS``.

Patterns: ``"*"`` allows every origin, including none at all. A pattern with a scheme
(``"https://example.com"``, ``"http://example.com:8000"``) must match the origin's
scheme, host and port; a missing port means the scheme's default (80 for http/ws, 443
for https/wss), and ``:*`` any port (``"https://example.com:*"``, which upstream
Channels after 4.3.2 accepts and 4.3.2 itself choked on). A pattern without a scheme
(``"example.com"``) matches the host whatever the scheme and port (but
``"example.com:8000"`` reads as a scheme and matches nothing, as upstream). A host
starting with a dot (``".example.com"``, ``"https://.example.com"``) also matches every
subdomain. Anything else must be equal.

A connection without an ``Origin`` header is refused unless ``"*"`` is allowed, as in
upstream Channels: browsers always send one, so its absence means a non-browser client
(which no origin check can stop anyway) or a stripped header. A malformed ``Origin``
(unparseable, no host, a bad port) is treated as missing; upstream let some of those
crash the connection with a ``ValueError`` and accepted others whose host matched a
scheme-less pattern.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import ParseResult, urlparse

from django.conf import settings
from django.utils.http import is_same_domain

from ..generic.websocket import AsyncWebsocketConsumer
from ..types import ASGIApp, Receive, Scope, Send

__all__ = ["AllowedHostsOriginValidator", "OriginValidator", "WebsocketDenier"]

_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}


def _without_wildcard_port(pattern: str) -> tuple[str, bool]:
    """``pattern`` without a trailing ``:*`` port, and whether it had one."""
    if pattern.endswith(":*") and "://" in pattern:
        return pattern[:-2], True
    return pattern, False


def _parse(url: str) -> ParseResult | None:
    """``url`` parsed, or ``None`` if it has no host or an invalid port."""
    try:
        parsed = urlparse(url)
        parsed.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        return None
    if parsed.hostname is None:
        return None
    return parsed


class OriginValidator:
    """Passes WebSocket connections whose ``Origin`` is allowed to ``application`` and
    closes the others during the handshake (close code 1000, via :class:`WebsocketDenier`).

    ``allowed_origins`` is a list of patterns, described in :mod:`this module's
    <channels.security.websocket>` documentation.

    :raises ValueError: at construction, for a ``scheme://`` pattern without a valid host
        or port; when called, for a scope that is not a WebSocket.
    """

    def __init__(self, application: ASGIApp, allowed_origins: Iterable[str]) -> None:
        self.application = application
        self.allowed_origins: list[str] = list(allowed_origins)
        for pattern in self.allowed_origins:
            if not isinstance(pattern, str):
                raise ValueError(f"Allowed origins must be strings, got {pattern!r}")
            if "://" in pattern and _parse(_without_wildcard_port(pattern.lower())[0]) is None:
                raise ValueError(
                    f"Allowed origin {pattern!r} is not a valid origin: expected "
                    "scheme://host[:port], a host, or '*'"
                )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        if scope["type"] != "websocket":
            raise ValueError(
                f"You cannot use OriginValidator on a non-WebSocket connection (got a "
                f"{scope['type']!r} scope): route only WebSocket connections through it"
            )
        parsed_origin = None
        # The last Origin header counts, as upstream.
        for name, value in scope.get("headers", []):
            if name == b"origin":
                parsed_origin = _parse(value.decode("latin1"))
        if self.valid_origin(parsed_origin):
            return await self.application(scope, receive, send)
        return await WebsocketDenier()(scope, receive, send)

    def valid_origin(self, parsed_origin: ParseResult | None) -> bool:
        """Whether a connection from ``parsed_origin`` (``None``: no usable Origin) may
        proceed."""
        if parsed_origin is None and "*" not in self.allowed_origins:
            return False
        return self.validate_origin(parsed_origin)

    def validate_origin(self, parsed_origin: ParseResult | None) -> bool:
        """Whether any allowed pattern matches ``parsed_origin``."""
        return any(
            pattern == "*" or self.match_allowed_origin(parsed_origin, pattern)
            for pattern in self.allowed_origins
        )

    def match_allowed_origin(self, parsed_origin: ParseResult | None, pattern: str) -> bool:
        """Whether ``pattern`` (not ``"*"``) matches ``parsed_origin``."""
        if parsed_origin is None or parsed_origin.hostname is None:
            return False
        pattern, any_port = _without_wildcard_port(pattern.lower())
        parsed_pattern = urlparse(pattern)
        if not parsed_pattern.scheme:
            # A bare host: "//" makes urlparse read it as one, dropping any port.
            pattern_host = urlparse("//" + pattern).hostname or pattern
            return is_same_domain(parsed_origin.hostname, pattern_host)
        return (
            parsed_pattern.scheme == parsed_origin.scheme
            and (
                any_port
                or self.get_origin_port(parsed_pattern) == self.get_origin_port(parsed_origin)
            )
            and parsed_pattern.hostname is not None
            and is_same_domain(parsed_origin.hostname, parsed_pattern.hostname)
        )

    def get_origin_port(self, origin: ParseResult) -> int | None:
        """The origin's port, or its scheme's default; ``None`` for unknown schemes."""
        if origin.port is not None:
            return origin.port
        return _DEFAULT_PORTS.get(origin.scheme)


def AllowedHostsOriginValidator(application: ASGIApp) -> OriginValidator:
    """An :class:`OriginValidator` allowing the hosts in ``settings.ALLOWED_HOSTS``.

    Like Django with ``DEBUG`` on and ``ALLOWED_HOSTS`` empty, it then allows
    ``localhost``, ``127.0.0.1`` and ``[::1]`` (upstream's list, which, unlike Django's,
    does not include subdomains of localhost). Settings are read when this is called,
    usually when the ASGI module is imported.
    """
    allowed_hosts = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed_hosts:
        allowed_hosts = ["localhost", "127.0.0.1", "[::1]"]
    return OriginValidator(application, allowed_hosts)


class WebsocketDenier(AsyncWebsocketConsumer):
    """Refuses every connection: a WebSocket is closed during the handshake, an HTTP
    request gets ``403 Forbidden``."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            # The request body is never read: the answer does not depend on it.
            await send(
                {
                    "type": "http.response.start",
                    "status": 403,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8")],
                }
            )
            await send({"type": "http.response.body", "body": b"Forbidden"})
            return
        await super().__call__(scope, receive, send)

    async def connect(self) -> None:
        await self.close()
