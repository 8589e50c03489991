"""Channel layers as projects use them: from consumers' code, views, scripts and tests."""

from __future__ import annotations

from typing import Any, assert_type

from channels.concurrency import async_to_sync
from channels.layers import (
    BaseChannelLayer,
    ChannelLayerManager,
    InMemoryChannelLayer,
    channel_layers,
    get_channel_layer,
)
from channels.layers.redis import (
    RedisChannelLayer,
    RedisClusterChannelLayer,
    RedisPubSubChannelLayer,
)
from channels.types import ChannelLayer, Message


async def send_from_anywhere() -> None:
    layer = get_channel_layer()
    assert_type(layer, ChannelLayer | None)
    # The alias may not be configured: code outside consumers must say what then.
    await layer.group_send("chat", {"type": "chat.message"})  # type: ignore[union-attr]
    if layer is None:
        return
    channel = await layer.new_channel()
    assert_type(channel, str)
    await layer.send(channel, {"type": "hello", "text": "hi"})
    message = await layer.receive(channel)
    assert_type(message, Message)
    assert_type(message["text"], Any)
    await layer.group_add("chat", channel)
    await layer.group_send("chat", {"type": "chat.message"})
    await layer.group_discard("chat", channel)
    await layer.flush()
    await layer.close()
    assert_type(get_channel_layer("other"), ChannelLayer | None)
    await layer.send(channel, "not a dict")  # type: ignore[arg-type]


def send_from_a_view() -> None:
    layer = get_channel_layer()
    assert layer is not None
    async_to_sync(layer.group_send)("chat", {"type": "chat.message"})
    assert_type(async_to_sync(layer.receive)("specific.x!y"), Message)
    async_to_sync(layer.send)("channel")  # type: ignore[call-arg]


def every_layer_is_a_channel_layer() -> list[ChannelLayer]:
    in_memory = InMemoryChannelLayer(expiry=30, capacity=10, channel_capacity={"http.*": 5})
    redis = RedisChannelLayer(
        hosts=[("127.0.0.1", 6379)],
        prefix="asgi",
        symmetric_encryption_keys=["secret"],
        channel_capacity={"websocket.send!*": 20},
    )
    pubsub = RedisPubSubChannelLayer(hosts=["redis://127.0.0.1:6379/0"])
    cluster = RedisClusterChannelLayer(
        hosts=["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"], partitions=32
    )
    assert_type(cluster.partitions, int)
    assert_type(in_memory.extensions, list[str])
    assert_type(redis.get_capacity("websocket.send!abc"), int)
    assert_type(pubsub.require_valid_group_name("chat"), bool)
    return [in_memory, redis, pubsub, cluster, BaseChannelLayer()]


async def the_manager(layer: InMemoryChannelLayer) -> None:
    assert_type(channel_layers, ChannelLayerManager)
    assert_type(channel_layers["default"], ChannelLayer)
    assert_type(channel_layers.set("default", layer), ChannelLayer | None)
    assert_type(channel_layers.make_test_backend("default"), ChannelLayer)
    assert_type("default" in channel_layers, bool)
    await channel_layers.close_all()
    channel_layers.set("default", object())  # type: ignore[arg-type]
