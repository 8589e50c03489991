"""A third-party layer's conformance tests, as its author writes them: what
``channels.testing.layers`` gives a type checker."""

from __future__ import annotations

from typing import Any

from channels.layers.redis import RedisPubSubChannelLayer
from channels.testing.layers import CONFIG_KEYS, FEATURES, ChannelLayerConformance
from channels.types import ChannelLayer, Message


class TestMyLayer(ChannelLayerConformance):
    lacks = {"channel_full": "a broadcast layer stores nothing to be full"}
    anyio_backends = ("asyncio",)
    receive_timeout = 2.0

    async def make_layer(self, **config: Any) -> ChannelLayer:
        return RedisPubSubChannelLayer(**config)

    async def test_my_own_rule(self) -> None:
        async with self.open_layer("groups", capacity=5) as layer:
            channel = await layer.new_channel()
            await layer.send(channel, {"type": "mine"})
            message: Message = await self.receive(layer, channel)
            assert message == {"type": "mine"}
            await self.assert_nothing_queued(layer, channel)
            assert self.named_channel("x") != self.group_name("x")


features: list[str] = list(FEATURES)
keys: tuple[str, ...] = CONFIG_KEYS
