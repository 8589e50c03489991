"""``RedisChannelLayer``: channels_redis's sorted-set layer, on anyio.

Storage is channels_redis 4.x's, key for key (see ``serializers.py`` for the bytes): a channel is
the sorted set ``<prefix><channel>`` of messages scored by send time; every process-local
channel of one layer shares ``<prefix>specific.<client id>!`` and is told apart by the
message's ``__asgi_channel__``; a group is ``<prefix>:group:<group>``, channel names scored
by join time. Processes running channels_redis and processes running this layer can share
one Redis.

What differs is how the work is done:

- A send is one round trip (a script prunes expired messages, checks capacity, adds and
  refreshes the expiry); a group send is two (read the members, then one script per shard
  delivers to all of them). channels_redis needs four and 3 + 2 per shard.
- A receive is one blocking pop. If it is cancelled while blocked, the connection is woken
  with ``CLIENT UNBLOCK`` and its reply read, so a message the server popped in that
  moment is not dropped: on a normal channel it goes back to the head of its queue (same
  member, same score), on a process-local channel it is filed for its receiver. There are
  no ``$inflight`` backup keys to leak.
- A direct send to a process-local channel goes to the shard of the channel's non-local
  name, where its receiver reads (channels_redis hashes the full name there, so with
  several hosts its messages land elsewhere: channels/#1492). To still get what
  channels_redis senders put on those other shards, process-local channels are read on
  every shard.
- A send to one of this layer's own process-local channels whose receive waits in the same
  loop is filed for it without Redis (serialized and read back, as if it had been there):
  no round trip at all, where channels_redis makes the send's and the receive's. Sends
  follow through Redis while the layer's earlier ones to that key are still there, so
  their order holds; the reader's blocking pop that such a filing interrupts is left in
  Redis (``_LoopState.parked``) and its reply taken by the next read, not woken with
  ``CLIENT UNBLOCK``.
- Expired messages are dropped when received, not only when a later send prunes them.
- ``flush`` walks keys with ``SCAN``, never ``KEYS``.

Groups with a ``group_history`` policy also keep a stream (``<prefix>:history:<group>``,
with ``<prefix>:history-meta:<group>``) on the group's shard: one script reads the members
and appends the message (see ``durable.py``), then delivery goes on as for any group.
Presence lives in ``<prefix>:presence:<group>`` and ``<prefix>:presence-expiry:<group>``.
channels_redis knows none of these keys; its group sends are delivered but not recorded.
"""

from __future__ import annotations

import functools
import itertools
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from ...exceptions import ChannelFull
from ...types import Message
from ...utils import unwrap_exception_groups
from ..base import CapacityPattern
from ..durable import (
    GroupPattern,
    StreamPosition,
    with_position,
    without_position,
)
from .base import RedisLayerBase, glob_escape
from .connection import CONNECTION_ERRORS, Command, Connection, Pool
from .durable import (
    RECORDED_GROUP_SEND,
    DurableKeys,
    RedisDurable,
    Script,
    run_script,
)
from .errors import ForeignChannelError
from .hosts import Host, consistent_hash, parse_hosts
from .local import Mailboxes, Readers, deliver
from .memberships import Memberships
from .retry import Backoff
from .serializers import MessageSerializer, as_message, registry

__all__ = ["RedisChannelLayer"]

logger: logging.Logger = logging.getLogger("channels.layers.redis")

Item = tuple[bytes, float, int]  # a popped member, its score, and its shard
_Route = tuple[str, int | None, bool]  # a channel's key, its shard, and whether it is ours


_Script = Script


