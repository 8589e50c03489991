"""The shapes of the durable-groups extensions: history, recovery and presence.

Layers that keep group history list ``"history"`` in ``extensions`` and implement
:meth:`~channels.layers.BaseChannelLayer.group_history`; layers that track presence list
``"presence"`` and implement ``presence_join``, ``presence_leave`` and ``presence``. This
module holds what every such layer shares: the position and result types, and the
settings (``group_history``, ``presence_events``, ``presence_timeout``) compiled once.

Why positions are ``(epoch, offset)``: an offset alone cannot tell "the 7th message of this
stream" from "the 7th message of a stream that replaced it after the history was lost"
(a new process, a Redis that restarted empty). Every stream gets a fresh random epoch when
it is created, so a position from before the loss never matches, and recovery refuses it
instead of replaying the wrong messages. Epochs are unique per group's stream, which also
lets a consumer tell, from ``__position__`` alone, which of its groups a message is from.
"""

from __future__ import annotations

import fnmatch
import json
import math
import re
import secrets
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple, cast

from ..types import Message

__all__ = [
    "POSITION_KEY",
    "GroupHistory",
    "HistoryPolicy",
    "StreamPosition",
    "check_history_limit",
    "compile_group_patterns",
    "compile_history_policies",
    "encode_presence_info",
    "new_epoch",
    "presence_event",
    "validate_history_args",
    "validate_presence_info",
    "with_position",
    "without_position",
]

#: The key a layer adds to each message of a group that keeps history.
POSITION_KEY = "__position__"

GroupPattern = str | re.Pattern[str]


class StreamPosition(NamedTuple):
    """Where a message sits in its group's stream: ``offset`` within ``epoch``.

    Offsets grow by one per message sent to the group; the epoch changes when the stream's
    history is lost. Members receive it as ``message["__position__"]``, a dict:
    :meth:`from_value` turns that dict (or a client's copy of it) back into a position.
    """

    epoch: str
    offset: int

    @classmethod
    def from_value(cls, value: object) -> StreamPosition:
        """A position from a :class:`StreamPosition`, a ``{"epoch", "offset"}`` mapping
        (what members receive and clients send back) or an ``(epoch, offset)`` pair.

        :raises TypeError: for anything else.
        :raises ValueError: for an epoch that is not a non-empty string or an offset that
            is not a whole number >= 0.
        """
        if isinstance(value, StreamPosition):
            epoch, offset = value.epoch, value.offset
        elif isinstance(value, Mapping):
            if "epoch" not in value or "offset" not in value:
                raise ValueError(
                    f"a stream position needs 'epoch' and 'offset', got keys {sorted(value)!r}"
                )
            epoch, offset = value["epoch"], value["offset"]
        elif isinstance(value, (tuple, list)) and len(value) == 2:  # pyright: ignore[reportUnknownArgumentType]
            epoch, offset = value  # pyright: ignore[reportUnknownVariableType]
        else:
            raise TypeError(
                "a stream position is a StreamPosition, an {'epoch', 'offset'} mapping or an "
                f"(epoch, offset) pair, got {type(value).__name__}"
            )
        if not isinstance(epoch, str) or not epoch:
            raise ValueError(f"a stream position's epoch must be a non-empty str, got {epoch!r}")
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ValueError(f"a stream position's offset must be an int >= 0, got {offset!r}")
        return cls(epoch, offset)

    def as_dict(self) -> dict[str, Any]:
        """The form members receive under ``__position__`` (JSON-ready)."""
        return {"epoch": self.epoch, "offset": self.offset}


class GroupHistory(NamedTuple):
    """What :meth:`~channels.layers.BaseChannelLayer.group_history` returns.

    ``position`` is the top of the stream (the last message's position; offset 0 before
    any message), or ``None`` for a group that keeps no history. ``messages`` are in
    stream order, each with its ``__position__``. ``recovered`` is true only when a replay
    ``after`` a position was asked for and ``messages`` are every message after it: never
    a partial replay. ``False`` tells a client to reload its state.
    """

    position: StreamPosition | None
    messages: list[Message]
    recovered: bool


class HistoryPolicy(NamedTuple):
    """A ``group_history`` entry: keep at most ``size`` messages, none older than ``ttl``."""

    size: int
    ttl: float


def new_epoch() -> str:
    """A fresh random epoch (16 hex digits): one per stream, never reused."""
    return secrets.token_hex(8)


def _compile(pattern: GroupPattern) -> re.Pattern[str]:
    if isinstance(pattern, str):
        return re.compile(fnmatch.translate(pattern))
    if isinstance(pattern, re.Pattern):  # pyright: ignore[reportUnnecessaryIsInstance]
        return pattern
    raise TypeError(f"group patterns are globs (str) or compiled regexes, got {pattern!r}")


