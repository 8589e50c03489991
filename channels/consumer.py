"""Consumers: ASGI applications that dispatch each incoming message to a named handler.

Every consumer instance runs inside its own task group. The consumer's own task (the one
the server called it in) listens on the ASGI ``receive``; when a channel layer is
configured, a task of the group listens on the consumer's layer channel
(:class:`channels.utils.Dispatcher`). With a layer that can call back when the channel
has a message (the in-memory layer's ``call_on_message``), that task is made only then:
an idle connection holds no task of its own beyond the server's. Whichever listener
receives a message dispatches it, holding a lock, so handlers run one at a time, in the
order messages arrived. ``StopConsumer`` cancels the group: the listeners end with the
consumer, no handler starts after it, and nothing the consumer started outlives it. A
handler's exception cancels the group too and reaches the server as itself, not wrapped
in an exception group.

A message a listener has received but not yet dispatched when the consumer stops is
dropped, as in upstream Channels.

Durable groups (:meth:`AsyncConsumer.group_join`, :meth:`AsyncConsumer.presence_join`):
replays of missed messages and presence heartbeats run in the same task group, so they end
with the consumer; what it joined this way is left when it ends, whatever ended it (see
``channels._durable``).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar, cast

from asgiref.sync import markcoroutinefunction

from . import DEFAULT_CHANNEL_LAYER
from ._durable import DurableState
from .concurrency import async_to_sync
from .db import aclose_old_connections, database_sync_to_async
from .exceptions import InvalidChannelLayerError, StopConsumer
from .layers import get_channel_layer
from .layers.durable import GroupHistory, StreamPosition
from .types import (
    ChannelLayer,
    HistoryChannelLayer,
    Message,
    PresenceChannelLayer,
    Receive,
    Scope,
    Send,
)
from .utils import Arm, Dispatcher

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
    _dispatcher: Dispatcher[Message] | None = None
    _durable: DurableState | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope = scope
        # Annotated without None, like typeshed's stubs for upstream Channels: handlers
        # that use the layer run only where one is configured, and should not have to
        # narrow it on every call. It is None at run time when there is none.
        self.channel_layer = cast(ChannelLayer, get_channel_layer(self.channel_layer_alias))
        sources: list[Callable[[], Awaitable[Message]]] = [receive]
        deferred: list[tuple[Callable[[], Awaitable[Message]], Arm]] = []
        layer = self.channel_layer
        if layer is not None:
            self.channel_name = await layer.new_channel()
            self.channel_receive = functools.partial(layer.receive, self.channel_name)
            # A layer that can call us when our channel has a message (the in-memory one)
            # spares an idle consumer its listener task until then.
            call_on_message = getattr(layer, "call_on_message", None)
            if callable(call_on_message):
                arm = cast(Arm, functools.partial(call_on_message, self.channel_name))
                deferred.append((self.channel_receive, arm))
            else:
                sources.append(self.channel_receive)
        self.base_send = async_to_sync(send) if self._sync else send

        self._dispatcher = Dispatcher(self.dispatch)
        try:
            await self._dispatcher.run(sources, deferred=deferred)
        except StopConsumer:  # from a handler or, as upstream allows, from receive()
            pass
        finally:
            if self._durable is not None:
                await self._durable.clean_up()

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

    # -- durable groups ----------------------------------------------------------------

    async def group_join(self, group: str, after: object = None) -> GroupHistory:
        """Join ``group``; with ``after``, also receive what it was sent since then.

        ``after`` is a position the client saw last (a :class:`~channels.layers.StreamPosition`
        or the ``{"epoch", "offset"}`` dict messages carry as ``__position__``). When the
        layer still has every message after it, they are queued for this consumer's
        handlers: they run one at a time, after the handler calling this returns, in
        order, before any live message of the group, none twice. Returns the
        :class:`~channels.layers.GroupHistory`: its ``messages`` are those queued, and
        ``recovered=False`` (nothing queued) tells the client to reload its state. For a
        group that keeps no history, ``position`` is ``None``. The group is left when
        the consumer ends, or with :meth:`group_leave`.

        :raises TypeError, ValueError: for a malformed ``after``, before joining.
        """
        since = None if after is None else StreamPosition.from_value(after)
        layer = self._layer_for("groups")
        state = self._durable_state()
        await layer.group_add(group, self.channel_name)
        state.joined.add(group)
        if "history" not in layer.extensions:
            return GroupHistory(None, [], False)
        history_policy = getattr(layer, "history_policy", None)
        if callable(history_policy) and history_policy(group) is None:
            return GroupHistory(None, [], False)
        history_layer = cast(HistoryChannelLayer, layer)
        if since is None:
            history = await history_layer.group_history(group, limit=0)
        else:
            history = await history_layer.group_history(group, after=since)
        top = history.position
        if top is not None and (since is None or history.recovered):
            # Follow the stream from here: what was missed first, then every later
            # message in offset order (see channels._durable).
            state.follow(group, top.epoch, top.offset, history.messages if since else None)
            if self._dispatcher is not None:
                self._dispatcher.dispatch = self._dispatch_live
        return history

    async def group_leave(self, group: str) -> None:
        """Leave ``group`` (joined with :meth:`group_join`); its queued replay is dropped."""
        layer = self._layer_for("groups")
        await layer.group_discard(group, self.channel_name)
        if self._durable is not None:
            self._durable.forget(group)

    async def presence_join(self, group: str, info: dict[str, Any] | None = None) -> None:
        """Be present in ``group`` with ``info`` (a JSON-serialisable dict) until this
        consumer ends or calls :meth:`presence_leave`; joining again updates ``info``.

        The entry is refreshed by a heartbeat owned by this consumer (on layers whose
        entries expire after ``presence_timeout``), and removed when it ends.

        A ``presence.join`` event sent to a group this consumer is in is also dispatched
        here, by its type; it goes on to :meth:`presence_event`.
        """
        if isinstance(cast(object, group), dict):  # dispatched: a presence event
            await self.presence_event(cast(Message, group))
            return
        layer = self._layer_for("presence")
        state = self._durable_state()
        await cast(PresenceChannelLayer, layer).presence_join(group, self.channel_name, info)
        state.present[group] = info
        state.start_heartbeat()

    async def presence_leave(self, group: str) -> None:
        """Remove this consumer's presence entry in ``group``.

        A ``presence.leave`` event dispatched here goes on to :meth:`presence_event`.
        """
        if isinstance(cast(object, group), dict):  # dispatched: a presence event
            await self.presence_event(cast(Message, group))
            return
        layer = self._layer_for("presence")
        await cast(PresenceChannelLayer, layer).presence_leave(group, self.channel_name)
        if self._durable is not None:
            self._durable.present.pop(group, None)

    async def presence_event(self, event: Message) -> None:
        """Handle a ``presence.join`` or ``presence.leave`` event of one of our groups.

        Their types name the methods that make presence entries, so they come here
        instead. Ignored by default; override to pass them on (``send_json(event)``).
        """

    def _layer_for(self, extension: str) -> ChannelLayer:
        layer: ChannelLayer | None = getattr(self, "channel_layer", None)
        if layer is None or extension not in layer.extensions:
            raise InvalidChannelLayerError(
                f"this needs a channel layer with the {extension!r} extension: "
                "configure one in CHANNEL_LAYERS"
            )
        return layer

    def _durable_state(self) -> DurableState:
        if self._durable is None:
            if self._dispatcher is None:
                raise RuntimeError("group_join() and presence_join() need a running consumer")
            self._durable = DurableState(
                self.channel_layer, self.channel_name, self._dispatcher, self.dispatch
            )
        return self._durable

    async def _dispatch_live(self, message: Message) -> None:
        # Replaces self.dispatch once a group's stream is followed (see channels._durable).
        durable = self._durable
        if durable is None:
            await self.dispatch(message)
        else:
            await durable.dispatch_live(message)

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

    def group_join(self, group: str, after: object = None) -> GroupHistory:  # type: ignore[override]
        """:meth:`AsyncConsumer.group_join`, from the handler's thread."""
        return async_to_sync(super().group_join)(group, after)

    def group_leave(self, group: str) -> None:  # type: ignore[override]
        """:meth:`AsyncConsumer.group_leave`, from the handler's thread."""
        async_to_sync(super().group_leave)(group)

    def presence_join(self, group: str, info: dict[str, Any] | None = None) -> None:  # type: ignore[override]
        """:meth:`AsyncConsumer.presence_join`, from the handler's thread."""
        if isinstance(cast(object, group), dict):  # dispatched: a presence event
            self.presence_event(cast(Message, group))
        else:
            async_to_sync(super().presence_join)(group, info)

    def presence_leave(self, group: str) -> None:  # type: ignore[override]
        """:meth:`AsyncConsumer.presence_leave`, from the handler's thread."""
        if isinstance(cast(object, group), dict):  # dispatched: a presence event
            self.presence_event(cast(Message, group))
        else:
            async_to_sync(super().presence_leave)(group)

    def presence_event(self, event: Message) -> None:  # type: ignore[override]
        """:meth:`AsyncConsumer.presence_event`, in the handler's thread."""
