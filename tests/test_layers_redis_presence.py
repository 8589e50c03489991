"""Presence on the Redis layers (core and pub/sub), on a real Redis, across processes.

Joins, refreshes and leaves with their events, entries that expire ``presence_timeout``
after their last refresh (a process killed with SIGKILL), removed by exactly one process,
which announces them; bad input; sync callers.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import anyio.to_thread
import coredis
import pytest
from asgiref.sync import async_to_sync

from channels.layers.redis import RedisChannelLayer, RedisPubSubChannelLayer
from channels.types import Message
from tests.test_layers_redis_processes import driver

Layer = RedisChannelLayer | RedisPubSubChannelLayer
KINDS: dict[str, type[Layer]] = {"core": RedisChannelLayer, "pubsub": RedisPubSubChannelLayer}
MakeLayer = Callable[..., Layer]


@pytest.fixture(params=["core", "pubsub"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
async def make_layer(kind: str, redis_url: str, prefix: str) -> AsyncIterator[MakeLayer]:
    made: list[Layer] = []

    def make(**config: Any) -> Layer:
        config.setdefault("hosts", [redis_url])
        config.setdefault("presence_events", ["room*"])
        layer = KINDS[kind](prefix=prefix, **config)
        made.append(layer)
        return layer

    yield make
    for layer in made:
        await layer.flush()
        await layer.close()


async def listen(layer: Layer, group: str) -> str:
    channel = await layer.new_channel()
    await layer.group_add(group, channel)
    return channel


async def nothing_more(layer: Layer, channel: str) -> list[Message]:
    """What else arrives on ``channel`` in a short while (normally: nothing)."""
    extra: list[Message] = []
    with anyio.move_on_after(0.2):
        while True:
            extra.append(await layer.receive(channel))
    return extra


def event(kind: str, group: str, channel: str, info: dict[str, Any]) -> Message:
    return {"type": f"presence.{kind}", "group": group, "channel": channel, "info": info}


async def test_join_refresh_change_and_leave(make_layer: MakeLayer) -> None:
    layer = make_layer()
    watcher = await listen(layer, "room")
    assert await layer.presence("room") == {}
    await layer.presence_join("room", "alice", {"name": "Alice"})
    assert await layer.receive(watcher) == event("join", "room", "alice", {"name": "Alice"})
    await layer.presence_join("room", "bob")
    assert await layer.receive(watcher) == event("join", "room", "bob", {})
    assert await layer.presence("room") == {"alice": {"name": "Alice"}, "bob": {}}
    # A refresh with the same info says nothing; a change is announced.
    await layer.presence_join("room", "alice", {"name": "Alice"})
    await layer.presence_join("room", "alice", {"name": "Alice", "device": "phone"})
    changed = {"name": "Alice", "device": "phone"}
    assert await layer.receive(watcher) == event("join", "room", "alice", changed)
    await layer.presence_leave("room", "alice")
    assert await layer.receive(watcher) == event("leave", "room", "alice", changed)
    await layer.presence_leave("room", "alice")  # absent: no error, no event
    assert await nothing_more(layer, watcher) == []
    assert await layer.presence("room") == {"bob": {}}


async def test_groups_without_presence_events_are_silent(make_layer: MakeLayer) -> None:
    layer = make_layer()
    watcher = await listen(layer, "quiet")
    await layer.presence_join("quiet", "alice", {"n": 1})
    assert await layer.presence("quiet") == {"alice": {"n": 1}}
    await layer.presence_leave("quiet", "alice")
    assert await nothing_more(layer, watcher) == []
    assert await layer.presence("quiet") == {}


async def test_presence_is_shared_by_our_processes(kind: str, redis_url: str, prefix: str) -> None:
    config: dict[str, Any] = {"hosts": [redis_url], "prefix": prefix}
    layer = KINDS[kind](**config)
    try:
        async with driver(sys.executable, "ours", kind, config) as other:
            await other.call("presence_join", "room", "there", {"where": "other"})
            await layer.presence_join("room", "here", {"where": "this"})
            both = {"there": {"where": "other"}, "here": {"where": "this"}}
            assert await other.call("presence", "room") == both
            assert await layer.presence("room") == both
            await other.call("presence_leave", "room", "there")
            assert await layer.presence("room") == {"here": {"where": "this"}}
    finally:
        await layer.flush()
        await layer.close()


async def test_a_killed_process_s_entries_expire_and_a_survivor_announces_them(
    kind: str, redis_url: str, prefix: str
) -> None:
    config: dict[str, Any] = {
        "hosts": [redis_url],
        "prefix": prefix,
        # Long enough that the entry is still there when looked at right after the join
        # on a loaded machine (the driver never refreshes it).
        "presence_timeout": 3,
        "presence_events": ["room"],
    }
    survivors = [KINDS[kind](**config), KINDS[kind](**config)]

    async def about_doomed() -> Message:
        while True:
            message = await survivors[0].receive(watcher)
            if message["channel"] == "doomed":
                return message

    async def heartbeat(layer: Layer) -> None:
        # A surviving consumer's heartbeat: it refreshes its own entry, and finds others'.
        while True:
            await layer.presence_join("room", "alive", {"n": 0})
            await anyio.sleep(0.1)

    try:
        watcher = await listen(survivors[0], "room")
        async with anyio.create_task_group() as heartbeats:
            for layer in survivors:
                heartbeats.start_soon(heartbeat, layer)
            async with driver(sys.executable, "ours", kind, config) as doomed:
                await doomed.call("presence_join", "room", "doomed", {"n": 1})
                assert await about_doomed() == event("join", "room", "doomed", {"n": 1})
                # Until it expires, the entry of a dead process looks like any other.
                assert "doomed" in await survivors[1].presence("room")
                doomed.process.kill()  # SIGKILL: no cleanup at all
                await doomed.process.wait()
                with anyio.fail_after(15):
                    # Polling Redis, as a page showing who is here would.
                    while "doomed" in await survivors[1].presence("room"):  # noqa: ASYNC110
                        await anyio.sleep(0.1)
            heartbeats.cancel_scope.cancel()
        assert await about_doomed() == event("leave", "room", "doomed", {"n": 1})
        extra = await nothing_more(survivors[0], watcher)
        assert [m for m in extra if m["channel"] == "doomed"] == []  # announced once
        assert await survivors[1].presence("room") == {"alive": {"n": 0}}
    finally:
        await survivors[0].flush()
        for layer in survivors:
            await layer.close()


async def test_an_expired_entry_is_removed_by_whoever_finds_it(make_layer: MakeLayer) -> None:
    layer = make_layer(presence_timeout=1)
    watcher = await listen(layer, "room")
    await layer.presence_join("room", "brief", {"n": 1})
    await layer.receive(watcher)
    await anyio.sleep(1.1)
    # The join of someone else finds it expired: leave first, then the new join.
    await layer.presence_join("room", "next")
    assert await layer.receive(watcher) == event("leave", "room", "brief", {"n": 1})
    assert await layer.receive(watcher) == event("join", "room", "next", {})
    assert await layer.presence("room") == {"next": {}}
    await anyio.sleep(1.1)
    # Its own leave finds it expired too: announced once, as expired.
    await layer.presence_leave("room", "next")
    assert await layer.receive(watcher) == event("leave", "room", "next", {})
    assert await nothing_more(layer, watcher) == []


async def test_keys_expire_and_flush_removes_them(
    make_layer: MakeLayer, redis_url: str, prefix: str
) -> None:
    layer = make_layer(presence_timeout=5)
    await layer.presence_join("room", "alice")
    async with coredis.Redis.from_url(redis_url) as redis:
        keys = [key async for key in redis.scan_iter(match=f"{prefix}*presence*")]
        assert len(keys) == 2
        for key in keys:
            assert 0 < await redis.pttl(key) <= 10_000  # twice the timeout
    await layer.flush()
    async with coredis.Redis.from_url(redis_url) as redis:
        assert [key async for key in redis.scan_iter(match=f"{prefix}*")] == []
    assert await layer.presence("room") == {}


async def test_bad_input_is_refused_and_changes_nothing(make_layer: MakeLayer) -> None:
    layer = make_layer()
    await layer.presence_join("room", "alice", {"n": 1})
    refused: list[tuple[Any, ...]] = [
        ("bad group", "alice", None),
        ("room", "bad channel", None),
        ("room", 7, None),
        ("room", "alice", ["not", "a", "dict"]),
        ("room", "alice", {"when": object()}),
    ]
    for group, channel, info in refused:
        with pytest.raises(TypeError):
            await layer.presence_join(group, channel, info)
    with pytest.raises(TypeError):
        await layer.presence_leave("room", "bad channel")
    with pytest.raises(TypeError):
        await layer.presence("bad group")
    assert await layer.presence("room") == {"alice": {"n": 1}}


async def test_sync_code_uses_presence_through_async_to_sync(make_layer: MakeLayer) -> None:
    layer = make_layer()

    def script() -> dict[str, Any]:
        async_to_sync(layer.presence_join)("room", "script", {"from": "sync"})
        present = async_to_sync(layer.presence)("room")
        async_to_sync(layer.close)()
        return present

    assert await anyio.to_thread.run_sync(script) == {"script": {"from": "sync"}}
    assert await layer.presence("room") == {"script": {"from": "sync"}}
