"""Typing aliases for ASGI applications and the channel layer protocol.

Public so that third-party middleware and channel layers can type-check against exactly what
this package calls.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "ASGIApp",
    "ChannelLayer",
    "Message",
    "Receive",
    "Scope",
    "Send",
]

Scope = MutableMapping[str, Any]
"""The connection scope: ``type``, ``path``, ``headers``... plus what middleware adds."""

Message = dict[str, Any]
"""An ASGI event or a channel layer message: a dict with at least a ``type`` key."""

Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[Any]]


@runtime_checkable
class ChannelLayer(Protocol):
    """What consumers, routers and the worker need from a channel layer.

    ``group_add``, ``group_discard`` and ``group_send`` belong to the ``groups`` extension
    and ``flush`` to the ``flush`` extension; a layer lists what it supports in
    ``extensions``.
    """

    @property
    def extensions(self) -> Iterable[str]:
        """The optional parts of the API the layer supports (``"groups"``, ``"flush"``)."""
        ...

    async def send(self, channel: str, message: Message) -> None: ...

    async def receive(self, channel: str) -> Message: ...

    async def new_channel(self, prefix: str = ...) -> str: ...

    async def group_add(self, group: str, channel: str) -> None: ...

    async def group_discard(self, group: str, channel: str) -> None: ...

    async def group_send(self, group: str, message: Message) -> None: ...

    async def flush(self) -> None: ...

    async def close(self) -> None: ...
