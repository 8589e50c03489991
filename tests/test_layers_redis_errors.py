"""Where channels_redis (and upstream's base layer) fail an ``assert``, our errors are
also :exc:`AssertionError`s, besides the clear ``TypeError``/``ValueError`` they were."""

from __future__ import annotations

from typing import Any

import pytest

from channels.layers import InMemoryChannelLayer
from channels.layers.base import InvalidMessageError, ReservedKeyError
from channels.layers.redis import (
    ForeignChannelError,
    InvalidPrefixError,
    RedisChannelLayer,
    RedisPubSubChannelLayer,
)


async def test_receiving_another_layers_process_local_channel(redis_url: str, prefix: str) -> None:
    ours = RedisChannelLayer(hosts=[redis_url], prefix=prefix)
    theirs = RedisChannelLayer(hosts=[redis_url], prefix=prefix)
    try:
        channel = await theirs.new_channel()
        for expected in (ValueError, AssertionError, ForeignChannelError):
            with pytest.raises(expected, match="not made by this layer's new_channel"):
                await ours.receive(channel)
        # Nothing was lost: the channel's own layer still gets what is sent to it.
        await ours.send(channel, {"type": "for.theirs"})
        assert await theirs.receive(channel) == {"type": "for.theirs"}
    finally:
        await ours.flush()
        await ours.close()
        await theirs.close()


@pytest.mark.parametrize("make", [RedisChannelLayer, RedisPubSubChannelLayer])
def test_prefix_must_be_a_str(make: Any) -> None:
    for expected in (TypeError, AssertionError, InvalidPrefixError):
        with pytest.raises(expected, match="prefix must be a str, got bytes"):
            make(prefix=b"asgi")


@pytest.mark.parametrize("kind", ["inmemory", "redis"])
async def test_bad_messages(kind: str, redis_url: str, prefix: str) -> None:
    layer: Any = (
        InMemoryChannelLayer()
        if kind == "inmemory"
        else RedisChannelLayer(hosts=[redis_url], prefix=prefix)
    )
    try:
        for send in (layer.send, layer.group_send):
            for expected in (TypeError, AssertionError, InvalidMessageError):
                with pytest.raises(expected, match="must be dicts, got list"):
                    await send("name", ["not", "a", "dict"])
            for expected in (ValueError, AssertionError, ReservedKeyError):
                with pytest.raises(expected, match="reserved key '__asgi_channel__'"):
                    await send("name", {"type": "x", "__asgi_channel__": "y"})
    finally:
        await layer.flush()
        await layer.close()
