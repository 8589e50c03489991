"""History and presence on Redis, for both Redis layers.

A group that keeps history has two keys on its shard (the shard of its membership key, so
one script can touch both):

- ``<stream>``: a Redis stream, one entry per message, fields ``o`` (the offset) and ``d``
  (the message serialized without ``__position__``, with the layer's serializer and
  encryption). ``XADD ... MAXLEN size`` keeps the newest ``size``; ``XTRIM ... MINID``
  (from the server's ``TIME``, so every process agrees on "now") drops entries older than
  ``ttl``, and a read skips them too.
- ``<meta>``: a hash, ``epoch`` (set with ``HSETNX`` from a candidate the caller makes, so
  the first writer's wins) and ``top`` (``HINCRBY``: the last offset given out).

Both expire ``ttl`` after the last append: an idle stream vanishes with its epoch, and the
next message starts a new epoch. So does a Redis that lost its data. A position from before
then names an epoch that no longer exists, and recovery refuses it.

Presence is a hash ``channel -> info`` (canonical JSON) and a sorted set ``channel ->
expiry`` (server milliseconds). Every script that touches them first removes the expired
entries and returns them: Redis runs one script at a time, so each expired entry is
returned to exactly one caller, which sends its ``presence.leave``.

The scripts are small enough to read whole; each says what its keys and arguments are.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
from coredis.exceptions import NoScriptError

from ...types import Message
from ..base import BaseChannelLayer
from ..durable import (
    POSITION_KEY,
    GroupHistory,
    HistoryPolicy,
    StreamPosition,
    encode_presence_info,
    new_epoch,
    presence_event,
    validate_presence_info,
    with_position,
)
from .connection import Command

__all__ = [
    "DurableKeys",
    "RedisDurable",
    "Script",
    "presence",
    "presence_join",
    "presence_leave",
    "run_script",
]

logger: logging.Logger = logging.getLogger("channels.layers.redis")

Execute = Callable[[int, Sequence[Command]], Awaitable[list[Any]]]


class Script:
    """A Lua script run by hash, loaded on the first ``NOSCRIPT``."""

    def __init__(self, source: str) -> None:
        self.source: str = source
        self.sha: str = hashlib.sha1(source.encode("utf-8")).hexdigest()

    def call(self, keys: Sequence[str | bytes], args: Sequence[Any]) -> Command:
        return ("EVALSHA", self.sha, len(keys), *keys, *args)

    def load(self, keys: Sequence[str | bytes], args: Sequence[Any]) -> Command:
        return ("EVAL", self.source, len(keys), *keys, *args)


async def run_script(
    execute: Execute, shard: int, script: Script, keys: Sequence[str], args: Sequence[Any]
) -> Any:
    """Run ``script`` on ``shard`` (by hash; by source if the server does not know it)."""
    (reply,) = await execute(shard, [script.call(keys, args)])
    if isinstance(reply, NoScriptError):
        (reply,) = await execute(shard, [script.load(keys, args)])
    if isinstance(reply, Exception):
        raise reply
    return reply


# Lua shared by the scripts: the server's clock in milliseconds, and the append.
_NOW_MS = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# stream, meta; size, ttl in ms, an epoch candidate, the entry. Returns {epoch, offset}.
_APPEND = (
    _NOW_MS
    + """
local function append(stream, meta, size, ttl, candidate, entry)
  if redis.call('HSETNX', meta, 'epoch', candidate) == 1 then
    -- A new epoch is a new stream: whatever an older one left is not part of it.
    redis.call('DEL', stream)
  end
  local epoch = redis.call('HGET', meta, 'epoch')
  local offset = redis.call('HINCRBY', meta, 'top', 1)
  redis.call('XADD', stream, 'MAXLEN', size, '*', 'o', offset, 'd', entry)
  redis.call('XTRIM', stream, 'MINID', now_ms() - tonumber(ttl))
  redis.call('PEXPIRE', stream, ttl)
  redis.call('PEXPIRE', meta, ttl)
  return {epoch, offset}