# KEYS[1] the channel; ARGV: member, score, expired-before, capacity, expiry.
_SEND = _Script(
    """
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, ARGV[3])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""
)

# KEYS: channels; ARGV: score, expired-before, expiry, then a member and a capacity per key.
# Returns the positions (1-based) of the channels that were full: they are skipped, as
# channels_redis does.
_GROUP_SEND = _Script(
    """
local full = {}
for i = 1, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], 0, ARGV[2])
  if redis.call('ZCARD', KEYS[i]) < tonumber(ARGV[3 + 2 * i]) then
    redis.call('ZADD', KEYS[i], ARGV[1], ARGV[2 + 2 * i])
    redis.call('EXPIRE', KEYS[i], ARGV[3])
  else
    full[#full + 1] = i
  end
end
return full
"""
)


@dataclass(eq=False)
class _LoopState:
    """What one event loop needs: its connections, and its local-channel readers.

    Process-local channels made with different prefixes live in different keys
    (``<prefix>specific.<id>!``, ``<prefix>other.<id>!``): each key has its own readers.
    """

    pools: list[Pool]
    mailboxes: Mailboxes
    readers: dict[str, Readers] = field(default_factory=dict)
    #: Blocking pops of a process-local key whose read was interrupted by a local delivery,
    #: by shard and key: the connection still owes the pop's reply, which the next read of
    #: that key takes instead of asking again (and its deadline).
    parked: dict[tuple[int, str], tuple[Connection, float]] = field(default_factory=dict)

    def readers_of(self, key: str) -> Readers:
        readers = self.readers.get(key)
        if readers is None:
            readers = self.readers[key] = Readers(self.mailboxes, interruptible=True)
        return readers

    # Shards whose server has no BZMPOP (Redis < 7): popped one message at a time.
    no_bzmpop: set[int] = field(default_factory=set)

    async def aclose(self) -> None:
        for pool in self.pools:
            await pool.aclose()


class RedisChannelLayer(RedisLayerBase[_LoopState]):
    """A channel layer on one or more Redis servers, compatible with channels_redis 4.x.

    Settings are channels_redis's: ``hosts`` (a list of URLs, ``(host, port)`` pairs,
    dicts with ``address``, or Sentinel dicts with ``master_name``/``sentinels``/
    ``sentinel_kwargs``; the list's order decides sharding), ``prefix``, ``expiry``,
    ``group_expiry``, ``capacity``, ``channel_capacity``, ``symmetric_encryption_keys``,
    ``random_prefix_length`` and ``serializer_format`` (``"msgpack"`` or ``"json"``).

    Connections are per event loop, closed by :meth:`close` (which lifespan shutdown
    calls) or when their loop ends. If Redis goes away, calls reconnect: a blocked
    :meth:`receive` keeps trying until Redis is back, and other calls retry for
    ``reconnect_timeout`` seconds before raising :class:`ConnectionError`.
    """

    extensions: list[str] = ["groups", "flush", "history", "presence"]

    #: Seconds a blocking pop waits on the server before asking again.
    brpop_timeout = 5
    #: Most messages one read of the process-local key takes (Redis 7+: BZMPOP).
    local_batch = 64

    def __init__(
        self,
        hosts: Iterable[Any] | None = None,
        prefix: str = "asgi",
        expiry: int = 60,
        group_expiry: int = 86400,
        capacity: int = 100,
        channel_capacity: Mapping[CapacityPattern, int] | None = None,
        symmetric_encryption_keys: Iterable[str | bytes] | None = None,
        random_prefix_length: int = 12,
        serializer_format: str = "msgpack",
        *,
        group_history: Mapping[GroupPattern, Mapping[str, Any]] | None = None,
        presence_events: Sequence[GroupPattern] | None = None,
        presence_timeout: float = 30,
    ) -> None:
        super().__init__(
            prefix=prefix,
            expiry=expiry,
            capacity=capacity,
            channel_capacity=channel_capacity,
            new_state=self._new_loop_state,
            close_state=self._close_loop_state,
            group_history=group_history,
            presence_events=presence_events,
            presence_timeout=presence_timeout,
        )
        for name, value in (("expiry", expiry), ("group_expiry", group_expiry)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive whole number of seconds")
        self.group_expiry = group_expiry
        self.hosts: list[Host] = parse_hosts(hosts)
        self.ring_size: int = len(self.hosts)
        if not isinstance(random_prefix_length, int) or isinstance(random_prefix_length, bool):
            raise TypeError(
                "random_prefix_length must be a whole number of bytes (0 or less: none), "
                f"got {random_prefix_length!r}"
            )
        self._serializer: MessageSerializer = registry.get_serializer(
            serializer_format,
            # Random bytes make equal messages distinct members of a channel's sorted set.
            random_prefix_length=random_prefix_length,
            expiry=expiry,
            symmetric_encryption_keys=symmetric_encryption_keys,
        )
        self.client_prefix: str = uuid.uuid4().hex
        self._send_index = itertools.cycle(range(self.ring_size))
        self._last_score = 0.0
        self._routes: dict[str, _Route] = {}
        # Per process-local key, what this layer put there and has not read back yet (its
        # members, each with when it expires): while a key has some, a send to one of its
        # channels goes through Redis, behind them (see ``send``).
        self._in_redis: dict[str, dict[bytes, float]] = {}
        self._mailboxes = Mailboxes(expiry, self.get_capacity, self.record_buffer_drop)
        self._memberships = Memberships(live_for=expiry)
        # Per shard, the run id of the server last seen there (None: not connected yet).
        self._run_ids: list[str | None] = [None] * self.ring_size
        # History entries live as long as their stream's ttl, not a message's expiry: their
        # own serializer (no random prefix, an encryption time-to-live of the longest ttl).
        longest = max((policy.ttl for _, policy in self.group_history_policies), default=expiry)
        history_serializer = registry.get_serializer(
            serializer_format,
            random_prefix_length=0,
            expiry=longest,
            symmetric_encryption_keys=symmetric_encryption_keys,
        )
        self._durable = RedisDurable(
            self._execute,
            self._durable_keys,
            history_serializer.serialize,
            lambda data: as_message(history_serializer.deserialize(data)),
        )

    def _new_loop_state(self) -> _LoopState:
        pools = [
            Pool(host, on_connect=functools.partial(self._on_connect, shard))
            for shard, host in enumerate(self.hosts)
        ]
        return _LoopState(pools, self._mailboxes)

    async def _close_loop_state(self, state: _LoopState) -> None:
        """Close a loop's connections; a parked pop is woken first and what it had taken
        is filed (the mailboxes outlive the loop, as for a cancelled receive)."""
        parked, state.parked = state.parked, {}
        for (shard, key), (connection, _) in parked.items():
            with anyio.CancelScope(shield=True):
                items = await self._unblock(state, shard, connection)
                if items:
                    self._file_local(state.readers_of(key), key, items)
                await connection.aclose()
        await state.aclose()

    # -- names, keys, shards -------------------------------------------------------------

    def _group_key(self, group: str) -> str:
        return f"{self.prefix}:group:{group}"

    def _durable_keys(self, group: str) -> DurableKeys:
        # On the shard of the group's membership key, so one script reads both.
        return DurableKeys(
            shard=self.consistent_hash(group),
            stream=f"{self.prefix}:history:{group}",
            meta=f"{self.prefix}:history-meta:{group}",
            presence=f"{self.prefix}:presence:{group}",
            expiries=f"{self.prefix}:presence-expiry:{group}",
        )

    def consistent_hash(self, name: str) -> int:
        return consistent_hash(name, self.ring_size)

    def _score(self) -> float:
        # Strictly increasing, so two sends in the same clock tick keep their order
        # (members with equal scores would sort by their random bytes instead).
        now = time.time()
        if now <= self._last_score:
            now = self._last_score + 1e-6
        self._last_score = now
        return now

    # -- running commands ----------------------------------------------------------------

    async def _execute(self, shard: int, commands: Sequence[Command]) -> list[Any]:
        """Run ``commands`` on ``shard`` in one round trip, reconnecting if Redis is away.

        A command whose connection broke is sent again on a new one: if the server had
        run it and only its reply was lost, it runs twice (a send can be duplicated, never
        silently dropped).
        """
        state = await self._loops.get()
        backoff = Backoff(self.reconnect_timeout)
        while True:
            try:
                return await state.pools[shard].execute(commands)
            except CONNECTION_ERRORS as exc:
                await backoff.wait(self.hosts[shard].describe(), exc)

    async def _script(
        self, shard: int, script: _Script, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        return await run_script(self._execute, shard, script, keys, args)

    # -- channels ------------------------------------------------------------------------

    async def send(self, channel: str, message: Message) -> None:
        """Put ``message`` on ``channel``.

        :raises ~channels.exceptions.ChannelFull: if the channel holds ``capacity``
            messages (for a process-local channel: its process's shared key does).
        """
        self.require_valid_message(message)
        route = self._routes.get(channel)
        if route is None:
            route = self._route(channel)
        key, shard, own = route
        if shard is None:
            shard = next(self._send_index)
        else:
            message = {**message, "__asgi_channel__": channel}
        data = self.serialize(message)
        in_redis: dict[bytes, float] | None = None
        if own:
            if self._deliver_here(key, channel, data):
                return
            in_redis = self._held(key)
            in_redis[data] = time.monotonic() + self.expiry + 1
        now = self._score()
        added = await self._script(
            shard,
            _SEND,
            [key],
            [data, now, int(now) - int(self.expiry), self.get_capacity(channel), self.expiry],
        )
        if not added:
            if in_redis is not None:
                in_redis.pop(data, None)
            raise ChannelFull(channel)

    def _deliver_here(self, key: str, channel: str, data: bytes) -> bool:
        """File a send to one of this layer's own process-local channels without Redis,
        if its receiver waits in this loop and nothing this layer sent there earlier is
        still in Redis; True if it did.

        That receiver is the only one who can take the message, so a round trip to put it
        in Redis and another to take it out again would change nothing it can see: the
        message still goes through the serializer (the receiver gets what a read from
        Redis gives), counts against the channel's capacity and expires with ``expiry``.
        A receiver that is behind gets its messages through Redis, in send order behind
        the ones filed here, and its reads of the key keep taking what other processes
        send it.

        :raises ~channels.exceptions.ChannelFull: if ``capacity`` messages are filed for
            ``channel`` already.
        """
        state = self._loops.current()
        if state is None:
            return False
        readers = state.readers.get(key)
        if readers is None or not readers.pending(channel) or self._held_in_redis(key):
            return False
        mailboxes = self._mailboxes
        if len(mailboxes.buffers.get(channel) or ()) >= mailboxes.capacity_of(channel):
            raise ChannelFull(channel)
        message = self.deserialize(data)
        message.pop("__asgi_channel__", None)
        deliver(mailboxes, readers, (channel,), message)
        readers.interrupt(channel)
        return True

    def _held(self, key: str) -> dict[bytes, float]:
        """What this layer sent to ``key`` and has not read back: later sends to the key's
        channels go through Redis behind it, in order."""
        in_redis = self._in_redis.get(key)
        if in_redis is None:
            in_redis = self._in_redis[key] = {}
        return in_redis

    def _held_in_redis(self, key: str) -> bool:
        """Whether some message this layer sent to ``key`` may still be in Redis (or its
        pop's reply not read yet); what expired there since is forgotten."""
        in_redis = self._in_redis.get(key)
        if not in_redis:
            return False
        now = time.monotonic()
        while in_redis:
            member, expires = next(iter(in_redis.items()))  # the oldest: sent first
            if expires > now:
                return True
            del in_redis[member]
        return False

    def _route(self, channel: str) -> _Route:
        """The key that sends to ``channel`` go to, its shard (``None``: round-robin), and
        whether it is one of this layer's own process-local channels.

        Validating a name costs a noticeable share of a send, and a producer sends to the
        same few channels over and over, so the answer is kept for a bounded number of
        names (only valid names get here).
        """
        self.require_valid_channel_name(channel)
        route: _Route
        if "!" in channel:
            non_local = self.non_local_name(channel)
            route = (
                self.prefix + non_local,
                self.consistent_hash(non_local),
                self._is_own(non_local),
            )
        else:
            route = (self.prefix + channel, None, False)
        if len(self._routes) >= 4096:
            self._routes.clear()
        self._routes[channel] = route
        return route

    def _is_own(self, non_local_name: str) -> bool:
        return non_local_name.endswith(f".{self.client_prefix}!")

    async def new_channel(self, prefix: str = "specific") -> str:
        """A new process-local channel: ``<prefix>.<this layer's id>!<random>``."""
        return f"{prefix}.{self.client_prefix}!{uuid.uuid4().hex}"

    async def receive(self, channel: str) -> Message:
        """The next message on ``channel``, waiting as long as it takes.

        Cancelling a receive at any point loses no message and changes no order. If Redis
        goes away, the receive waits for it to come back.

        :raises ForeignChannelError: (a :exc:`ValueError`) for a process-local channel
            made by another layer instance.
        """
        self.require_valid_channel_name(channel)
        self._memberships.receive_started(channel)
        try:
            return await self._receive(channel)
        finally:
            self._memberships.receive_ended(channel)

    async def _receive(self, channel: str) -> Message:
        if "!" in channel:
            if not self._is_own(self.non_local_name(channel)):
                raise ForeignChannelError(
                    f"Channel {channel!r} was not made by this layer's new_channel(): a "
                    "process-local channel can only be received by the layer that made it"
                )
            state = await self._loops.get()
            key = self.prefix + self.non_local_name(channel)
            readers = state.readers_of(key)
            return await readers.receive(
                channel, functools.partial(self._read_local, state, key, readers)
            )
        return await self._receive_normal(channel)

    async def _receive_normal(self, channel: str) -> Message:
        key = self.prefix + channel
        state = await self._loops.get()
        while True:
            items = await self._pop_any(state, key, 1, self._push_back(key))
            items.sort(key=lambda item: item[1])
            if len(items) > 1:  # two shards answered at once: keep the oldest
                with anyio.CancelScope(shield=True):
                    await self._push_back(key)(items[1:])
            member, score, _ = items[0]
            message = self._decode(member, score)
            if message is not None:
                message.pop("__asgi_channel__", None)  # group sends list their targets
                return message

    def _push_back(self, key: str) -> Callable[[list[Item]], Awaitable[None]]:
        async def push_back(items: list[Item]) -> None:
            # The same members with the same scores: back at the head of the queue.
            by_shard: dict[int, list[Any]] = defaultdict(list)
            for member, score, shard in items:
                by_shard[shard] += [score, member]
            for shard, pairs in by_shard.items():
                try:
                    await self._check(shard, [("ZADD", key, *pairs)])
                except Exception:
                    logger.exception("Could not put %d message(s) back on %r", len(items), key)

        return push_back

    async def _read_local(self, state: _LoopState, key: str, readers: Readers) -> None:
        """Read a process-local key (on every shard) and file what came."""

        async def file(items: list[Item]) -> None:
            self._file_local(readers, key, items)

        items = await self._pop_any(state, key, self.local_batch, file)
        self._file_local(readers, key, items)

    def _file_local(self, readers: Readers, key: str, items: list[Item]) -> None:
        now = time.monotonic()
        in_redis = self._in_redis.get(key)
        for member, score, _ in sorted(items, key=lambda item: item[1]):
            if in_redis:
                in_redis.pop(member, None)
            message = self._decode(member, score)
            if message is None:
                continue
            targets = message.pop("__asgi_channel__", None)
            if isinstance(targets, str):
                targets = [targets]
            if not isinstance(targets, list) or not targets:
                logger.warning("Dropped a message on %r with no target channel", key)
                continue
            deliver(self._mailboxes, readers, targets, message, now)

    def _decode(self, member: bytes, score: float) -> Message | None:
        if score < int(time.time()) - int(self.expiry):
            return None  # expired while queued
        try:
            return self.deserialize(member)
        except Exception as exc:
            logger.error("Dropped a channel layer message that cannot be read: %s", exc)
            return None

    # -- blocking pops -------------------------------------------------------------------

    async def _pop_any(
        self,
        state: _LoopState,
        key: str,
        count: int,
        salvage: Callable[[list[Item]], Awaitable[None]],
    ) -> list[Item]:
        """Pop from ``key`` on whichever shard has something first.

        Every shard is watched, because senders spread normal channels round-robin and
        channels_redis senders put process-local messages on the shard of the full name.
        Whatever a pop took but cannot return (it was cancelled) is given to ``salvage``.
        """
        if self.ring_size == 1:
            return await self._pop(state, 0, key, count, salvage)
        got: list[Item] = []

        async def pop(shard: int, scope: anyio.CancelScope) -> None:
            items = await self._pop(state, shard, key, count, salvage)
            got.extend(items)
            scope.cancel()

        try:
            with unwrap_exception_groups():
                async with anyio.create_task_group() as group:
                    for shard in range(self.ring_size):
                        group.start_soon(pop, shard, group.cancel_scope)
        except BaseException:
            if got:
                with anyio.CancelScope(shield=True):
                    await salvage(got)
            raise
        return got

    async def _pop(
        self,
        state: _LoopState,
        shard: int,
        key: str,
        count: int,
        salvage: Callable[[list[Item]], Awaitable[None]],
    ) -> list[Item]:
        """Block on ``key`` on one shard until it yields up to ``count`` messages.

        Reconnects (with backoff) for as long as the server is away.
        """
        pool = state.pools[shard]
        backoff = Backoff()  # a reader waits for as long as the server is away
        while True:
            parked = state.parked.pop((shard, key), None)
            if parked is None:
                try:
                    connection = await pool.acquire()
                except CONNECTION_ERRORS as exc:
                    await backoff.wait(self.hosts[shard].describe(), exc)
                    continue
                backoff.reset()
                deadline = None
            else:
                connection, deadline = parked
            try:
                reply = await self._blocking_command(
                    state, shard, connection, key, count, salvage, deadline
                )
            except CONNECTION_ERRORS:
                connection.broken = True
                continue
            finally:
                if state.parked.get((shard, key), (None,))[0] is not connection:
                    await pool.release(connection)
            if reply is None:
                continue  # the server's timeout: ask again
            if isinstance(reply, Exception):
                if count > 1 and "unknown command" in str(reply).lower():
                    state.no_bzmpop.add(shard)
                    continue
                raise reply
            return _parse_pop(reply, shard)

    async def _blocking_command(
        self,
        state: _LoopState,
        shard: int,
        connection: Connection,
        key: str,
        count: int,
        salvage: Callable[[list[Item]], Awaitable[None]],
        deadline: float | None = None,
    ) -> Any:
        """Send a blocking pop of ``key`` on ``connection`` and read its reply; with a
        ``deadline``, the connection is a parked one whose pop was sent already."""
        if deadline is None:
            if count > 1 and shard not in state.no_bzmpop:
                command: Command = ("BZMPOP", self.brpop_timeout, 1, key, "MIN", "COUNT", count)
            else:
                command = ("BZPOPMIN", key, self.brpop_timeout)
            if connection.sock is not None:
                await connection.send([command])  # all or nothing, see Connection.send
            else:
                with anyio.CancelScope(shield=True):
                    # Once written the command will run: it must not be abandoned halfway.
                    await connection.send([command])
            deadline = anyio.current_time() + self.brpop_timeout + connection.host.stream_timeout
        else:
            # The server has answered by the pop's own deadline: its reply is on the way.
            deadline = max(deadline, anyio.current_time() + connection.host.stream_timeout)
        try:
            with anyio.CancelScope(deadline=deadline):
                return await connection.read_reply()
            raise TimeoutError("no reply to a blocking pop")  # only reached on timeout
        except anyio.get_cancelled_exc_class():
            readers = state.readers.get(key)
            if readers is not None and readers.interrupted and connection.sock is not None:
                # A local delivery stopped this read, not the receiver's caller: the next
                # read of the key takes the reply (a socket read cancelled took nothing,
                # and the parser keeps what it had), with no CLIENT UNBLOCK round trip.
                connection.broken = False
                state.parked[(shard, key)] = (connection, deadline)
                raise
            with anyio.CancelScope(shield=True):
                items = await self._unblock(state, shard, connection)
                if items:
                    await salvage(items)
            raise

    async def _unblock(self, state: _LoopState, shard: int, connection: Connection) -> list[Item]:
        """Wake ``connection`` from its blocking pop and return what the pop took, if any."""
        try:
            with anyio.fail_after(connection.host.stream_timeout):
                await state.pools[shard].execute([("CLIENT", "UNBLOCK", connection.client_id)])
                reply = await connection.read_reply()
        except CONNECTION_ERRORS:
            # The server is gone; a message it popped in the last instant went with the
            # reply. This is the one loss a dropped connection can cause (see README).
            connection.broken = True
            return []
        if reply is None or isinstance(reply, Exception):
            return []
        return _parse_pop(reply, shard)

    # -- groups --------------------------------------------------------------------------

    async def group_add(self, group: str, channel: str) -> None:
        """Add ``channel`` to ``group``; joining again restarts its ``group_expiry``."""
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        key = self._group_key(group)
        joined = time.time()
        await self._check(
            self.consistent_hash(group),
            [("ZADD", key, joined, channel), ("EXPIRE", key, self.group_expiry)],
        )
        self._memberships.added(group, channel, joined)

    async def group_discard(self, group: str, channel: str) -> None:
        """Remove ``channel`` from ``group``; nothing happens if it is not a member."""
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        self._memberships.discarded(group, channel)
        await self._check(self.consistent_hash(group), [("ZREM", self._group_key(group), channel)])

    async def group_send(self, group: str, message: Message) -> None:
        """Send ``message`` to every member of ``group``.

        A member whose channel is full is skipped, logged and counted (:meth:`stats`); the
        others still get it. Members sharing a Redis key (the process-local channels of one
        process) share one stored message listing them all, as channels_redis does.

        For a group with a ``group_history`` policy, the same script that reads the members
        appends the message to the group's stream; members get it with ``__position__``.
        """
        self.require_valid_message(message)
        self.require_valid_group_name(group)
        key = self._group_key(group)
        expired_members = int(time.time()) - int(self.group_expiry)
        policy = self.history_policy(group)
        if policy is None:
            _, members = await self._check(
                self.consistent_hash(group),
                [("ZREMRANGEBYSCORE", key, 0, expired_members), ("ZRANGE", key, 0, -1)],
            )
        else:
            keys = self._durable_keys(group)
            members, epoch, offset = await self._script(
                keys.shard,
                RECORDED_GROUP_SEND,
                [key, keys.stream, keys.meta],
                [
                    expired_members,
                    *self._durable.append_args(policy, without_position(message)),
                ],
            )
            message = with_position(message, StreamPosition(epoch.decode("utf-8"), offset))
        if not members:
            return
        by_key: dict[str, list[str]] = defaultdict(list)
        for member in members:
            channel = member.decode("utf-8")
            by_key[self.prefix + self.non_local_name(channel)].append(channel)
        by_shard: dict[int, list[tuple[str, bytes, int]]] = defaultdict(list)
        for channel_key, channels in by_key.items():
            data = self.serialize({**message, "__asgi_channel__": channels})
            if "!" in channels[0] and self._is_own(channel_key[len(self.prefix) :]):
                self._held(channel_key)[data] = time.monotonic() + self.expiry + 1
            shard = self.consistent_hash(channel_key[len(self.prefix) :])
            by_shard[shard].append((channel_key, data, self.get_capacity(channels[0])))
        now = self._score()
        expired_before = int(now) - int(self.expiry)
        skipped: list[str] = []

        async def deliver(shard: int, targets: list[tuple[str, bytes, int]]) -> None:
            args: list[Any] = [now, expired_before, self.expiry]
            for _, data, capacity in targets:
                args += [data, capacity]
            full = await self._script(shard, _GROUP_SEND, [key for key, _, _ in targets], args)
            for position in full:
                channel_key, data, _ = targets[position - 1]
                skipped.extend(by_key[channel_key])
                in_redis = self._in_redis.get(channel_key)
                if in_redis:
                    in_redis.pop(data, None)  # never stored

        try:
            if len(by_shard) == 1:
                ((shard, targets),) = by_shard.items()
                await deliver(shard, targets)
            else:
                with unwrap_exception_groups():
                    async with anyio.create_task_group() as tasks:
                        for shard, targets in by_shard.items():
                            tasks.start_soon(deliver, shard, targets)
        finally:
            self.record_group_send_skips(group, skipped, len(members))

    # -- history and presence ----------------------------------------------------------

    async def _on_connect(self, shard: int, connection: Connection) -> None:
        """Before a new connection is used: if a new server answers on ``shard`` (its run id
        changed: a restart, or a failover), put back the memberships it lost.

        Runs in whichever task opened the connection, so the work has an owner and is one
        round trip: usually an idle consumer's pending ``receive``, whose blocking pop
        notices the old server go away and reconnects (with backoff, at most a second apart)
        until the new one answers, so memberships are back about a second after Redis is.
        If it fails or is cancelled the connection is closed and the next one tries again.
        """
        known = self._run_ids[shard]
        if connection.run_id is None or connection.run_id == known:
            return
        if known is not None:
            await self._restore_memberships(shard, connection)
        self._run_ids[shard] = connection.run_id

    async def _restore_memberships(self, shard: int, connection: Connection) -> None:
        expired_before = time.time() - self.group_expiry
        by_group: dict[str, list[Any]] = defaultdict(list)
        for group, channel, joined in list(self._memberships.live()):
            if joined > expired_before and self.consistent_hash(group) == shard:
                by_group[group] += [joined, channel]
        commands: list[Command] = []
        for group, pairs in by_group.items():
            key = self._group_key(group)
            commands += [("ZADD", key, *pairs), ("EXPIRE", key, self.group_expiry)]
        if commands:
            errors = [
                reply
                for reply in await connection.execute(commands)
                if isinstance(reply, Exception)
            ]
            if errors:  # say so, but let the caller go on: its own command may still work
                logger.error(
                    "Redis at %s refused to re-add group memberships: %s",
                    self.hosts[shard].describe(),
                    errors[0],
                )
                return
        logger.warning(
            "Redis at %s is a new server (it restarted or failed over): re-added %d group "
            "membership(s) of this process's live channels, in %d group(s); group messages "
            "sent while it was away were lost",
            self.hosts[shard].describe(),
            sum(len(pairs) // 2 for pairs in by_group.values()),
            len(by_group),
        )

    async def _check(self, shard: int, commands: Sequence[Command]) -> list[Any]:
        replies = await self._execute(shard, commands)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    # -- flush and close -----------------------------------------------------------------

    async def flush(self) -> None:
        """Delete every key under ``prefix`` on every shard, and what is buffered locally.

        Walks the keys with ``SCAN`` in batches, so Redis keeps serving other clients.
        """
        pattern = glob_escape(self.prefix) + "*"
        for shard in range(self.ring_size):
            cursor = b"0"
            while True:
                ((cursor, keys),) = await self._check(
                    shard, [("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)]
                )
                if keys:
                    await self._check(shard, [("DEL", *keys)])
                if cursor == b"0":
                    break
        self._mailboxes.clear()
        self._in_redis.clear()

    async def wait_received(self) -> None:
        """Nothing to wait for: kept for channels_redis compatibility.

        channels_redis's receive leaves cleanup tasks running (its ``$inflight`` backups);
        this layer's receive finishes its work before it returns.
        """


def _parse_pop(reply: Any, shard: int) -> list[Item]:
    # BZPOPMIN: [key, member, score]; BZMPOP: [key, [[member, score], ...]].
    if len(reply) == 3:
        return [(reply[1], float(reply[2]), shard)]
    return [(member, float(score), shard) for member, score in reply[1]]
