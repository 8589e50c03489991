"""Drops are visible: every layer counts what full channels cost, and says so in its log."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest

from channels.layers import BaseChannelLayer, InMemoryChannelLayer
from channels.layers.base import LayerStats
from channels.layers.redis import RedisChannelLayer, RedisPubSubChannelLayer

MakeLayer = Callable[..., BaseChannelLayer]


@pytest.fixture(params=["inmemory", "redis"])
async def make_layer(
    request: pytest.FixtureRequest, redis_url: str, prefix: str
) -> AsyncIterator[MakeLayer]:
    layers: list[BaseChannelLayer] = []

    def make(**config: Any) -> BaseChannelLayer:
        layer: BaseChannelLayer
        if request.param == "inmemory":
            layer = InMemoryChannelLayer(**config)
        else:
            layer = RedisChannelLayer(hosts=[redis_url], prefix=prefix, **config)
        layers.append(layer)
        return layer

    yield make
    for layer in layers:
        await layer.flush()
        await layer.close()


async def test_group_send_skips_are_counted_logged_and_warned_once(
    make_layer: MakeLayer, caplog: pytest.LogCaptureFixture
) -> None:
    layer = make_layer(capacity=1)
    assert layer.stats() == LayerStats(dropped=0, group_send_skipped=0)
    # Normal channels: each is its own queue on every layer (process-local channels of a
    # Redis layer share one key, see the next test).
    slow, fast, worker = "slow-jobs", "fast-jobs", "worker-jobs"
    for channel in (slow, fast, worker):
        await layer.group_add("room", channel)
    await layer.send(worker, {"type": "fills.the.worker"})

    with caplog.at_level(logging.INFO):
        await layer.group_send("room", {"type": "one"})  # slow and fast get it; worker full
        assert await layer.receive(fast) == {"type": "one"}
        await layer.group_send("room", {"type": "two"})  # now slow is full too
        assert await layer.receive(fast) == {"type": "two"}
    assert layer.stats() == LayerStats(dropped=3, group_send_skipped=3)

    infos = [
        r for r in caplog.records if r.levelno == logging.INFO and "over capacity" in r.message
    ]
    assert [r.getMessage() for r in infos] == [
        "1 of 3 channels over capacity in group room",
        "2 of 3 channels over capacity in group room",
    ]
    assert infos[0].channels == [worker]  # type: ignore[attr-defined]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # once per group per interval
    assert "'room' skipped 1 full channel(s)" in warnings[0].getMessage()

    # Another group warns on its own; after the interval the first warns again, with the
    # count of what it skipped since.
    caplog.clear()
    await layer.group_add("other", worker)
    with caplog.at_level(logging.WARNING):
        await layer.group_send("other", {"type": "three"})
        await layer.group_send("room", {"type": "four"})
        layer.drop_warning_interval = 0
        await layer.group_send("room", {"type": "five"})
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 2
    assert "'other' skipped 1 full channel(s)" in warned[0]
    # two (slow, worker), four (the same), five (fast is full by now too)
    assert "'room' skipped 7 full channel(s)" in warned[1]
    assert layer.stats() == LayerStats(dropped=9, group_send_skipped=9)


async def test_redis_counts_each_member_sharing_a_full_key(redis_url: str, prefix: str) -> None:
    """The local channels of one process share one Redis key: a full key skips them all."""
    layer = RedisChannelLayer(hosts=[redis_url], prefix=prefix, capacity=1)
    try:
        members = [await layer.new_channel() for _ in range(3)]
        for channel in members:
            await layer.group_add("room", channel)
        await layer.group_send("room", {"type": "fits"})
        await layer.group_send("room", {"type": "full"})
        assert layer.stats() == LayerStats(dropped=3, group_send_skipped=3)
        for channel in members:
            assert await layer.receive(channel) == {"type": "fits"}
    finally:
        await layer.flush()
        await layer.close()


async def test_pubsub_counts_messages_pushed_out_of_a_full_local_buffer(
    redis_url: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    layer = RedisPubSubChannelLayer(hosts=[redis_url], prefix=prefix, capacity=2)
    try:
        idle, busy = await layer.new_channel(), await layer.new_channel()
        with caplog.at_level(logging.INFO, "channels.layers.redis"), anyio.fail_after(5):
            for n in range(5):
                await layer.send(idle, {"type": "to.idle", "n": n})
            await layer.send(busy, {"type": "to.busy"})
            # By the time busy's message is read, idle's five were filed: the oldest three
            # were dropped.
            assert await layer.receive(busy) == {"type": "to.busy"}
        assert layer.stats() == LayerStats(dropped=3, group_send_skipped=0)
        assert [(await layer.receive(idle))["n"] for _ in range(2)] == [3, 4]
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "Dropped 1 message(s) from full local channel buffers" in warnings[0].getMessage()
        infos = [r for r in caplog.records if "is full; dropped its oldest" in r.getMessage()]
        assert len(infos) == 3
    finally:
        await layer.close()


def test_third_party_layer_gets_the_counters_without_calling_init() -> None:
    class Layer(BaseChannelLayer):
        def __init__(self) -> None:  # does not call super().__init__()
            pass

    layer = Layer()
    layer.record_group_send_skips("g", ["a", "b"], 5)
    assert layer.stats() == LayerStats(dropped=2, group_send_skipped=2)
