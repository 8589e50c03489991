"""The base for ASGI middleware that adds to the scope."""

from __future__ import annotations

from typing import Any

from .types import ASGIApp, Receive, Scope, Send

__all__ = ["BaseMiddleware"]


class BaseMiddleware:
    """Wraps an inner application and hands it a copy of the scope.

    One middleware instance serves every connection, so a subclass must keep per-connection
    state in the scope, never on ``self``. The copy is what keeps that state per connection:
    whatever the inner application (or a subclass) puts in its scope stays out of the scope
    the server, and any outer middleware, passed in. Sharing it was CVE-2020-35681.
    """

    def __init__(self, inner: ASGIApp) -> None:
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        return await self.inner(dict(scope), receive, send)
