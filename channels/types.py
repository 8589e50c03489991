"""Typing aliases for ASGI applications, and the channel layer protocol.

Public so that third-party middleware and channel layers can type-check against exactly
what this package calls. The aliases are deliberately loose about the contents of scopes
and messages (``dict[str, Any]``), because middleware adds keys and each protocol has its
own; they are strict about shapes: which callables take and return what.

A third-party layer needs no base class from this package. It type-checks against
:class:`ChannelLayer` structurally::

    from channels.types import ChannelLayer, Message

    class MyLayer:
        extensions = ["groups", "flush"]

        async def send(self, channel: str, message: Message) -> None: ...
        async def receive(self, channel: str) -> Message: ...
        # ... new_channel, group_add, group_discard, group_send, flush, close

    layer: ChannelLayer = MyLayer()  # the type checker verifies every method

Subclassing :class:`~channels.layers.BaseChannelLayer` adds Channels' name validation and
capacity settings, and still satisfies the protocol.

Layers that list the durable-groups extensions also satisfy :class:`HistoryChannelLayer`
(``"history"``) or :class:`PresenceChannelLayer` (``"presence"``); code that calls those
methods narrows to them: ``isinstance(layer, PresenceChannelLayer)`` or ``cast``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .layers.durable import GroupHistory, StreamPosition

__all__ = [
    "ASGIApp",
    "ChannelLayer",
    "HistoryChannelLayer",
    "Message",
    "PresenceChannelLayer",
    "Receive",
    "Scope",
    "Send",
]

Scope = MutableMapping[str, Any]
"""The connection scope: ``type``, ``path``, ``headers``... plus what middleware adds."""

Message = dict[str, Any]
"""An ASGI event or a channel layer message: a dict with at least a ``type`` key."""

Receive = Callable[[], Awaitable[Message]]
"""The ``receive`` an ASGI application is given: awaits the next event from the server."""

Send = Callable[[Message], Awaitable[None]]
"""The ``send`` an ASGI application is given: hands one event to the server."""

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[Any]]
"""An ASGI 3 application: a consumer's ``as_asgi()``, a router, a middleware stack."""


@runtime_checkable
class ChannelLayer(Protocol):
    """What consumers, routers and the worker need from a channel layer.

    ``group_add``, ``group_discard`` and ``group_send`` belong to the ``groups`` extension
    and ``flush`` to the ``flush`` extension; a layer lists what it supports in
    ``extensions``, and may raise :class:`NotImplementedError` from the others.

    Runtime-checkable: ``isinstance(layer, ChannelLayer)`` checks that the names exist,
    not their signatures (that is the type checker's job).
    """

    @property
    def extensions(self) -> Iterable[str]:
        """The optional parts of the API the layer supports (``"groups"``, ``"flush"``).

        A plain attribute satisfies it (``extensions = ["groups"]``), on the class or the
        instance. Do not annotate it ``ClassVar``: pyright then rejects the layer.
        """
        ...

    async def send(self, channel: str, message: Message) -> None:
        """Deliver ``message`` to ``channel``.

        :raises ~channels.exceptions.ChannelFull: if the channel is at capacity.
        """
        ...

    async def receive(self, channel: str) -> Message:
        """Wait for and return the next message on ``channel``."""
        ...

    async def new_channel(self, prefix: str = ...) -> str:
        """A new, unique process-specific channel name to receive on."""
        ...

    async def group_add(self, group: str, channel: str) -> None:
        """Add ``channel`` to ``group`` (``groups`` extension)."""
        ...

    async def group_discard(self, group: str, channel: str) -> None:
        """Remove ``channel`` from ``group``; no error if it is not a member."""
        ...

    async def group_send(self, group: str, message: Message) -> None:
        """Send ``message`` to every channel in ``group``."""
        ...

    async def flush(self) -> None:
        """Drop every message and group (``flush`` extension); for tests."""
        ...

    async def close(self) -> None:
        """Release the layer's connections; lifespan shutdown and the worker call it."""
        ...


@runtime_checkable
class HistoryChannelLayer(ChannelLayer, Protocol):
    """A channel layer with the ``history`` extension (durable groups)."""

    async def group_history(
        self, group: str, *, after: StreamPosition | None = None, limit: int | None = None
    ) -> GroupHistory:
        """The messages ``group``'s stream retains, all or after a position."""
        ...


@runtime_checkable
class PresenceChannelLayer(ChannelLayer, Protocol):
    """A channel layer with the ``presence`` extension (durable groups)."""

    async def presence_join(
        self, group: str, channel: str, info: dict[str, Any] | None = None
    ) -> None:
        """Record ``channel`` as present in ``group``; joining again refreshes it."""
        ...

    async def presence_leave(self, group: str, channel: str) -> None:
        """Remove ``channel``'s presence entry in ``group``."""
        ...

    async def presence(self, group: str) -> dict[str, dict[str, Any]]:
        """``{channel: info}`` for everyone present in ``group``."""
        ...
