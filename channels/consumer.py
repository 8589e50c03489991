"""Consumers: ASGI applications that dispatch each incoming message to a named handler.

Every consumer instance runs inside its own task group. One task listens on the ASGI
``receive``; when a channel layer is configured, another listens on the consumer's layer
channel (:func:`channels.utils.await_many_dispatch`). Whichever receives a message
dispatches it, holding a lock, so handlers run one at a time, in the order messages
arrived. ``StopConsumer`` cancels the group: both listeners end with the consumer, no
handler starts after it, and nothing the consumer started outlives it. A handler's
exception cancels the group too and reaches the server as itself, not wrapped in an
exception group.

A message a listener has received but not yet dispatched when the consumer stops is
dropped, as in upstream Channels.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar, cast

from asgiref.sync import markcoroutinefunction

from . import DEFAULT_CHANNEL_LAYER
from .concurrency import async_to_sync
from .db import aclose_old_connections, database_sync_to_async
from .exceptions import StopConsumer
from .layers import get_channel_layer
from .types import ChannelLayer, Message, Receive, Scope, Send
from .utils import await_many_dispatch

__all__ = ["AsyncConsumer", "SyncConsumer", "get_handler_name"]


def get_handler_name(message: Mapping[str, Any]) -> str:
    """The handler method for ``message``: its ``type`` with ``.`` replaced by ``_``.

    :raises TypeError: if the message is not a mapping.
    :raises ValueError: if it has no ``type``, or the type starts with an underscore (which
        would let a message reach private methods).
    """
    # type() checks first: this runs for every message, and almost every one is a dict
    # with a str type, which the slower ABC and subclass checks would only confirm.
    if type(message) is not dict and not isinstance(message, Mapping):
        raise TypeError(f"Incoming message must be a dict, got {type(message).__name__}")
    if "type" not in message:
        raise ValueError("Incoming message has no 'type' attribute")
    message_type = message["type"]
    if type(message_type) is not str and not isinstance(message_type, str):
        raise ValueError(f"Incoming message type must be a string, got {message_type!r}")
    handler_name = message_type.replace(".", "_")
    if handler_name.startswith("_"):
        raise ValueError("Malformed type in message (leading underscore)")
    return handler_name


class AsyncConsumer:
    """Base consumer: an ASGI application whose handlers are ``async`` methods.

    Attributes set while it runs: ``scope``; ``channel_layer`` (``None`` when
    ``channel_layer_alias`` is not configured); ``channel_name`` and ``channel_receive``
    when there is a layer.
    """

    _sync: ClassVar[bool] = False
    channel_layer_alias: ClassVar[str] = DEFAULT_CHANNEL_LAYER

    scope: Scope
    channel_layer: ChannelLayer
    channel_name: str
    channel_receive: Callable[[], Awaitable[Message]]
    base_send: Callable[[Message], Any]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope = scope
        # Annotated without None, like typeshed's stubs for upstream Channels: handlers
        # that use the layer run only where one is configured, and should not have to
        # narrow it on every call. It is None at run time when there is none.
        self.channel_layer = cast(ChannelLayer, get_channel_layer(self.channel_layer_alias))
        sources: list[Callable[[], Awaitable[Message]]] = [receive]
        if self.channel_layer is not None:
            self.channel_name = await self.channel_layer.new_channel()
            self.channel_receive = functools.partial(self.channel_layer.receive, self.channel_name)
            sources.append(self.channel_receive)
        self.base_send = async_to_sync(send) if self._sync else send

        # StopConsumer comes from a handler or, as upstream allows, from receive().
        with contextlib.suppress(StopConsumer):
            await await_many_dispatch(sources, self.dispatch)

    async def dispatch(self, message: Message) -> None:
        """Run the handler named by the message's type.

        :raises ValueError: if no handler exists for the type.
        """
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await aclose_old_connections()
        await handler(message)

    async def send(self, message: Message) -> None:
        """Send an ASGI event to the client (the server's ``send``)."""
        await self.base_send(message)

    @classmethod
    def as_asgi(cls, **initkwargs: Any) -> _ConsumerApp:
        """An ASGI application that makes a new consumer per connection.

        ``initkwargs`` are passed to the constructor, like Django's ``as_view``; the result
        carries ``consumer_class`` and ``consumer_initkwargs``.
        """
        return _ConsumerApp(cls, initkwargs)


class _ConsumerApp:
    """What ``as_asgi()`` returns: a new consumer instance for every scope."""

    def __init__(self, consumer_class: type[AsyncConsumer], initkwargs: dict[str, Any]) -> None:
        self.consumer_class = consumer_class
        self.consumer_initkwargs = initkwargs
        functools.update_wrapper(self, consumer_class, updated=())
        markcoroutinefunction(self)  # it is awaited like the async function upstream returns

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        consumer = self.consumer_class(**self.consumer_initkwargs)
        return await consumer(scope, receive, send)

    def __repr__(self) -> str:
        return f"<{self.consumer_class.__qualname__}.as_asgi({self.consumer_initkwargs!r})>"


class SyncConsumer(AsyncConsumer):
    """A consumer whose handlers are plain methods, each run in the thread-sensitive worker.

    Handlers may use the ORM directly. ``self.send()`` blocks until the server took the
    event. To call an async API from a handler, use
    :func:`channels.concurrency.async_to_sync`; asgiref's ``async_to_sync`` also works on
    asyncio.
    """

    _sync = True

    @database_sync_to_async
    def dispatch(self, message: Message) -> None:
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        handler(message)

    def send(self, message: Message) -> None:  # type: ignore[override]
        """Send an ASGI event to the client, from the handler's thread."""
        self.base_send(message)
