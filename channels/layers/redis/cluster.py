"""``RedisClusterChannelLayer``: a channel layer on Redis Cluster's sharded pub/sub.

Redis 7's ``SPUBLISH`` sends a message only to the shard (master and replicas) that owns
the channel's hash slot, so fan-out work is split across the shards instead of being
copied to every node as classic ``PUBLISH`` is on a cluster. Messages are not stored: like
:class:`~channels.layers.redis.RedisPubSubChannelLayer`, a message reaches whoever is
subscribed when it is published, and capacity and expiry bound each local buffer. Only
the streams of groups with a ``group_history`` policy and presence entries are kept, in
the slot of their group's partition (``durable.py`` has their shapes).

Names map onto a bounded set of ``partitions`` shard channels, each a hash tag
``{<prefix>:p<N>}``, so a process holds at most ``partitions + 1`` subscriptions however
many groups its consumers join:

- a group lives in partition ``crc32(group) % partitions``; ``group_send`` publishes once
  to that partition's shard channel, and every process with members in a group of that
  partition fans it out to its local members (the frame names the group, so a process
  drops, without decoding, what is for groups it has no member in);
- a normal channel (``"worker"``) lives in its partition the same way;
- a process-local channel (``specific.<id>!<random>`` from :meth:`new_channel`) is
  published to its event loop's own inbox, ``{<prefix>:p<N>}<id>``, in the slot of
  partition ``crc32(id) % partitions``: only that loop subscribes to it.

Each frame is ``b"g" | b"c"``, the group or channel name, a NUL byte, then the message as
the ``serializer_format`` writes it (optionally Fernet-encrypted).

Cluster behaviour. The slot map is learned with ``CLUSTER SLOTS`` from any node (the
startup ``hosts`` first time) and reloaded after a ``MOVED``, a lost node, or a
subscription the server dropped (``sunsubscribe`` when a slot migrates). A send that
cannot reach the slot's master retries (refreshing the map) for ``reconnect_timeout``
seconds, then raises :exc:`ConnectionError`; a reader whose node went away resubscribes
wherever the map says the slots went, as soon as the map says so. What is published to a
shard while one of our subscriptions is not in place there (from the moment its master
fails, or its slot finishes migrating, until we subscribed again on the new owner) is
lost, as on the pub/sub layer; a send whose connection broke after the server ran it is
sent again, so across a failover a message can, rarely, arrive twice.

Why not coredis's ``RedisCluster``: its connection pools and ``ShardedPubSub`` run their
readers and keep-alives in task groups a parent task must enter and hold for as long as
the client lives; a process-wide layer has no such task (``connection.py`` says more).
So the layer keeps the slot map itself (this module and ``slots.py``) over the same
task-owned connections as the other Redis layers, and uses coredis's RESP parser, which
turns ``MOVED``/``ASK``/``TRYAGAIN``/``CLUSTERDOWN`` replies into typed errors.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel
from coredis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    TryAgainError,
)

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
from .errors import ForeignChannelError
from .hosts import Host, parse_hosts
from .local import Mailboxes, Readers, deliver
from .retry import Backoff
from .serializers import registry
from .slots import Address, SlotMap, key_slot

__all__ = ["RedisClusterChannelLayer"]

logger: logging.Logger = logging.getLogger("channels.layers.redis")

# Mailbox names (never valid channel names) where the reader files a subscription's
# answer for the task waiting to know the server has it.
_ANSWER = "\x00"

# Redirections followed for one command before giving up (a map that keeps changing).
_MAX_REDIRECTS = 16


@dataclass(eq=False)
class _NodeSubscriber:
    """One event loop's subscription connection to one cluster node.

    ``names`` are the shard channels subscribed there, or asked for and not yet refused.
    """

    address: Address
    host: Host
    names: set[str] = field(default_factory=set)
    connection: Connection | None = None
    lock: anyio.Lock = field(default_factory=anyio.Lock)

    @property
    def live(self) -> bool:
        return self.connection is not None and not self.connection.broken

    async def connect(self, on_reply: Callable[[Any], object]) -> list[tuple[str, Exception]]:
        """(Re)connect and subscribe to every name; returns the names the server refused.

        Returns once every subscription is answered, so what is published after that
        reaches us; what arrives meanwhile (messages, answers) goes to ``on_reply``.
        """
        async with self.lock:
            if self.live:
                return []
            if self.connection is not None:
                await self.connection.aclose()
                self.connection = None
            connection = await connect(self.host)
            try:
                refused = await self._subscribe_all(connection, sorted(self.names), on_reply)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await connection.aclose()
                raise
            for name, _ in refused:
                self.names.discard(name)
            self.connection = connection
            return refused

    async def _subscribe_all(
        self, connection: Connection, names: list[str], on_reply: Callable[[Any], object]
    ) -> list[tuple[str, Exception]]:
        if not names:
            return []
        # One SSUBSCRIBE per name: names of different slots cannot share one.
        await connection.send([("SSUBSCRIBE", name) for name in names])
        refused: list[tuple[str, Exception]] = []
        answered = 0
        with anyio.fail_after(self.host.stream_timeout):
            while answered < len(names):
                reply = await connection.read_reply()
                if isinstance(reply, Exception):
                    refused.append((names[answered], reply))
                    answered += 1
                    continue
                if isinstance(reply, list) and reply and reply[0] == b"ssubscribe":
                    answered += 1
                on_reply(reply)
        return refused

    async def command(self, *command: str) -> None:
        """Write ``command`` on the live connection (its answer comes to the reader).

        Nothing happens if there is none or the write fails (the connection is then
        broken): whoever reconnects subscribes to what ``names`` says.
        """
        async with self.lock:
            if not self.live:
                return
            assert self.connection is not None
            with contextlib.suppress(*CONNECTION_ERRORS):
                await self.connection.send([command])

    async def aclose(self) -> None:
        if self.connection is not None:
            await self.connection.aclose()
            self.connection = None


@dataclass(eq=False)
class _LoopState:
    """What one event loop holds: connections, subscriptions, local channels and groups."""

    #: This loop's id in its process-local channel names and its inbox.
    client: str
    mailboxes: Mailboxes
    readers: Readers
    pools: dict[Address, Pool] = field(default_factory=dict)
    subscribers: dict[Address, _NodeSubscriber] = field(default_factory=dict)
    #: Shard channel -> how many local things need it (groups, named channels, the inbox).
    wanted: dict[str, int] = field(default_factory=dict)
    #: Local channels and when a receiver last looked at them (monotonic seconds).
    channels: dict[str, float] = field(default_factory=dict)
    #: Group -> {local member: when it joined (monotonic seconds)}.
    groups: dict[str, dict[str, float]] = field(default_factory=dict)
    #: Shard channels a task waits to hear the server subscribed.
    awaiting: set[str] = field(default_factory=set)
    #: The reader's current round, cancelled to start a new one when subscriptions move.
    round: anyio.CancelScope | None = None
    refresh_lock: anyio.Lock = field(default_factory=anyio.Lock)
    idle_backoff: Backoff = field(default_factory=Backoff)
    swept: float = 0.0

    async def aclose(self) -> None:
        for pool in self.pools.values():
            await pool.aclose()
        for subscriber in self.subscribers.values():
            await subscriber.aclose()


class RedisClusterChannelLayer(RedisLayerBase[_LoopState]):
    """A channel layer on a Redis Cluster (Redis 7+), delivering by sharded pub/sub.

    Settings: ``hosts``, startup nodes of the cluster (URLs or the other forms the Redis
    layers take; any one reachable node is enough, the others are learned from it; all
    connection options, passwords and TLS included, apply to every node), ``prefix``,
    ``expiry`` (how long a local channel nobody receives on keeps its buffer and
    memberships, and a buffered message waits), ``group_expiry`` (how long a membership
    lasts after its ``group_add``), ``capacity`` and ``channel_capacity`` (each local
    channel's buffer), ``symmetric_encryption_keys``, ``serializer_format`` and
    ``partitions`` (how many shard channels names are spread over; more spreads fan-out
    over more shards and sends a process fewer messages for groups it has no member in,
    at up to one subscription per partition per process) and ``reconnect_timeout`` (how
    long a send keeps retrying while its slot has no reachable master: set it above the
    cluster's failover time, about ``cluster-node-timeout`` plus a second or two; the
    default, 20 s, covers Redis's default 15 s node timeout).

    Group membership lives in the process that receives, per event loop, as on the pub/sub
    layer: :meth:`group_add` takes channels made by :meth:`new_channel` or received on in
    the same event loop. Memberships are not stored in the cluster, so a failover or a
    restart of one shard loses only what was in flight through that shard, and the
    memberships are asserted again by subscribing again.
    """

    extensions: list[str] = ["groups", "flush", "history", "presence"]

    def __init__(
        self,
        hosts: Iterable[Any] | None = None,
        prefix: str = "asgi",
        expiry: int = 60,
        group_expiry: int = 86400,
        capacity: int = 100,
        channel_capacity: Mapping[CapacityPattern, int] | None = None,
        symmetric_encryption_keys: Iterable[str | bytes] | None = None,
        serializer_format: str = "msgpack",
        partitions: int = 16,
        reconnect_timeout: float = 20.0,
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
            close_state=_LoopState.aclose,
            group_history=group_history,
            presence_events=presence_events,
            presence_timeout=presence_timeout,
        )
        if "{" in prefix or "}" in prefix:
            raise ValueError(
                f"prefix {prefix!r} must not contain '{{' or '}}': the layer puts it in the "
                "hash tags that place its shard channels"
            )
        for name, value in (("expiry", expiry), ("group_expiry", group_expiry)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive whole number of seconds")
        if (
            not isinstance(partitions, int)
            or isinstance(partitions, bool)
            or not 1 <= partitions <= 1024
        ):
            raise ValueError(
                f"partitions must be a whole number from 1 to 1024, got {partitions!r}"
            )
        if (
            isinstance(reconnect_timeout, bool)
            or not isinstance(reconnect_timeout, (int, float))
            or not 0 < reconnect_timeout < float("inf")
        ):
            raise ValueError(
                f"reconnect_timeout must be a number of seconds > 0, got {reconnect_timeout!r}"
            )
        self.group_expiry: int = group_expiry
        self.partitions: int = partitions
        self.reconnect_timeout: float = float(reconnect_timeout)
        self.hosts: list[Host] = parse_hosts(hosts)
        for host in self.hosts:
            if host.address is None:
                raise ValueError(
                    f"{host.describe()}: a Redis Cluster node is reached by host and port "
                    "(no Unix sockets or Sentinel)"
                )
            if host.db:
                raise ValueError(
                    f"{host.describe()}: Redis Cluster has only database 0, got db={host.db}"
                )
        self._serializer = registry.get_serializer(
            serializer_format, symmetric_encryption_keys=symmetric_encryption_keys
        )
        self._slots = SlotMap()
        self._node_hosts: dict[Address, Host] = {}
        for host in self.hosts:
            assert host.address is not None
            self._node_hosts.setdefault(host.address, host)
        self._slot_of: dict[str, int] = {}
        self._routes: dict[str, tuple[str, bytes]] = {}
        self._durable = RedisDurable(
            self._execute, self._durable_keys, self.serialize, self.deserialize
        )

    def _new_loop_state(self) -> _LoopState:
        mailboxes = Mailboxes(self.expiry, self.get_capacity, self.record_buffer_drop)
        return _LoopState(uuid.uuid4().hex, mailboxes, Readers(mailboxes))

    # -- names, partitions, slots --------------------------------------------------------

    def _partition(self, name: str) -> str:
        """The shard channel of partition ``crc32(name) % partitions``."""
        return f"{{{self.prefix}:p{zlib.crc32(name.encode('utf-8')) % self.partitions}}}"

    def _durable_keys(self, group: str) -> DurableKeys:
        # In the slot of the group's partition channel, so a history append and its
        # publish go to one server, one after the other (see group_send), and move with it.
        tag = self._partition(group)
        return DurableKeys(
            shard=self._slot(tag),
            stream=f"{tag}history:{group}",
            meta=f"{tag}history-meta:{group}",
            presence=f"{tag}presence:{group}",
            expiries=f"{tag}presence-expiry:{group}",
        )

    def _inbox(self, client: str) -> str:
        return self._partition(client) + client

    def _slot(self, name: str) -> int:
        slot = self._slot_of.get(name)
        if slot is None:
            if len(self._slot_of) >= 4096:  # inboxes of processes long gone
                self._slot_of.clear()
            slot = self._slot_of[name] = key_slot(name)
        return slot

    def _route(self, channel: str) -> tuple[str, bytes]:
        """The shard channel a send to ``channel`` goes to, and its frame's head."""
        route = self._routes.get(channel)
        if route is None:
            self.require_valid_channel_name(channel)
            if "!" in channel:
                client = self.non_local_name(channel)[:-1].rsplit(".", 1)[-1]
                shard_channel = self._inbox(client)
            else:
                shard_channel = self._partition(channel)
            route = (shard_channel, b"c" + channel.encode("ascii") + b"\x00")
            if len(self._routes) >= 4096:
                self._routes.clear()
            self._routes[channel] = route
        return route

    def _host(self, address: Address) -> Host:
        host = self._node_hosts.get(address)
        if host is None:
            # A node learned from the cluster: reached with the startup nodes' options.
            host = self._node_hosts[address] = dataclasses.replace(self.hosts[0], address=address)
        return host

    def _describe(self, address: Address | None) -> str:
        return "the cluster" if address is None else f"{address[0]}:{address[1]}"

    # -- the slot map --------------------------------------------------------------------

    def _pool(self, state: _LoopState, address: Address) -> Pool:
        pool = state.pools.get(address)
        if pool is None:
            pool = state.pools[address] = Pool(self._host(address))
        return pool

    async def _refresh(self, state: _LoopState, avoid: Address | None = None) -> bool:
        """Reload the slot map from the first node that answers; False if none did.

        :raises ValueError: if a startup node answers that it is not in cluster mode.
        """
        version = self._slots.version
        async with state.refresh_lock:
            if self._slots.version != version and not self._slots.stale:
                return True  # another task of this loop just did it
            known = self._slots.masters()
            startup = [host.address for host in self.hosts if host.address is not None]
            candidates = list(dict.fromkeys([*known, *startup]))
            if avoid in candidates:
                candidates.remove(avoid)
                candidates.append(avoid)
            for address in candidates:
                try:
                    (reply,) = await self._pool(state, address).execute([("CLUSTER", "SLOTS")])
                except CONNECTION_ERRORS as exc:
                    logger.info("Redis Cluster node %s: %s", self._describe(address), exc)
                    continue
                if isinstance(reply, Exception):
                    if "cluster support disabled" in str(reply):
                        raise ValueError(
                            f"Redis at {self._describe(address)} is not a cluster node "
                            f"({reply}): use RedisChannelLayer or RedisPubSubChannelLayer "
                            "for a single server"
                        )
                    logger.info("Redis Cluster node %s: %s", self._describe(address), reply)
                    continue
                self._slots.load(reply, address)
                return True
            return False

    async def _node_of(self, state: _LoopState, slot: int) -> Address:
        """The master serving ``slot``, reloading the map first if it is stale.

        :raises ConnectionError: if no node tells us (none reachable, or slot unserved).
        """
        if self._slots.stale or self._slots.node(slot) is None:
            await self._refresh(state)
        node = self._slots.node(slot)
        if node is None:
            raise ConnectionError(f"no reachable node of the cluster serves slot {slot}")
        return node

    # -- publishing ----------------------------------------------------------------------

    async def _publish(self, state: _LoopState, name: str, payload: bytes) -> None:
        """``SPUBLISH`` to the node that serves ``name`` (see :meth:`_execute`)."""
        (reply,) = await self._execute(self._slot(name), [("SPUBLISH", name, payload)], state)
        if isinstance(reply, Exception):
            raise reply

    async def _execute(
        self, slot: int, commands: Sequence[Command], state: _LoopState | None = None
    ) -> list[Any]:
        """Run ``commands`` (all on ``slot``) on the master serving it, in one round trip.

        Follows ``MOVED`` (the map is corrected) and ``ASK`` (sent again with ``ASKING``),
        and retries, with the map reloaded, for ``reconnect_timeout`` seconds while the
        slot's master is unreachable or the cluster says it is down. Other error replies
        are returned in the list, as :meth:`Connection.execute` does.
        """
        if state is None:
            state = await self._loops.get()
        backoff = Backoff(self.reconnect_timeout)
        asking: Address | None = None
        redirects = 0
        while True:
            node: Address | None = asking
            try:
                if node is None:
                    node = await self._node_of(state, slot)
                batch: list[Command] = list(commands)
                if asking is not None:
                    batch.insert(0, ("ASKING",))
                replies = await self._pool(state, node).execute(batch)
            except CONNECTION_ERRORS as exc:
                self._slots.stale = True
                asking = None
                await backoff.wait(self._describe(node), exc)
                continue
            if asking is not None:
                replies = replies[1:]
            redirect = next((r for r in replies if isinstance(r, AskError)), None)
            if redirect is not None:  # MovedError is an AskError too
                redirects += 1
                if redirects > _MAX_REDIRECTS:
                    raise ConnectionError(
                        f"Redis Cluster redirected a command for slot {slot} "
                        f"{redirects} times: {redirect}"
                    )
                if isinstance(redirect, MovedError):
                    self._slots.moved(slot, _redirect_address(redirect, node))
                    asking = None
                else:
                    asking = _redirect_address(redirect, node)
                continue
            down = next(
                (r for r in replies if isinstance(r, (ClusterDownError, TryAgainError))), None
            )
            if down is not None:
                self._slots.stale = True
                asking = None
                await backoff.wait(self._describe(node), down)
                continue
            return replies

    # -- subscribing ---------------------------------------------------------------------

    def _subscriber(self, state: _LoopState, address: Address) -> _NodeSubscriber:
        subscriber = state.subscribers.get(address)
        if subscriber is None:
            subscriber = state.subscribers[address] = _NodeSubscriber(address, self._host(address))
        return subscriber

    async def _want(self, state: _LoopState, name: str) -> None:
        """Count one more local need for shard channel ``name``; the first subscribes."""
        count = state.wanted.get(name, 0)
        state.wanted[name] = count + 1
        if count:
            return
        try:
            await self._subscribe(state, name)
        except BaseException:
            self._release(state, name)
            raise

    def _release(self, state: _LoopState, name: str) -> bool:
        """Count one local need less; True if nothing needs ``name`` now."""
        count = state.wanted.get(name, 0) - 1
        if count > 0:
            state.wanted[name] = count
            return False
        state.wanted.pop(name, None)
        return True

    async def _unwant(self, state: _LoopState, name: str) -> None:
        if not self._release(state, name):
            return
        for subscriber in state.subscribers.values():
            if name in subscriber.names:
                subscriber.names.discard(name)
                await subscriber.command("SUNSUBSCRIBE", name)

    async def _subscribe(self, state: _LoopState, name: str) -> None:
        """Subscribe to ``name`` on the node serving it; returns once the server has it."""
        slot = self._slot(name)
        backoff = Backoff(self.reconnect_timeout)
        while name in state.wanted:
            node: Address | None = None
            try:
                node = await self._node_of(state, slot)
                subscriber = self._subscriber(state, node)
                if not subscriber.live:
                    subscriber.names.add(name)
                    refused = await subscriber.connect(
                        functools.partial(self._on_reply, state, subscriber)
                    )
                    self._refused(state, subscriber, refused)
                    self._new_round(state)  # a new connection to read
                    if name in subscriber.names:
                        return
                    raise _Refused(name)
                if name in subscriber.names and name not in state.awaiting:
                    return
                subscriber.names.add(name)
                state.awaiting.add(name)
                # The current round may not read this connection (it had no names when
                # the round began): start a new one that does.
                self._new_round(state)
                try:
                    await subscriber.command("SSUBSCRIBE", name)
                    # The answer comes to whoever reads this loop's subscriptions: if
                    # nobody does, this task takes the turn until it has come.
                    with anyio.fail_after(subscriber.host.stream_timeout):
                        answer = await state.readers.receive(
                            _ANSWER + name, functools.partial(self._read, state)
                        )
                finally:
                    state.awaiting.discard(name)
                if answer["type"] == "ssubscribe":
                    return
                raise _Refused(name)
            except (*CONNECTION_ERRORS, _Refused) as exc:
                self._slots.stale = True
                await backoff.wait(self._describe(node), exc)

    def _refused(
        self, state: _LoopState, subscriber: _NodeSubscriber, refused: list[tuple[str, Exception]]
    ) -> None:
        for name, error in refused:
            self._redirected(subscriber, error, self._slot(name))
            if name in state.awaiting:
                self._answer(state, name, "refused")
            logger.info(
                "Redis Cluster node %s refused %s: %s",
                self._describe(subscriber.address),
                name,
                error,
            )
        if refused:
            self._slots.stale = True

    def _redirected(self, subscriber: _NodeSubscriber, error: Exception, slot: int) -> None:
        if isinstance(error, MovedError):
            self._slots.moved(slot, _redirect_address(error, subscriber.address))

    def _new_round(self, state: _LoopState) -> None:
        """Make the reader start over, with the subscriptions as they are now."""
        if state.round is not None:
            state.round.cancel()

    async def _place(self, state: _LoopState) -> None:
        """Put every wanted shard channel on the node the slot map names for it.

        Only writes commands (their answers come to the reader); a node that cannot be
        reached is left to its reader task, which reconnects and subscribes.
        """
        if self._slots.stale:
            await self._refresh(state)
        for name in list(state.wanted):
            node = self._slots.node(self._slot(name))
            if node is None:
                continue
            for subscriber in list(state.subscribers.values()):
                if subscriber.address != node and name in subscriber.names:
                    subscriber.names.discard(name)
                    await subscriber.command("SUNSUBSCRIBE", name)
            target = self._subscriber(state, node)
            if name not in target.names:
                target.names.add(name)
                await target.command("SSUBSCRIBE", name)

    # -- reading -------------------------------------------------------------------------

    async def _read(self, state: _LoopState) -> None:
        """One round: read every subscription connection until something is filed, or
        the subscriptions must move (then the next round places them again)."""
        await self._place(state)
        active = [subscriber for subscriber in state.subscribers.values() if subscriber.names]
        if not active:
            await state.idle_backoff.wait(
                "the cluster", ConnectionError("no node to subscribe on")
            )
            return
        state.idle_backoff.reset()
        if self._file_arrived(state, active):
            await anyio.lowlevel.checkpoint()  # a flooded receiver still lets others run
            return
        with anyio.CancelScope() as scope:
            state.round = scope
            try:
                with unwrap_exception_groups():
                    async with anyio.create_task_group() as group:
                        for subscriber in active:
                            group.start_soon(self._read_node, state, subscriber, scope)
            finally:
                if state.round is scope:
                    state.round = None

    def _file_arrived(self, state: _LoopState, active: list[_NodeSubscriber]) -> bool:
        """File what the servers have already sent, without waiting; True if anything.

        Saves starting a reader task per node when messages are flowing.
        """
        filed = False
        for subscriber in active:
            connection = subscriber.connection
            if connection is None or connection.broken:
                continue
            try:
                data = connection.receive_nowait()
            except CONNECTION_ERRORS:
                continue  # broken now: its reader task reconnects
            if data:
                connection.parser.feed(data)
                if self._file_replies(state, subscriber, connection):
                    filed = True
        return filed

    async def _read_node(
        self, state: _LoopState, subscriber: _NodeSubscriber, scope: anyio.CancelScope
    ) -> None:
        backoff = Backoff()  # a reader waits for as long as the cluster is away
        while True:
            connection: Connection | None = None
            try:
                if not subscriber.live:
                    refused = await subscriber.connect(
                        functools.partial(self._on_reply, state, subscriber)
                    )
                    if refused:
                        self._refused(state, subscriber, refused)
                        scope.cancel()
                        return
                connection = subscriber.connection
                assert connection is not None
                # A read either returns bytes or is cancelled having taken none, and what
                # it returns is parsed and filed before the next await: no loss here.
                data = await connection.receive()
            except CONNECTION_ERRORS as exc:
                if connection is not None:
                    connection.broken = True  # this one only: another may have replaced it
                self._slots.stale = True
                await backoff.wait(self._describe(subscriber.address), exc)
                await self._refresh(state, avoid=subscriber.address)
                if any(
                    self._slots.node(self._slot(name)) not in (None, subscriber.address)
                    for name in subscriber.names
                ):
                    scope.cancel()  # its slots moved (a failover): place them again
                    return
                continue
            backoff.reset()
            connection.parser.feed(data)
            if self._file_replies(state, subscriber, connection):
                scope.cancel()
                return

    def _file_replies(
        self, state: _LoopState, subscriber: _NodeSubscriber, connection: Connection
    ) -> bool:
        """Handle every complete reply in the parser; True if the round should end."""
        done = False
        while True:
            parsed = connection.parser.parse(decode=False)
            if not isinstance(parsed, tuple):
                return done
            if self._on_reply(state, subscriber, parsed[1]):
                done = True

    def _on_reply(self, state: _LoopState, subscriber: _NodeSubscriber, reply: Any) -> bool:
        """File a message or a subscription's answer; True if something was filed or the
        subscriptions must be placed again."""
        if isinstance(reply, list) and len(reply) == 3:
            kind = reply[0]
            if kind == b"smessage":
                return self._file_frame(state, reply[2])
            name = reply[1].decode("utf-8") if isinstance(reply[1], bytes) else ""
            if kind == b"ssubscribe":
                if name in state.awaiting:
                    self._answer(state, name, "ssubscribe")
                    return True
                return False
            if kind == b"sunsubscribe":
                if name not in subscriber.names:
                    return False  # we asked for it
                # The server dropped it: its slot migrated, or this node is no longer
                # its master. Find out where it went and subscribe there.
                subscriber.names.discard(name)
                self._slots.stale = True
                logger.info(
                    "Redis Cluster node %s dropped subscription %s; placing it again",
                    self._describe(subscriber.address),
                    name,
                )
                return True
            return False
        if isinstance(reply, Exception):
            # The answer to an SSUBSCRIBE written on a live connection: refused (the map was
            # stale, or the cluster is changing). Every name still waiting there is asked
            # again once the map has been reloaded.
            self._slots.stale = True
            pending = [name for name in subscriber.names if name in state.awaiting]
            for name in pending:
                subscriber.names.discard(name)
                self._redirected(subscriber, reply, self._slot(name))
                self._answer(state, name, "refused")
            logger.info("Redis Cluster node %s: %s", self._describe(subscriber.address), reply)
            return True
        return False

    def _answer(self, state: _LoopState, name: str, answer: str) -> None:
        state.mailboxes.file(_ANSWER + name, {"type": answer})
        state.readers.wake(_ANSWER + name)

    def _file_frame(self, state: _LoopState, frame: bytes) -> bool:
        """File a published frame for its local receivers; False if it is for none here."""
        end = frame.find(b"\x00")
        if end < 1:
            logger.error("Dropped a sharded pub/sub message that is not a layer frame")
            return False
        target = frame[1:end].decode("ascii", "replace")
        now = time.monotonic()
        if frame[:1] == b"g":
            members = state.groups.get(target)
            if not members:
                return False
            joined_after = now - self.group_expiry
            targets = [channel for channel, joined in members.items() if joined > joined_after]
        elif target in state.channels:
            targets = [target]
        else:
            return False
        try:
            message = self.deserialize(frame[end + 1 :])
        except Exception as exc:
            logger.error("Dropped a sharded pub/sub message that cannot be read: %s", exc)
            return False
        return deliver(state.mailboxes, state.readers, targets, message, now)

    # -- channels ------------------------------------------------------------------------

    async def new_channel(self, prefix: str = "specific") -> str:
        """A new process-local channel, ``<prefix>.<this loop's id>!<random>``.

        Its event loop's inbox is subscribed before this returns, so nothing sent to the
        channel from now on is missed.
        """
        state = await self._loops.get()
        await self._ensure_inbox(state)
        channel = f"{prefix}.{state.client}!{uuid.uuid4().hex}"
        state.channels[channel] = time.monotonic()
        return channel

    async def _ensure_inbox(self, state: _LoopState) -> None:
        inbox = self._inbox(state.client)
        if inbox not in state.wanted:
            await self._want(state, inbox)  # held until the loop's state is closed

    async def send(self, channel: str, message: Message) -> None:
        """Publish ``message`` to ``channel``; lost if nobody receives it there.

        Retries for ``reconnect_timeout`` seconds while the slot's master is unreachable
        (a failover), then raises :exc:`ConnectionError`.
        """
        self.require_valid_message(message)
        shard_channel, head = self._route(channel)
        state = await self._loops.get()
        await self._publish(state, shard_channel, head + self.serialize(message))

    async def receive(self, channel: str) -> Message:
        """The next message on ``channel``, subscribing to it first if needed.

        Cancelling a receive loses nothing: the channel keeps what arrives for the next
        receive (for ``expiry`` seconds).

        :raises ForeignChannelError: (a :exc:`ValueError`) for a process-local channel
            made by another event loop or process.
        """
        state = await self._loops.get()
        if channel not in state.channels:  # known channels were validated when first seen
            self.require_valid_channel_name(channel)
            if "!" in channel:
                self._require_local(state, channel)
                await self._ensure_inbox(state)
            else:
                await self._want(state, self._partition(channel))
            state.channels[channel] = time.monotonic()
        state.channels[channel] = time.monotonic()
        try:
            return await state.readers.receive(channel, functools.partial(self._read, state))
        finally:
            now = time.monotonic()
            if channel in state.channels:
                state.channels[channel] = now
            if now - state.swept >= 1:
                await self._sweep(state)

    def _require_local(self, state: _LoopState, channel: str) -> None:
        if not self.non_local_name(channel).endswith(f".{state.client}!"):
            raise ForeignChannelError(
                f"Channel {channel!r} was not made by this layer's new_channel() in this event "
                "loop: a process-local channel can only be received where it was made"
            )

    async def _sweep(self, state: _LoopState) -> None:
        """Forget local channels nobody received on for ``expiry`` seconds, and
        memberships older than ``group_expiry``; unsubscribe what nothing needs now."""
        now = time.monotonic()
        state.swept = now
        idle = [
            channel
            for channel, seen in state.channels.items()
            if seen < now - self.expiry and channel not in state.readers.waiters
        ]
        joined_after = now - self.group_expiry
        with anyio.CancelScope(shield=True):
            for channel in idle:
                del state.channels[channel]
                state.mailboxes.buffers.pop(channel, None)
                if "!" not in channel:
                    await self._unwant(state, self._partition(channel))
            gone = set(idle)
            for group, members in list(state.groups.items()):
                for channel in [
                    c for c, joined in members.items() if c in gone or joined <= joined_after
                ]:
                    del members[channel]
                if not members:
                    del state.groups[group]
                    await self._unwant(state, self._partition(group))

    # -- groups --------------------------------------------------------------------------

    async def group_add(self, group: str, channel: str) -> None:
        """Add a local channel to ``group``; joining again restarts its ``group_expiry``.

        The first local member of any group in a partition subscribes this event loop to
        that partition.

        :raises RuntimeError: if ``channel`` was not made or received on in this event
            loop (membership lives in the process that receives).
        """
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        state = await self._loops.get()
        if channel not in state.channels:
            raise RuntimeError(
                f"Cannot add {channel!r} to group {group!r}: the cluster layer only groups "
                "channels made by new_channel() or received on in this event loop"
            )
        members = state.groups.get(group)
        if members is None:
            members = state.groups[group] = {}
            try:
                await self._want(state, self._partition(group))
            except BaseException:
                if not members:
                    state.groups.pop(group, None)
                raise
        members[channel] = time.monotonic()

    async def group_discard(self, group: str, channel: str) -> None:
        """Remove ``channel`` from ``group``; nothing happens if it is not a member."""
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        state = await self._loops.get()
        members = state.groups.get(group)
        if members is None or members.pop(channel, None) is None:
            return
        if not members:
            del state.groups[group]
            await self._unwant(state, self._partition(group))

    async def group_send(self, group: str, message: Message) -> None:
        """Publish once to the group's partition; each process there delivers to its
        members. Retries as :meth:`send` does.

        For a group with a ``group_history`` policy, the message is first appended to the
        group's stream (a script gives it its offset), then published with ``__position__``.
        """
        self.require_valid_message(message)
        self.require_valid_group_name(group)
        state = await self._loops.get()
        policy = self.history_policy(group)
        if policy is not None:
            # As on the pub/sub layer: the append and the publish run on the same master
            # (the group's partition slot) one after the other, and a joiner's group_add
            # returns once its subscription is in force, so a joiner that then reads the
            # history misses nothing between the two.
            position = await self._durable.append(group, policy, without_position(message))
            message = with_position(message, position)
        frame = b"g" + group.encode("ascii") + b"\x00" + self.serialize(message)
        await self._publish(state, self._partition(group), frame)

    # -- history and presence ------------------------------------------------------------

    # -- flush ---------------------------------------------------------------------------

    async def flush(self) -> None:
        """Forget every channel and group of this event loop and close its connections.

        Messages are not stored in the cluster; group histories and presence entries are,
        and are deleted on every master (``SCAN``, never ``KEYS``), so streams start new
        epochs afterwards.
        """
        state = await self._loops.get()
        if self._slots.stale:
            await self._refresh(state)
        pattern = glob_escape(f"{{{self.prefix}:p") + "*"
        for master in self._slots.masters():
            pool = self._pool(state, master)
            cursor = b"0"
            while True:
                (reply,) = await pool.execute([("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)])
                if isinstance(reply, Exception):
                    raise reply
                cursor, keys = reply
                # One DEL per key: keys of different slots cannot share one in a cluster.
                if keys:
                    for reply in await pool.execute([("DEL", key) for key in keys]):
                        if isinstance(reply, Exception) and not isinstance(reply, AskError):
                            raise reply
                if cursor == b"0":
                    break
        await self._loops.aclose_current()


class _Refused(Exception):
    """The server refused a subscription (its slot is elsewhere, or moving)."""


def _redirect_address(error: Exception, fallback: Address) -> Address:
    address = getattr(error, "node_addr", None)
    if isinstance(address, tuple) and len(address) == 2:
        host, port = address
        return (str(host) or fallback[0], int(port))
    return fallback
