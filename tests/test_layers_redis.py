"""The Redis channel layer against a real Redis server, on asyncio and trio."""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import anyio.lowlevel
import coredis
import msgpack
import pytest
from cryptography.fernet import Fernet
from django.test import override_settings

from channels.concurrency import async_to_sync
from channels.consumer import AsyncConsumer
from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer, channel_layers
from channels.layers.redis import RedisChannelLayer
from channels.layers.redis.hosts import consistent_hash, parse_hosts
from channels.routing import ProtocolTypeRouter
from channels.testing import ApplicationCommunicator
from channels.types import ChannelLayer
from tests.redis_server import db_url

MakeLayer = Callable[..., RedisChannelLayer]


@pytest.fixture
async def make_layer(redis_url: str, prefix: str) -> AsyncIterator[MakeLayer]:
    """Builds layers on the test server under a prefix of this test's own."""
    layers: list[RedisChannelLayer] = []

    def make(**config: Any) -> RedisChannelLayer:
        config.setdefault("hosts", [redis_url])
        config.setdefault("prefix", prefix)
        layer = RedisChannelLayer(**config)
        layers.append(layer)
        return layer

    yield make
    for layer in layers:
        await layer.flush()
        await layer.close()


async def raw(url: str) -> coredis.Redis[bytes]:
    return coredis.Redis.from_url(url)


# -- the API -----------------------------------------------------------------------------


async def test_send_receive_groups_and_flush(make_layer: MakeLayer) -> None:
    layer = make_layer()
    assert isinstance(layer, ChannelLayer)
    assert layer.extensions == ["groups", "flush", "history", "presence"]

    await layer.send("worker", {"type": "a", "n": 1, "blob": b"\x00\xff"})
    await layer.send("worker", {"type": "a", "n": 2})
    assert await layer.receive("worker") == {"type": "a", "n": 1, "blob": b"\x00\xff"}
    assert await layer.receive("worker") == {"type": "a", "n": 2}

    one = await layer.new_channel()
    two = await layer.new_channel("other")
    assert one.startswith(f"specific.{layer.client_prefix}!")
    assert len(one) < 100
    assert two.startswith(f"other.{layer.client_prefix}!")
    await layer.send(two, {"type": "to.two"})
    await layer.send(one, {"type": "to.one"})
    assert await layer.receive(one) == {"type": "to.one"}
    assert await layer.receive(two) == {"type": "to.two"}

    for channel in (one, two, "worker"):
        await layer.group_add("room", channel)
    await layer.group_add("room", one)  # joining twice is one membership
    await layer.group_send("room", {"type": "hello"})
    assert await layer.receive(one) == {"type": "hello"}
    assert await layer.receive(two) == {"type": "hello"}
    assert await layer.receive("worker") == {"type": "hello"}

    await layer.group_discard("room", two)
    await layer.group_discard("room", "never-joined")
    await layer.group_send("room", {"type": "again"})
    assert await layer.receive(one) == {"type": "again"}
    assert await layer.receive("worker") == {"type": "again"}
    with anyio.move_on_after(0.2) as scope:
        await layer.receive(two)
    assert scope.cancelled_caught

    await layer.send("worker", {"type": "left"})
    await layer.flush()
    await layer.group_send("room", {"type": "after.flush"})
    with anyio.move_on_after(0.2) as scope:
        await layer.receive("worker")
    assert scope.cancelled_caught


async def test_receivers_each_get_their_own_copy(make_layer: MakeLayer) -> None:
    layer = make_layer()
    one, two = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("g", one)
    await layer.group_add("g", two)
    await layer.group_send("g", {"type": "m", "items": [1]})
    first = await layer.receive(one)
    first["items"].append(2)
    assert await layer.receive(two) == {"type": "m", "items": [1]}


async def test_many_local_receivers_share_one_reader(make_layer: MakeLayer) -> None:
    layer = make_layer()
    channels = [await layer.new_channel() for _ in range(20)]
    got: dict[str, list[int]] = {channel: [] for channel in channels}

    async def consume(channel: str) -> None:
        for _ in range(5):
            got[channel].append((await layer.receive(channel))["n"])

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            for channel in channels:
                group.start_soon(consume, channel)
            for n in range(5):
                for channel in channels:
                    await layer.send(channel, {"type": "m", "n": n})
    assert all(values == [0, 1, 2, 3, 4] for values in got.values())


