"""What the Redis layers share: settings, bytes, per-loop connections, closing.

Each layer keeps its connections in a per-event-loop state (``local.PerLoop``), owned by
the tasks that use them (``connection.py``); waits for a server that is away with one
:class:`~channels.layers.redis.retry.Backoff`; and hands what its readers take to local
receivers through ``local.Mailboxes``/``local.Readers``, which lose nothing to a
cancellation. This base holds the parts that are the same code in every layer.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar, Generic, TypeVar

from ...types import Message
from ..base import BaseChannelLayer, CapacityPattern
from ..durable import GroupHistory, GroupPattern, StreamPosition, validate_history_args
from .durable import RedisDurable, presence, presence_join, presence_leave
from .errors import InvalidPrefixError
from .hosts import Host
from .local import PerLoop
from .serializers import MessageSerializer, as_message

__all__ = ["RedisLayerBase"]

logger: logging.Logger = logging.getLogger("channels.layers.redis")

S = TypeVar("S")


class RedisLayerBase(BaseChannelLayer, Generic[S]):
    """Base of the Redis layers; ``S`` is what one event loop holds (its connections).

    Subclasses set ``hosts`` and ``_serializer`` and pass the functions that make and
    close a loop's state.
    """

    _drop_logger: ClassVar[logging.Logger] = logger

    #: Seconds a send, group call or flush keeps retrying while Redis is unreachable,
    #: counted from its first failure (a pending receive waits as long as it takes).
    reconnect_timeout: float = 10.0

    hosts: list[Host]
    _serializer: MessageSerializer
    #: Group histories and presence entries, in Redis (made by each layer, which knows
    #: where a group's keys live).
    _durable: RedisDurable

    def __init__(
        self,
        *,
        prefix: str,
        expiry: int,
        capacity: int,
        channel_capacity: Mapping[CapacityPattern, int] | None,
        new_state: Callable[[], S],
        close_state: Callable[[S], Awaitable[None]],
        group_history: Mapping[GroupPattern, Mapping[str, Any]] | None = None,
        presence_events: Sequence[GroupPattern] | None = None,
        presence_timeout: float = 30,
    ) -> None:
        super().__init__(
            expiry=expiry,
            capacity=capacity,
            channel_capacity=channel_capacity,
            group_history=group_history,
            presence_events=presence_events,
            presence_timeout=presence_timeout,
        )
        if not isinstance(prefix, str):
            raise InvalidPrefixError(f"prefix must be a str, got {type(prefix).__name__}")
        self.prefix = prefix
        self._loops: PerLoop[S] = PerLoop(new_state, close_state)

    def __repr__(self) -> str:
        hosts = ", ".join(host.describe() for host in self.hosts)
        return f"<{type(self).__name__} prefix={self.prefix!r} hosts=[{hosts}]>"

    def serialize(self, message: Message) -> bytes:
        """The bytes written to Redis for ``message`` (by the ``serializer_format``'s class)."""
        return self._serializer.serialize(message)

    def deserialize(self, data: bytes) -> Message:
        """The message in bytes read from Redis.

        :raises ValueError: if they hold no message (or, encrypted, cannot be decrypted).
        """
        return as_message(self._serializer.deserialize(data))

    async def close(self) -> None:
        """Close this event loop's connections. The layer stays usable: a later call
        opens new ones."""
        await self._loops.aclose_current()

    async def close_pools(self) -> None:
        """Close this event loop's connections (channels_redis's name for :meth:`close`).

        What a Celery task or script calls after ``async_to_sync(layer.group_send)(...)``,
        as channels_redis documents: ``async_to_sync(layer.close_pools)()``. Connections of
        other event loops are closed when those loops end (they cannot be closed from
        here: they belong to the tasks of their loop).
        """
        await self._loops.aclose_current()

    # -- durable groups: the same calls on every Redis layer -----------------------------

    async def group_history(
        self, group: str, *, after: StreamPosition | None = None, limit: int | None = None
    ) -> GroupHistory:
        """The messages ``group``'s stream retains (see
        :meth:`~channels.layers.BaseChannelLayer.group_history`). Kept in Redis, so shared
        by every process on the layer; only this package's layers record what they send
        (a channels_redis process's group sends reach the members, not the stream).

        :raises TypeError: if ``after`` is not a position.
        :raises ValueError: if ``after`` is malformed or ``limit`` is not ``None`` or an
            int >= 0.
        """
        self.require_valid_group_name(group)
        position, limit = validate_history_args(after, limit)
        policy = self.history_policy(group)
        if policy is None:
            return GroupHistory(None, [], False)
        return await self._durable.history(group, policy, position, limit)

    async def presence_join(
        self, group: str, channel: str, info: dict[str, Any] | None = None
    ) -> None:
        """Record ``channel`` as present in ``group`` for ``presence_timeout`` seconds.

        Joining again refreshes the entry (and updates its info): whoever calls this
        directly must call it again well within ``presence_timeout`` (consumers do it for
        you). For groups in ``presence_events``, a new entry or changed info sends
        ``presence.join`` to the group; expired entries this call found are removed and
        their ``presence.leave`` sent.

        :raises TypeError: for an invalid group or channel name, or ``info`` that is not a
            JSON-serialisable dict.
        """
        await presence_join(self, self._durable, group, channel, info)

    async def presence_leave(self, group: str, channel: str) -> None:
        """Remove ``channel``'s entry in ``group`` (nothing happens if there is none);
        for groups in ``presence_events``, send its ``presence.leave``."""
        await presence_leave(self, self._durable, group, channel)

    async def presence(self, group: str) -> dict[str, dict[str, Any]]:
        """``{channel: info}`` of the live entries in ``group``, from every process."""
        return await presence(self, self._durable, group)


def glob_escape(text: str) -> str:
    """``text`` as a literal in a Redis ``SCAN MATCH`` pattern (a prefix, say)."""
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)