def compile_history_policies(
    config: Mapping[GroupPattern, Mapping[str, Any]] | None,
) -> list[tuple[re.Pattern[str], HistoryPolicy]]:
    """``group_history`` as ``(regex, policy)`` pairs, in order (first match wins).

    :raises TypeError: if the setting is not a mapping of patterns to mappings.
    :raises ValueError: if an entry lacks ``size`` or ``ttl`` or has unknown keys, or if
        ``size`` is not a whole number > 0 or ``ttl`` not a number of seconds > 0.
    """
    if config is None:
        return []
    if not isinstance(config, Mapping):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise TypeError(
            "group_history must map group patterns to {'size': ..., 'ttl': ...}, got "
            f"{type(config).__name__}"
        )
    compiled: list[tuple[re.Pattern[str], HistoryPolicy]] = []
    for pattern, entry in config.items():
        if not isinstance(entry, Mapping):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise TypeError(
                f"group_history[{pattern!r}] must be a mapping with 'size' and 'ttl', got "
                f"{type(entry).__name__}"
            )
        unknown = set(entry) - {"size", "ttl"}
        if unknown or "size" not in entry or "ttl" not in entry:
            raise ValueError(
                f"group_history[{pattern!r}] takes exactly 'size' and 'ttl', got "
                f"{sorted(map(str, entry))!r}"
            )
        size, ttl = entry["size"], entry["ttl"]
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise ValueError(f"group_history[{pattern!r}]['size'] must be an int > 0: {size!r}")
        if (
            isinstance(ttl, bool)
            or not isinstance(ttl, (int, float))
            or not ttl > 0
            or not math.isfinite(ttl)
        ):
            raise ValueError(
                f"group_history[{pattern!r}]['ttl'] must be a number of seconds > 0: {ttl!r}"
            )
        compiled.append((_compile(pattern), HistoryPolicy(size, float(ttl))))
    return compiled


def compile_group_patterns(patterns: object, setting: str) -> list[re.Pattern[str]]:
    """A list of group globs or regexes (``presence_events``) as compiled regexes.

    :raises TypeError: if ``patterns`` is a single string or holds something else.
    """
    if patterns is None:
        return []
    if isinstance(patterns, (str, bytes)) or not isinstance(patterns, Iterable):
        raise TypeError(f"{setting} is a list of group patterns, got {patterns!r}")
    return [_compile(pattern) for pattern in cast("Iterable[GroupPattern]", patterns)]


def check_history_limit(limit: object) -> None:
    """:raises ValueError: unless ``limit`` is ``None`` or a whole number >= 0."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be None or an int >= 0, got {limit!r}")


def presence_event(kind: str, group: str, channel: str, info: dict[str, Any]) -> Message:
    """The ``presence.join`` / ``presence.leave`` message sent to an announcing group."""
    return {"type": kind, "group": group, "channel": channel, "info": info}


def validate_presence_info(info: object) -> dict[str, Any]:
    """``info`` as the dict a presence entry keeps (``None`` means ``{}``).

    :raises TypeError: if it is not a dict, or holds something JSON cannot carry.
    """
    if info is None:
        return {}
    if not isinstance(info, dict):
        raise TypeError(f"presence info must be a dict (or None), got {type(info).__name__}")
    try:
        json.dumps(info)
    except (TypeError, ValueError) as error:
        raise TypeError(f"presence info must be JSON-serialisable: {error}") from None
    return info  # pyright: ignore[reportUnknownVariableType]


def validate_history_args(
    after: object, limit: object
) -> tuple[StreamPosition | None, int | None]:
    """``group_history``'s ``after`` and ``limit``, checked before anything is read.

    :raises TypeError: if ``after`` is not ``None`` or a position
        (see :meth:`StreamPosition.from_value`).
    :raises ValueError: if ``after`` is a malformed position, or ``limit`` is not ``None``
        or a whole number >= 0.
    """
    position = None if after is None else StreamPosition.from_value(after)
    check_history_limit(limit)
    assert limit is None or isinstance(limit, int)  # what check_history_limit let through
    return position, limit


def with_position(message: Message, position: StreamPosition) -> Message:
    """A new dict: ``message`` with ``__position__`` set (replacing a forwarded one)."""
    return {**message, POSITION_KEY: position.as_dict()}


def without_position(message: Message) -> Message:
    """``message`` without ``__position__``: what a stream stores (the position is kept
    beside it, so allocating and storing are one step). The same dict if it has none."""
    if POSITION_KEY not in message:
        return message
    return {key: value for key, value in message.items() if key != POSITION_KEY}


def encode_presence_info(info: dict[str, Any]) -> str:
    """``info`` as canonical JSON (sorted keys, no spaces): equal dicts give equal text,
    so a store can tell a changed entry from a refresh by comparing strings."""
    return json.dumps(info, sort_keys=True, separators=(",", ":"))