end
"""
)

#: KEYS: stream, meta; ARGV: size, ttl (ms), epoch candidate, entry. The pub/sub layer's
#: append (it publishes afterwards). Returns {epoch, offset}.
APPEND: Script = Script(
    _APPEND + "return append(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4])"
)

#: KEYS: group (membership), stream, meta; ARGV: joined-before (members older than that
#: have expired), size, ttl (ms), epoch candidate, entry. The core layer's group send to a
#: group with history: reading the members and giving the message its offset are one step,
#: so a channel that joined before it gets it live, and one that joined after finds it in
#: the history it reads after joining. Returns {members, epoch, offset}.
RECORDED_GROUP_SEND: Script = Script(
    _APPEND
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, ARGV[1])
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
local position = append(KEYS[2], KEYS[3], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
return {members, position[1], position[2]}
"""
)

#: KEYS: stream, meta; ARGV: epoch candidate, ttl (ms), the epoch and offset read after
#: ('' and 0 for the latest messages), limit (-1: none). Makes the stream's epoch if it has
#: none (the next append uses it). Returns {epoch, top, entries newest first}; reads only
#: the entries a reply can use: none when the answer is known without them.
HISTORY: Script = Script(
    _NOW_MS
    + """
if redis.call('HSETNX', KEYS[2], 'epoch', ARGV[1]) == 1 then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'top', 0)
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
local epoch = redis.call('HGET', KEYS[2], 'epoch')
local top = tonumber(redis.call('HGET', KEYS[2], 'top') or '0')
local limit = tonumber(ARGV[5])
local count
if ARGV[3] == '' then
  count = limit
elseif ARGV[3] ~= epoch or tonumber(ARGV[4]) >= top then
  count = 0
else
  count = top - tonumber(ARGV[4])
  if limit >= 0 and count > limit then count = 0 end
end
local entries = {}
if count ~= 0 then
  local oldest = now_ms() - tonumber(ARGV[2])
  if count > 0 then
    entries = redis.call('XREVRANGE', KEYS[1], '+', oldest, 'COUNT', count)
  else
    entries = redis.call('XREVRANGE', KEYS[1], '+', oldest)
  end
end
return {epoch, top, entries}
"""
)

# presence hash, expiry zset, now: removes (up to 1000) expired entries, returns them as
# {channel, info, ...}.
_PURGE = (
    _NOW_MS
    + """
local function purge(entries, expiries, now)
  local expired = redis.call('ZRANGEBYSCORE', expiries, '-inf', now, 'LIMIT', 0, 1000)
  local gone = {}
  for _, channel in ipairs(expired) do
    gone[#gone + 1] = channel
    gone[#gone + 1] = redis.call('HGET', entries, channel) or '{}'
  end
  if #expired > 0 then
    redis.call('HDEL', entries, unpack(expired))
    redis.call('ZREM', expiries, unpack(expired))
  end
  return gone
end
local now = now_ms()
"""
)

#: KEYS: presence, expiries; ARGV: channel, info, timeout (ms), keys' ttl (ms). Returns
#: {the entry's previous info or nil, expired entries}.
PRESENCE_JOIN: Script = Script(
    _PURGE
    + """
local gone = purge(KEYS[1], KEYS[2], now)
local old = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return {old, gone}
"""
)

#: KEYS: presence, expiries; ARGV: channel. Returns {its info or nil, expired entries}.
PRESENCE_LEAVE: Script = Script(
    _PURGE
    + """
local gone = purge(KEYS[1], KEYS[2], now)
local old = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return {old, gone}
"""
)

#: KEYS: presence, expiries. Returns {live entries as channel, info, ..., expired entries}.
PRESENCE: Script = Script(
    _PURGE
    + """
local gone = purge(KEYS[1], KEYS[2], now)
return {redis.call('HGETALL', KEYS[1]), gone}
"""
)


