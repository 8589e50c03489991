"""Group history on the Redis layers (core and pub/sub), on a real Redis.

Offsets and epochs, trimming by size and age, recovery that is whole or refused, joining
while others send, a Redis that restarts empty, encryption, a mixed fleet with
channels_redis, and sync callers.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import coredis
import pytest
from asgiref.sync import async_to_sync

from channels.layers import GroupHistory, StreamPosition
from channels.layers.redis import RedisChannelLayer, RedisPubSubChannelLayer
from channels.types import Message
from tests.redis_server import db_url
from tests.test_layers_redis_processes import driver, upstream_python  # noqa: F401

Layer = RedisChannelLayer | RedisPubSubChannelLayer
KINDS: dict[str, type[Layer]] = {"core": RedisChannelLayer, "pubsub": RedisPubSubChannelLayer}
MakeLayer = Callable[..., Layer]
HISTORY = {"chat*": {"size": 5, "ttl": 60}}


@pytest.fixture(params=["core", "pubsub"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
async def make_layer(kind: str, redis_url: str, prefix: str) -> AsyncIterator[MakeLayer]:
    made: list[Layer] = []

    def make(**config: Any) -> Layer:
        config.setdefault("hosts", [redis_url])
        config.setdefault("group_history", HISTORY)
        layer = KINDS[kind](prefix=prefix, **config)
        made.append(layer)
        return layer

    yield make
    for layer in made:
        await layer.flush()
        await layer.close()


def offsets(messages: list[Message]) -> list[int]:
    return [message["__position__"]["offset"] for message in messages]


async def keys_of(url: str, pattern: str) -> list[bytes]:
    async with coredis.Redis.from_url(url) as redis:
        return sorted([key async for key in redis.scan_iter(match=pattern)])


# -- offsets and epochs ---------------------------------------------------------------------


async def test_members_get_positions_and_the_stream_keeps_the_messages(
    make_layer: MakeLayer,
) -> None:
    layer = make_layer()
    channel = await layer.new_channel()
    await layer.group_add("chat", channel)
    empty = await layer.group_history("chat")
    assert empty.position is not None
    assert empty.position.offset == 0
    assert empty.messages == []
    assert empty.recovered is False
    sent = {"type": "chat.message", "text": "hi"}
    await layer.group_send("chat", sent)
    await layer.group_send("chat", {"type": "chat.message", "text": "again"})
    assert sent == {"type": "chat.message", "text": "hi"}  # the caller's dict is untouched
    first, second = await layer.receive(channel), await layer.receive(channel)
    epoch = empty.position.epoch  # the epoch a read made is the one the sends use
    assert first == {**sent, "__position__": {"epoch": epoch, "offset": 1}}
    assert second["__position__"] == {"epoch": epoch, "offset": 2}
    history = await layer.group_history("chat")
    assert history == GroupHistory(StreamPosition(epoch, 2), [first, second], False)
    history.messages[0]["text"] = "changed"  # each read is a fresh copy
    assert (await layer.group_history("chat")).messages[0]["text"] == "hi"


async def test_a_forwarded_position_is_replaced(make_layer: MakeLayer) -> None:
    layer = make_layer()
    channel = await layer.new_channel()
    await layer.group_add("chat", channel)
    await layer.group_send("chat", {"type": "m", "__position__": {"epoch": "x", "offset": 99}})
    got = await layer.receive(channel)
    assert got["__position__"]["offset"] == 1
    assert got["__position__"]["epoch"] != "x"
    (stored,) = (await layer.group_history("chat")).messages
    assert stored == got


async def test_groups_without_history_are_untouched(
    make_layer: MakeLayer, redis_url: str, prefix: str
) -> None:
    layer = make_layer()
    channel = await layer.new_channel()
    await layer.group_add("plain", channel)
    await layer.group_send("plain", {"type": "m"})
    assert await layer.receive(channel) == {"type": "m"}
    assert await layer.group_history("plain") == GroupHistory(None, [], False)
    assert await keys_of(redis_url, f"{prefix}*history*") == []


async def test_a_second_process_continues_the_same_stream(make_layer: MakeLayer) -> None:
    one, two = make_layer(), make_layer()
    await one.group_send("chat", {"type": "a"})
    await two.group_send("chat", {"type": "b"})
    history = await one.group_history("chat")
    assert [m["type"] for m in history.messages] == ["a", "b"]
    assert offsets(history.messages) == [1, 2]
    assert history == await two.group_history("chat")


async def test_flush_starts_new_epochs(make_layer: MakeLayer, redis_url: str, prefix: str) -> None:
    layer = make_layer()
    await layer.group_send("chat", {"type": "a"})
    before = await layer.group_history("chat")
    await layer.flush()
    assert await keys_of(redis_url, f"{prefix}*") == []
    after = await layer.group_history("chat")
    assert after.position is not None
    assert before.position is not None
    assert after.position.offset == 0
    assert after.position.epoch != before.position.epoch
    assert (await layer.group_history("chat", after=before.position)).recovered is False


# -- trimming and recovery --------------------------------------------------------------------


async def test_the_stream_keeps_the_newest_size_messages(make_layer: MakeLayer) -> None:
    layer = make_layer()
    for n in range(8):
        await layer.group_send("chat", {"type": "m", "n": n})
    history = await layer.group_history("chat")
    assert offsets(history.messages) == [4, 5, 6, 7, 8]
    assert [m["n"] for m in history.messages] == [3, 4, 5, 6, 7]
    assert offsets((await layer.group_history("chat", limit=2)).messages) == [7, 8]
    assert (await layer.group_history("chat", limit=0)).messages == []
    top = history.position
    assert top is not None
    at = top._replace
    # Everything after offset 3 is retained: recovered, in order.
    recovered = await layer.group_history("chat", after=at(offset=3))
    assert recovered.recovered
    assert offsets(recovered.messages) == [4, 5, 6, 7, 8]
    # Offset 3 itself was dropped: after 2 is refused whole, never replayed in part.
    assert await layer.group_history("chat", after=at(offset=2)) == GroupHistory(top, [], False)
    assert await layer.group_history("chat", after=at(offset=8)) == GroupHistory(top, [], True)
    assert await layer.group_history("chat", after=at(offset=9)) == GroupHistory(top, [], False)
    assert await layer.group_history("chat", after=at(epoch="other")) == GroupHistory(
        top, [], False
    )
    # More to replay than the limit: refused, not cut.
    assert await layer.group_history("chat", after=at(offset=5), limit=2) == GroupHistory(
        top, [], False
    )
    limited = await layer.group_history("chat", after=at(offset=5), limit=3)
    assert limited.recovered
    assert offsets(limited.messages) == [6, 7, 8]
    # A client's dict works as a position.
    as_dict = await layer.group_history("chat", after={"epoch": top.epoch, "offset": 6})
    assert offsets(as_dict.messages) == [7, 8]


async def test_messages_older_than_the_ttl_are_dropped(
    make_layer: MakeLayer, redis_url: str, prefix: str
) -> None:
    layer = make_layer(group_history={"chat*": {"size": 100, "ttl": 0.5}})
    await layer.group_send("chat", {"type": "old"})
    first = await layer.group_history("chat")
    assert first.position is not None
    await anyio.sleep(0.3)
    await layer.group_send("chat", {"type": "new"})
    await anyio.sleep(0.3)
    # "old" is past its ttl (excluded on read, though no append has trimmed it yet).
    history = await layer.group_history("chat")
    assert [m["type"] for m in history.messages] == ["new"]
    start = first.position._replace(offset=0)
    assert (await layer.group_history("chat", after=start)).recovered is False
    assert (await layer.group_history("chat", after=first.position)).recovered is True
    # Idle past the ttl, the stream and its epoch are gone: a new epoch, old positions refused.
    await anyio.sleep(0.6)
    assert await keys_of(redis_url, f"{prefix}*history*") == []
    later = await layer.group_history("chat")
    assert later.position is not None
    assert later.position.epoch != first.position.epoch
    assert (await layer.group_history("chat", after=first.position)).recovered is False


async def test_keys_live_on_the_group_s_shard_and_expire(
    kind: str, redis_url: str, prefix: str
) -> None:
    urls = [db_url(redis_url, 8), db_url(redis_url, 9)]
    layer = KINDS[kind](hosts=urls, prefix=prefix, group_history={"*": {"size": 5, "ttl": 30}})
    try:
        for group in ("room1", "room2", "room3", "room4"):
            await layer.group_send(group, {"type": "m"})
            home = layer._durable_keys(group).shard  # pyright: ignore[reportPrivateUsage]
            if kind == "core":
                assert home == layer.consistent_hash(group)  # type: ignore[union-attr]
            async with coredis.Redis.from_url(urls[home]) as redis:
                keys = [key async for key in redis.scan_iter(match=f"{prefix}*{group}")]
                assert len(keys) == 2
                for key in keys:
                    assert 0 < await redis.pttl(key) <= 30_000
            async with coredis.Redis.from_url(urls[1 - home]) as redis:
                assert [key async for key in redis.scan_iter(match=f"{prefix}*{group}")] == []
            history = await layer.group_history(group)
            assert offsets(history.messages) == [1]
    finally:
        await layer.flush()
        await layer.close()


# -- joining while others send -----------------------------------------------------------------


async def test_joining_while_others_send_leaves_no_gap(make_layer: MakeLayer) -> None:
    """A joiner does group_add then group_history(after): every message after its old
    position is in the history it read or arrives live; live copies of what it read have
    offsets <= the top it read."""
    senders = [make_layer(group_history={"chat*": {"size": 10_000, "ttl": 60}}) for _ in range(3)]
    joiner = make_layer(group_history={"chat*": {"size": 10_000, "ttl": 60}})
    start = (await joiner.group_history("chat")).position
    assert start is not None
    channel = await joiner.new_channel()
    stop = anyio.Event()
    sent = [0]
    reached = {30: anyio.Event(), 60: anyio.Event()}

    async def send(layer: Layer) -> None:
        while not stop.is_set():
            await layer.group_send("chat", {"type": "m"})
            sent[0] += 1
            if sent[0] in reached:
                reached[sent[0]].set()
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as group:
        for layer in senders:
            group.start_soon(send, layer)
        await reached[30].wait()
        await joiner.group_add("chat", channel)
        read = await joiner.group_history("chat", after=start)
        await reached[60].wait()
        stop.set()
    assert read.recovered
    assert read.position is not None
    final = (await joiner.group_history("chat")).position
    assert final is not None
    assert final.offset == sent[0]
    # Concurrent senders' deliveries may arrive out of offset order: wait for them all.
    live: list[int] = []
    expected = set(range(1, final.offset + 1))
    with anyio.move_on_after(5):
        while set(offsets(read.messages)) | set(live) != expected:
            live.append((await joiner.receive(channel))["__position__"]["offset"])
    assert set(offsets(read.messages)) | set(live) == expected
    assert offsets(read.messages) == list(range(1, read.position.offset + 1))
    duplicates = set(live) & set(offsets(read.messages))
    assert all(offset <= read.position.offset for offset in duplicates)
    assert len(live) == len(set(live))


# -- Redis losing its data ----------------------------------------------------------------------


@pytest.mark.parametrize("persist", [False, True], ids=["empty", "persisted"])
async def test_a_restart_without_data_changes_the_epoch(
    kind: str, private_redis: Any, prefix: str, persist: bool
) -> None:
    layer = KINDS[kind](hosts=[private_redis.url], prefix=prefix, group_history=HISTORY)
    try:
        for n in range(3):
            await layer.group_send("chat", {"type": "m", "n": n})
        before = await layer.group_history("chat")
        assert before.position is not None
        seen = before.position._replace(offset=1)
        private_redis.restart(persist=persist)
        await layer.group_send("chat", {"type": "m", "n": 3})
        after = await layer.group_history("chat", after=seen)
        assert after.position is not None
        if persist:
            assert after.recovered
            assert [m["n"] for m in after.messages] == [1, 2, 3]
            assert after.position == before.position._replace(offset=4)
        else:
            # Never the new stream's messages under the old numbering.
            assert after == GroupHistory(after.position, [], False)
            assert after.position.epoch != before.position.epoch
            assert after.position.offset == 1
    finally:
        await layer.flush()
        await layer.close()


# -- serialization and encryption ----------------------------------------------------------------


@pytest.mark.parametrize("serializer_format", ["msgpack", "json"])
async def test_stored_entries_are_encrypted(
    make_layer: MakeLayer, redis_url: str, prefix: str, serializer_format: str
) -> None:
    keys = ["secret-one"]
    layer = make_layer(symmetric_encryption_keys=keys, serializer_format=serializer_format)
    await layer.group_send("chat", {"type": "m", "text": "plaintext-marker"})
    async with coredis.Redis.from_url(redis_url) as redis:
        (stream,) = [key async for key in redis.scan_iter(match=f"{prefix}*history:chat")]
        (entry,) = await redis.xrange(stream)
    assert all(b"plaintext-marker" not in value for value in entry.field_values.values())
    (message,) = (await layer.group_history("chat")).messages
    assert message["text"] == "plaintext-marker"
    # A layer with another key cannot read them: recovery refuses rather than skip one.
    stranger = make_layer(symmetric_encryption_keys=["other"], serializer_format=serializer_format)
    history = await stranger.group_history("chat")
    assert history.messages == []
    assert history.position is not None
    start = history.position._replace(offset=0)
    assert (await stranger.group_history("chat", after=start)).recovered is False
    assert (await layer.group_history("chat", after=start)).recovered is True


async def test_history_deliveries_keep_capacity(kind: str, make_layer: MakeLayer) -> None:
    if kind == "pubsub":  # its capacity bounds a local buffer, dropping the oldest
        layer = make_layer(capacity=2)
        channel = await layer.new_channel()
        await layer.group_add("chat", channel)
        for n in range(4):
            await layer.group_send("chat", {"type": "m", "n": n})
        with anyio.move_on_after(0.3):
            while True:
                got = await layer.receive(channel)
                if got["n"] == 3:
                    break
        assert layer.stats().dropped >= 1
    else:
        layer = make_layer(capacity=2)
        await layer.group_add("chat", "worker")
        for n in range(4):
            await layer.group_send("chat", {"type": "m", "n": n})
        assert layer.stats().group_send_skipped == 2
        assert [(await layer.receive("worker"))["n"] for _ in range(2)] == [0, 1]
    assert offsets((await layer.group_history("chat")).messages) == [1, 2, 3, 4]


# -- bad input ------------------------------------------------------------------------------------


async def test_bad_arguments_are_refused_before_anything_is_read(make_layer: MakeLayer) -> None:
    layer = make_layer()
    await layer.group_send("chat", {"type": "m"})
    position = (await layer.group_history("chat")).position
    assert position is not None
    bad_after: list[tuple[object, type[Exception]]] = [
        ("1", TypeError),
        (7, TypeError),
        ({"epoch": position.epoch}, ValueError),
        ({"epoch": "", "offset": 1}, ValueError),
        ({"epoch": position.epoch, "offset": -1}, ValueError),
        ((position.epoch, "1"), ValueError),
    ]
    for after, error in bad_after:
        with pytest.raises(error):
            await layer.group_history("chat", after=after)  # type: ignore[arg-type]
    for limit in (-1, 1.5, True, "3"):
        with pytest.raises(ValueError, match="limit"):
            await layer.group_history("chat", limit=limit)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Group name"):
        await layer.group_history("bad group")
    with pytest.raises(TypeError):
        await layer.group_send("chat", "not a dict")  # type: ignore[arg-type]
    # Nothing was lost or added by the refusals.
    assert offsets((await layer.group_history("chat")).messages) == [1]


@pytest.mark.parametrize(
    ("setting", "error"),
    [
        ({"group_history": {"chat": {"size": 0, "ttl": 1}}}, ValueError),
        ({"group_history": {"chat": {"size": 1}}}, ValueError),
        ({"group_history": ["chat"]}, TypeError),
        ({"presence_timeout": 0}, ValueError),
        ({"presence_events": "chat"}, TypeError),
    ],
)
def test_bad_settings_fail_when_the_layer_is_made(
    kind: str, redis_url: str, setting: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        KINDS[kind](hosts=[redis_url], **setting)


# -- other callers ------------------------------------------------------------------------


async def test_sync_code_reads_history_through_async_to_sync(make_layer: MakeLayer) -> None:
    layer = make_layer()

    def script() -> GroupHistory:
        async_to_sync(layer.group_send)("chat", {"type": "from.script"})
        history = async_to_sync(layer.group_history)("chat")
        async_to_sync(layer.close)()
        return history

    history = await anyio.to_thread.run_sync(script)
    assert [m["type"] for m in history.messages] == ["from.script"]
    assert history == await layer.group_history("chat")


async def test_a_mixed_fleet_delivers_upstream_sends_live_but_does_not_record_them(
    kind: str,
    upstream_python: str,  # noqa: F811
    redis_url: str,
    prefix: str,
) -> None:
    config = {"hosts": [redis_url], "prefix": prefix}
    layer = KINDS[kind](**config, group_history=HISTORY)
    try:
        async with driver(upstream_python, "upstream", kind, config) as upstream:
            mine = await layer.new_channel()
            await layer.group_add("chat", mine)
            await layer.group_send("chat", {"type": "ours"})
            await upstream.call("group_send", "chat", {"type": "theirs"})
            await layer.group_send("chat", {"type": "ours.again"})
            got = [await layer.receive(mine) for _ in range(3)]
        assert [m["type"] for m in got] == ["ours", "theirs", "ours.again"]
        assert "__position__" not in got[1]
        assert [m.get("__position__", {}).get("offset") for m in got] == [1, None, 2]
        history = await layer.group_history("chat")
        assert [m["type"] for m in history.messages] == ["ours", "ours.again"]
    finally:
        await layer.flush()
        await layer.close()


async def test_our_other_process_shares_the_history(
    kind: str, redis_url: str, prefix: str
) -> None:
    config: dict[str, Any] = {"hosts": [redis_url], "prefix": prefix, "group_history": HISTORY}
    layer = KINDS[kind](**config)
    try:
        async with driver(sys.executable, "ours", kind, config) as other:
            await other.call("group_send", "chat", {"type": "there"})
            await layer.group_send("chat", {"type": "here"})
            position, messages, recovered = await other.call("group_history", "chat")
        assert [m["type"] for m in messages] == ["there", "here"]
        assert not recovered
        assert StreamPosition(*position) == (await layer.group_history("chat")).position
    finally:
        await layer.flush()
        await layer.close()


async def test_pubsub_group_add_returns_once_the_server_has_subscribed(
    redis_url: str, prefix: str
) -> None:
    """What makes the pub/sub join gap-free: after group_add, a publish reaches us."""
    layer = RedisPubSubChannelLayer(hosts=[redis_url], prefix=prefix, group_history=HISTORY)
    try:
        await layer.group_history("chat")  # the command connection is open
        for n in range(20):
            channel = await layer.new_channel()
            await layer.group_add(f"chat{n}", channel)
            # The layer saw the server's confirmation before returning.
            state = await layer._loops.get()  # pyright: ignore[reportPrivateUsage]
            assert state.unconfirmed == {}
            (count,) = await layer._execute(  # pyright: ignore[reportPrivateUsage]
                0, [("PUBSUB", "NUMSUB", f"{prefix}__group__chat{n}")]
            )
            assert count[1] == 1
    finally:
        await layer.flush()
        await layer.close()
