"""``RedisPubSubChannelLayer``: channels_redis's PUBLISH/SUBSCRIBE layer, on anyio.

Same names and bytes as channels_redis's pub/sub layer, so processes of either package
can share it: a channel is a Redis pub/sub channel (``<prefix>specific.<hex>`` from
``new_channel``), a group publishes to ``<prefix>__group__<group>`` and each process fans
it out to its local members, payloads are msgpack (or JSON), optionally Fernet-encrypted,
with no random prefix. Each name lives on the shard of its CRC-32 hash.

No message is stored in Redis: there is no capacity, expiry or ``ChannelFull``, and a
message published while no process is subscribed, or while a connection is down, is lost.
What is stored is opt-in: the streams of groups with a ``group_history`` policy (appended
to before the publish, so a client that missed the publish can recover the message) and
presence entries, under ``<prefix>:pubsub:`` (see ``durable.py``).

Differences from channels_redis: no background reader task. Receivers of one event loop
take turns reading the subscription connections and file what they read for whichever
local channel it is for (see ``local.py``). A cancelled receive therefore loses nothing,
and does not unsubscribe its channel: a channel nobody has received on for ``expiry``
seconds is unsubscribed and its buffered messages dropped then. After a dropped
connection the layer reconnects and subscribes again to everything it had: a pending
receive notices at once, and every publish or subscribe checks first (so a process that
publishes after the drop gets its own message even with no receive pending).
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel

from ...types import Message
from ...utils import unwrap_exception_groups
from ..base import CapacityPattern
from ..durable import (
    GroupPattern,
    with_position,
    without_position,
)
from .base import RedisLayerBase, glob_escape
from .connection import CONNECTION_ERRORS, Command, Connection, Pool, connect
from .durable import DurableKeys, RedisDurable
from .hosts import Host, consistent_hash, parse_hosts
from .local import Mailboxes, Readers, deliver
from .retry import Backoff
from .serializers import MessageSerializer, registry

__all__ = ["RedisPubSubChannelLayer"]

logger: logging.Logger = logging.getLogger("channels.layers.redis")


def _nothing(reply: Any) -> None:
    pass


async def _read_nothing() -> None:
    pass


# Readers' waiting list is keyed by channel; who waits for a subscription's confirmation
# waits under this prefix and the name (no channel name has a NUL in it).
_CONFIRMING = "\0subscribed:"


# channels_redis's core-layer settings that mean nothing without stored messages. Its
# pub/sub layer takes and ignores them (and any other keyword), so one CONFIG dict can serve
# both layers; so does this one, saying once, at INFO, what it ignored.
_CORE_ONLY_SETTINGS = frozenset({"group_expiry", "random_prefix_length"})


def _log_ignored(layer: str, settings: Mapping[str, Any]) -> None:
    core = sorted(name for name in settings if name in _CORE_ONLY_SETTINGS)
    unknown = sorted(name for name in settings if name not in _CORE_ONLY_SETTINGS)
    parts = []
    if core:
        parts.append(f"{', '.join(core)} (RedisChannelLayer settings, unused without storage)")
    if unknown:
        parts.append(f"{', '.join(unknown)} (not a setting of either Redis layer: a typo?)")
    logger.info("%s ignores %s", layer, "; ".join(parts))


@dataclass(eq=False)
class _Subscriber:
    """The subscription connection to one shard, and what it is subscribed to.

    ``on_message`` files a published message (a ``[b"message", name, data]`` reply) that
    arrives while this object is reading replies itself.
    """

    host: Host
    names: set[str] = field(default_factory=set)
    connection: Connection | None = None
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    on_message: Callable[[Any], object] = _nothing

    async def ensure_connected(self) -> Connection:
        """The live connection, reconnecting (and subscribing again) if it broke.

        After a reconnection it returns once the server has confirmed every subscription,
        so whatever is published after that reaches us (messages that arrive meanwhile go
        to ``on_message``).
        """
        connection = self.connection
        if connection is not None and not connection.broken:
            return connection  # every read asks: no lock while nothing is wrong
        async with self.lock:
            if self.connection is not None and not self.connection.broken:
                return self.connection
            if self.connection is not None:
                await self.connection.aclose()
                self.connection = None
            connection = await connect(self.host)
            if self.names:
                try:
                    await self._resubscribe(connection, sorted(self.names))
                except BaseException:
                    with anyio.CancelScope(shield=True):
                        await connection.aclose()
                    raise
            self.connection = connection
            return connection

    async def _resubscribe(self, connection: Connection, names: list[str]) -> None:
        await connection.send([("SUBSCRIBE", *names)])
        confirmed = 0
        with anyio.fail_after(self.host.stream_timeout):
            while confirmed < len(names):
                reply = await connection.read_reply()
                if isinstance(reply, list) and reply and reply[0] == b"subscribe":
                    confirmed += 1
                    self.on_message(reply)
                elif isinstance(reply, list) and reply and reply[0] == b"message":
                    self.on_message(reply)
                elif isinstance(reply, Exception):
                    raise reply

    async def command(self, *command: str) -> None:
        connection = await self.ensure_connected()
        async with self.lock:
            await connection.send([command])

    async def aclose(self) -> None:
        if self.connection is not None:
            await self.connection.aclose()
            self.connection = None


@dataclass(eq=False)
class _LoopState:
    pools: list[Pool]
    subscribers: list[_Subscriber]
    mailboxes: Mailboxes
    readers: Readers
    #: Local channels and when a receiver last looked at them (monotonic seconds).
    channels: dict[str, float] = field(default_factory=dict)
    #: Group channel -> the local channels in that group.
    groups: dict[str, set[str]] = field(default_factory=dict)
    swept: float = 0.0
    #: Names subscribed to whose confirmation the server has not sent yet (how many).
    unconfirmed: dict[str, int] = field(default_factory=dict)
    #: Reads the subscription connections until something is filed (the readers' fetch).
    fetch: Callable[[], Awaitable[None]] = _read_nothing

    async def aclose(self) -> None:
        for pool in self.pools:
            await pool.aclose()
        for subscriber in self.subscribers:
            await subscriber.aclose()


class RedisPubSubChannelLayer(RedisLayerBase[_LoopState]):
    """A channel layer on Redis PUBLISH/SUBSCRIBE, compatible with channels_redis's.

    Settings: ``hosts`` (as for :class:`~channels.layers.redis.RedisChannelLayer`),
    ``prefix``, ``symmetric_encryption_keys``, ``serializer_format``. ``expiry`` is how
    long a local channel nobody receives on stays subscribed; ``capacity`` and
    ``channel_capacity`` bound each channel's local buffer. ``on_disconnect`` and
    ``on_reconnect`` are accepted for compatibility; as in channels_redis, unused.

    Any other keyword (``group_expiry``, ``random_prefix_length``, from a ``CONFIG`` shared
    with the core layer) is ignored, as channels_redis's pub/sub layer does, and logged
    once at INFO on the ``channels.layers.redis`` logger when the layer is built.
    Positional arguments are channels_redis's: ``hosts``, ``prefix``, ``on_disconnect``,
    ``on_reconnect``.
    """

    extensions: list[str] = ["groups", "flush", "history", "presence"]

    def __init__(
        self,
        hosts: Iterable[Any] | None = None,
        prefix: str = "asgi",
        on_disconnect: Any = None,
        on_reconnect: Any = None,
        *,
        symmetric_encryption_keys: Iterable[str | bytes] | None = None,
        serializer_format: str = "msgpack",
        expiry: int = 60,
        capacity: int = 100,
        channel_capacity: Mapping[CapacityPattern, int] | None = None,
        group_history: Mapping[GroupPattern, Mapping[str, Any]] | None = None,
        presence_events: Sequence[GroupPattern] | None = None,
        presence_timeout: float = 30,
        **ignored: Any,
    ) -> None:
        super().__init__(
            prefix=prefix,
            expiry=expiry,
            capacity=capacity,
            channel_capacity=channel_capacity,
            new_state=self._new_loop_state,
            close_state=_LoopState.aclose,
            group_history=group_history,
            presence_events=presence_events,
            presence_timeout=presence_timeout,
        )
        self.on_disconnect = on_disconnect
        self.on_reconnect = on_reconnect
        self.hosts: list[Host] = parse_hosts(hosts)
        self.ring_size: int = len(self.hosts)
        self._serializer: MessageSerializer = registry.get_serializer(
            serializer_format, symmetric_encryption_keys=symmetric_encryption_keys
        )
        self._durable = RedisDurable(
            self._execute, self._durable_keys, self.serialize, self.deserialize
        )
        if ignored:
            _log_ignored(type(self).__name__, ignored)

    def _new_loop_state(self) -> _LoopState:
        mailboxes = Mailboxes(self.expiry, self.get_capacity, self.record_buffer_drop)
        state = _LoopState(
            pools=[Pool(host) for host in self.hosts],
            subscribers=[_Subscriber(host) for host in self.hosts],
            mailboxes=mailboxes,
            readers=Readers(mailboxes),
        )
        for subscriber in state.subscribers:
            subscriber.on_message = functools.partial(self._file_message, state)
        state.fetch = functools.partial(self._read, state)
        return state

    # channels_redis's pub/sub layer forwards unknown attributes to the current loop's
    # layer; ``channels`` and ``groups`` are the public ones with a meaning here.

    @property
    def channels(self) -> dict[str, int]:
        """This event loop's local channels, each with how many messages wait for it.

        A snapshot, with the keys of channels_redis's ``layer.channels`` (which maps each
        name to its queue): channels made by :meth:`new_channel` or received on, until
        :meth:`flush` or ``expiry`` seconds without a receive (channels_redis also forgets a
        channel whose receive is cancelled). Empty outside an event loop.
        """
        state = self._loops.current()
        if state is None:
            return {}
        now = time.monotonic()
        buffers = state.mailboxes.buffers
        return {
            channel: sum(1 for expires, _ in buffers.get(channel, ()) if expires > now)
            for channel in state.channels
        }

    @property
    def groups(self) -> dict[str, frozenset[str]]:
        """This event loop's groups and their local members, a snapshot.

        As channels_redis's ``layer.groups``: keyed by the group's Redis channel,
        ``<prefix>__group__<group>``, with the local channels added to it. Empty outside an
        event loop.
        """
        state = self._loops.current()
        if state is None:
            return {}
        return {name: frozenset(members) for name, members in state.groups.items()}

    def _shard(self, name: str) -> int:
        return consistent_hash(name, self.ring_size)

    def _group_channel(self, group: str) -> str:
        return f"{self.prefix}__group__{group}"

    def _durable_keys(self, group: str) -> DurableKeys:
        # On the shard its group's messages are published on, so the append and the
        # publish go to one server (see group_send). Keys apart from the core layer's
        # (":pubsub:"), which a process of the other kind cannot serve.
        base = f"{self.prefix}:pubsub:"
        return DurableKeys(
            shard=self._shard(self._group_channel(group)),
            stream=f"{base}history:{group}",
            meta=f"{base}history-meta:{group}",
            presence=f"{base}presence:{group}",
            expiries=f"{base}presence-expiry:{group}",
        )

    # -- channels ------------------------------------------------------------------------

    def require_valid_channel_name(self, name: object, receive: bool = False) -> bool:
        """Channels' name rules, applied to what follows this layer's ``prefix``.

        :meth:`new_channel` names start with the prefix, and channels_redis takes any
        prefix (``"myapp:"``, say), so the prefix itself is not held to the rules.
        """
        prefix = self.prefix
        if prefix and isinstance(name, str) and name.startswith(prefix) and name != prefix:
            name = name[len(prefix) :]
        return super().require_valid_channel_name(name, receive=receive)

    async def new_channel(self, prefix: str = "specific.") -> str:
        """A new channel, subscribed at once so nothing sent to it from now on is missed."""
        channel = f"{self.prefix}{prefix}{uuid.uuid4().hex}"
        state = await self._loops.get()
        await self._subscribe(state, channel)
        state.channels[channel] = time.monotonic()
        return channel

    async def send(self, channel: str, message: Message) -> None:
        """Publish ``message`` to ``channel``; lost if nobody is subscribed."""
        self.require_valid_message(message)
        self.require_valid_channel_name(channel)
        await self._publish(channel, self.serialize(message))

    async def receive(self, channel: str) -> Message:
        """The next message on ``channel``, subscribing to it first if needed.

        Cancelling a receive loses nothing: the channel stays subscribed and keeps what
        arrives for the next receive (for ``expiry`` seconds).
        """
        state = self._loops.current()
        if state is None:
            state = await self._loops.get()
        if channel not in state.channels:  # known channels were validated when first seen
            self.require_valid_channel_name(channel)
            await self._subscribe(state, channel)
            state.channels[channel] = time.monotonic()
        # No stamp now: a channel with a receive pending is never swept (see _sweep).
        readers = state.readers
        try:
            return await readers.receive(channel, state.fetch)
        finally:
            state.channels[channel] = now = time.monotonic()
            if now - state.swept >= 1:
                await self._sweep(state)

    async def _publish(self, name: str, data: bytes) -> None:
        (reply,) = await self._execute(self._shard(name), [("PUBLISH", name, data)])
        if isinstance(reply, Exception):
            raise reply

    async def _execute(self, shard: int, commands: Sequence[Command]) -> list[Any]:
        """Run ``commands`` on ``shard`` in one round trip, retrying for
        ``reconnect_timeout`` seconds while Redis is unreachable."""
        state = self._loops.current()
        if state is None:
            state = await self._loops.get()
        backoff: Backoff | None = None
        while True:
            try:
                # Our own subscriptions first: if one was dropped, what we publish now
                # would not reach our own channels and groups.
                await self._repair(state)
                return await state.pools[shard].execute(commands)
            except CONNECTION_ERRORS as exc:
                if backoff is None:
                    backoff = Backoff(self.reconnect_timeout)
                await backoff.wait(self.hosts[shard].describe(), exc)

    async def _subscribe(self, state: _LoopState, name: str) -> None:
        subscriber = state.subscribers[self._shard(name)]
        if name in subscriber.names:
            return
        subscriber.names.add(name)
        # Counted before _repair: a reconnection there subscribes to it too, and confirms.
        state.unconfirmed[name] = state.unconfirmed.get(name, 0) + 1
        await self._repair(state)
        await subscriber.command("SUBSCRIBE", name)

    async def _until_subscribed(self, state: _LoopState, name: str) -> None:
        """Wait until the server has confirmed our subscription to ``name``.

        From then on, everything published to it reaches us. Reading the confirmation takes
        the reader's turn like any receive (or waits for whoever reads to file it).
        """
        await state.readers.until(
            _CONFIRMING + name,
            lambda: name not in state.unconfirmed,
            lambda: self._read(state),
        )

    async def _repair(self, state: _LoopState) -> None:
        """Notice dropped subscription connections and subscribe again, now.

        Otherwise a dropped connection is only noticed by the next read, which happens in a
        pending ``receive``: with none pending (a script, or every consumer busy) messages
        published meanwhile, this process's own among them, would be lost. Called by every
        call that publishes or subscribes, so its caller owns the work; costs one
        non-blocking read per shard when nothing is wrong (what it reads is filed).
        """
        for subscriber in state.subscribers:
            connection = subscriber.connection
            if not subscriber.names:
                continue
            if connection is not None and not connection.broken:
                try:
                    data = connection.receive_nowait()
                except CONNECTION_ERRORS:
                    pass  # the server dropped it: reconnect below
                else:
                    if data:
                        connection.parser.feed(data)
                        self._file_replies(state, connection)
                    continue
                logger.info(
                    "Redis pub/sub at %s dropped the connection; subscribing again",
                    subscriber.host.describe(),
                )
            await subscriber.ensure_connected()

    async def _unsubscribe(self, state: _LoopState, name: str) -> None:
        subscriber = state.subscribers[self._shard(name)]
        if name in subscriber.names:
            subscriber.names.discard(name)
            if subscriber.connection is not None and not subscriber.connection.broken:
                await subscriber.command("UNSUBSCRIBE", name)

    async def _sweep(self, state: _LoopState) -> None:
        """Unsubscribe local channels nobody has received on for ``expiry`` seconds."""
        now = time.monotonic()
        if now - state.swept < 1:
            return
        state.swept = now
        idle = [
            channel
            for channel, seen in state.channels.items()
            if seen < now - self.expiry and not state.readers.pending(channel)
        ]
        with anyio.CancelScope(shield=True):
            for channel in idle:
                del state.channels[channel]
                state.mailboxes.buffers.pop(channel, None)
                for group, members in list(state.groups.items()):
                    members.discard(channel)
                    if not members:
                        del state.groups[group]
                        await self._unsubscribe(state, group)
                await self._unsubscribe(state, channel)

    # -- reading -------------------------------------------------------------------------

    async def _read(self, state: _LoopState) -> None:
        """Read every subscription connection until something is filed."""
        active = [subscriber for subscriber in state.subscribers if subscriber.names]
        if len(active) == 1:
            await self._read_one(state, active[0])
            return
        with unwrap_exception_groups():
            async with anyio.create_task_group() as group:
                for subscriber in active:
                    group.start_soon(self._read_until_filed, state, subscriber, group.cancel_scope)

    async def _read_until_filed(
        self, state: _LoopState, subscriber: _Subscriber, scope: anyio.CancelScope
    ) -> None:
        await self._read_one(state, subscriber)
        scope.cancel()

    async def _read_one(self, state: _LoopState, subscriber: _Subscriber) -> None:
        backoff: Backoff | None = None
        while True:
            connection: Connection | None = None
            try:
                connection = await subscriber.ensure_connected()
                # A read either returns bytes or is cancelled having taken none, and what
                # it returns is parsed and filed before the next await: no loss here.
                data = await connection.receive()
            except CONNECTION_ERRORS as exc:
                # This connection only: another task may already have replaced it.
                if connection is not None:
                    connection.broken = True
                if backoff is None:
                    backoff = Backoff()  # a reader waits for as long as the server is away
                await backoff.wait(subscriber.host.describe(), exc)
                continue
            if backoff is not None:
                backoff.reset()
            connection.parser.feed(data)
            if self._file_replies(state, connection):
                return

    def _file_replies(self, state: _LoopState, connection: Connection) -> bool:
        """File every complete reply in ``connection``'s parser; True if any was a message."""
        filed = False
        while True:
            parsed = connection.parser.parse(decode=False)
            if not isinstance(parsed, tuple):
                return filed
            if self._file_message(state, parsed[1]):
                filed = True

    def _file_message(self, state: _LoopState, reply: Any) -> bool:
        """File a published message for its channel, or its group's local members.

        A subscription's confirmation is noted (and counts as filed, so whoever waits for
        it gets to see it).
        """
        if not isinstance(reply, list) or len(reply) != 3:
            return False
        if reply[0] == b"subscribe":
            name = reply[1].decode("utf-8")
            left = state.unconfirmed.get(name, 0) - 1
            if left > 0:
                state.unconfirmed[name] = left
            elif state.unconfirmed.pop(name, None) is not None:
                state.readers.wake(_CONFIRMING + name)
                return True
            return False
        if reply[0] != b"message":
            return False
        name = reply[1].decode("utf-8")
        try:
            message = self.deserialize(reply[2])
        except Exception as exc:
            logger.error("Dropped a pub/sub message that cannot be read: %s", exc)
            return False
        members = state.groups.get(name)
        return deliver(
            state.mailboxes, state.readers, members if members is not None else (name,), message
        )

    # -- groups --------------------------------------------------------------------------

    async def group_add(self, group: str, channel: str) -> None:
        """Add a local channel to ``group``: this process subscribes to the group.

        :raises RuntimeError: if ``channel`` was not made or received on in this event
            loop (membership lives in the process that receives).
        """
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        state = await self._loops.get()
        if channel not in state.channels:
            raise RuntimeError(
                f"Cannot add {channel!r} to group {group!r}: the pub/sub layer only groups "
                "channels made by new_channel() or received on in this event loop"
            )
        name = self._group_channel(group)
        state.groups.setdefault(name, set()).add(channel)
        await self._subscribe(state, name)
        if self.history_policy(group) is not None:
            # Joining then reading the history must leave no gap (see group_send): the
            # subscription must be in force before the read.
            await self._until_subscribed(state, name)

    async def group_discard(self, group: str, channel: str) -> None:
        """Remove ``channel`` from ``group``; the last local member unsubscribes."""
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        state = await self._loops.get()
        name = self._group_channel(group)
        members = state.groups.get(name)
        if members is None:
            return
        members.discard(channel)
        if not members:
            del state.groups[name]
            await self._unsubscribe(state, name)

    async def group_send(self, group: str, message: Message) -> None:
        """Publish once to the group; each subscribed process delivers to its members.

        For a group with a ``group_history`` policy, the message is first appended to the
        group's stream (a script gives it its offset), then published with ``__position__``.
        """
        self.require_valid_message(message)
        self.require_valid_group_name(group)
        policy = self.history_policy(group)
        if policy is not None:
            # Why appending first, then publishing, leaves a joiner no gap: a joiner's
            # group_add returns once its subscription is confirmed (time S), then it reads
            # the history (R > S) and gets its top T. The append and the publish run on the
            # same server (the group channel's shard), one after the other. A message whose
            # append ran before R has an offset <= T and is in what the joiner read (or was
            # trimmed, and recovery says so: never a silent hole). One whose append ran after
            # R is published after R > S, while the joiner is subscribed: it arrives live.
            # A message in both has an offset <= T, so the joiner drops the live copy by its
            # offset. If this process dies between the two steps, the message is in the
            # history but reaches no live member: recovery still finds it.
            position = await self._durable.append(group, policy, without_position(message))
            message = with_position(message, position)
        await self._publish(self._group_channel(group), self.serialize(message))

    # -- history and presence ----------------------------------------------------------

    # -- flush and close -----------------------------------------------------------------

    async def flush(self) -> None:
        """Forget every channel and group of this event loop and close its connections.

        Messages are not stored in Redis; group histories and presence entries are, and
        are deleted (``SCAN``, never ``KEYS``), so streams start new epochs afterwards.
        """
        pattern = glob_escape(f"{self.prefix}:pubsub:") + "*"
        for shard in range(self.ring_size):
            cursor = b"0"
            while True:
                ((cursor, keys),) = await self._execute(
                    shard, [("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)]
                )
                if keys:
                    await self._execute(shard, [("DEL", *keys)])
                if cursor == b"0":
                    break
        await self._loops.aclose_current()

    async def close(self) -> None:
        """Close this event loop's connections and forget its subscriptions."""
        await self._loops.aclose_current()
