"""Durable groups from the consumer's side: group_join recovery and presence_join.

Against the in-memory layer here; the same consumers run against the Redis layers in
tests/test_durable_consumers_redis.py.
"""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import pytest
from django.test import override_settings

from channels.exceptions import InvalidChannelLayerError
from channels.generic.websocket import AsyncJsonWebsocketConsumer, JsonWebsocketConsumer
from channels.layers import GroupHistory, StreamPosition, channel_layers, get_channel_layer
from channels.testing import WebsocketCommunicator

LAYERS = {
    "default": {
        "BACKEND": "channels.layers.InMemoryChannelLayer",
        "CONFIG": {
            "capacity": 1000,
            "group_history": {"room_*": {"size": 50, "ttl": 600}},
            "presence_events": ["room_*"],
        },
    }
}


class RoomConsumer(AsyncJsonWebsocketConsumer):
    """Joins ``room_1`` from the position in the query string, as the docs show."""

    async def connect(self) -> None:
        await self.accept()
        query = self.scope.get("query_string", b"").decode()
        after = None
        if query:
            epoch, _, offset = query.partition(":")
            after = {"epoch": epoch, "offset": int(offset)}
        history = await self.group_join("room_1", after=after)
        # Sent before any replayed message: the replay waits for connect() to return.
        await self.send_json(
            {
                "joined": True,
                "recovered": history.recovered,
                "replayed": len(history.messages),
                "position": None if history.position is None else history.position.as_dict(),
            }
        )

    async def chat_message(self, event: dict[str, Any]) -> None:
        await self.send_json({"text": event["text"], "position": event["__position__"]})


class SyncRoomConsumer(JsonWebsocketConsumer):
    def connect(self) -> None:
        self.accept()
        query = self.scope.get("query_string", b"").decode()
        epoch, _, offset = query.partition(":")
        history = self.group_join("room_1", after={"epoch": epoch, "offset": int(offset)})
        self.send_json({"joined": True, "recovered": history.recovered})

    def chat_message(self, event: dict[str, Any]) -> None:
        self.send_json({"text": event["text"], "position": event["__position__"]})


async def _connect(consumer: Any, query: str = "") -> WebsocketCommunicator:
    path = f"/?{query}" if query else "/"
    communicator = WebsocketCommunicator(consumer.as_asgi(), path)
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def _send_texts(texts: list[str]) -> None:
    layer = get_channel_layer()
    assert layer is not None
    for text in texts:
        await layer.group_send("room_1", {"type": "chat.message", "text": text})


@override_settings(CHANNEL_LAYERS=LAYERS)
async def test_reconnect_replays_what_was_missed_once_in_order() -> None:
    first = await _connect(RoomConsumer)
    hello = await first.receive_json_from()
    assert hello["joined"]
    assert hello["position"]["offset"] == 0
    await _send_texts(["a", "b"])
    seen = [await first.receive_json_from() for _ in range(2)]
    assert [m["text"] for m in seen] == ["a", "b"]
    last = seen[-1]["position"]
    await first.disconnect()

    await _send_texts(["c", "d", "e"])  # while away
    second = await _connect(RoomConsumer, f"{last['epoch']}:{last['offset']}")
    hello = await second.receive_json_from()
    assert hello == {
        "joined": True,
        "recovered": True,
        "replayed": 3,
        "position": {"epoch": last["epoch"], "offset": 5},
    }
    await _send_texts(["f"])
    got = [await second.receive_json_from() for _ in range(4)]
    assert [m["text"] for m in got] == ["c", "d", "e", "f"]
    assert [m["position"]["offset"] for m in got] == [3, 4, 5, 6]
    assert await second.receive_nothing()
    await second.disconnect()


@override_settings(CHANNEL_LAYERS=LAYERS)
async def test_no_gap_and_no_duplicate_while_others_keep_sending() -> None:
    """Messages flow to the group while the consumer joins: each arrives exactly once."""
    first = await _connect(RoomConsumer)
    await first.receive_json_from()
    await _send_texts(["start"])
    position = (await first.receive_json_from())["position"]
    await first.disconnect()

    sent: list[str] = []

    async def keep_sending() -> None:
        for number in range(200):
            sent.append(f"m{number}")
            await _send_texts([f"m{number}"])
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as group:
        group.start_soon(keep_sending)
        await anyio.lowlevel.checkpoint()
        second = await _connect(RoomConsumer, f"{position['epoch']}:{position['offset']}")
        hello = await second.receive_json_from()
        assert hello["recovered"]
    got: list[str] = []
    while len(got) < len(sent):
        got.append((await second.receive_json_from())["text"])
    assert got == sent
    assert await second.receive_nothing()
    await second.disconnect()


