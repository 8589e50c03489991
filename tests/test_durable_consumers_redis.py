"""The durable-groups consumers of tests/test_durable_consumers.py on the Redis layers.

End to end on a real Redis, core and pub/sub layers (and on a real Redis Cluster, the
cluster layer): a reconnect replays what was missed,
once and in order, while messages keep coming; presence entries live with their consumer
and are announced to the group.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from django.conf import settings
from django.test import override_settings

from channels.layers import channel_layers, get_channel_layer
from tests.test_durable_consumers import (
    PresentConsumer,
    RoomConsumer,
    _connect,  # pyright: ignore[reportPrivateUsage]
    _present_users,  # pyright: ignore[reportPrivateUsage]
    _send_texts,  # pyright: ignore[reportPrivateUsage]
)

BACKENDS = {
    "core": "channels.layers.redis.RedisChannelLayer",
    "pubsub": "channels.layers.redis.RedisPubSubChannelLayer",
    "cluster": "channels.layers.redis.RedisClusterChannelLayer",
}


@pytest.fixture(params=["core", "pubsub", "cluster"])
def redis_layers(request: pytest.FixtureRequest, redis_url: str, prefix: str) -> Iterator[None]:
    if request.param == "cluster":
        hosts: list[str] = request.getfixturevalue("redis_cluster_urls")
    else:
        hosts = [redis_url]
    settings = {
        "default": {
            "BACKEND": BACKENDS[request.param],
            "CONFIG": {
                "hosts": hosts,
                "prefix": prefix,
                "capacity": 1000,
                "group_history": {"room_*": {"size": 500, "ttl": 600}},
                "presence_events": ["room_*"],
            },
        }
    }
    with override_settings(CHANNEL_LAYERS=settings):
        yield


@pytest.fixture
async def flushed(redis_layers: None) -> Any:
    yield
    layer = get_channel_layer()
    assert layer is not None
    await layer.flush()
    await layer.close()
    channel_layers.backends = {}


async def test_reconnect_replays_what_was_missed_once_in_order(flushed: None) -> None:
    first = await _connect(RoomConsumer)
    assert (await first.receive_json_from())["position"]["offset"] == 0
    await _send_texts(["a", "b"])
    seen = [await first.receive_json_from() for _ in range(2)]
    last = seen[-1]["position"]
    await first.disconnect()

    await _send_texts(["c", "d", "e"])
    second = await _connect(RoomConsumer, f"{last['epoch']}:{last['offset']}")
    hello = await second.receive_json_from()
    assert hello["recovered"]
    assert hello["replayed"] == 3
    await _send_texts(["f"])
    got = [await second.receive_json_from() for _ in range(4)]
    assert [m["text"] for m in got] == ["c", "d", "e", "f"]
    assert [m["position"]["offset"] for m in got] == [3, 4, 5, 6]
    assert await second.receive_nothing()
    await second.disconnect()


async def test_no_gap_and_no_duplicate_while_others_keep_sending(flushed: None) -> None:
    first = await _connect(RoomConsumer)
    await first.receive_json_from()
    await _send_texts(["start"])
    position = (await first.receive_json_from())["position"]
    await first.disconnect()
    sent: list[str] = []

    async def keep_sending() -> None:
        for number in range(100):
            sent.append(f"m{number}")
            await _send_texts([f"m{number}"])
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as group:
        group.start_soon(keep_sending)
        await anyio.sleep(0.01)
        second = await _connect(RoomConsumer, f"{position['epoch']}:{position['offset']}")
        assert (await second.receive_json_from())["recovered"]
    got: list[str] = []
    while len(got) < len(sent):
        got.append((await second.receive_json_from())["text"])
    assert got == sent
    assert await second.receive_nothing()
    await second.disconnect()


async def test_presence_lives_with_the_consumer_and_is_announced(flushed: None) -> None:
    layer = get_channel_layer()
    assert layer is not None
    alice = await _connect(PresentConsumer, "alice")
    bob = await _connect(PresentConsumer, "bob")
    await alice.send_json_to({})
    assert _present_users((await alice.receive_json_from())["present"]) == ["alice", "bob"]
    await bob.disconnect()
    assert _present_users(await layer.presence("room_1")) == ["alice"]  # type: ignore[attr-defined]
    await alice.disconnect()
    assert await layer.presence("room_1") == {}  # type: ignore[attr-defined]
    # Every join and leave went to the group, and so into its history.
    history = await layer.group_history("room_1")  # type: ignore[attr-defined]
    events = [(m["type"], m["info"]["user"]) for m in history.messages]
    assert sorted(events) == sorted(
        [
            ("presence.join", "alice"),
            ("presence.join", "bob"),
            ("presence.leave", "bob"),
            ("presence.leave", "alice"),
        ]
    )


async def test_concurrent_senders_reach_handlers_in_offset_order(
    flushed: None, redis_url: str, prefix: str
) -> None:
    """Four layer instances (as four processes) send to the room at once: their
    deliveries interleave out of offset order, the consumer hands them on in order."""
    layer = get_channel_layer()
    assert layer is not None
    communicator = await _connect(RoomConsumer)
    await communicator.receive_json_from()
    config = {
        "hosts": settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"],  # this layer's
        "prefix": prefix,
        "group_history": {"room_*": {"size": 500, "ttl": 600}},
    }
    senders = [type(layer)(**config) for _ in range(4)]  # type: ignore[arg-type]

    async def send(sender: Any, name: int) -> None:
        for number in range(25):
            await sender.group_send("room_1", {"type": "chat.message", "text": f"{name}.{number}"})

    try:
        async with anyio.create_task_group() as group:
            for name, sender in enumerate(senders):
                group.start_soon(send, sender, name)
        got = [await communicator.receive_json_from(timeout=5) for _ in range(100)]
    finally:
        for sender in senders:
            await sender.close()
    assert [m["position"]["offset"] for m in got] == list(range(1, 101))
    for name in range(4):  # each sender's own messages in its order
        assert [m["text"] for m in got if m["text"].startswith(f"{name}.")] == [
            f"{name}.{number}" for number in range(25)
        ]
    assert await communicator.receive_nothing()
    await communicator.disconnect()
