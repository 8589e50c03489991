"""The Redis pub/sub channel layer against a real Redis server, on asyncio and trio."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import anyio.lowlevel
import coredis
import msgpack
import pytest
from cryptography.fernet import Fernet

from channels.layers.redis import RedisPubSubChannelLayer
from channels.layers.redis.connection import connect
from channels.layers.redis.hosts import parse_hosts
from channels.types import ChannelLayer, Message
from tests.harness import TurnCounter
from tests.redis_server import db_url

MakeLayer = Callable[..., RedisPubSubChannelLayer]


@pytest.fixture
async def make_layer(redis_url: str, prefix: str) -> AsyncIterator[MakeLayer]:
    layers: list[RedisPubSubChannelLayer] = []

    def make(**config: Any) -> RedisPubSubChannelLayer:
        config.setdefault("hosts", [redis_url])
        config.setdefault("prefix", prefix)
        layer = RedisPubSubChannelLayer(**config)
        layers.append(layer)
        return layer

    yield make
    for layer in layers:
        await layer.close()


async def nothing_on(layer: RedisPubSubChannelLayer, channel: str) -> bool:
    with anyio.move_on_after(0.2) as scope:
        await layer.receive(channel)
    return scope.cancelled_caught


async def test_channels_and_groups_across_processes(make_layer: MakeLayer, prefix: str) -> None:
    here, there = make_layer(), make_layer()  # two processes, as far as Redis can tell
    assert isinstance(here, ChannelLayer)
    assert here.extensions == ["groups", "flush", "history", "presence"]
    mine = await here.new_channel()
    theirs = [await there.new_channel() for _ in range(2)]
    assert mine.startswith(f"{prefix}specific.")

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
    await there.group_send("room", {"type": "again"})
    assert await here.receive(mine) == {"type": "again"}
    assert await there.receive(theirs[1]) == {"type": "again"}
    assert await nothing_on(there, theirs[0])

    with pytest.raises(RuntimeError, match="only groups channels made by new_channel"):
        await here.group_add("room", "unknown.channel")
    with pytest.raises(TypeError, match="Channel name must be"):
        await here.send("bad name", {"type": "x"})
    with pytest.raises(ValueError, match="reserved key"):
        await here.send(mine, {"type": "x", "__asgi_channel__": mine})

    await here.flush()  # forgets this process's channels and groups
    await there.group_send("room", {"type": "after.flush"})
    assert await there.receive(theirs[1]) == {"type": "after.flush"}


async def test_receive_subscribes_a_named_channel(make_layer: MakeLayer) -> None:
    layer = make_layer()
    async with anyio.create_task_group() as group:
        got: list[Any] = []

        async def receive() -> None:
            got.append(await layer.receive("worker"))

        group.start_soon(receive)
        with anyio.fail_after(5):
            while not got:  # published until the receiver is subscribed
                await layer.send("worker", {"type": "job"})
                await anyio.sleep(0.01)
    assert got[0] == {"type": "job"}


async def test_wire_format_matches_channels_redis(
    make_layer: MakeLayer, redis_url: str, prefix: str
) -> None:
    key = "secret"
    layer = make_layer(symmetric_encryption_keys=[key])
    fernet = Fernet(base64.urlsafe_b64encode(hashlib.sha256(key.encode()).digest()))
    mine = await layer.new_channel()
    await layer.group_add("room1", mine)

    # What channels_redis would publish: Fernet(msgpack), no random prefix.
    async with coredis.Redis.from_url(redis_url) as redis:
        await redis.publish(mine, fernet.encrypt(msgpack.packb({"type": "up.direct"})))
        await redis.publish(
            f"{prefix}__group__room1", fernet.encrypt(msgpack.packb({"type": "up.group"}))
        )
    assert await layer.receive(mine) == {"type": "up.direct"}
    assert await layer.receive(mine) == {"type": "up.group"}

    # What we publish, as a channels_redis subscriber sees it.
    (host,) = parse_hosts([redis_url])
    listener = await connect(host)
    try:
        await listener.send([("SUBSCRIBE", "some-worker", f"{prefix}__group__g")])
        assert (await listener.read_reply())[0] == b"subscribe"
        assert (await listener.read_reply())[0] == b"subscribe"
        await layer.send("some-worker", {"type": "ours", "n": 1})
        await layer.group_send("g", {"type": "ours.group"})
        kind, channel, data = await listener.read_reply()
        assert (kind, channel) == (b"message", b"some-worker")
        assert msgpack.unpackb(fernet.decrypt(data)) == {"type": "ours", "n": 1}
        kind, channel, data = await listener.read_reply()
        assert channel == f"{prefix}__group__g".encode()
        assert msgpack.unpackb(fernet.decrypt(data)) == {"type": "ours.group"}
    finally:
        await listener.aclose()


@pytest.mark.parametrize("serializer_format", ["msgpack", "json"])
async def test_serializers_and_shards(
    make_layer: MakeLayer, redis_url: str, serializer_format: str
) -> None:
    hosts = [db_url(redis_url, db) for db in (1, 2, 3)]
    layer = make_layer(hosts=hosts, serializer_format=serializer_format)
    channels = [await layer.new_channel() for _ in range(6)]
    for channel in channels:
        await layer.group_add("g", channel)
        await layer.send(channel, {"type": "direct", "text": "héllo"})
    await layer.group_send("g", {"type": "fan"})
    for channel in channels:
        # A direct and a group message travel over different shards: either may be first.
        got = [await layer.receive(channel), await layer.receive(channel)]
        assert sorted(got, key=lambda message: message["type"]) == [
            {"type": "direct", "text": "héllo"},
            {"type": "fan"},
        ]


async def test_cancelled_receive_loses_nothing(make_layer: MakeLayer) -> None:
    layer = make_layer()
    channel = await layer.new_channel()
    count = 40
    got: list[int] = []

    async def impatient() -> None:
        step = 0
        while len(got) < count:
            step += 1
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as group:

                    async def cancel_soon(steps: int = step % 7) -> None:
                        for _ in range(steps):
                            await anyio.lowlevel.checkpoint()
                        scope.cancel()

                    group.start_soon(cancel_soon)
                    got.append((await layer.receive(channel))["n"])
                    scope.cancel()

    with anyio.fail_after(20):
        async with anyio.create_task_group() as group:
            group.start_soon(impatient)
            for n in range(count):
                await layer.send(channel, {"type": "m", "n": n})
                await anyio.sleep(0.001)
    assert got == list(range(count))


async def test_survives_a_redis_restart(private_redis: Any) -> None:
    layer = RedisPubSubChannelLayer(hosts=[private_redis.url])
    try:
        channel = await layer.new_channel()
        await layer.send(channel, {"type": "before"})
        assert await layer.receive(channel) == {"type": "before"}
        got: list[Any] = []

        async def receive() -> None:
            got.append(await layer.receive(channel))

        with anyio.fail_after(15):
            async with anyio.create_task_group() as group:
                group.start_soon(receive)
                await anyio.sleep(0.05)
                private_redis.stop()
                private_redis.start()
                while not got:  # lost until the layer has subscribed again
                    with contextlib.suppress(ConnectionError):
                        await layer.send(channel, {"type": "after"})
                    await anyio.sleep(0.02)
        assert got == [{"type": "after"}]
    finally:
        await layer.close()


async def test_a_flooded_receiver_takes_filed_messages_in_order_and_still_yields(
    make_layer: MakeLayer,
) -> None:
    layer = make_layer(capacity=0)
    channel = await layer.new_channel()
    assert await nothing_on(layer, channel)  # subscribed now
    for n in range(300):
        await layer.send(channel, {"type": "m", "n": n})
    await anyio.sleep(0.2)  # all delivered to our socket: the next read files them all
    received = [(await layer.receive(channel))["n"]]
    async with TurnCounter() as others:
        with anyio.fail_after(10):
            for _ in range(299):
                received.append((await layer.receive(channel))["n"])
        during = others.turns
    assert received == list(range(300))
    # Filed messages skip the checkpoint, but not more than 64 times in a row.
    assert 299 // 64 - 1 <= during <= 299 // 8


async def test_a_prefix_outside_the_name_rules_works_as_on_channels_redis(
    redis_url: str, prefix: str
) -> None:
    """channels_redis takes any prefix ("myapp:" is common); names this layer makes start
    with it, and must be usable. What follows the prefix is still held to the rules."""
    layer = RedisPubSubChannelLayer(hosts=[redis_url], prefix=f"{prefix}:")
    try:
        channel = await layer.new_channel()
        assert channel.startswith(f"{prefix}:specific.")
        await layer.send(channel, {"type": "hello"})
        with anyio.fail_after(5):
            assert await layer.receive(channel) == {"type": "hello"}
        with pytest.raises(TypeError, match="Channel name"):
            await layer.send(f"{prefix}:bad name", {"type": "hello"})
        with pytest.raises(TypeError, match="Channel name"):
            await layer.send("other:specific.x", {"type": "hello"})
    finally:
        await layer.flush()
        await layer.close()


async def test_the_sweep_spares_a_channel_whose_receive_is_reading(
    make_layer: MakeLayer,
) -> None:
    """A receive that holds the reader role is pending like a waiting one: the sweep of
    idle channels leaves its channel subscribed, however long ago it was last received on."""
    layer = make_layer(expiry=1)
    reading = await layer.new_channel()
    got: list[Message] = []

    async def receive() -> None:
        got.append(await layer.receive(reading))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(receive)  # the only receiver: it reads
            await anyio.sleep(1.5)  # longer than expiry: its channel looks idle
            other = await layer.new_channel()
            await layer.send(other, {"type": "other"})
            # This receive waits while the first reads, and sweeps as it returns.
            assert await layer.receive(other) == {"type": "other"}
            await layer.send(reading, {"type": "still.subscribed"})
    assert got == [{"type": "still.subscribed"}]


def test_event_loops_in_threads_each_get_their_own_state(redis_url: str, prefix: str) -> None:
    """The loop found last is taken again only in the thread it runs in: loops running at
    once in other threads (as async_to_sync's do) each keep their own connections and
    receivers."""
    layer = RedisPubSubChannelLayer(hosts=[redis_url], prefix=prefix)
    errors: list[BaseException] = []
    start = threading.Barrier(3)

    def run(backend: str) -> None:
        async def main() -> None:
            channel = await layer.new_channel()
            start.wait(5)
            for n in range(100):
                await layer.send(channel, {"type": "m", "n": n})
                with anyio.fail_after(5):
                    assert (await layer.receive(channel))["n"] == n
            await layer.close()

        try:
            anyio.run(main, backend=backend)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(b,)) for b in ("asyncio", "asyncio", "trio")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert layer._loops._states == {}


def test_asyncio_loops_still_say_which_thread_runs_them() -> None:
    """What the per-loop lookup's shortcut relies on (``BaseEventLoop._thread_id``): if a
    Python upgrade moves it, receives still work, but each pays for a full lookup."""

    async def runs_here() -> bool:
        loop = asyncio.get_running_loop()
        return bool(loop._thread_id == threading.get_ident())  # type: ignore[attr-defined]

    assert asyncio.run(runs_here())
