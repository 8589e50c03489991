"""What every channel layer shares: name rules, capacities, and the API's shape."""

from __future__ import annotations

import fnmatch
import logging
import re
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, NamedTuple

from ..types import Message
from .durable import (
    GroupHistory,
    GroupPattern,
    HistoryPolicy,
    StreamPosition,
    compile_group_patterns,
    compile_history_policies,
)

__all__ = ["BaseChannelLayer", "InvalidMessageError", "LayerStats", "ReservedKeyError"]

CapacityPattern = str | re.Pattern[str]


class InvalidMessageError(TypeError, AssertionError):
    """A message that is not a dict.

    A :exc:`TypeError`; also an :exc:`AssertionError` because upstream checks it with
    ``assert``, and code written against upstream may expect that.
    """


class ReservedKeyError(ValueError, AssertionError):
    """A message that already holds the layers' reserved key ``__asgi_channel__``.

    A :exc:`ValueError`; also an :exc:`AssertionError`, as upstream asserts it.
    """


class LayerStats(NamedTuple):
    """What a layer counted since it was made (:meth:`BaseChannelLayer.stats`).

    Counters only grow, so a metrics exporter can publish them as they are.
    """

    #: Messages dropped because a channel was full: every delivery a ``group_send``
    #: skipped, and (Redis layers) every message pushed out of a full process-local buffer.
    dropped: int
    #: Of ``dropped``, the deliveries ``group_send`` skipped (one per skipped member).
    group_send_skipped: int


class _Drops:
    """The drop counters of one layer, and when each group was last warned about."""

    def __init__(self) -> None:
        self.dropped = 0
        self.group_send_skipped = 0
        self.warned: dict[str, tuple[float, int]] = {}  # key -> (last warning, since then)