@override_settings(CHANNEL_LAYERS=LAYERS)
async def test_live_messages_of_the_group_wait_behind_the_replay() -> None:
    """A live message that reaches the consumer during its replay is handled after it."""
    first = await _connect(RoomConsumer)
    await first.receive_json_from()
    await _send_texts(["a"])
    position = (await first.receive_json_from())["position"]
    await first.disconnect()
    await _send_texts([f"missed{n}" for n in range(20)])

    class SlowRoom(RoomConsumer):
        async def connect(self) -> None:
            await super().connect()
            # Live messages are sent while the replay is queued but not yet handled.
            await _send_texts(["live1", "live2"])

    second = await _connect(SlowRoom, f"{position['epoch']}:{position['offset']}")
    await second.receive_json_from()
    got = [(await second.receive_json_from())["text"] for _ in range(22)]
    assert got == [f"missed{n}" for n in range(20)] + ["live1", "live2"]
    assert await second.receive_nothing()
    await second.disconnect()


@override_settings(CHANNEL_LAYERS=LAYERS)
async def test_unknown_epoch_recovers_nothing() -> None:
    await _send_texts(["a", "b"])
    communicator = await _connect(RoomConsumer, "0123456789abcdef:1")
    hello = await communicator.receive_json_from()
    assert hello["recovered"] is False
    assert hello["replayed"] == 0
    assert await communicator.receive_nothing()
    await communicator.disconnect()


@override_settings(CHANNEL_LAYERS=LAYERS)
async def test_sync_consumer_recovers_too() -> None:
    first = await _connect(RoomConsumer)
    await first.receive_json_from()
    await _send_texts(["a"])
    position = (await first.receive_json_from())["position"]
    await first.disconnect()
    await _send_texts(["b", "c"])
    second = await _connect(SyncRoomConsumer, f"{position['epoch']}:{position['offset']}")
    assert await second.receive_json_from() == {"joined": True, "recovered": True}
    got = [(await second.receive_json_from())["text"] for _ in range(2)]
    assert got == ["b", "c"]
    await second.disconnect()


@override_settings(CHANNEL_LAYERS=LAYERS)
async def test_group_join_without_history_and_leave() -> None:
    class Plain(AsyncJsonWebsocketConsumer):
        async def connect(self) -> None:
            history = await self.group_join("lobby", after={"epoch": "e", "offset": 3})
            assert history == GroupHistory(None, [], False)
            await self.accept()

        async def receive_json(self, content: Any, **kwargs: Any) -> None:
            await self.group_leave("lobby")
            await self.send_json({"left": True})

        async def chat_message(self, event: dict[str, Any]) -> None:
            await self.send_json(event)

    layer = get_channel_layer()
    assert layer is not None
    communicator = await _connect(Plain)
    await layer.group_send("lobby", {"type": "chat.message", "text": "hi"})
    # A group without history: the message arrives untouched, no __position__.
    assert await communicator.receive_json_from() == {"type": "chat.message", "text": "hi"}
    await communicator.send_json_to({})
    assert await communicator.receive_json_from() == {"left": True}
    await layer.group_send("lobby", {"type": "chat.message", "text": "gone"})
    assert await communicator.receive_nothing()
    await communicator.disconnect()


@override_settings(CHANNEL_LAYERS=LAYERS)
@pytest.mark.parametrize(
    ("after", "error"),
    [
        ("nope", TypeError),
        ({"epoch": "e"}, ValueError),
        ({"epoch": "e", "offset": -1}, ValueError),
    ],
)
async def test_malformed_after_is_a_clear_error_before_joining(after: Any, error: type) -> None:
    outcome: list[BaseException] = []

    class Bad(AsyncJsonWebsocketConsumer):
        async def connect(self) -> None:
            try:
                await self.group_join("room_1", after=after)
            except Exception as exc:
                outcome.append(exc)
            await self.accept()

    communicator = await _connect(Bad)
    assert len(outcome) == 1
    assert isinstance(outcome[0], error)
    layer = get_channel_layer()
    assert layer is not None
    assert "room_1" not in layer.groups  # type: ignore[attr-defined]
    await communicator.disconnect()


@override_settings(CHANNEL_LAYERS={})
async def test_group_join_without_a_layer_says_so() -> None:
    outcome: list[BaseException] = []

    class NoLayer(AsyncJsonWebsocketConsumer):
        async def connect(self) -> None:
            try:
                await self.group_join("room_1")
            except InvalidChannelLayerError as exc:
                outcome.append(exc)
            await self.accept()

    communicator = await _connect(NoLayer)
    assert outcome
    assert "groups" in str(outcome[0])
    await communicator.disconnect()


# -- presence --------------------------------------------------------------------------


class PresentConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        await self.group_join("room_1")
        user = self.scope.get("query_string", b"").decode() or "anon"
        await self.presence_join("room_1", {"user": user})
        await self.accept()

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if content.get("crash"):
            raise RuntimeError("boom")
        if content.get("leave"):
            await self.presence_leave("room_1")
        await self.send_json({"present": await self.channel_layer.presence("room_1")})  # type: ignore[attr-defined]


def _present_users(present: dict[str, dict[str, Any]]) -> list[str]:
    return sorted(info["user"] for info in present.values())


@override_settings(CHANNEL_LAYERS=LAYERS)
async def test_presence_entries_live_with_their_consumer() -> None:
    layer = get_channel_layer()
    assert layer is not None
    alice = await _connect(PresentConsumer, "alice")
    bob = await _connect(PresentConsumer, "bob")
    await alice.send_json_to({})
    assert _present_users((await alice.receive_json_from())["present"]) == ["alice", "bob"]

    await bob.disconnect()  # a clean disconnect
    assert _present_users(await layer.presence("room_1")) == ["alice"]  # type: ignore[attr-defined]

    carol = await _connect(PresentConsumer, "carol")
    await carol.send_json_to({"crash": True})  # a crash
    with pytest.raises(RuntimeError):
        await carol.wait()
    assert _present_users(await layer.presence("room_1")) == ["alice"]  # type: ignore[attr-defined]

    await alice.send_json_to({"leave": True})
    assert (await alice.receive_json_from())["present"] == {}
    await alice.disconnect()


@override_settings(CHANNEL_LAYERS=LAYERS)
async def test_presence_entry_removed_when_the_consumer_is_cancelled() -> None:
    layer = get_channel_layer()
    assert layer is not None
    communicator = await _connect(PresentConsumer, "dave")
    assert _present_users(await layer.presence("room_1")) == ["dave"]  # type: ignore[attr-defined]
    communicator.future.cancel()  # as a server stopping does
    await communicator.wait()
    assert await layer.presence("room_1") == {}  # type: ignore[attr-defined]
    assert "room_1" not in layer.groups  # type: ignore[attr-defined]


@override_settings(CHANNEL_LAYERS=LAYERS)
async def test_presence_events_reach_the_group() -> None:
    class Watcher(AsyncJsonWebsocketConsumer):
        async def connect(self) -> None:
            await self.group_join("room_1")
            await self.accept()

        async def presence_event(self, event: Any) -> None:
            await self.send_json(event)

    watcher = await _connect(Watcher)
    # PresentConsumer ignores presence events (the default): they must not end it.
    first = await _connect(PresentConsumer, "first")
    erin = await _connect(PresentConsumer, "erin")
    assert (await watcher.receive_json_from())["info"] == {"user": "first"}
    joined = await watcher.receive_json_from()
    assert joined["type"] == "presence.join"
    assert joined["info"] == {"user": "erin"}
    assert joined["group"] == "room_1"
    assert joined["channel"].startswith("specific.")
    await erin.disconnect()
    left = await watcher.receive_json_from()
    assert left["type"] == "presence.leave"
    assert left["channel"] == joined["channel"]
    assert left["info"] == {"user": "erin"}
    await first.send_json_to({})
    assert _present_users((await first.receive_json_from())["present"]) == ["first"]
    await first.disconnect()
    await watcher.disconnect()


@override_settings(CHANNEL_LAYERS=LAYERS)
async def test_presence_join_rejects_bad_info() -> None:
    outcome: list[BaseException] = []

    class Bad(AsyncJsonWebsocketConsumer):
        async def connect(self) -> None:
            for info in (["not", "a dict"], {"when": object()}):
                try:
                    await self.presence_join("room_1", info)  # type: ignore[arg-type]
                except TypeError as exc:
                    outcome.append(exc)
            await self.accept()

    communicator = await _connect(Bad)
    assert len(outcome) == 2
    layer = get_channel_layer()
    assert layer is not None
    assert await layer.presence("room_1") == {}  # type: ignore[attr-defined]
    await communicator.disconnect()


async def test_presence_heartbeat_refreshes_entries_on_expiring_layers() -> None:
    """On a layer whose entries expire, the consumer's heartbeat keeps re-joining."""
    from channels.layers import InMemoryChannelLayer

    class ExpiringLayer(InMemoryChannelLayer):
        presence_expires = True

        def __init__(self) -> None:
            super().__init__(presence_timeout=0.03)
            self.joins = 0

        async def presence_join(
            self, group: str, channel: str, info: dict[str, Any] | None = None
        ) -> None:
            self.joins += 1
            await super().presence_join(group, channel, info)

    layer = ExpiringLayer()
    channel_layers.set("default", layer)
    communicator = await _connect(PresentConsumer, "fred")
    while layer.joins < 4:  # noqa: ASYNC110  # counting the heartbeat's own calls
        await anyio.sleep(0.01)
    await communicator.disconnect()
    joins = layer.joins
    await anyio.sleep(0.1)
    assert layer.joins == joins  # the heartbeat ended with the consumer
    assert await layer.presence("room_1") == {}


