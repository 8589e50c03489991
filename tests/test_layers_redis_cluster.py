"""The Redis Cluster layer against a real six-node cluster on loopback, asyncio and trio.

The cluster is started once per session (tests/redis_cluster.py). Tests that fail over,
kill or reshard use the suite's own cluster even when ``CHANNELS_TEST_REDIS_CLUSTER``
names another, and leave it healthy (every node up, every slot served).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import sys
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import anyio.to_thread
import msgpack
import pytest
from cryptography.fernet import Fernet

from channels.concurrency import async_to_sync
from channels.layers.redis import ForeignChannelError, RedisClusterChannelLayer
from channels.layers.redis.connection import connect
from channels.layers.redis.hosts import parse_hosts
from channels.layers.redis.slots import key_slot
from channels.types import ChannelLayer
from tests import test_layers_redis_history as history_tests
from tests.redis_cluster import Cluster, command
from tests.test_layers_redis_processes import driver

MakeLayer = Callable[..., RedisClusterChannelLayer]


@pytest.fixture
async def make_layer(redis_cluster_urls: list[str], prefix: str) -> AsyncIterator[MakeLayer]:
    layers: list[RedisClusterChannelLayer] = []

    def make(**config: Any) -> RedisClusterChannelLayer:
        config.setdefault("hosts", redis_cluster_urls)
        config.setdefault("prefix", prefix)
        layer = RedisClusterChannelLayer(**config)
        layers.append(layer)
        return layer

    yield make
    for layer in layers:
        await layer.close()


async def nothing_on(layer: RedisClusterChannelLayer, channel: str) -> bool:
    with anyio.move_on_after(0.2) as scope:
        await layer.receive(channel)
    return scope.cancelled_caught


# -- the layer contract ------------------------------------------------------------------


async def test_channels_and_groups_across_layers(make_layer: MakeLayer) -> None:
    here, there = make_layer(), make_layer()  # two processes, as far as the cluster knows
    assert isinstance(here, ChannelLayer)
    assert here.extensions == ["groups", "flush", "history", "presence"]
    mine = await here.new_channel()
    theirs = [await there.new_channel() for _ in range(2)]
    assert mine.startswith("specific.")
    assert "!" in mine
    assert await here.new_channel("other") != mine

    await there.send(mine, {"type": "direct", "blob": b"\x00"})
    assert await here.receive(mine) == {"type": "direct", "blob": b"\x00"}

    await here.group_add("room", mine)
    for channel in theirs:
        await there.group_add("room", channel)
    await here.group_send("room", {"type": "fan", "items": [1]})
    assert await here.receive(mine) == {"type": "fan", "items": [1]}
    first = await there.receive(theirs[0])
    first["items"].append(2)  # each local member has its own copy
    assert await there.receive(theirs[1]) == {"type": "fan", "items": [1]}

    await there.group_discard("room", theirs[0])
    await there.group_discard("room", "never.joined")
    await there.group_discard("no-such-group", theirs[0])
    await there.group_send("room", {"type": "again"})
    assert await here.receive(mine) == {"type": "again"}
    assert await there.receive(theirs[1]) == {"type": "again"}
    assert await nothing_on(there, theirs[0])

    # Ordering per channel, from one sender.
    for n in range(50):
        await there.send(mine, {"type": "seq", "n": n})
    assert [(await here.receive(mine))["n"] for _ in range(50)] == list(range(50))

    await here.flush()  # forgets this loop's channels and groups
    await there.group_send("room", {"type": "after.flush"})
    assert await there.receive(theirs[1]) == {"type": "after.flush"}
    with pytest.raises(ForeignChannelError):
        await here.receive(mine)  # its loop state, and so its id, went with the flush


async def test_bad_input_is_refused_and_loses_nothing(make_layer: MakeLayer) -> None:
    layer = make_layer()
    mine = await layer.new_channel()
    with pytest.raises(TypeError, match="Channel name must be"):
        await layer.send("bad name", {"type": "x"})
    with pytest.raises(ValueError, match="reserved key"):
        await layer.send(mine, {"type": "x", "__asgi_channel__": mine})
    with pytest.raises(TypeError, match="Group name must be"):
        await layer.group_add("bad group", mine)
    with pytest.raises(RuntimeError, match="only groups channels made by new_channel"):
        await layer.group_add("room", "unknown.channel")
    other = make_layer()
    theirs = await other.new_channel()
    with pytest.raises(ForeignChannelError, match="can only be received where it was made"):
        await layer.receive(theirs)
    with pytest.raises(RuntimeError):
        await layer.group_add("room", theirs)
    # Nothing above broke the layer.
    await other.send(mine, {"type": "still.works"})
    assert await layer.receive(mine) == {"type": "still.works"}


def test_settings_are_checked(redis_cluster_urls: list[str]) -> None:
    with pytest.raises(ValueError, match="must not contain"):
        RedisClusterChannelLayer(hosts=redis_cluster_urls, prefix="a{b}")
    with pytest.raises(ValueError, match="partitions must be"):
        RedisClusterChannelLayer(hosts=redis_cluster_urls, partitions=0)
    with pytest.raises(ValueError, match="reconnect_timeout must be"):
        RedisClusterChannelLayer(hosts=redis_cluster_urls, reconnect_timeout=0)
    assert RedisClusterChannelLayer(hosts=redis_cluster_urls).reconnect_timeout == 20
    with pytest.raises(ValueError, match="group_expiry must be"):
        RedisClusterChannelLayer(hosts=redis_cluster_urls, group_expiry=0)
    with pytest.raises(ValueError, match="only database 0"):
        RedisClusterChannelLayer(hosts=[redis_cluster_urls[0] + "/2"])
    with pytest.raises(ValueError, match="no Unix sockets"):
        RedisClusterChannelLayer(hosts=["unix:///tmp/redis.sock"])
    with pytest.raises(TypeError, match="prefix must be a str"):
        RedisClusterChannelLayer(hosts=redis_cluster_urls, prefix=b"x")  # type: ignore[arg-type]


async def test_a_single_server_is_refused_clearly(redis_url: str, prefix: str) -> None:
    layer = RedisClusterChannelLayer(hosts=[redis_url], prefix=prefix)
    try:
        with pytest.raises(ValueError, match="not a cluster node"):
            await layer.send("worker", {"type": "x"})
    finally:
        await layer.close()


async def test_named_channels_reach_their_receivers(make_layer: MakeLayer) -> None:
    producer, worker = make_layer(), make_layer()
    async with anyio.create_task_group() as group:
        got: list[Any] = []

        async def receive() -> None:
            got.append(await worker.receive("worker-tasks"))

        group.start_soon(receive)
        with anyio.fail_after(5):
            while not got:  # published until the receiver is subscribed
                await producer.send("worker-tasks", {"type": "job"})
                await anyio.sleep(0.01)
    assert got[0] == {"type": "job"}
    await worker.group_add("jobs", "worker-tasks")  # a channel received on may join
    await producer.group_send("jobs", {"type": "job.group"})
    with anyio.fail_after(5):
        while (message := await worker.receive("worker-tasks")) == {"type": "job"}:
            pass  # more of the sends above arrived once it was subscribed
    assert message == {"type": "job.group"}


async def test_local_capacity_and_expiry(make_layer: MakeLayer) -> None:
    sender = make_layer()
    layer = make_layer(capacity=3, channel_capacity={"small.*": 1}, expiry=1, group_expiry=1)
    full = await layer.new_channel()
    small = await layer.new_channel("small")
    assert await nothing_on(layer, full)
    for n in range(5):
        await sender.send(full, {"type": "m", "n": n})
        await sender.send(small, {"type": "m", "n": n})
    assert await nothing_on(layer, "unrelated")  # reads (and files) what arrived
    # A full local buffer drops its oldest message, and counts it.
    assert [(await layer.receive(full))["n"] for _ in range(3)] == [2, 3, 4]
    assert (await layer.receive(small))["n"] == 4
    assert layer.stats().dropped == 6

    # A membership lasts group_expiry seconds after its group_add.
    await layer.group_add("short", full)
    await sender.group_send("short", {"type": "in.time"})
    assert await layer.receive(full) == {"type": "in.time"}
    await anyio.sleep(1.1)
    await sender.group_send("short", {"type": "too.late"})
    assert await nothing_on(layer, full)


async def test_encryption(make_layer: MakeLayer, redis_cluster_urls: list[str]) -> None:
    key = "cluster-secret"
    layer = make_layer(symmetric_encryption_keys=[key])
    stranger = make_layer(symmetric_encryption_keys=["another key"])
    mine = await layer.new_channel()
    await layer.group_add("room", mine)
    await stranger.group_send("room", {"type": "unreadable"})  # dropped, logged
    await layer.group_send("room", {"type": "secret"})
    assert await layer.receive(mine) == {"type": "secret"}

    # On the wire: a frame naming the group, then Fernet(msgpack(message)).
    shard_channel = layer._partition("room")
    node = _node_serving(redis_cluster_urls, shard_channel)
    (host,) = parse_hosts([node])
    listener = await connect(host)
    try:
        await listener.send([("SSUBSCRIBE", shard_channel)])
        assert (await listener.read_reply())[0] == b"ssubscribe"
        await layer.group_send("room", {"type": "on.the.wire"})
        kind, channel, frame = await listener.read_reply()
        assert (kind, channel) == (b"smessage", shard_channel.encode())
        head, _, data = frame.partition(b"\x00")
        assert head == b"groom"
        fernet = Fernet(base64.urlsafe_b64encode(hashlib.sha256(key.encode()).digest()))
        assert msgpack.unpackb(fernet.decrypt(data)) == {"type": "on.the.wire"}
    finally:
        await listener.aclose()
    assert await layer.receive(mine) == {"type": "on.the.wire"}


def _node_serving(urls: list[str], name: str) -> str:
    """The URL of the master serving ``name`` now (asked of the first node)."""
    port = int(urls[0].rsplit(":", 1)[1].split("/")[0])
    slot = key_slot(name)
    for entry in command(port, "CLUSTER", "SLOTS"):
        if int(entry[0]) <= slot <= int(entry[1]):
            return f"redis://127.0.0.1:{int(entry[2][1])}"
    raise LookupError(slot)


async def test_groups_in_every_shard(make_layer: MakeLayer, redis_cluster_urls: list[str]) -> None:
    """Groups whose partitions live on different masters, fanned out to two processes."""
    here, there = make_layer(partitions=64), make_layer(partitions=64)
    by_master: dict[str, str] = {}
    for n in range(200):
        group = f"g{n}"
        by_master.setdefault(_node_serving(redis_cluster_urls, here._partition(group)), group)
    assert len(by_master) >= 3  # one group per master at least
    groups = sorted(by_master.values())
    mine, theirs = await here.new_channel(), await there.new_channel()
    for group in groups:
        await here.group_add(group, mine)
        await there.group_add(group, theirs)
    for group in groups:
        await there.group_send(group, {"type": "fan", "group": group})
    for layer, channel in ((here, mine), (there, theirs)):
        got = sorted([(await layer.receive(channel))["group"] for _ in groups])
        assert got == groups
        assert await nothing_on(layer, channel)
    # A process subscribes to its groups' partitions, not to each group.
    state = here._loops.current()
    assert state is not None
    assert len(state.wanted) == len({here._partition(group) for group in groups}) + 1


async def test_cancelled_receive_loses_nothing(make_layer: MakeLayer) -> None:
    layer, sender = make_layer(), make_layer()
    channel = await layer.new_channel()
    count = 40
    got: list[int] = []

    async def impatient() -> None:
        while len(got) < count:
            with anyio.move_on_after(0.002):
                got.append((await layer.receive(channel))["n"])

    with anyio.fail_after(20):
        async with anyio.create_task_group() as group:
            group.start_soon(impatient)
            for n in range(count):
                await sender.send(channel, {"type": "m", "n": n})
                await anyio.sleep(0.001)
    assert got == list(range(count))


# -- processes and sync code -------------------------------------------------------------


async def test_two_processes_fan_out_to_each_other(
    redis_cluster_urls: list[str], prefix: str
) -> None:
    config = {"hosts": redis_cluster_urls, "prefix": prefix}
    layer = RedisClusterChannelLayer(**config)
    try:
        async with driver(sys.executable, "ours", "cluster", config) as other:
            theirs = [await other.call("new_channel") for _ in range(3)]
            for channel in theirs:
                await other.call("group_add", "room", channel)
            mine = await layer.new_channel()
            await layer.group_add("room", mine)
            await layer.group_send("room", {"type": "from.here"})
            for channel in theirs:
                assert await other.call("receive", channel) == {"type": "from.here"}
            assert await layer.receive(mine) == {"type": "from.here"}
            await other.call("group_send", "room", {"type": "from.there"})
            assert await layer.receive(mine) == {"type": "from.there"}
            for channel in theirs:
                assert await other.call("receive", channel) == {"type": "from.there"}
            await other.call("send", mine, {"type": "direct"})
            assert await layer.receive(mine) == {"type": "direct"}
            await layer.send(theirs[1], {"type": "back"})
            assert await other.call("receive", theirs[1]) == {"type": "back"}
    finally:
        await layer.close()


def test_sync_code_through_async_to_sync(redis_cluster_urls: list[str], prefix: str) -> None:
    """A script or management command sends through async_to_sync, a new loop per call."""
    layer = RedisClusterChannelLayer(hosts=redis_cluster_urls, prefix=prefix)
    ready = threading.Event()
    got: list[Any] = []

    async def consumer() -> None:
        channel = await layer.new_channel()
        await layer.group_add("announcements", channel)
        names.append(channel)
        ready.set()
        got.append(await layer.receive(channel))
        got.append(await layer.receive(channel))
        await layer.close()

    names: list[str] = []
    thread = threading.Thread(target=lambda: anyio.run(consumer, backend="trio"))
    thread.start()
    try:
        assert ready.wait(10)
        async_to_sync(layer.group_send)("announcements", {"type": "from.sync"})
        async_to_sync(layer.send)(names[0], {"type": "direct.from.sync"})
    finally:
        thread.join(10)
    assert got == [{"type": "from.sync"}, {"type": "direct.from.sync"}]
    assert layer._loops._states == {}  # each throwaway loop closed its connections


# -- failover and resharding ---------------------------------------------------------------


class Traffic:
    """A sender publishing numbered messages to a group while a receiver collects them."""

    def __init__(self, sender: RedisClusterChannelLayer, receiver: RedisClusterChannelLayer):
        self.sender = sender
        self.receiver = receiver
        self.sent = 0
        self.got: list[int] = []
        self.send_errors: list[BaseException] = []
        self.arrived = anyio.Event()

    async def receive(self, channel: str) -> None:
        while True:
            self.got.append((await self.receiver.receive(channel))["n"])
            self.arrived.set()
            self.arrived = anyio.Event()

    async def send_for(self, group: str, seconds: float) -> None:
        with anyio.move_on_after(seconds):
            while True:
                # Counted before it is sent: one cancelled midway may still arrive.
                self.sent += 1
                try:
                    await self.sender.group_send(group, {"type": "m", "n": self.sent - 1})
                except ConnectionError as exc:
                    self.send_errors.append(exc)
                await anyio.sleep(0.005)

    async def settle(self, group: str) -> None:
        """Send until the receiver gets messages again; then every later one must arrive."""
        with anyio.fail_after(10):
            while not self.got or self.got[-1] < self.sent - 1:
                await self.sender.group_send(group, {"type": "m", "n": self.sent})
                self.sent += 1
                await anyio.sleep(0.02)
        start = self.sent
        for _ in range(20):
            await self.sender.group_send(group, {"type": "m", "n": self.sent})
            self.sent += 1
        with anyio.fail_after(5):
            while len([n for n in self.got if n >= start]) < 20:
                await self.arrived.wait()
        assert [n for n in self.got if n >= start] == list(range(start, start + 20))

    def report(self, what: str) -> int:
        lost = self.sent - len(set(self.got))
        logging.getLogger(__name__).warning(
            "%s: %d sent, %d received, %d lost, %d duplicated",
            what,
            self.sent,
            len(set(self.got)),
            lost,
            len(self.got) - len(set(self.got)),
        )
        print(f"\n{what}: sent {self.sent}, lost {lost}", file=sys.stderr)
        return lost


async def _traffic(private_cluster: Cluster, prefix: str) -> tuple[Traffic, str, str]:
    hosts = private_cluster.urls
    sender = RedisClusterChannelLayer(hosts=hosts, prefix=prefix)
    receiver = RedisClusterChannelLayer(hosts=hosts, prefix=prefix)
    channel = await receiver.new_channel()
    await receiver.group_add("room", channel)
    return Traffic(sender, receiver), channel, receiver._partition("room")


async def test_graceful_failover_mid_traffic(private_cluster: Cluster, prefix: str) -> None:
    traffic, channel, shard_channel = await _traffic(private_cluster, prefix)
    master = private_cluster.master_of(shard_channel)
    replica = private_cluster.replica_of(master)
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(traffic.receive, channel)
            await traffic.send_for("room", 0.3)
            async with anyio.create_task_group() as during:
                during.start_soon(traffic.send_for, "room", 2.0)
                await anyio.to_thread.run_sync(private_cluster.failover, replica)
            assert private_cluster.master_of(shard_channel) is replica
            await traffic.settle("room")
            group.cancel_scope.cancel()
        assert not traffic.send_errors
        traffic.report("CLUSTER FAILOVER")
        assert traffic.got == sorted(traffic.got)  # order kept
    finally:
        await traffic.sender.close()
        await traffic.receiver.close()


async def test_master_killed_mid_traffic(private_cluster: Cluster, prefix: str) -> None:
    """SIGKILL the master of the group's slot: its replica is promoted, sends retry
    meanwhile (none fails), and delivery resumes once the receiver has moved."""
    traffic, channel, shard_channel = await _traffic(private_cluster, prefix)
    victim = private_cluster.master_of(shard_channel)
    replica = private_cluster.replica_of(victim)
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(traffic.receive, channel)
            await traffic.send_for("room", 0.3)
            before = traffic.sent
            victim.kill()
            async with anyio.create_task_group() as during:
                during.start_soon(traffic.send_for, "room", 15.0)
                await anyio.to_thread.run_sync(private_cluster.wait_promoted, replica)
                await anyio.sleep(0.3)
                during.cancel_scope.cancel()
            await traffic.settle("room")
            group.cancel_scope.cancel()
        assert not traffic.send_errors
        assert set(range(before - 1)) <= set(traffic.got)  # nothing before the kill lost
        lost = traffic.report("master SIGKILLed")
        assert lost < traffic.sent - before  # the window, not everything after it
        assert traffic.got == sorted(traffic.got)
    finally:
        await traffic.sender.close()
        await traffic.receiver.close()
        await anyio.to_thread.run_sync(private_cluster.revive, victim)


async def test_slot_migrated_mid_traffic(private_cluster: Cluster, prefix: str) -> None:
    traffic, channel, shard_channel = await _traffic(private_cluster, prefix)
    slot = key_slot(shard_channel)
    source = private_cluster.master_of(shard_channel)
    target = next(node for node in private_cluster.masters() if node is not source)
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(traffic.receive, channel)
            await traffic.send_for("room", 0.3)
            async with anyio.create_task_group() as during:
                during.start_soon(traffic.send_for, "room", 1.0)
                await anyio.to_thread.run_sync(private_cluster.migrate_slot, slot, target)
            assert private_cluster.master_of(shard_channel) is target
            await traffic.settle("room")
            group.cancel_scope.cancel()
        assert not traffic.send_errors
        traffic.report("slot migrated")
        assert traffic.got == sorted(traffic.got)
        # The receiver now subscribes on the new owner.
        state = traffic.receiver._loops.current()
        assert state is not None
        assert shard_channel in state.subscribers[("127.0.0.1", target.port)].names
    finally:
        await traffic.sender.close()
        await traffic.receiver.close()


# -- durable groups: history and presence ---------------------------------------------------
#
# The layer-generic history tests of tests/test_layers_redis_history.py, run here on the
# cluster layer (the ones that need one Redis server, its keys or its restarts stay there).


@pytest.fixture
async def history_layer(
    redis_cluster_urls: list[str], prefix: str
) -> AsyncIterator[Callable[..., RedisClusterChannelLayer]]:
    made: list[RedisClusterChannelLayer] = []

    def make(**config: Any) -> RedisClusterChannelLayer:
        config.setdefault("hosts", redis_cluster_urls)
        config.setdefault("group_history", history_tests.HISTORY)
        layer = RedisClusterChannelLayer(prefix=prefix, **config)
        made.append(layer)
        return layer

    yield make
    for layer in made:
        await layer.flush()
        await layer.close()


@pytest.mark.parametrize(
    "test",
    [
        history_tests.test_members_get_positions_and_the_stream_keeps_the_messages,
        history_tests.test_a_forwarded_position_is_replaced,
        history_tests.test_a_second_process_continues_the_same_stream,
        history_tests.test_the_stream_keeps_the_newest_size_messages,
        history_tests.test_joining_while_others_send_leaves_no_gap,
        history_tests.test_bad_arguments_are_refused_before_anything_is_read,
        history_tests.test_sync_code_reads_history_through_async_to_sync,
    ],
    ids=lambda test: test.__name__.removeprefix("test_"),
)
async def test_history_contract(
    history_layer: Callable[..., RedisClusterChannelLayer], test: Any
) -> None:
    await test(history_layer)


async def test_history_lives_in_the_partition_slot_and_flush_starts_a_new_epoch(
    history_layer: Callable[..., RedisClusterChannelLayer], redis_cluster_urls: list[str]
) -> None:
    layer = history_layer()
    assert layer.extensions == ["groups", "flush", "history", "presence"]
    await layer.group_send("chat", {"type": "a"})
    before = (await layer.group_history("chat")).position
    assert before is not None
    shard_channel = layer._partition("chat")
    node = _node_serving(redis_cluster_urls, shard_channel)
    port = int(node.rsplit(":", 1)[1])
    key = f"{shard_channel}history:chat"
    assert command(port, "TYPE", key) == b"stream"  # on the partition's master
    await layer.flush()
    assert command(port, "EXISTS", key) == 0
    await layer.group_send("chat", {"type": "b"})
    after = (await layer.group_history("chat")).position
    assert after is not None
    assert (after.epoch != before.epoch, after.offset) == (True, 1)


async def test_presence_across_processes(
    history_layer: Callable[..., RedisClusterChannelLayer],
) -> None:
    here = history_layer(presence_events=["chat*"], presence_timeout=5)
    there = history_layer(presence_events=["chat*"], presence_timeout=5)
    mine = await here.new_channel()
    await here.group_add("chat", mine)
    await there.presence_join("chat", "specific.x!y", {"user": "ann"})
    joined = await here.receive(mine)
    assert (joined["type"], joined["channel"], joined["info"]) == (
        "presence.join",
        "specific.x!y",
        {"user": "ann"},
    )
    assert await here.presence("chat") == {"specific.x!y": {"user": "ann"}}
    await there.presence_leave("chat", "specific.x!y")
    assert (await here.receive(mine))["type"] == "presence.leave"
    assert await here.presence("chat") == {}
    with pytest.raises(TypeError):
        await here.presence_join("chat", mine, {"not": object()})  # type: ignore[dict-item]


async def test_history_survives_a_failover(private_cluster: Cluster, prefix: str) -> None:
    """The stream is replicated: after its master fails over, recovery still works."""
    layer = RedisClusterChannelLayer(
        hosts=private_cluster.urls, prefix=prefix, group_history=history_tests.HISTORY
    )
    try:
        start = (await layer.group_history("chat")).position
        for n in range(3):
            await layer.group_send("chat", {"type": "m", "n": n})
        master = private_cluster.master_of(layer._partition("chat"))
        await anyio.to_thread.run_sync(
            private_cluster.failover, private_cluster.replica_of(master)
        )
        await layer.group_send("chat", {"type": "m", "n": 3})
        history = await layer.group_history("chat", after=start)
        assert history.recovered
        assert [m["n"] for m in history.messages] == [0, 1, 2, 3]
    finally:
        await layer.flush()
        await layer.close()