async def test_bad_input_gets_a_clear_error_and_loses_nothing(make_layer: MakeLayer) -> None:
    layer = make_layer()
    await layer.send("q", {"type": "kept"})
    with pytest.raises(TypeError, match="Channel name must be"):
        await layer.send("bad name", {"type": "x"})
    with pytest.raises(TypeError, match="Group name must be"):
        await layer.group_add("bad!group", "q")
    with pytest.raises(TypeError, match="must be dicts"):
        await layer.send("q", ["not", "a", "dict"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reserved key"):
        await layer.send("q", {"type": "x", "__asgi_channel__": "q"})
    with pytest.raises(TypeError):  # msgpack cannot carry it
        await layer.send("q", {"type": "x", "value": object()})
    other = make_layer()
    with pytest.raises(ValueError, match="not made by this layer"):
        await layer.receive(await other.new_channel())
    assert await layer.receive("q") == {"type": "kept"}


def test_configuration_errors() -> None:
    with pytest.raises(ValueError, match="list of Redis hosts"):
        RedisChannelLayer(hosts="redis://localhost")
    with pytest.raises(ValueError, match="Unknown Redis host option"):
        RedisChannelLayer(hosts=[{"address": "redis://localhost", "colour": "red"}])
    with pytest.raises(ValueError, match="must start with redis://"):
        RedisChannelLayer(hosts=["http://localhost"])
    with pytest.raises(ValueError, match=r"\(host, port\)"):
        RedisChannelLayer(hosts=[("localhost",)])
    with pytest.raises(ValueError, match="sentinels"):
        RedisChannelLayer(hosts=[{"master_name": "mymaster"}])
    with pytest.raises(ValueError, match="serializer_format"):
        RedisChannelLayer(serializer_format="pickle")
    with pytest.raises(ValueError, match="expiry"):
        RedisChannelLayer(expiry=0)
    with pytest.raises(ValueError, match="list of keys"):
        RedisChannelLayer(symmetric_encryption_keys="one-key")


def test_host_forms() -> None:
    url, pair, address, sentinel = parse_hosts(
        [
            "redis://:secret@example.com:6380/3",
            ("10.0.0.1", 6381),
            {"address": "rediss://example.org:6390", "ssl_cert_reqs": "none", "db": 2},
            {
                "master_name": "mymaster",
                "sentinels": [("s1", 26379), ("s2", 26379)],
                "sentinel_kwargs": {"password": "x"},
                "db": 4,
            },
        ]
    )
    assert (url.address, url.db, url.password) == (("example.com", 6380), 3, "secret")
    assert pair.address == ("10.0.0.1", 6381)
    assert pair.db == 0
    assert address.address == ("example.org", 6390)
    assert address.db == 2
    assert address.ssl_context is not None
    assert sentinel.master_name == "mymaster"
    assert sentinel.db == 4
    assert sentinel.sentinels == (("s1", 26379), ("s2", 26379))
    assert [host.address for host in parse_hosts(None)] == [("localhost", 6379)]


# -- capacity and expiry -----------------------------------------------------------------


async def test_capacity(make_layer: MakeLayer, caplog: pytest.LogCaptureFixture) -> None:
    layer = make_layer(capacity=2, channel_capacity={"big*": 3})
    await layer.send("small", {"type": "m"})
    await layer.send("small", {"type": "m"})
    with pytest.raises(ChannelFull):
        await layer.send("small", {"type": "m"})
    for _ in range(3):
        await layer.send("bigger", {"type": "m"})
    with pytest.raises(ChannelFull):
        await layer.send("bigger", {"type": "m"})
    await layer.receive("small")
    await layer.send("small", {"type": "m"})  # room again

    await layer.group_add("g", "small")
    await layer.group_add("g", "free")
    with caplog.at_level(logging.INFO, "channels.layers.redis"):
        await layer.group_send("g", {"type": "fan"})
    assert "skipped 1 full channel" in caplog.text
    assert await layer.receive("free") == {"type": "fan"}


async def test_expired_messages_and_memberships_are_not_delivered(
    make_layer: MakeLayer, redis_url: str, prefix: str
) -> None:
    layer = make_layer(expiry=60, group_expiry=3600)
    local = await layer.new_channel()
    old = time.time() - 120
    async with await raw(redis_url) as redis:
        # Written as if sent two minutes ago.
        await redis.zadd(prefix + "q", {layer.serialize({"type": "stale"}): old})
        await redis.zadd(
            prefix + layer.non_local_name(local),
            {layer.serialize({"type": "stale", "__asgi_channel__": local}): old},
        )
        await redis.zadd(f"{prefix}:group:g", {"q": time.time() - 7200})
    await layer.send("q", {"type": "fresh"})
    await layer.send(local, {"type": "fresh"})
    assert await layer.receive("q") == {"type": "fresh"}
    assert await layer.receive(local) == {"type": "fresh"}
    await layer.group_send("g", {"type": "to.expired.member"})
    with anyio.move_on_after(0.2) as scope:
        await layer.receive("q")
    assert scope.cancelled_caught


async def test_expiry_is_set_on_keys(make_layer: MakeLayer, redis_url: str, prefix: str) -> None:
    layer = make_layer(expiry=30, group_expiry=300)
    await layer.send("q", {"type": "m"})
    await layer.group_add("g", "q")
    async with await raw(redis_url) as redis:
        assert 0 < await redis.ttl(prefix + "q") <= 30
        assert 0 < await redis.ttl(f"{prefix}:group:g") <= 300


# -- serializers and encryption ----------------------------------------------------------


@pytest.mark.parametrize("serializer_format", ["msgpack", "json"])
async def test_serializers_and_encryption(make_layer: MakeLayer, serializer_format: str) -> None:
    layer = make_layer(serializer_format=serializer_format, symmetric_encryption_keys=["k1"])
    message = {"type": "m", "text": "héllo", "n": [1, 2.5, None, True]}
    local = await layer.new_channel()
    await layer.send("q", message)
    await layer.send(local, message)
    assert await layer.receive("q") == message
    assert await layer.receive(local) == message
    data = layer.serialize(message)
    assert b"h\xc3\xa9llo" not in data
    assert b"text" not in data

    # Rotation: a layer that encrypts with a new key still reads the old key's messages.
    await layer.send("q", message)
    rotated = make_layer(
        serializer_format=serializer_format, symmetric_encryption_keys=["k2", "k1"]
    )
    assert await rotated.receive("q") == message


async def test_message_with_wrong_key_is_dropped_and_logged(
    make_layer: MakeLayer, caplog: pytest.LogCaptureFixture
) -> None:
    sender = make_layer(symmetric_encryption_keys=["one"])
    receiver = make_layer(symmetric_encryption_keys=["two"])
    await sender.send("q", {"type": "secret"})
    await receiver.send("q", {"type": "readable"})
    with caplog.at_level(logging.ERROR, "channels.layers.redis"):
        assert await receiver.receive("q") == {"type": "readable"}
    assert "Cannot decrypt" in caplog.text


# -- wire format, byte for byte ----------------------------------------------------------


async def test_wire_format_matches_channels_redis(
    make_layer: MakeLayer, redis_url: str, prefix: str
) -> None:
    layer = make_layer()
    local = await layer.new_channel()
    before = time.time()
    await layer.send("worker-tasks", {"type": "w", "data": b"\x01"})
    await layer.send(local, {"type": "d"})
    await layer.group_add("room1", local)
    await layer.group_add("room1", "worker-tasks")
    await layer.group_send("room1", {"type": "g"})
    after = time.time()
    async with await raw(redis_url) as redis:
        queued = await redis.zrange(prefix + "worker-tasks", 0, -1, withscores=True)
        assert len(queued) == 2
        (direct, score), (fanned, _) = queued
        assert before <= score <= after
        assert len(direct) == 12 + len(msgpack.packb({"type": "w", "data": b"\x01"}))
        assert direct[12:] == msgpack.packb({"type": "w", "data": b"\x01"})
        assert fanned[12:] == msgpack.packb({"type": "g", "__asgi_channel__": ["worker-tasks"]})

        local_key = f"{prefix}specific.{layer.client_prefix}!"
        stored = [member for member, _ in await redis.zrange(local_key, 0, -1, withscores=True)]
        assert [member[12:] for member in stored] == [
            msgpack.packb({"type": "d", "__asgi_channel__": local}),
            msgpack.packb({"type": "g", "__asgi_channel__": [local]}),
        ]
        members = await redis.zrange(f"{prefix}:group:room1", 0, -1)
        assert sorted(members) == sorted([local.encode(), b"worker-tasks"])
        assert not await redis.exists([local_key + "$inflight"])

        # What channels_redis would write: 12 random bytes, msgpack, scored by send time.
        await redis.zadd(
            prefix + "from-upstream",
            {b"\x07" * 12 + msgpack.packb({"type": "up", "text": "x"}): time.time()},
        )
        await redis.zadd(
            local_key,
            {
                b"\x08" * 12
                + msgpack.packb({"type": "up.local", "__asgi_channel__": local}): time.time()
            },
        )
    assert await layer.receive("from-upstream") == {"type": "up", "text": "x"}
    assert await layer.receive(local) == {"type": "d"}
    assert await layer.receive(local) == {"type": "g"}
    assert await layer.receive(local) == {"type": "up.local"}


async def test_encrypted_wire_format(make_layer: MakeLayer, redis_url: str, prefix: str) -> None:
    layer = make_layer(symmetric_encryption_keys=["secret"])
    fernet = Fernet(base64.urlsafe_b64encode(hashlib.sha256(b"secret").digest()))
    data = layer.serialize({"type": "m"})
    assert msgpack.unpackb(fernet.decrypt(data[12:])) == {"type": "m"}
    async with await raw(redis_url) as redis:
        token = fernet.encrypt(msgpack.packb({"type": "from.upstream"}))
        await redis.zadd(prefix + "q", {b"\x00" * 12 + token: time.time()})
    assert await layer.receive("q") == {"type": "from.upstream"}


def test_consistent_hash_matches_channels_redis() -> None:
    assert consistent_hash("room1", 2) == 1
    assert consistent_hash("asgi__group__room1", 2) == 0
    assert consistent_hash("anything", 1) == 0
    assert {consistent_hash(f"name{n}", 4) for n in range(100)} == {0, 1, 2, 3}


# -- several shards ----------------------------------------------------------------------


async def test_several_shards(make_layer: MakeLayer, redis_url: str, prefix: str) -> None:
    urls = [db_url(redis_url, db) for db in (1, 2, 3)]
    layer = make_layer(hosts=urls)
    other = make_layer(hosts=urls)
    for n in range(6):  # round-robin over the shards
        await layer.send("q", {"type": "m", "n": n})
    assert sorted([(await other.receive("q"))["n"] for _ in range(6)]) == list(range(6))

    locals_ = [await layer.new_channel() for _ in range(4)]
    for channel in locals_:
        await other.group_add("room", channel)
    await other.group_add("room", "q")
    await other.group_send("room", {"type": "fan"})
    for channel in [*locals_, "q"]:
        assert await layer.receive(channel) == {"type": "fan"}

    # A direct send lands on the shard of the non-local name, where its reader looks.
    await other.send(locals_[0], {"type": "direct"})
    home = consistent_hash(layer.non_local_name(locals_[0]), 3)
    key = prefix + layer.non_local_name(locals_[0])
    async with await raw(urls[home]) as redis:
        assert await redis.zcard(key) == 1
    assert await layer.receive(locals_[0]) == {"type": "direct"}

    # channels_redis senders hash the full name instead (its bug B1): still received.
    wrong = consistent_hash(locals_[1], 3)
    async with await raw(urls[wrong]) as redis:
        data = layer.serialize({"type": "upstream.direct", "__asgi_channel__": locals_[1]})
        await redis.zadd(key, {data: time.time()})
    assert await layer.receive(locals_[1]) == {"type": "upstream.direct"}


# -- cancellation --------------------------------------------------------------------------


async def _cancel_after(scope: anyio.CancelScope, steps: int, sleep: float) -> None:
    for _ in range(steps):
        await anyio.lowlevel.checkpoint()
    if sleep:
        await anyio.sleep(sleep)
    scope.cancel()


@pytest.mark.parametrize("local", [False, True], ids=["normal", "process-local"])
async def test_cancelled_receive_loses_nothing_and_keeps_order(
    make_layer: MakeLayer, local: bool
) -> None:
    layer = make_layer()
    channel = await layer.new_channel() if local else "q"
    sent = 0
    received: list[int] = []
    # Cancel after every number of scheduler steps, then at growing delays: the cancel
    # lands before the pop, while it blocks, as the reply arrives, and after.
    timings = [(steps, 0.0) for steps in range(25)] + [(0, n * 0.0004) for n in range(25)]
    for steps, delay in timings:
        if steps % 3 == 0:
            await layer.send(channel, {"type": "m", "n": sent})
            sent += 1
        async with anyio.create_task_group() as group:
            with anyio.CancelScope() as scope:
                group.start_soon(_cancel_after, scope, steps, delay)
                received.append((await layer.receive(channel))["n"])
                scope.cancel()
    with anyio.fail_after(10):
        while len(received) < sent:
            received.append((await layer.receive(channel))["n"])
    assert received == list(range(sent))


async def test_cancelled_blocked_receive_while_messages_arrive(make_layer: MakeLayer) -> None:
    layer = make_layer()
    channels = [await layer.new_channel() for _ in range(3)] + ["q"]
    count = 30
    got: dict[str, list[int]] = {channel: [] for channel in channels}

    async def impatient(channel: str) -> None:
        # Gives up often, while sends keep arriving; must still see every message once.
        while len(got[channel]) < count:
            with anyio.move_on_after(0.003):
                got[channel].append((await layer.receive(channel))["n"])

    with anyio.fail_after(20):
        async with anyio.create_task_group() as group:
            for channel in channels:
                group.start_soon(impatient, channel)
            for n in range(count):
                for channel in channels:
                    await layer.send(channel, {"type": "m", "n": n})
                await anyio.sleep(0.001)
    assert all(values == list(range(count)) for values in got.values())


# -- sends to this process's own waiting receivers ---------------------------------------


async def _waiting(layer: RedisChannelLayer, channel: str) -> None:
    """Until a receive on ``channel`` waits (parked, or blocked in its read of Redis)."""
    key = layer.prefix + layer.non_local_name(channel)
    while True:
        state = layer._loops.current()
        readers = state.readers.get(key) if state is not None else None
        if readers is not None and readers.pending(channel) and not readers.yielding:
            return
        await anyio.sleep(0.001)


async def _blocked_in_redis(redis_url: str) -> None:
    """Until a client's blocking pop waits in Redis."""
    async with await raw(redis_url) as redis:
        while True:
            if (await redis.info("clients"))["blocked_clients"] >= 1:
                return
            await anyio.sleep(0.001)


async def _redis_has(layer: RedisChannelLayer, redis_url: str, channel: str) -> int:
    async with await raw(redis_url) as redis:
        return int(await redis.zcard(layer.prefix + layer.non_local_name(channel)))


async def test_a_waiting_local_receiver_gets_sends_without_redis(
    make_layer: MakeLayer, redis_url: str
) -> None:
    """What it receives is what a read from Redis gives (serialized, its own copy)."""
    layer = make_layer()
    layer.brpop_timeout = 30
    channel = await layer.new_channel()
    got: list[dict[str, Any]] = []
    sent = {"type": "m", "items": (1, 2)}
    with anyio.fail_after(10):  # far below the 30 s blocking pop: it was not waited for
        async with anyio.create_task_group() as group:

            async def receive() -> None:
                got.append(await layer.receive(channel))

            group.start_soon(receive)
            await _waiting(layer, channel)
            async with await raw(redis_url) as redis:
                before = (await redis.info("stats"))["total_commands_processed"]
                await layer.send(channel, sent)
                after = (await redis.info("stats"))["total_commands_processed"]
            assert after - before == 1  # the first INFO: the send ran no command
    assert got == [{"type": "m", "items": [1, 2]}]  # msgpack's lists, as through Redis
    assert got[0] is not sent


async def test_sends_queued_in_redis_stay_ahead_of_later_local_ones(
    make_layer: MakeLayer, redis_url: str
) -> None:
    layer = make_layer()
    layer.local_batch = 3  # the receiver waits for Redis between batches of what is there
    channel = await layer.new_channel()
    for n in range(10):  # nobody receives yet: these go to Redis
        await layer.send(channel, {"type": "m", "n": n})
    assert await _redis_has(layer, redis_url, channel) == 10
    received: list[int] = []

    async def consume() -> None:
        while len(received) < 30:
            received.append((await layer.receive(channel))["n"])

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(consume)
            await _waiting(layer, channel)
            for n in range(10, 30):
                await layer.send(channel, {"type": "m", "n": n})
                if n % 4 == 0:
                    await anyio.lowlevel.checkpoint()
    assert received == list(range(30))


async def test_local_delivery_keeps_order_behind_a_group_send(make_layer: MakeLayer) -> None:
    layer = make_layer()
    channel = await layer.new_channel()
    await layer.group_add("g", channel)
    received: list[str] = []

    async def consume() -> None:
        while len(received) < 20:
            received.append((await layer.receive(channel))["type"])

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(consume)
            await _waiting(layer, channel)
            for n in range(10):
                await layer.group_send("g", {"type": f"group.{n}"})
                await layer.send(channel, {"type": f"direct.{n}"})
    assert received == [f"{kind}.{n}" for n in range(10) for kind in ("group", "direct")]


async def test_local_delivery_is_bounded_by_capacity(make_layer: MakeLayer) -> None:
    layer = make_layer(capacity=5)
    channel = await layer.new_channel()
    received: list[int] = []

    async def consume() -> None:
        while len(received) < 5:
            received.append((await layer.receive(channel))["n"])

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(consume)
            await _waiting(layer, channel)
            for n in range(5):  # no checkpoint: the receiver cannot take any yet
                await layer.send(channel, {"type": "m", "n": n})
            with pytest.raises(ChannelFull):
                await layer.send(channel, {"type": "m", "n": 5})
    assert received == [0, 1, 2, 3, 4]


async def test_other_senders_still_reach_a_receiver_served_locally(
    make_layer: MakeLayer,
) -> None:
    """Another process's sends come through Redis, while this one's are filed here."""
    layer = make_layer()
    layer.brpop_timeout = 30
    other = make_layer()  # another layer instance: as another process, it goes to Redis
    channel = await layer.new_channel()
    got: list[str] = []

    async def consume() -> None:
        while len(got) < 40:
            got.append((await layer.receive(channel))["type"])

    with anyio.fail_after(10):  # no read waits for the 30 s blocking pop's timeout
        async with anyio.create_task_group() as group:
            group.start_soon(consume)
            for n in range(20):
                await _waiting(layer, channel)
                await layer.send(channel, {"type": f"here.{n}"})
                await other.send(channel, {"type": f"there.{n}"})
    assert [t for t in got if t.startswith("here")] == [f"here.{n}" for n in range(20)]
    assert [t for t in got if t.startswith("there")] == [f"there.{n}" for n in range(20)]


def test_a_pop_left_waiting_is_read_when_its_loop_ends(redis_url: str, prefix: str) -> None:
    """A local delivery leaves the reader's blocking pop in Redis for the next read; if the
    loop ends first, what that pop took is filed for the next loop, not lost."""
    layer = RedisChannelLayer(hosts=[redis_url], prefix=prefix)
    layer.brpop_timeout = 30
    other = RedisChannelLayer(hosts=[redis_url], prefix=prefix)
    try:
        channel = async_to_sync(layer.new_channel)()

        async def first_loop() -> None:
            async with anyio.create_task_group() as group:

                async def receive() -> None:
                    assert await layer.receive(channel) == {"type": "here"}

                group.start_soon(receive)
                await _blocked_in_redis(redis_url)
                await _waiting(layer, channel)
                await layer.send(channel, {"type": "here"})
            state = layer._loops.current()
            assert state is not None
            assert state.parked  # the pop still waits in Redis
            await other.send(channel, {"type": "there"})  # and takes this
            await layer.close()

        async_to_sync(first_loop)()
        assert async_to_sync(layer.receive)(channel) == {"type": "there"}
    finally:
        async_to_sync(layer.flush)()
        async_to_sync(layer.close)()
        async_to_sync(other.close)()


# -- from sync code, consumers and routers ----------------------------------------------


def test_sync_code_on_throwaway_loops(redis_url: str, prefix: str) -> None:
    """A script calls the layer through async_to_sync: a new event loop per call."""
    layer = RedisChannelLayer(hosts=[redis_url], prefix=prefix)
    try:
        local = async_to_sync(layer.new_channel)()
        async_to_sync(layer.group_add)("g", local)
        async_to_sync(layer.group_send)("g", {"type": "one"})
        async_to_sync(layer.send)(local, {"type": "two"})
        assert async_to_sync(layer.receive)(local) == {"type": "one"}
        assert async_to_sync(layer.receive)(local) == {"type": "two"}

        errors: list[BaseException] = []

        def thread() -> None:
            try:
                async_to_sync(layer.send, backend="trio")("q", {"type": "from.trio"})
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        worker = threading.Thread(target=thread)
        worker.start()
        worker.join()
        assert not errors
        assert async_to_sync(layer.receive)("q") == {"type": "from.trio"}
        # Each of those loops closed its connections as it ended.
        assert layer._loops._states == {}
    finally:
        async_to_sync(layer.flush)()
        async_to_sync(layer.close)()


class GroupConsumer(AsyncConsumer):
    async def websocket_connect(self, message: dict[str, Any]) -> None:
        await self.channel_layer.group_add("chat", self.channel_name)
        await self.send({"type": "websocket.accept"})

    async def chat_message(self, message: dict[str, Any]) -> None:
        await self.send({"type": "websocket.send", "text": message["text"]})


class Subclassed(RedisChannelLayer):
    """A third-party layer built on ours: its own serialization, its own timeout."""

    brpop_timeout = 1

    def serialize(self, message: dict[str, Any]) -> bytes:
        return super().serialize({**message, "via": "subclass"})


@pytest.mark.parametrize("backend", ["channels.layers.redis.RedisChannelLayer", "subclass"])
async def test_consumers_on_the_redis_layer(redis_url: str, prefix: str, backend: str) -> None:
    path = f"{__name__}.Subclassed" if backend == "subclass" else backend
    config = {"default": {"BACKEND": path, "CONFIG": {"hosts": [redis_url], "prefix": prefix}}}
    with override_settings(CHANNEL_LAYERS=config):
        app = ProtocolTypeRouter({"websocket": GroupConsumer.as_asgi()})
        layer = channel_layers["default"]
        assert isinstance(layer, BaseChannelLayer)
        try:
            async with ApplicationCommunicator(app, {"type": "websocket", "path": "/"}) as running:
                await running.send_input({"type": "websocket.connect"})
                assert (await running.receive_output())["type"] == "websocket.accept"
                await layer.group_send("chat", {"type": "chat.message", "text": "hi"})
                assert (await running.receive_output()) == {
                    "type": "websocket.send",
                    "text": "hi",
                }
            # Lifespan shutdown closes the layer's connections.
            lifespan = ApplicationCommunicator(app, {"type": "lifespan"})
            async with lifespan:
                await lifespan.send_input({"type": "lifespan.startup"})
                await lifespan.receive_output()
                await lifespan.send_input({"type": "lifespan.shutdown"})
                assert (await lifespan.receive_output())["type"] == "lifespan.shutdown.complete"
            assert layer._loops.current() is None
        finally:
            await layer.flush()
            await layer.close()


# -- flush ----------------------------------------------------------------------------------


async def test_flush_scans_instead_of_keys(private_redis: Any) -> None:
    layer = RedisChannelLayer(hosts=[private_redis.url], prefix="flushme")
    async with await raw(private_redis.url) as redis:
        await redis.set("unrelated", "stays")
        await redis.set("flushm", "stays")  # shares a prefix of the prefix only
        for n in range(2500):
            await redis.zadd(f"flushme{n}", {b"x": 1.0})
        await layer.group_add("g", "c")
        await layer.flush()
        assert await redis.dbsize() == 2
        stats = await redis.info("commandstats")
        assert "cmdstat_keys" not in stats
        assert "cmdstat_scan" in stats
    await layer.close()


# -- resilience ---------------------------------------------------------------------------


async def test_survives_a_redis_restart_mid_stream(private_redis: Any) -> None:
    """Traffic flows, the server restarts (losing its data), traffic flows again."""
    layer = RedisChannelLayer(hosts=[private_redis.url], prefix="restart")
    sender = RedisChannelLayer(hosts=[private_redis.url], prefix="restart")
    local = await layer.new_channel()
    got: dict[str, list[int]] = {local: [], "q": []}
    restarted, caught_up = anyio.Event(), anyio.Event()

    async def consume(channel: str) -> None:
        while not got[channel] or got[channel][-1] < 1000:
            got[channel].append((await layer.receive(channel))["n"])
            if len(got[local]) >= 20 and len(got["q"]) >= 20:
                caught_up.set()

    async def produce() -> None:
        for n in range(20):
            await sender.send(local, {"type": "m", "n": n})
            await sender.send("q", {"type": "m", "n": n})
            await anyio.sleep(0.005)
        await restarted.wait()
        # Once Redis is back (a send retries until it is), everything arrives.
        for n in range(1000, 1021):
            await sender.send(local, {"type": "m", "n": n})
            await sender.send("q", {"type": "m", "n": n})

    try:
        with anyio.fail_after(25):
            async with anyio.create_task_group() as group:
                group.start_soon(consume, local)
                group.start_soon(consume, "q")
                group.start_soon(produce)
                await caught_up.wait()
                await anyio.sleep(0.05)
                # Both receivers are now blocked in a pop when the server goes away.
                private_redis.stop()
                await anyio.sleep(0.3)
                private_redis.start()
                restarted.set()
        for channel in (local, "q"):
            assert got[channel][:20] == list(range(20))
            assert got[channel][20:] == [1000]  # in order, none lost after the restart
    finally:
        for each in (layer, sender):
            await each.close()


async def test_a_pop_left_waiting_survives_a_redis_restart(private_redis: Any) -> None:
    """A local delivery leaves the reader's pop waiting in Redis; the server then restarts
    while the next read waits on that pop: the read reconnects and what another process
    sends afterwards still arrives."""
    layer = RedisChannelLayer(hosts=[private_redis.url], prefix="parked")
    layer.brpop_timeout = 30
    other = RedisChannelLayer(hosts=[private_redis.url], prefix="parked")
    channel = await layer.new_channel()
    got: list[str] = []

    async def consume() -> None:
        while len(got) < 2:
            got.append((await layer.receive(channel))["type"])

    try:
        with anyio.fail_after(25):
            async with anyio.create_task_group() as group:
                group.start_soon(consume)
                await _blocked_in_redis(private_redis.url)
                await _waiting(layer, channel)
                await layer.send(channel, {"type": "here"})  # leaves the pop waiting
                while True:  # until the consumer took it and waits on that pop again
                    state = layer._loops.current()
                    if got and state is not None and not state.parked:
                        break
                    await anyio.sleep(0.001)
                private_redis.stop()
                await anyio.sleep(0.3)
                private_redis.start()
                await other.send(channel, {"type": "there"})  # retried until Redis is back
        assert got == ["here", "there"]
    finally:
        for each in (layer, other):
            await each.close()


async def test_calls_fail_clearly_while_redis_stays_down(private_redis: Any) -> None:
    layer = RedisChannelLayer(hosts=[private_redis.url], prefix="down")
    layer.reconnect_timeout = 0.3
    await layer.send("q", {"type": "m"})
    private_redis.stop()
    with pytest.raises(ConnectionError, match="unreachable"):
        await layer.send("q", {"type": "m"})
    private_redis.start()
    await layer.send("q", {"type": "back"})
    assert await layer.receive("q") == {"type": "back"}
    await layer.close()


@pytest.fixture
def sentinel_port(private_redis: Any, tmp_path: Any) -> Any:
    """A real sentinel (``redis-server --sentinel``) watching the private server."""
    import shutil
    import socket
    import subprocess

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "sentinel.conf"
    config.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor mymaster 127.0.0.1 {private_redis.port} 1\n"
    )
    binary = shutil.which("redis-server")
    assert binary is not None
    sentinel = subprocess.Popen(
        [binary, str(config), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "redis-server --sentinel did not start"
                time.sleep(0.02)
        yield port
    finally:
        sentinel.kill()
        sentinel.wait()


async def test_sentinel_host(private_redis: Any, sentinel_port: int, prefix: str) -> None:
    """A Sentinel dict host: the layer asks the sentinels where the master is."""
    sentinels = [("127.0.0.1", 1), ("127.0.0.1", sentinel_port)]  # the first is down
    host = {"master_name": "mymaster", "sentinels": sentinels, "db": 1}
    layer = RedisChannelLayer(hosts=[host], prefix=prefix)
    await layer.send("q", {"type": "via.sentinel"})
    async with await raw(db_url(private_redis.url, 1)) as redis:
        assert await redis.exists([prefix + "q"]) == 1
    assert await layer.receive("q") == {"type": "via.sentinel"}
    await layer.close()

    unknown = RedisChannelLayer(
        hosts=[{"master_name": "nobody", "sentinels": sentinels}], prefix=prefix
    )
    unknown.reconnect_timeout = 0.2
    with pytest.raises(ConnectionError, match="No sentinel knows"):
        await unknown.send("q", {"type": "lost"})
    await unknown.close()


async def test_both_layers_over_a_unix_socket(private_redis: Any) -> None:
    from channels.layers.redis import RedisPubSubChannelLayer

    for layer_class in (RedisChannelLayer, RedisPubSubChannelLayer):
        layer = layer_class(hosts=[private_redis.unix_url], prefix="unix")
        try:
            channel = await layer.new_channel()
            await layer.group_add("room", channel)
            await layer.send(channel, {"type": "direct", "n": 1})
            assert await layer.receive(channel) == {"type": "direct", "n": 1}
            await layer.group_send("room", {"type": "grouped", "n": 2})
            with anyio.fail_after(5):
                assert await layer.receive(channel) == {"type": "grouped", "n": 2}
        finally:
            await layer.flush()
            await layer.close()
