"""Our three layers against the conformance kit (``channels.testing.layers``), on asyncio
and trio: the same suite a third-party layer runs."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from channels.layers import InMemoryChannelLayer
from channels.layers.redis import RedisChannelLayer, RedisPubSubChannelLayer
from channels.testing.layers import ChannelLayerConformance
from channels.types import ChannelLayer


class RedisUrl:
    """The suite's Redis (``redis_url``: ``CHANNELS_TEST_REDIS_URL`` or a private server);
    each layer gets a fresh key prefix, so tests never see each other's keys."""

    url = ""

    @pytest.fixture(autouse=True)
    def _redis(self, redis_url: str) -> None:
        self.url = redis_url

    def prefix(self) -> str:
        return f"kit{uuid.uuid4().hex[:10]}."


class TestInMemoryLayer(ChannelLayerConformance):
    expected_extensions = InMemoryChannelLayer.extensions
    # Fractions of a second on a monotonic clock: the expiry tests need not wait long.
    short_expiry = 0.3
    expiry_margin = 0.3

    async def make_layer(self, **config: Any) -> ChannelLayer:
        return InMemoryChannelLayer(**config)


class TestRedisLayer(RedisUrl, ChannelLayerConformance):
    # Tests for what the class lists, no more: no skips, and history and presence tests
    # are generated as soon as the layer lists them.
    expected_extensions = RedisChannelLayer.extensions
    # Scores are whole seconds: an expired message can live up to a second longer.
    expiry_margin = 1.5

    async def make_layer(self, **config: Any) -> ChannelLayer:
        return RedisChannelLayer(hosts=[self.url], prefix=self.prefix(), **config)


class TestRedisPubSubLayer(RedisUrl, ChannelLayerConformance):
    expected_extensions = RedisPubSubChannelLayer.extensions
    lacks = {
        "channel_full": "pub/sub stores nothing in Redis: `capacity` bounds a process's "
        "local buffer, which drops its oldest message instead of refusing a send",
        "message_expiry": "a published message is read when a receive asks for it, so it "
        "cannot be older than `expiry` then",
        "group_expiry": "memberships live in the subscribing process, for as long as it runs",
        "stored_messages": "a message published while no process subscribes to its channel "
        "is gone; channels are subscribed by new_channel() or a receive, and forgotten by "
        "flush()",
    }

    async def make_layer(self, **config: Any) -> ChannelLayer:
        return RedisPubSubChannelLayer(hosts=[self.url], prefix=self.prefix(), **config)