@dataclass(frozen=True)
class DurableKeys:
    """A group's history and presence keys, and the shard they live on."""

    shard: int
    stream: str
    meta: str
    presence: str
    expiries: str


def ttl_ms(seconds: float) -> int:
    """Seconds as whole milliseconds for ``PEXPIRE`` (at least 1)."""
    return max(1, math.ceil(seconds * 1000))


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _decode_info(value: Any) -> dict[str, Any]:
    try:
        info = json.loads(value)
    except (TypeError, ValueError):
        info = None
    return info if isinstance(info, dict) else {}  # pyright: ignore[reportUnknownVariableType]


def _pairs(flat: Sequence[Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(_text(flat[i]), _decode_info(flat[i + 1])) for i in range(0, len(flat) - 1, 2)]


class RedisDurable:
    """The history and presence calls of one Redis layer, given how to reach its shards.

    ``execute`` runs commands on a shard in one round trip (reconnecting as the layer
    does); ``keys`` names a group's keys; ``serialize``/``deserialize`` turn stored
    entries into bytes and back (the layer's format and encryption).
    """

    def __init__(
        self,
        execute: Execute,
        keys: Callable[[str], DurableKeys],
        serialize: Callable[[Message], bytes],
        deserialize: Callable[[bytes], Message],
    ) -> None:
        self.execute = execute
        self.keys = keys
        self.serialize = serialize
        self.deserialize = deserialize

    # -- history ---------------------------------------------------------------------------

    def append_args(self, policy: HistoryPolicy, message: Message) -> list[Any]:
        """``size, ttl, epoch candidate, entry``: the append's arguments, for one script
        or the other (``message`` has no ``__position__``)."""
        return [policy.size, ttl_ms(policy.ttl), new_epoch(), self.serialize(message)]

    async def append(self, group: str, policy: HistoryPolicy, message: Message) -> StreamPosition:
        """Store ``message`` (without ``__position__``) in ``group``'s stream; its position."""
        keys = self.keys(group)
        epoch, offset = await run_script(
            self.execute,
            keys.shard,
            APPEND,
            [keys.stream, keys.meta],
            self.append_args(policy, message),
        )
        return StreamPosition(_text(epoch), int(offset))

    async def history(
        self,
        group: str,
        policy: HistoryPolicy,
        after: StreamPosition | None,
        limit: int | None,
    ) -> GroupHistory:
        """``group_history`` once ``after`` and ``limit`` are checked (see the base class)."""
        keys = self.keys(group)
        epoch, top, entries = await run_script(
            self.execute,
            keys.shard,
            HISTORY,
            [keys.stream, keys.meta],
            [
                new_epoch(),
                ttl_ms(policy.ttl),
                "" if after is None else after.epoch,
                0 if after is None else after.offset,
                -1 if limit is None else limit,
            ],
        )
        position = StreamPosition(_text(epoch), int(top))
        if limit == 0 and after is None:
            return GroupHistory(position, [], False)
        if after is not None:
            if after.epoch != position.epoch or after.offset > position.offset:
                return GroupHistory(position, [], False)
            if after.offset == position.offset:
                return GroupHistory(position, [], True)
            wanted = position.offset - after.offset
            if limit is not None and wanted > limit:
                return GroupHistory(position, [], False)
        messages: list[Message] = []
        for entry_id, fields in reversed(entries):
            values = dict(zip(fields[::2], fields[1::2], strict=False))
            try:
                offset = int(values[b"o"])
                message = self.deserialize(values[b"d"])
            except (KeyError, ValueError) as exc:
                logger.error(
                    "Cannot read entry %s of group %r's history: %s", _text(entry_id), group, exc
                )
                if after is not None:
                    return GroupHistory(position, [], False)  # never a replay with a hole
                continue
            messages.append(with_position(message, StreamPosition(position.epoch, offset)))
        if after is None:
            return GroupHistory(position, messages, False)
        first = messages[0][POSITION_KEY]["offset"] if messages else None
        if len(messages) != position.offset - after.offset or first != after.offset + 1:
            return GroupHistory(position, [], False)
        return GroupHistory(position, messages, True)

    # -- presence --------------------------------------------------------------------------

    async def presence_join(
        self, group: str, channel: str, info: dict[str, Any], timeout: float
    ) -> tuple[bool, list[tuple[str, dict[str, Any]]]]:
        """Record the entry; whether it is new or its info changed, and the expired entries
        this call removed."""
        keys = self.keys(group)
        encoded = encode_presence_info(info)
        old, gone = await run_script(
            self.execute,
            keys.shard,
            PRESENCE_JOIN,
            [keys.presence, keys.expiries],
            [channel, encoded, ttl_ms(timeout), ttl_ms(2 * timeout)],
        )
        return old is None or _text(old) != encoded, _pairs(gone)

    async def presence_leave(
        self, group: str, channel: str
    ) -> tuple[dict[str, Any] | None, list[tuple[str, dict[str, Any]]]]:
        """Remove the entry; its info (``None`` if it had none), and the expired entries."""
        keys = self.keys(group)
        old, gone = await run_script(
            self.execute,
            keys.shard,
            PRESENCE_LEAVE,
            [keys.presence, keys.expiries],
            [channel],
        )
        return (None if old is None else _decode_info(old)), _pairs(gone)

    async def presence(
        self, group: str
    ) -> tuple[dict[str, dict[str, Any]], list[tuple[str, dict[str, Any]]]]:
        """The live entries, and the expired ones this call removed."""
        keys = self.keys(group)
        live, gone = await run_script(
            self.execute, keys.shard, PRESENCE, [keys.presence, keys.expiries], []
        )
        return dict(_pairs(live)), _pairs(gone)


# -- the presence calls, with their events (both layers) ---------------------------------


async def presence_join(
    layer: BaseChannelLayer,
    durable: RedisDurable,
    group: str,
    channel: str,
    info: dict[str, Any] | None,
) -> None:
    layer.require_valid_group_name(group)
    layer.require_valid_channel_name(channel)
    checked = validate_presence_info(info)
    changed, gone = await durable.presence_join(group, channel, checked, layer.presence_timeout)
    await _announce_leaves(layer, group, gone)
    if changed and layer.announces_presence(group):
        await layer.group_send(group, presence_event("presence.join", group, channel, checked))


async def presence_leave(
    layer: BaseChannelLayer, durable: RedisDurable, group: str, channel: str
) -> None:
    layer.require_valid_group_name(group)
    layer.require_valid_channel_name(channel)
    old, gone = await durable.presence_leave(group, channel)
    if old is not None:
        gone.append((channel, old))
    await _announce_leaves(layer, group, gone)


async def presence(
    layer: BaseChannelLayer, durable: RedisDurable, group: str
) -> dict[str, dict[str, Any]]:
    layer.require_valid_group_name(group)
    live, gone = await durable.presence(group)
    await _announce_leaves(layer, group, gone)
    return live


async def _announce_leaves(
    layer: BaseChannelLayer, group: str, gone: list[tuple[str, dict[str, Any]]]
) -> None:
    """Send ``presence.leave`` for entries this process removed (it alone removed them).

    Shielded: the entries are gone from Redis already, so if the caller is cancelled now (a
    consumer's heartbeat stopping), nobody else will ever announce them. The wait is
    bounded by ``group_send``'s own retries; the cancellation lands at the caller's next
    checkpoint.
    """
    if gone and layer.announces_presence(group):
        with anyio.CancelScope(shield=True):
            for channel, info in gone:
                event = presence_event("presence.leave", group, channel, info)
                await layer.group_send(group, event)