class BaseChannelLayer:
    """Base class for channel layers: validation and configuration, no transport.

    Name rules and their error messages are exactly Django Channels', because projects
    assert on them. ``channel_capacity`` keys are shell globs (``"http.request"``,
    ``"websocket.send!*"``) or compiled regexes; the first match, in the mapping's order,
    against the full channel name wins, else ``capacity`` applies.
    """

    MAX_NAME_LENGTH: ClassVar[int] = 100

    channel_name_regex: ClassVar[re.Pattern[str]] = re.compile(
        r"^[a-zA-Z\d\-_.]+(\![\d\w\-_.]*)?$", re.ASCII
    )
    group_name_regex: ClassVar[re.Pattern[str]] = re.compile(r"^[a-zA-Z\d\-_.]+$", re.ASCII)
    invalid_name_error: ClassVar[str] = (
        "{} name must be a valid unicode string "
        f"with length < {MAX_NAME_LENGTH} "
        "containing only ASCII alphanumerics, hyphens, underscores, or periods."
    )

    extensions: list[str] = []

    #: Whether presence entries expire unless refreshed (``presence_timeout``): consumers
    #: then refresh theirs with a heartbeat. A process-local layer's die with the process.
    presence_expires: ClassVar[bool] = True

    #: At most one WARNING per group (and one about local buffers) per this many seconds
    #: when messages are dropped; every drop is still logged at INFO and counted.
    drop_warning_interval: float = 60.0
    _drop_logger: ClassVar[logging.Logger] = logging.getLogger("channels.layers")

    def __init__(
        self,
        expiry: float = 60,
        capacity: int = 100,
        channel_capacity: Mapping[CapacityPattern, int] | None = None,
        *,
        group_history: Mapping[GroupPattern, Mapping[str, Any]] | None = None,
        presence_events: Sequence[GroupPattern] | None = None,
        presence_timeout: float = 30,
    ) -> None:
        self.expiry = expiry
        self.capacity = capacity
        self.channel_capacity: list[tuple[re.Pattern[str], int]] = self.compile_capacities(
            channel_capacity or {}
        )
        self.group_history_policies: list[tuple[re.Pattern[str], HistoryPolicy]] = (
            compile_history_policies(group_history)
        )
        self.presence_event_patterns: list[re.Pattern[str]] = compile_group_patterns(
            presence_events, "presence_events"
        )
        if (
            isinstance(presence_timeout, bool)
            or not isinstance(presence_timeout, (int, float))
            or not 0 < presence_timeout < float("inf")
        ):
            raise ValueError(
                f"presence_timeout must be a number of seconds > 0, got {presence_timeout!r}"
            )
        self.presence_timeout: float = float(presence_timeout)

    # -- capacities --------------------------------------------------------------------

    def compile_capacities(
        self, channel_capacity: Mapping[CapacityPattern, int]
    ) -> list[tuple[re.Pattern[str], int]]:
        """Turn a ``channel_capacity`` mapping into ``(regex, capacity)`` pairs, in order."""
        compiled = []
        for pattern, value in channel_capacity.items():
            if isinstance(pattern, str):
                pattern = re.compile(fnmatch.translate(pattern))
            compiled.append((pattern, value))
        return compiled

    def get_capacity(self, channel: str) -> int:
        """The capacity of ``channel``: the first matching pattern's, else the default."""
        for pattern, capacity in self.channel_capacity:
            if pattern.match(channel):
                return capacity
        return self.capacity

    # -- durable groups: which groups keep history, which announce presence -----------

    def history_policy(self, group: str) -> HistoryPolicy | None:
        """The ``group_history`` entry for ``group`` (first matching pattern), or ``None``."""
        # getattr: third-party subclasses need not call our __init__.
        policies: list[tuple[re.Pattern[str], HistoryPolicy]] = getattr(
            self, "group_history_policies", []
        )
        for pattern, policy in policies:
            if pattern.match(group):
                return policy
        return None

    def announces_presence(self, group: str) -> bool:
        """Whether joins and leaves in ``group`` are sent to it (``presence_events``)."""
        patterns: list[re.Pattern[str]] = getattr(self, "presence_event_patterns", [])
        return any(pattern.match(group) for pattern in patterns)

    # -- names -------------------------------------------------------------------------

    def match_type_and_length(self, name: object) -> bool:
        return isinstance(name, str) and len(name) < self.MAX_NAME_LENGTH

    def require_valid_channel_name(self, name: object, receive: bool = False) -> bool:
        """Raise :class:`TypeError` unless ``name`` is a valid channel name.

        With ``receive=True``, a process-specific name (with ``!``) must end at the ``!``:
        that is the form a layer's low-level receive takes.
        """
        if not self.match_type_and_length(name):
            raise TypeError(self.invalid_name_error.format("Channel"))
        assert isinstance(name, str)
        if not self.channel_name_regex.fullmatch(name):
            raise TypeError(self.invalid_name_error.format("Channel"))
        if receive and "!" in name and not name.endswith("!"):
            raise TypeError("Specific channel names in receive() must end at the !")
        return True

    def require_valid_group_name(self, name: object) -> bool:
        """Raise :class:`TypeError` unless ``name`` is a valid group name."""
        if not self.match_type_and_length(name):
            raise TypeError(self.invalid_name_error.format("Group"))
        assert isinstance(name, str)
        if not self.group_name_regex.fullmatch(name):
            raise TypeError(self.invalid_name_error.format("Group"))
        return True

    def valid_channel_names(self, names: list[str], receive: bool = False) -> bool:
        if not isinstance(names, list) or not names:
            raise TypeError("names must be a non-empty list")
        for channel in names:
            self.require_valid_channel_name(channel, receive=receive)
        return True

    def non_local_name(self, name: str) -> str:
        """The part of a process-specific name up to and including ``!``; else ``name``."""
        bang = name.find("!")
        return name if bang == -1 else name[: bang + 1]

    def valid_channel_name(self, channel_name: object, receive: bool = False) -> bool:
        """Deprecated: use :meth:`require_valid_channel_name`."""
        warnings.warn(
            "valid_channel_name is deprecated, use require_valid_channel_name instead.",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.require_valid_channel_name(channel_name)

    def valid_group_name(self, group_name: object) -> bool:
        """Deprecated: use :meth:`require_valid_group_name`."""
        warnings.warn(
            "valid_group_name is deprecated, use require_valid_group_name instead.",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.require_valid_group_name(group_name)

    @staticmethod
    def require_valid_message(message: object) -> None:
        """Raise unless ``message`` is a dict a layer may carry.

        :raises InvalidMessageError: (a :exc:`TypeError`) if it is not a dict.
        :raises ReservedKeyError: (a :exc:`ValueError`) if it holds ``__asgi_channel__``.
        """
        if not isinstance(message, dict):
            raise InvalidMessageError(
                f"Channel layer messages must be dicts, got {type(message).__name__}"
            )
        if "__asgi_channel__" in message:
            raise ReservedKeyError(
                "Channel layer messages must not contain the reserved key '__asgi_channel__'"
            )

    # -- drops ---------------------------------------------------------------------------

    def stats(self) -> LayerStats:
        """This layer's counters since it was made: what it dropped because channels were
        full (see :class:`LayerStats`)."""
        drops = self._drops()
        return LayerStats(dropped=drops.dropped, group_send_skipped=drops.group_send_skipped)

    def _drops(self) -> _Drops:
        # Made on first use: third-party subclasses need not call our __init__.
        drops: _Drops | None = self.__dict__.get("_drop_counts")
        if drops is None:
            drops = self.__dict__["_drop_counts"] = _Drops()
        return drops

    def record_group_send_skips(self, group: str, skipped: Sequence[str], members: int) -> None:
        """Count and log the members of ``group`` a ``group_send`` skipped (channels full).

        Logs channels_redis's INFO line every time (the skipped names in the record's
        ``channels`` attribute), and a WARNING at most once per group per
        :attr:`drop_warning_interval`, saying how many were skipped since the last one.
        """
        if not skipped:
            return
        drops = self._drops()
        drops.dropped += len(skipped)
        drops.group_send_skipped += len(skipped)
        names = ", ".join(skipped[:5]) + (", ..." if len(skipped) > 5 else "")
        # channels_redis's line, word for word (log filters match it); the names go in the
        # WARNING below and in ``extra`` for handlers that want them.
        self._drop_logger.info(
            "%s of %s channels over capacity in group %s",
            len(skipped),
            members,
            group,
            extra={"channels": list(skipped)},
        )
        since = self._due_warning(drops, f"group {group}", len(skipped))
        if since:
            self._drop_logger.warning(
                "group_send to group %r skipped %d full channel(s) since the last warning "
                "about it (%d dropped by this layer in all; at most one warning per group "
                "every %g s); the consumers of these channels are not keeping up: %s",
                group,
                since,
                drops.dropped,
                self.drop_warning_interval,
                names,
            )

    def record_buffer_drop(self, channel: str) -> None:
        """Count a message pushed out of ``channel``'s full process-local buffer."""
        drops = self._drops()
        drops.dropped += 1
        self._drop_logger.info("Local buffer of %r is full; dropped its oldest message", channel)
        since = self._due_warning(drops, "local buffers", 1)
        if since:
            self._drop_logger.warning(
                "Dropped %d message(s) from full local channel buffers since the last "
                "warning about them (%d dropped by this layer in all; at most one warning "
                "every %g s), the last from %r: its consumer is not keeping up",
                since,
                drops.dropped,
                self.drop_warning_interval,
                channel,
            )

    def _due_warning(self, drops: _Drops, key: str, count: int) -> int:
        """How many drops under ``key`` to warn about now, or 0 if warned too recently."""
        now = time.monotonic()
        last, since = drops.warned.get(key, (-float("inf"), 0))
        since += count
        if now - last < self.drop_warning_interval:
            drops.warned[key] = (last, since)
            return 0
        if len(drops.warned) >= 1024:  # forget groups not warned about lately
            drops.warned = {
                name: entry
                for name, entry in drops.warned.items()
                if now - entry[0] < self.drop_warning_interval
            }
        drops.warned[key] = (now, 0)
        return since

    # -- the API that layers implement ---------------------------------------------------

    async def send(self, channel: str, message: Message) -> None:
        raise NotImplementedError("send() should be implemented in a channel layer")

    async def receive(self, channel: str) -> Message:
        raise NotImplementedError("receive() should be implemented in a channel layer")

    async def new_channel(self, prefix: str = "specific.") -> str:
        raise NotImplementedError("new_channel() should be implemented in a channel layer")

    async def flush(self) -> None:
        raise NotImplementedError("flush() not implemented (flush extension)")

    async def group_add(self, group: str, channel: str) -> None:
        raise NotImplementedError("group_add() not implemented (groups extension)")

    async def group_discard(self, group: str, channel: str) -> None:
        raise NotImplementedError("group_discard() not implemented (groups extension)")

    async def group_send(self, group: str, message: Message) -> None:
        raise NotImplementedError("group_send() not implemented (groups extension)")

    async def group_history(
        self, group: str, *, after: StreamPosition | None = None, limit: int | None = None
    ) -> GroupHistory:
        """The messages ``group``'s stream retains (history extension).

        With ``after=None``, the latest retained messages, at most ``limit``. With a
        position, every retained message after it and ``recovered=True``; or none and
        ``recovered=False`` when the epoch differs or some of them were already dropped.
        """
        raise NotImplementedError("group_history() not implemented (history extension)")

    async def presence_join(
        self, group: str, channel: str, info: dict[str, Any] | None = None
    ) -> None:
        """Record ``channel`` as present in ``group`` with ``info`` (presence extension)."""
        raise NotImplementedError("presence_join() not implemented (presence extension)")

    async def presence_leave(self, group: str, channel: str) -> None:
        """Remove ``channel``'s presence entry in ``group`` (presence extension)."""
        raise NotImplementedError("presence_leave() not implemented (presence extension)")

    async def presence(self, group: str) -> dict[str, dict[str, Any]]:
        """``{channel: info}`` for everyone present in ``group`` (presence extension)."""
        raise NotImplementedError("presence() not implemented (presence extension)")

    async def close(self) -> None:
        """Release connections and other resources; the default holds none."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"
