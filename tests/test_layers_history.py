"""The in-memory layer's history and presence (the conformance kit checks the contract
on every layer; these pin what is particular to this one, and the settings' errors)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from channels.layers import GroupHistory, InMemoryChannelLayer, StreamPosition


def _layer(**config: Any) -> InMemoryChannelLayer:
    config.setdefault("group_history", {"chat_*": {"size": 3, "ttl": 600}})
    return InMemoryChannelLayer(**config)


async def _send(layer: InMemoryChannelLayer, group: str, *texts: str) -> None:
    for text in texts:
        await layer.group_send(group, {"type": "m", "text": text})


async def test_positions_and_trimming_by_size() -> None:
    layer = _layer()
    channel = await layer.new_channel()
    await layer.group_add("chat_1", channel)
    await _send(layer, "chat_1", "a", "b", "c", "d")
    received = [await layer.receive(channel) for _ in range(4)]
    epoch = received[0]["__position__"]["epoch"]
    assert [m["__position__"] for m in received] == [
        {"epoch": epoch, "offset": n} for n in (1, 2, 3, 4)
    ]
    history = await layer.group_history("chat_1")
    assert history.position == StreamPosition(epoch, 4)
    assert [m["text"] for m in history.messages] == ["b", "c", "d"]  # size 3
    assert history.recovered is False
    latest = await layer.group_history("chat_1", limit=2)
    assert [m["text"] for m in latest.messages] == ["c", "d"]

    # Whole or refused: "a" (offset 1) is gone, so a replay after 0 is refused.
    assert await layer.group_history("chat_1", after=StreamPosition(epoch, 0)) == GroupHistory(
        StreamPosition(epoch, 4), [], False
    )
    replay = await layer.group_history("chat_1", after={"epoch": epoch, "offset": 1})
    assert replay.recovered
    assert [m["text"] for m in replay.messages] == ["b", "c", "d"]
    # More to replay than the limit: refused, not cut.
    refused = await layer.group_history("chat_1", after=StreamPosition(epoch, 1), limit=2)
    assert refused == GroupHistory(StreamPosition(epoch, 4), [], False)
    assert await layer.group_history("chat_1", after=StreamPosition(epoch, 4)) == GroupHistory(
        StreamPosition(epoch, 4), [], True
    )
    # A position from the future, or another epoch, is refused.
    for after in (StreamPosition(epoch, 9), StreamPosition("other", 2)):
        assert (await layer.group_history("chat_1", after=after)).recovered is False


async def test_entries_older_than_ttl_are_dropped_and_the_stream_forgotten() -> None:
    layer = _layer(group_history={"chat_*": {"size": 10, "ttl": 0.2}})
    await _send(layer, "chat_1", "a")
    first = await layer.group_history("chat_1")
    assert first.position is not None
    await anyio.sleep(0.25)
    history = await layer.group_history("chat_1", after=StreamPosition(first.position.epoch, 0))
    # Nothing was appended for the ttl: the stream went with its epoch.
    assert history.recovered is False
    assert history.position is not None
    assert history.position.epoch != first.position.epoch
    assert history.position.offset == 0


async def test_groups_without_history_are_untouched() -> None:
    layer = _layer()
    channel = await layer.new_channel()
    await layer.group_add("other", channel)
    message = {"type": "m", "nested": {"x": [1]}}
    await layer.group_send("other", message)
    assert await layer.receive(channel) == {"type": "m", "nested": {"x": [1]}}
    assert await layer.group_history("other") == GroupHistory(None, [], False)


async def test_history_copies_are_isolated() -> None:
    layer = _layer()
    channel = await layer.new_channel()
    await layer.group_add("chat_1", channel)
    message = {"type": "m", "nested": {"x": [1]}, "__position__": {"forwarded": True}}
    await layer.group_send("chat_1", message)
    assert message["__position__"] == {"forwarded": True}  # the caller's dict is left alone
    received = await layer.receive(channel)
    received["nested"]["x"].append(2)
    received["__position__"]["offset"] = 99
    stored = (await layer.group_history("chat_1")).messages[0]
    assert stored["nested"] == {"x": [1]}
    assert stored["__position__"]["offset"] == 1


async def test_flush_forgets_history_and_presence() -> None:
    layer = _layer()
    await _send(layer, "chat_1", "a")
    before = (await layer.group_history("chat_1")).position
    await layer.presence_join("chat_1", "x.inmemory!a", {"n": 1})
    await layer.flush()
    after = (await layer.group_history("chat_1")).position
    assert before is not None
    assert after is not None
    assert after.epoch != before.epoch
    assert after.offset == 0
    assert await layer.presence("chat_1") == {}


async def test_presence_join_is_idempotent_and_events_only_for_announced_groups() -> None:
    layer = _layer(presence_events=["chat_*"])
    watcher = await layer.new_channel()
    await layer.group_add("chat_1", watcher)
    await layer.group_add("quiet", watcher)
    await layer.presence_join("chat_1", "c.inmemory!a", {"name": "ann"})
    await layer.presence_join("chat_1", "c.inmemory!a", {"name": "ann"})  # a refresh
    await layer.presence_join("chat_1", "c.inmemory!a", {"name": "anne"})  # a change
    await layer.presence_join("quiet", "c.inmemory!a")
    await layer.presence_leave("chat_1", "c.inmemory!a")
    await layer.presence_leave("chat_1", "c.inmemory!a")  # absent: nothing
    events = []
    while layer.channels.get(watcher):
        event = await layer.receive(watcher)
        events.append((event["type"], event["info"], event["__position__"]["offset"]))
    assert events == [
        ("presence.join", {"name": "ann"}, 1),
        ("presence.join", {"name": "anne"}, 2),
        ("presence.leave", {"name": "anne"}, 3),
    ]
    assert await layer.presence("quiet") == {"c.inmemory!a": {}}


async def test_presence_bad_input() -> None:
    layer = _layer()
    with pytest.raises(TypeError, match="Group name"):
        await layer.presence_join("bad group", "c.inmemory!a")
    with pytest.raises(TypeError, match="Channel name"):
        await layer.presence_join("g", "bad channel")
    with pytest.raises(TypeError, match="JSON"):
        await layer.presence_join("g", "c.inmemory!a", {"x": {1, 2}})
    with pytest.raises(TypeError, match="dict"):
        await layer.presence_join("g", "c.inmemory!a", ["x"])  # type: ignore[arg-type]
    assert await layer.presence("g") == {}
    with pytest.raises(ValueError, match="limit"):
        await layer.group_history("chat_1", limit=-1)
    with pytest.raises(ValueError, match="stream position"):
        await layer.group_history("chat_1", after={"epoch": "e"})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"group_history": ["chat_*"]}, "must map group patterns"),
        ({"group_history": {"chat_*": 100}}, "must be a mapping"),
        ({"group_history": {"chat_*": {"size": 10}}}, "exactly 'size' and 'ttl'"),
        ({"group_history": {"chat_*": {"size": 10, "ttl": 5, "x": 1}}}, "exactly"),
        ({"group_history": {"chat_*": {"size": 0, "ttl": 5}}}, "'size'"),
        ({"group_history": {"chat_*": {"size": 10, "ttl": -1}}}, "'ttl'"),
        ({"presence_events": "chat_*"}, "list of group patterns"),
        ({"presence_timeout": 0}, "presence_timeout"),
    ],
)
def test_settings_errors_are_clear(config: dict[str, Any], message: str) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        InMemoryChannelLayer(**config)
