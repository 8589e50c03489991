"""The Redis layers after Redis restarts, or drops a connection, with consumers idle."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import coredis
import pytest

from channels.layers.redis import RedisChannelLayer, RedisPubSubChannelLayer
from channels.types import Message

Layer = RedisChannelLayer | RedisPubSubChannelLayer
KINDS = {"core": RedisChannelLayer, "pubsub": RedisPubSubChannelLayer}


@pytest.mark.parametrize("kind", ["core", "pubsub"])
async def test_twenty_idle_members_get_group_messages_again_after_a_restart(
    private_redis: Any, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis without persistence forgets every group when it restarts; the consumers,
    doing nothing but waiting in receive(), are members again within seconds."""
    layer: Layer = KINDS[kind](hosts=[private_redis.url])
    # Another process's view: a layer of its own, with no members to put back.
    sender: Layer = KINDS[kind](hosts=[private_redis.url])
    channels = [await layer.new_channel() for _ in range(20)]
    for channel in channels:
        await layer.group_add("room", channel)
    got: dict[str, list[Message]] = {channel: [] for channel in channels}
    arrivals, arrived = anyio.create_memory_object_stream[str](100)

    async def consume(channel: str) -> None:
        while True:
            got[channel].append(await layer.receive(channel))
            await arrivals.send(channel)

    def everyone_got(kind_of_message: str) -> bool:
        return all(any(m["type"] == kind_of_message for m in got[c]) for c in channels)

    try:
        async with anyio.create_task_group() as consumers, arrivals, arrived:
            for channel in channels:
                consumers.start_soon(consume, channel)
            await sender.group_send("room", {"type": "before"})
            with anyio.fail_after(5):
                while not everyone_got("before"):
                    await arrived.receive()

            with caplog.at_level(logging.WARNING, "channels.layers.redis"):
                private_redis.stop()
                private_redis.start()
                started = anyio.current_time()
                sent = 0
                # The consumers do nothing; only the sender keeps sending.
                with anyio.fail_after(15):
                    while not everyone_got("after"):
                        await sender.group_send("room", {"type": "after", "n": sent})
                        sent += 1
                        with anyio.move_on_after(0.05):
                            while not everyone_got("after"):
                                await arrived.receive()
            recovered = anyio.current_time() - started
            print(f"{kind}: 20/20 members back {recovered:.2f} s after the restart")
            consumers.cancel_scope.cancel()
    finally:
        await layer.close()
        await sender.close()
    assert all(len([m for m in got[c] if m["type"] == "after"]) >= 1 for c in channels)
    if kind == "core":
        assert "re-added 20 group membership(s)" in caplog.text


async def test_core_layer_does_not_bring_back_a_discarded_membership(private_redis: Any) -> None:
    layer = RedisChannelLayer(hosts=[private_redis.url])
    sender = RedisChannelLayer(hosts=[private_redis.url])
    stays, leaves = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("room", stays)
    await layer.group_add("room", leaves)
    await layer.group_discard("room", leaves)
    try:
        async with anyio.create_task_group() as tasks:
            received: list[Message] = []

            async def consume() -> None:
                received.append(await layer.receive(stays))

            tasks.start_soon(consume)
            await anyio.sleep(0.1)
            private_redis.stop()
            private_redis.start()
            with anyio.fail_after(15):
                while not received:
                    await sender.group_send("room", {"type": "after"})
                    await anyio.sleep(0.05)
        async with coredis.Redis.from_url(private_redis.url) as redis:
            assert list(await redis.zrange("asgi:group:room", 0, -1)) == [stays.encode()]
    finally:
        await layer.close()
        await sender.close()


async def test_pubsub_dropped_connection_with_no_receive_pending(private_redis: Any) -> None:
    """The server drops the subscription connection (CLIENT KILL) and a group_send follows
    at once, before any receive() has started: the message still arrives."""
    layer = RedisPubSubChannelLayer(hosts=[private_redis.url])
    try:
        channel = await layer.new_channel()
        await layer.group_add("room", channel)
        await layer.send(channel, {"type": "warm.up"})
        assert await layer.receive(channel) == {"type": "warm.up"}
        for n in range(3):  # and again: each repair leaves a connection that can be killed
            async with coredis.Redis.from_url(private_redis.url) as redis:
                killed = await redis.client_kill(type_="pubsub")
            assert killed == 1
            await layer.group_send("room", {"type": "after.kill", "n": n})
            with anyio.fail_after(5):
                assert await layer.receive(channel) == {"type": "after.kill", "n": n}
    finally:
        await layer.close()


async def test_pubsub_other_process_sees_us_again_after_a_kill_once_we_call(
    private_redis: Any,
) -> None:
    """Any call of ours (here a send) repairs the subscriptions, so later publishes from
    other processes reach us even if no receive was pending when the connection died."""
    layer = RedisPubSubChannelLayer(hosts=[private_redis.url])
    other = RedisPubSubChannelLayer(hosts=[private_redis.url])
    try:
        channel = await layer.new_channel()
        await layer.group_add("room", channel)
        async with coredis.Redis.from_url(private_redis.url) as redis:
            await redis.client_kill(type_="pubsub")
        await layer.send("elsewhere", {"type": "unrelated"})
        await other.group_send("room", {"type": "from.other"})
        with anyio.fail_after(5):
            assert await layer.receive(channel) == {"type": "from.other"}
    finally:
        await layer.close()
        await other.close()