def test_stream_position_from_value() -> None:
    assert StreamPosition.from_value({"epoch": "e", "offset": 2}) == StreamPosition("e", 2)
    assert StreamPosition.from_value(("e", 2)) == StreamPosition("e", 2)
    assert StreamPosition("e", 2).as_dict() == {"epoch": "e", "offset": 2}
    for bad in ({"epoch": "", "offset": 1}, {"epoch": "e", "offset": True}, ("e", "1")):
        with pytest.raises(ValueError, match="stream position"):
            StreamPosition.from_value(bad)
    with pytest.raises(TypeError, match="stream position"):
        StreamPosition.from_value(3)


async def test_a_message_both_live_and_in_the_history_is_handled_once() -> None:
    """A message sent between the join's group_add and its history read reaches the
    consumer twice (live and replayed): it must be handled once, in its place."""
    from channels.layers import InMemoryChannelLayer

    class RacingLayer(InMemoryChannelLayer):
        async def group_history(self, group: str, **kwargs: Any) -> GroupHistory:
            # Another process sends right after the joiner became a member.
            await self.group_send(group, {"type": "chat.message", "text": "during"})
            return await super().group_history(group, **kwargs)

    layer = RacingLayer(group_history={"room_*": {"size": 50, "ttl": 600}})
    await layer.group_send("room_1", {"type": "chat.message", "text": "before"})
    history = await layer.group_history("room_1", limit=0)
    assert history.position is not None
    await layer.group_send("room_1", {"type": "chat.message", "text": "missed"})
    channel_layers.set("default", layer)
    position = history.position
    communicator = await _connect(RoomConsumer, f"{position.epoch}:{position.offset}")
    hello = await communicator.receive_json_from()
    assert hello["replayed"] == 2  # "missed" and "during", which also arrived live
    got = [(await communicator.receive_json_from())["text"] for _ in range(2)]
    assert got == ["missed", "during"]
    assert await communicator.receive_nothing()
    await communicator.disconnect()


async def test_messages_arriving_out_of_offset_order_reach_handlers_in_order() -> None:
    from channels.layers import InMemoryChannelLayer

    class ReorderingLayer(InMemoryChannelLayer):
        """Delivers each odd offset after the even one that follows it, as two processes
        sending at once can (positions given in one order, deliveries in the other)."""

        held: list[Any] | None = None

        async def _deliver_positioned(
            self, group: str, message: Any, epoch: str, offset: int, now: float
        ) -> None:
            deliver = super()._deliver_positioned
            if offset % 2 == 1 and self.held is None:
                self.held = [group, message, epoch, offset, now]
                return
            await deliver(group, message, epoch, offset, now)
            if self.held is not None:
                held, self.held = self.held, None
                await deliver(*held)

    layer = ReorderingLayer(capacity=1000, group_history={"room_*": {"size": 50, "ttl": 600}})
    channel_layers.set("default", layer)
    communicator = await _connect(RoomConsumer)
    await communicator.receive_json_from()
    await _send_texts([f"m{n}" for n in range(1, 11)])  # offsets 1..10, delivered 2,1,4,3...
    got = [await communicator.receive_json_from() for _ in range(10)]
    assert [m["position"]["offset"] for m in got] == list(range(1, 11))
    assert [m["text"] for m in got] == [f"m{n}" for n in range(1, 11)]
    assert await communicator.receive_nothing()
    await communicator.disconnect()


async def test_a_join_without_position_hands_on_what_arrives_during_the_join() -> None:
    """Without a position nothing is replayed: a message sent between the join's
    group_add and its history read arrives live only, and must not be dropped."""
    from channels.layers import InMemoryChannelLayer

    class RacingLayer(InMemoryChannelLayer):
        async def group_history(self, group: str, **kwargs: Any) -> GroupHistory:
            await self.group_send(group, {"type": "chat.message", "text": "during"})
            return await super().group_history(group, **kwargs)

    channel_layers.set("default", RacingLayer(group_history={"room_*": {"size": 5, "ttl": 60}}))
    communicator = await _connect(RoomConsumer)
    hello = await communicator.receive_json_from()
    assert hello["position"]["offset"] == 1
    await _send_texts(["after"])
    got = [(await communicator.receive_json_from())["text"] for _ in range(2)]
    assert got == ["during", "after"]
    await communicator.disconnect()
