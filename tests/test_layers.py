"""Channel layers: name rules, capacities, the manager, and the in-memory layer."""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from anyio import wait_all_tasks_blocked
from django.test import override_settings

from channels.exceptions import ChannelFull, InvalidChannelLayerError
from channels.layers import (
    BaseChannelLayer,
    ChannelLayerManager,
    InMemoryChannelLayer,
    channel_layers,
    get_channel_layer,
)
from channels.layers.inmemory import _EXPIRY_BATCH, _MIN_COMPACTION
from tests.harness import TurnCounter

CHANNEL_ERROR = (
    "Channel name must be a valid unicode string with length < 100 containing only "
    "ASCII alphanumerics, hyphens, underscores, or periods."
)
GROUP_ERROR = (
    "Group name must be a valid unicode string with length < 100 containing only "
    "ASCII alphanumerics, hyphens, underscores, or periods."
)
RECEIVE_ERROR = "Specific channel names in receive() must end at the !"

INMEMORY = "channels.layers.InMemoryChannelLayer"

VALID_CHANNEL_NAMES = [
    "a",
    "http.request",
    "websocket.send-1_x",
    "Mixed.Case-09_",
    "...",
    "specific.abc!",
    "specific.abc!def",
    "specific.abc!d.e-f_1",
    "x" * 99,
    "specific!" + "y" * 90,
]
INVALID_CHANNEL_NAMES: list[object] = [
    "",
    "x" * 100,
    "x" * 150,
    "has space",
    "slash/name",
    "colon:name",
    "star*",
    "tab\tname",
    "newline\n",
    "caf\u00e9",
    "digit\u0663",  # ARABIC-INDIC DIGIT THREE: not an ASCII alphanumeric
    "!leading-bang",
    "two!bangs!",
    "bang!then space",
    "bang!caf\u00e9",
    b"bytes.name",
    None,
    123,
    ["list"],
]
VALID_GROUP_NAMES = ["g", "chat", "room-1.users_2", "x" * 99, "..."]
INVALID_GROUP_NAMES: list[object] = [
    "",
    "x" * 100,
    "with!bang",
    "trailing!",
    "has space",
    "newline\n",
    "caf\u00e9",
    "slash/name",
    b"bytes",
    None,
    1.5,
]


def msg(n: int, **extra: Any) -> dict[str, Any]:
    return {"type": "test.message", "n": n, **extra}


# -- names ------------------------------------------------------------------------------


def test_max_name_length_and_message_text() -> None:
    assert BaseChannelLayer.MAX_NAME_LENGTH == 100
    layer = BaseChannelLayer()
    assert layer.invalid_name_error.format("Channel") == CHANNEL_ERROR
    assert layer.invalid_name_error.format("Group") == GROUP_ERROR


@pytest.mark.parametrize("name", VALID_CHANNEL_NAMES)
def test_valid_channel_names(name: str) -> None:
    layer = BaseChannelLayer()
    assert layer.require_valid_channel_name(name) is True
    # ``receive=True`` only cares about what follows a "!".
    if "!" not in name or name.endswith("!"):
        assert layer.require_valid_channel_name(name, receive=True) is True
    else:
        with pytest.raises(TypeError) as info:
            layer.require_valid_channel_name(name, receive=True)
        assert str(info.value) == RECEIVE_ERROR


@pytest.mark.parametrize("name", INVALID_CHANNEL_NAMES, ids=repr)
def test_invalid_channel_names(name: object) -> None:
    layer = BaseChannelLayer()
    for receive in (False, True):
        with pytest.raises(TypeError) as info:
            layer.require_valid_channel_name(name, receive=receive)
        assert str(info.value) == CHANNEL_ERROR


@pytest.mark.parametrize("name", VALID_GROUP_NAMES)
def test_valid_group_names(name: str) -> None:
    assert BaseChannelLayer().require_valid_group_name(name) is True


@pytest.mark.parametrize("name", INVALID_GROUP_NAMES, ids=repr)
def test_invalid_group_names(name: object) -> None:
    with pytest.raises(TypeError) as info:
        BaseChannelLayer().require_valid_group_name(name)
    assert str(info.value) == GROUP_ERROR


def test_name_length_limit_is_exclusive_and_follows_max_name_length() -> None:
    layer = BaseChannelLayer()
    assert layer.require_valid_channel_name("c" * 99)
    assert layer.require_valid_group_name("g" * 99)
    with pytest.raises(TypeError, match="Channel name"):
        layer.require_valid_channel_name("c" * 100)
    with pytest.raises(TypeError, match="Group name"):
        layer.require_valid_group_name("g" * 100)

    class ShortNames(BaseChannelLayer):
        MAX_NAME_LENGTH = 5

    short = ShortNames()
    assert short.require_valid_channel_name("abcd")
    with pytest.raises(TypeError):
        short.require_valid_channel_name("abcde")
    with pytest.raises(TypeError):
        short.require_valid_group_name("abcde")


def test_valid_channel_names_list() -> None:
    layer = BaseChannelLayer()
    assert layer.valid_channel_names(["a", "b.c", "d!"], receive=True) is True
    with pytest.raises(TypeError, match="Specific channel names"):
        layer.valid_channel_names(["a", "d!e"], receive=True)
    with pytest.raises(TypeError, match="Channel name must be"):
        layer.valid_channel_names(["a", "bad name"])
    with pytest.raises(TypeError):
        layer.valid_channel_names([])


def test_deprecated_validators_warn_and_still_validate() -> None:
    layer = BaseChannelLayer()
    with pytest.warns(DeprecationWarning, match="require_valid_channel_name"):
        assert layer.valid_channel_name("http.request") is True
    with pytest.warns(DeprecationWarning, match="require_valid_group_name"):
        assert layer.valid_group_name("chat") is True
    with (
        pytest.warns(DeprecationWarning, match="valid_channel_name is deprecated"),
        pytest.raises(TypeError) as info,
    ):
        layer.valid_channel_name("bad name")
    assert str(info.value) == CHANNEL_ERROR
    with (
        pytest.warns(DeprecationWarning, match="valid_group_name is deprecated"),
        pytest.raises(TypeError) as info,
    ):
        layer.valid_group_name("bad!group")
    assert str(info.value) == GROUP_ERROR


def test_non_local_name() -> None:
    layer = BaseChannelLayer()
    assert layer.non_local_name("http.request") == "http.request"
    assert layer.non_local_name("specific.abc!") == "specific.abc!"
    assert layer.non_local_name("specific.abc!def") == "specific.abc!"
    assert layer.non_local_name("a!b!c") == "a!"


# -- capacities -------------------------------------------------------------------------


def test_default_capacity_and_expiry() -> None:
    layer = BaseChannelLayer()
    assert layer.capacity == 100
    assert layer.expiry == 60
    assert layer.get_capacity("anything") == 100
    assert BaseChannelLayer(capacity=7).get_capacity("anything") == 7


def test_get_capacity_patterns() -> None:
    layer = BaseChannelLayer(
        capacity=10,
        channel_capacity=OrderedDict(
            [
                ("http.request", 1),
                ("websocket.send!*", 2),
                (re.compile(r"^regex\.\d+$"), 3),
                ("wild.*", 4),
                ("wild.special", 5),  # shadowed: "wild.*" comes first
                (re.compile(r"partial"), 6),
            ]
        ),
    )
    assert layer.get_capacity("http.request") == 1
    # Globs match the full name, not a prefix or a substring.
    assert layer.get_capacity("http.request.body") == 10
    assert layer.get_capacity("xhttp.request") == 10
    assert layer.get_capacity("websocket.send!abc") == 2
    assert layer.get_capacity("websocket.send!") == 2
    assert layer.get_capacity("websocket.send") == 10
    assert layer.get_capacity("regex.42") == 3
    assert layer.get_capacity("regex.4x") == 10
    assert layer.get_capacity("wild.special") == 4
    assert layer.get_capacity("wild.") == 4
    # A compiled regex is used as given, with ``match`` (anchored at the start only).
    assert layer.get_capacity("partial.name") == 6
    assert layer.get_capacity("not.partial") == 10
    assert layer.get_capacity("unmatched") == 10


def test_get_capacity_first_match_in_dict_order() -> None:
    first = BaseChannelLayer(channel_capacity={"a.*": 1, "a.b": 2})
    second = BaseChannelLayer(channel_capacity={"a.b": 2, "a.*": 1})
    assert first.get_capacity("a.b") == 1
    assert second.get_capacity("a.b") == 2
    assert first.get_capacity("a.c") == second.get_capacity("a.c") == 1


def test_glob_question_mark_and_brackets() -> None:
    layer = BaseChannelLayer(capacity=0, channel_capacity={"ch?n": 1, "room[12]": 2})
    assert layer.get_capacity("chan") == 1
    assert layer.get_capacity("chaan") == 0
    assert layer.get_capacity("room1") == 2
    assert layer.get_capacity("room3") == 0


async def test_base_layer_api_is_not_implemented() -> None:
    layer = BaseChannelLayer()
    with pytest.raises(NotImplementedError):
        await layer.send("a", msg(1))
    with pytest.raises(NotImplementedError):
        await layer.receive("a")
    with pytest.raises(NotImplementedError):
        await layer.new_channel()
    with pytest.raises(NotImplementedError):
        await layer.flush()
    with pytest.raises(NotImplementedError):
        await layer.group_add("g", "a")
    with pytest.raises(NotImplementedError):
        await layer.group_discard("g", "a")
    with pytest.raises(NotImplementedError):
        await layer.group_send("g", msg(1))
    assert await layer.close() is None


# -- manager ----------------------------------------------------------------------------


class RecordingLayer(InMemoryChannelLayer):
    """An in-memory layer that remembers its construction kwargs and its closing."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kwargs = kwargs
        self.closed = 0

    async def close(self) -> None:
        self.closed += 1


def test_get_channel_layer_default_is_cached_inmemory() -> None:
    with override_settings(CHANNEL_LAYERS={"default": {"BACKEND": INMEMORY}}):
        layer = get_channel_layer()
        assert isinstance(layer, InMemoryChannelLayer)
        assert get_channel_layer() is layer
        assert get_channel_layer("default") is layer
        assert channel_layers["default"] is layer
        assert "default" in channel_layers
        assert "nope" not in channel_layers
        assert get_channel_layer("nope") is None


def test_cache_reset_when_channel_layers_changes() -> None:
    before = get_channel_layer()
    assert get_channel_layer() is before
    config = {
        "default": {"BACKEND": "tests.test_layers.RecordingLayer", "CONFIG": {"capacity": 3}},
        "other": {"BACKEND": INMEMORY},
    }
    with override_settings(CHANNEL_LAYERS=config):
        inside = get_channel_layer()
        assert isinstance(inside, RecordingLayer)
        assert inside is not before
        other = get_channel_layer("other")
        assert isinstance(other, InMemoryChannelLayer)
        assert other is not inside
        assert get_channel_layer("other") is other
    after = get_channel_layer()
    assert isinstance(after, InMemoryChannelLayer)
    assert not isinstance(after, RecordingLayer)
    assert after is not inside
    assert after is not before  # a settings change is never served from the old cache
    assert get_channel_layer("other") is None


def test_other_setting_changes_keep_the_cache() -> None:
    layer = get_channel_layer()
    with override_settings(DEBUG=True):
        assert get_channel_layer() is layer


def test_config_kwargs_reach_the_layer() -> None:
    config = {
        "default": {
            "BACKEND": INMEMORY,
            "CONFIG": {
                "capacity": 7,
                "expiry": 5,
                "group_expiry": 9,
                "channel_capacity": {"small.*": 2},
            },
        }
    }
    with override_settings(CHANNEL_LAYERS=config):
        layer = get_channel_layer()
        assert isinstance(layer, InMemoryChannelLayer)
        assert layer.capacity == 7
        assert layer.expiry == 5
        assert layer.group_expiry == 9
        assert layer.get_capacity("small.one") == 2
        assert layer.get_capacity("big") == 7


def test_make_backend_and_make_test_backend() -> None:
    config = {
        "default": {
            "BACKEND": "tests.test_layers.RecordingLayer",
            "CONFIG": {"capacity": 5},
            "TEST_CONFIG": {"capacity": 11, "expiry": 2},
        },
        "plain": {"BACKEND": INMEMORY},
    }
    with override_settings(CHANNEL_LAYERS=config):
        manager = ChannelLayerManager()
        made = manager.make_backend("default")
        assert isinstance(made, RecordingLayer)
        assert made.kwargs == {"capacity": 5}
        assert made.capacity == 5
        # Fresh each time, and not what the cache holds.
        assert manager.make_backend("default") is not made
        assert manager["default"] is not made

        test_layer = manager.make_test_backend("default")
        assert isinstance(test_layer, RecordingLayer)
        assert test_layer.kwargs == {"capacity": 11, "expiry": 2}
        assert test_layer.capacity == 11
        assert test_layer.expiry == 2

        plain = manager.make_backend("plain")
        assert type(plain) is InMemoryChannelLayer
        assert plain.capacity == 100

        with pytest.raises(InvalidChannelLayerError) as info:
            manager.make_test_backend("plain")
        assert str(info.value) == "No TEST_CONFIG specified for plain"


def test_misconfigured_backends() -> None:
    config = {
        "nobackend": {"CONFIG": {}},
        "unimportable": {"BACKEND": "channels.layers.DoesNotExist"},
        "nomodule": {"BACKEND": "no_such_module_xyz.Layer"},
        "routing": {
            "BACKEND": INMEMORY,
            "ROUTING": "myproject.routing.channel_routing",
            "TEST_CONFIG": {},
        },
    }
    with override_settings(CHANNEL_LAYERS=config):
        with pytest.raises(InvalidChannelLayerError) as info:
            get_channel_layer("nobackend")
        assert str(info.value) == "No BACKEND specified for nobackend"

        with pytest.raises(InvalidChannelLayerError) as info:
            get_channel_layer("unimportable")
        assert str(info.value) == (
            "Cannot import BACKEND 'channels.layers.DoesNotExist' specified for unimportable"
        )
        assert isinstance(info.value.__cause__, ImportError)

        with pytest.raises(InvalidChannelLayerError) as info:
            get_channel_layer("nomodule")
        assert str(info.value) == (
            "Cannot import BACKEND 'no_such_module_xyz.Layer' specified for nomodule"
        )

        with pytest.raises(InvalidChannelLayerError) as info:
            get_channel_layer("routing")
        assert str(info.value) == (
            "ROUTING key found for routing - this is no longer needed in Channels 2."
        )
        with pytest.raises(InvalidChannelLayerError, match="ROUTING key found"):
            channel_layers.make_test_backend("routing")

        # A failed build is not cached as anything.
        assert "nobackend" not in channel_layers.backends
    # The error is a ValueError, as upstream.
    assert issubclass(InvalidChannelLayerError, ValueError)


def test_set_returns_old_layer() -> None:
    with override_settings(CHANNEL_LAYERS={"default": {"BACKEND": INMEMORY}}):
        replacement = InMemoryChannelLayer()
        assert channel_layers.set("default", replacement) is None  # nothing built yet
        assert get_channel_layer() is replacement
        second = InMemoryChannelLayer()
        assert channel_layers.set("default", second) is replacement
        assert get_channel_layer() is second
        # An alias with no configuration can still be pointed at a layer.
        extra = InMemoryChannelLayer()
        assert channel_layers.set("extra", extra) is None
        assert get_channel_layer("extra") is extra
    assert get_channel_layer("extra") is None


async def test_close_all_closes_every_built_layer() -> None:
    config = {
        "default": {"BACKEND": "tests.test_layers.RecordingLayer"},
        "second": {"BACKEND": "tests.test_layers.RecordingLayer"},
        "unbuilt": {"BACKEND": "tests.test_layers.RecordingLayer"},
    }
    with override_settings(CHANNEL_LAYERS=config):
        first = get_channel_layer()
        second = get_channel_layer("second")
        await channel_layers.close_all()
        assert first.closed == 1
        assert second.closed == 1
        # Layers nobody asked for are not built just to be closed.
        assert "unbuilt" not in channel_layers.backends


# -- in-memory layer: channels --------------------------------------------------------


async def test_send_receive_round_trip_and_fifo() -> None:
    layer = InMemoryChannelLayer()
    await layer.send("test.channel", {"type": "test.message", "text": "hello"})
    assert await layer.receive("test.channel") == {"type": "test.message", "text": "hello"}
    assert layer.channels == {}

    for n in range(10):
        await layer.send("fifo", msg(n))
    await layer.send("other", msg(99))
    assert layer.channels["fifo"].qsize() == 10
    assert [(await layer.receive("fifo"))["n"] for _ in range(10)] == list(range(10))
    assert "fifo" not in layer.channels
    assert await layer.receive("other") == msg(99)
    assert layer.channels == {}


async def test_specific_channel_round_trip() -> None:
    layer = InMemoryChannelLayer()
    name = await layer.new_channel()
    await layer.send(name, msg(1))
    assert await layer.receive(name) == msg(1)


async def test_receive_waits_for_a_later_send() -> None:
    layer = InMemoryChannelLayer()
    received: list[dict[str, Any]] = []

    async def receiver() -> None:
        received.append(await layer.receive("later"))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(receiver)
            await wait_all_tasks_blocked()
            # A waiting receiver's channel is there at once.
            assert "later" in layer.channels
            assert layer.channels["later"].empty()
            assert received == []
            await layer.send("later", msg(1))
    assert received == [msg(1)]
    assert layer.channels == {}


async def test_message_isolation() -> None:
    layer = InMemoryChannelLayer()
    original = {"type": "test", "items": [1, {"deep": [2]}], "meta": {"k": "v"}}
    await layer.send("iso", original)
    await layer.send("iso", original)
    # The sender changing its dict afterwards changes nothing queued.
    original["items"][1]["deep"].append(3)
    original["meta"]["k"] = "changed"
    original["added"] = True

    first = await layer.receive("iso")
    assert first == {"type": "test", "items": [1, {"deep": [2]}], "meta": {"k": "v"}}
    # One receiver changing its copy does not affect the next delivery.
    first["items"][1]["deep"].clear()
    first["meta"]["k"] = "mine"
    second = await layer.receive("iso")
    assert second == {"type": "test", "items": [1, {"deep": [2]}], "meta": {"k": "v"}}
    assert second is not first

    # Group members each get their own copy too.
    await layer.group_add("g", "member1")
    await layer.group_add("g", "member2")
    payload = {"type": "group", "data": {"list": [1, 2]}, "tuple": (1, [2])}
    await layer.group_send("g", payload)
    payload["data"]["list"].append(3)
    payload["tuple"][1].append(3)
    one = await layer.receive("member1")
    one["data"]["list"].append("x")
    one["tuple"][1].append("x")
    two = await layer.receive("member2")
    assert two == {"type": "group", "data": {"list": [1, 2]}, "tuple": (1, [2])}
    assert one["data"] is not two["data"]


async def test_invalid_messages() -> None:
    layer = InMemoryChannelLayer()
    await layer.group_add("g", "member")
    for bad in ("text", ["type", "x"], None, 42, ("type", "x")):
        with pytest.raises(TypeError):
            await layer.send("chan", bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            await layer.group_send("g", bad)  # type: ignore[arg-type]
    reserved = {"type": "x", "__asgi_channel__": "chan"}
    with pytest.raises(ValueError, match="__asgi_channel__"):
        await layer.send("chan", reserved)
    with pytest.raises(ValueError, match="__asgi_channel__"):
        await layer.group_send("g", reserved)
    # Nothing was queued by the failures.
    assert layer.channels == {}


async def test_invalid_names_in_layer_calls() -> None:
    layer = InMemoryChannelLayer()
    for bad in ("bad name", "x" * 100, "", 5, None, "a!b!"):
        with pytest.raises(TypeError) as info:
            await layer.send(bad, msg(1))  # type: ignore[arg-type]
        assert str(info.value) == CHANNEL_ERROR
        with pytest.raises(TypeError) as info:
            await layer.receive(bad)  # type: ignore[arg-type]
        assert str(info.value) == CHANNEL_ERROR
        with pytest.raises(TypeError) as info:
            await layer.group_add("g", bad)  # type: ignore[arg-type]
        assert str(info.value) == CHANNEL_ERROR
        with pytest.raises(TypeError) as info:
            await layer.group_discard("g", bad)  # type: ignore[arg-type]
        assert str(info.value) == CHANNEL_ERROR
    for bad in ("bad name", "has!bang", "x" * 100, "", 5, None):
        with pytest.raises(TypeError) as info:
            await layer.group_add(bad, "chan")  # type: ignore[arg-type]
        assert str(info.value) == GROUP_ERROR
        with pytest.raises(TypeError) as info:
            await layer.group_discard(bad, "chan")  # type: ignore[arg-type]
        assert str(info.value) == GROUP_ERROR
        with pytest.raises(TypeError) as info:
            await layer.group_send(bad, msg(1))  # type: ignore[arg-type]
        assert str(info.value) == GROUP_ERROR
    assert layer.channels == {}
    assert layer.groups == {}


async def test_channel_full_keeps_earlier_messages() -> None:
    layer = InMemoryChannelLayer(capacity=3)
    for n in range(3):
        await layer.send("full", msg(n))
    assert layer.channels["full"].full()
    with pytest.raises(ChannelFull):
        await layer.send("full", msg(3))
    with pytest.raises(ChannelFull):
        await layer.send("full", msg(4))
    # Other channels are unaffected.
    await layer.send("other", msg(100))
    # Exactly the earlier messages, in order; the rejected ones were not queued.
    assert layer.channels["full"].qsize() == 3
    assert [(await layer.receive("full"))["n"] for _ in range(3)] == [0, 1, 2]
    assert "full" not in layer.channels
    # Room again once messages are taken.
    await layer.send("full", msg(5))
    assert await layer.receive("full") == msg(5)
    assert await layer.receive("other") == msg(100)


async def test_zero_capacity_means_unbounded_as_upstream() -> None:
    layer = InMemoryChannelLayer(capacity=0, channel_capacity={"tiny": 1})
    for n in range(500):
        await layer.send("unbounded", msg(n))
    assert not layer.channels["unbounded"].full()
    assert layer.channels["unbounded"].qsize() == 500
    await layer.send("tiny", msg(0))
    with pytest.raises(ChannelFull):
        await layer.send("tiny", msg(1))


async def test_per_channel_capacity() -> None:
    layer = InMemoryChannelLayer(
        capacity=5, channel_capacity={"small.*": 1, re.compile(r"^medium$"): 2}
    )
    await layer.send("small.a", msg(1))
    with pytest.raises(ChannelFull):
        await layer.send("small.a", msg(2))
    await layer.send("small.b", msg(3))  # each channel has its own capacity
    await layer.send("medium", msg(4))
    await layer.send("medium", msg(5))
    with pytest.raises(ChannelFull):
        await layer.send("medium", msg(6))
    for n in range(5):
        await layer.send("big", msg(n))
    with pytest.raises(ChannelFull):
        await layer.send("big", msg(5))
    assert await layer.receive("small.a") == msg(1)
    assert await layer.receive("small.b") == msg(3)
    assert [(await layer.receive("medium"))["n"] for _ in range(2)] == [4, 5]
    assert [(await layer.receive("big"))["n"] for _ in range(5)] == [0, 1, 2, 3, 4]
    assert layer.channels == {}


async def test_capacity_applies_to_channel_created_by_waiting_receiver() -> None:
    layer = InMemoryChannelLayer(capacity=10, channel_capacity={"tiny": 1})
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(layer.receive, "tiny")
            await wait_all_tasks_blocked()
            assert layer.channels["tiny"].capacity == 1
            tg.cancel_scope.cancel()
    assert layer.channels == {}


async def test_new_channel() -> None:
    layer = InMemoryChannelLayer()
    names = {await layer.new_channel() for _ in range(200)}
    assert len(names) == 200
    for name in names:
        assert re.fullmatch(r"specific\.\.inmemory![a-zA-Z]{12}", name), name
        assert layer.require_valid_channel_name(name)
        assert layer.non_local_name(name) == "specific..inmemory!"
    custom = await layer.new_channel(prefix="worker")
    assert re.fullmatch(r"worker\.inmemory![a-zA-Z]{12}", custom)
    # Creating a name does not create a channel.
    assert layer.channels == {}


async def test_flush_and_close() -> None:
    layer = InMemoryChannelLayer()
    await layer.send("a", msg(1))
    await layer.send("b", msg(2))
    await layer.group_add("g", "a")
    await layer.group_add("h", "c")
    assert set(layer.channels) == {"a", "b"}
    assert set(layer.groups) == {"g", "h"}
    await layer.flush()
    assert layer.channels == {}
    assert layer.groups == {}
    await layer.group_send("g", msg(3))  # the group is gone: nothing delivered
    assert layer.channels == {}

    # The flushed messages are gone, and the layer keeps working.
    await layer.send("a", msg(4))
    assert await layer.receive("a") == msg(4)

    assert await layer.close() is None
    await layer.send("a", msg(5))
    assert await layer.receive("a") == msg(5)


async def test_flush_keeps_waiting_receivers_waiting() -> None:
    layer = InMemoryChannelLayer()
    received: list[dict[str, Any]] = []

    async def receiver() -> None:
        received.append(await layer.receive("waiting"))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(receiver)
            await wait_all_tasks_blocked()
            await layer.flush()
            await wait_all_tasks_blocked()
            assert received == []
            await layer.send("waiting", msg(1))
    assert received == [msg(1)]
    assert layer.channels == {}


# -- in-memory layer: groups ----------------------------------------------------------


async def test_groups_add_send_discard() -> None:
    layer = InMemoryChannelLayer()
    await layer.group_add("chat", "one")
    await layer.group_add("chat", "two")
    await layer.group_add("chat", "two")  # joining twice is still one membership
    await layer.group_add("other", "two")
    assert set(layer.groups) == {"chat", "other"}
    assert set(layer.groups["chat"]) == {"one", "two"}

    await layer.group_send("chat", msg(1))
    assert await layer.receive("one") == msg(1)
    assert await layer.receive("two") == msg(1)
    assert layer.channels == {}  # exactly one copy each

    await layer.group_discard("chat", "one")
    await layer.group_discard("chat", "one")  # discarding a non-member is fine
    await layer.group_discard("nogroup", "one")
    await layer.group_send("chat", msg(2))
    assert set(layer.channels) == {"two"}
    assert await layer.receive("two") == msg(2)

    await layer.group_discard("chat", "two")
    assert "chat" not in layer.groups
    await layer.group_discard("other", "two")
    assert layer.groups == {}

    # Sending to an empty or unknown group is a no-op.
    await layer.group_send("chat", msg(3))
    await layer.group_send("never-existed", msg(4))
    assert layer.channels == {}
    assert layer.groups == {}


async def test_group_send_skips_full_members() -> None:
    layer = InMemoryChannelLayer(capacity=5, channel_capacity={"full.*": 1})
    await layer.send("full.a", msg(0))
    for channel in ("before", "full.a", "after"):
        await layer.group_add("g", channel)
    await layer.group_send("g", msg(1))  # no ChannelFull escapes
    assert await layer.receive("before") == msg(1)
    assert await layer.receive("after") == msg(1)
    assert layer.channels["full.a"].qsize() == 1
    assert await layer.receive("full.a") == msg(0)
    assert layer.channels == {}
    # The full member stays in the group and gets later messages.
    await layer.group_send("g", msg(2))
    assert await layer.receive("full.a") == msg(2)


async def test_group_send_wakes_waiting_members() -> None:
    layer = InMemoryChannelLayer()
    received: dict[str, dict[str, Any]] = {}

    async def receiver(channel: str) -> None:
        received[channel] = await layer.receive(channel)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for n in range(3):
                await layer.group_add("g", f"member{n}")
                tg.start_soon(receiver, f"member{n}")
            await wait_all_tasks_blocked()
            await layer.group_send("g", msg(7))
    assert received == {f"member{n}": msg(7) for n in range(3)}
    assert layer.channels == {}


# -- in-memory layer: expiry ----------------------------------------------------------


async def test_message_expiry() -> None:
    layer = InMemoryChannelLayer(expiry=0.05, capacity=1)
    await layer.send("expiring", msg(1))
    await layer.group_add("g1", "expiring")
    await layer.group_add("g2", "expiring")
    await layer.group_add("g2", "survivor")
    await anyio.sleep(0.3)
    layer.expiry = 60  # what is sent from now on stays, however slow this machine is
    # As upstream's, a send to another channel leaves the expired message where it is.
    await layer.send("unrelated", msg(2))
    assert set(layer.channels) == {"expiring", "unrelated"}
    assert set(layer.groups["g1"]) == {"expiring"}
    # A receive notices it: it is gone, with its channel, and the channel has left its
    # groups.
    assert await layer.receive("unrelated") == msg(2)
    assert "expiring" not in layer.channels
    assert "g1" not in layer.groups
    assert set(layer.groups["g2"]) == {"survivor"}

    # The expired message is never received: the next one is, and the channel, which was
    # full, has room again.
    await layer.send("expiring", msg(3))
    assert await layer.receive("expiring") == msg(3)
    assert layer.channels == {}


async def test_an_expired_message_stays_until_a_receive_as_upstreams_does() -> None:
    """Upstream's test_expiry_unread: a send to another channel does not expire."""
    layer = InMemoryChannelLayer(expiry=0.05)
    await layer.send("test-channel-1", msg(1))
    await anyio.sleep(0.3)
    layer.expiry = 60
    await layer.send("test-channel-2", msg(2))
    assert len(layer.channels) == 2
    assert await layer.receive("test-channel-2") == msg(2)
    assert len(layer.channels) == 0


async def test_group_send_expires_as_upstreams_does() -> None:
    layer = InMemoryChannelLayer(expiry=0.05)
    await layer.send("stale", msg(1))
    await layer.group_add("g", "stale")
    await layer.group_add("g", "alive")
    await anyio.sleep(0.3)
    layer.expiry = 60
    await layer.group_add("h", "stale")  # a join does not expire either
    assert set(layer.groups) == {"g", "h"}
    await layer.group_send("g", msg(2))
    assert "stale" not in layer.channels
    assert set(layer.groups) == {"g"}
    assert set(layer.groups["g"]) == {"alive"}
    assert await layer.receive("alive") == msg(2)


async def test_sends_alone_expire_in_batches_so_memory_stays_bounded() -> None:
    """Nothing ever receives: once a batch of deadlines has passed, a send drops them."""
    layer = InMemoryChannelLayer(expiry=0.05)
    for n in range(_EXPIRY_BATCH - 1):
        await layer.send(f"dead{n}", msg(n))
    await anyio.sleep(0.3)
    layer.expiry = 60
    # One short of a batch is due: nothing is dropped yet.
    await layer.send("fresh", msg(0))
    assert len(layer.channels) == _EXPIRY_BATCH

    layer = InMemoryChannelLayer(expiry=0.05)
    for n in range(_EXPIRY_BATCH):
        await layer.send(f"dead{n}", msg(n))
    await anyio.sleep(0.3)
    layer.expiry = 60
    await layer.send("fresh", msg(1))
    # A whole batch was due: every expired message went, with its channel.
    assert set(layer.channels) == {"fresh"}

    # The same for memberships left by channels nobody reads.
    layer = InMemoryChannelLayer(group_expiry=0.05)
    for n in range(_EXPIRY_BATCH):
        await layer.group_add(f"g{n}", f"gone{n}")
    await anyio.sleep(0.3)
    layer.group_expiry = 60
    await layer.group_add("kept", "alive")
    assert set(layer.groups) == {"kept"}


async def test_a_conftest_can_patch_upstreams_private_cleanup_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Suites wrap _clean_expired and _remove_from_groups (upstream's names and
    signatures) to run cleanup at moments they choose, or to watch it."""
    calls: list[tuple[str, Any]] = []
    clean_expired = InMemoryChannelLayer._clean_expired
    remove_from_groups = InMemoryChannelLayer._remove_from_groups

    def wrapped_clean(self: InMemoryChannelLayer) -> None:
        calls.append(("clean", None))
        clean_expired(self)

    def wrapped_remove(self: InMemoryChannelLayer, channel: str) -> None:
        calls.append(("remove", channel))
        remove_from_groups(self, channel)

    monkeypatch.setattr(InMemoryChannelLayer, "_clean_expired", wrapped_clean)
    monkeypatch.setattr(InMemoryChannelLayer, "_remove_from_groups", wrapped_remove)

    layer = InMemoryChannelLayer(expiry=0.05)
    await layer.send("stale", msg(1))
    await layer.group_add("g", "stale")
    await layer.group_add("g", "alive")
    await anyio.sleep(0.3)
    # The suite runs the cleanup itself, when it wants to.
    layer._clean_expired()
    assert ("remove", "stale") in calls
    assert "stale" not in layer.channels
    assert set(layer.groups["g"]) == {"alive"}
    # And calling _remove_from_groups directly takes a channel out of every group.
    await layer.group_add("h", "alive")
    layer._remove_from_groups("alive")
    assert layer.groups == {}
    # The layer's own expiry goes through the patched names too.
    calls.clear()
    await layer.send("stale2", msg(2))
    await layer.group_add("g", "stale2")
    await anyio.sleep(0.3)
    layer.expiry = 60
    await layer.send("other", msg(3))
    assert await layer.receive("other") == msg(3)
    assert calls[0] == ("clean", None)
    assert ("remove", "stale2") in calls
    assert layer.groups == {}

    # A suite that replaces _clean_expired with a no-op keeps expired messages.
    monkeypatch.setattr(InMemoryChannelLayer, "_clean_expired", lambda self: None)
    layer = InMemoryChannelLayer(expiry=0.05)
    await layer.send("kept", msg(4))
    await anyio.sleep(0.3)
    assert await layer.receive("kept") == msg(4)


async def test_expired_message_not_received() -> None:
    layer = InMemoryChannelLayer(expiry=0.05)
    await layer.send("chan", msg(1))
    await layer.send("chan", msg(2))
    await anyio.sleep(0.3)
    layer.expiry = 60  # what is sent from now on stays, however slow this machine is
    received: list[dict[str, Any]] = []
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:

            async def receiver() -> None:
                received.append(await layer.receive("chan"))

            tg.start_soon(receiver)
            await wait_all_tasks_blocked()
            # The receiver dropped the expired messages and is waiting.
            assert received == []
            assert layer.channels["chan"].empty()
            await layer.send("chan", msg(3))
    assert received == [msg(3)]
    assert layer.channels == {}


async def test_received_messages_do_not_expire_later_ones() -> None:
    layer = InMemoryChannelLayer(expiry=0.2)
    await layer.send("chan", msg(1))
    assert await layer.receive("chan") == msg(1)
    await layer.group_add("g", "chan")
    await anyio.sleep(0.3)  # msg(1)'s deadline passes; it was received, so no effect
    layer.expiry = 60
    await layer.send("chan", msg(2))
    assert set(layer.groups) == {"g"}
    assert set(layer.groups["g"]) == {"chan"}
    assert await layer.receive("chan") == msg(2)


async def test_group_expiry() -> None:
    layer = InMemoryChannelLayer(group_expiry=0.05)
    await layer.group_add("g", "old")
    await layer.group_add("lonely", "old")
    await anyio.sleep(0.3)
    layer.group_expiry = 60  # later joins last, however slow this machine is
    await layer.group_add("g", "new")
    await layer.group_send("g", msg(1))
    assert set(layer.groups["g"]) == {"new"}
    assert "lonely" not in layer.groups  # its only member expired
    assert set(layer.channels) == {"new"}
    assert await layer.receive("new") == msg(1)


async def test_group_rejoin_restarts_expiry() -> None:
    layer = InMemoryChannelLayer(group_expiry=0.2)
    await layer.group_add("g", "member")
    layer.group_expiry = 60
    await layer.group_add("g", "member")  # rejoins at once: a new, later deadline
    await anyio.sleep(0.4)  # past the first join's deadline
    await layer.group_send("g", msg(1))
    assert await layer.receive("member") == msg(1)
    assert set(layer.groups["g"]) == {"member"}


# -- in-memory layer: cancellation and concurrency ------------------------------------


async def test_cancelled_receiver_loses_nothing() -> None:
    layer = InMemoryChannelLayer()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(layer.receive, "chan")
            await wait_all_tasks_blocked()
            assert "chan" in layer.channels
            tg.cancel_scope.cancel()
        # The cancelled receiver leaves no empty channel behind.
        assert layer.channels == {}
        await layer.send("chan", msg(1))
        assert await layer.receive("chan") == msg(1)
        assert layer.channels == {}


async def test_cancelled_receiver_with_others_still_waiting() -> None:
    layer = InMemoryChannelLayer()
    received: list[dict[str, Any]] = []

    async def receiver() -> None:
        received.append(await layer.receive("chan"))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            async with anyio.create_task_group() as doomed:
                doomed.start_soon(layer.receive, "chan")
                await wait_all_tasks_blocked()
                tg.start_soon(receiver)
                await wait_all_tasks_blocked()
                doomed.cancel_scope.cancel()
            # The other receiver still waits on the channel, which is kept for it.
            assert "chan" in layer.channels
            await layer.send("chan", msg(1))
    assert received == [msg(1)]
    assert layer.channels == {}


@pytest.mark.parametrize("order", ["send_then_cancel", "cancel_then_send"])
async def test_woken_then_cancelled_receiver_passes_message_on(order: str) -> None:
    layer = InMemoryChannelLayer()
    first: list[dict[str, Any]] = []
    second: list[dict[str, Any]] = []
    first_scope = anyio.CancelScope()
    second_scope = anyio.CancelScope()

    async def receiver(scope: anyio.CancelScope, into: list[dict[str, Any]]) -> None:
        with scope:
            into.append(await layer.receive("chan"))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(receiver, first_scope, first)
            await wait_all_tasks_blocked()
            tg.start_soon(receiver, second_scope, second)
            await wait_all_tasks_blocked()
            # No checkpoint between these two: the first receiver cannot run in between.
            if order == "send_then_cancel":
                await layer.send("chan", msg(1))
                first_scope.cancel()
            else:
                first_scope.cancel()
                await layer.send("chan", msg(1))
            await wait_all_tasks_blocked()
            # The message went to exactly one receiver; none is left waiting beside it.
            assert first + second == [msg(1)]
            if first:
                assert "chan" in layer.channels  # the second receiver still waits
                assert layer.channels["chan"].empty()
            second_scope.cancel()
    assert layer.channels == {}


async def test_concurrent_receivers_get_distinct_messages() -> None:
    layer = InMemoryChannelLayer(capacity=1000)
    count, workers = 60, 4
    received: dict[int, list[int]] = {w: [] for w in range(workers)}

    async def worker(w: int) -> None:
        while True:
            message = await layer.receive("work")
            if message["type"] == "stop":
                return
            received[w].append(message["n"])
            await anyio.lowlevel.checkpoint()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for w in range(workers):
                tg.start_soon(worker, w)
            await wait_all_tasks_blocked()
            for n in range(count):
                await layer.send("work", msg(n))
                if n % 7 == 0:
                    await anyio.lowlevel.checkpoint()
            for _ in range(workers):
                await layer.send("work", {"type": "stop"})
    everything = [n for per_worker in received.values() for n in per_worker]
    assert sorted(everything) == list(range(count))  # all delivered, none twice
    for per_worker in received.values():
        assert per_worker == sorted(per_worker)  # each sees them in FIFO order
    assert layer.channels == {}


async def test_many_waiting_receivers_one_message_each() -> None:
    layer = InMemoryChannelLayer()
    received: list[int] = []

    async def receiver() -> None:
        received.append((await layer.receive("chan"))["n"])

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(receiver)
            await wait_all_tasks_blocked()
            for n in range(10):
                await layer.send("chan", msg(n))
    assert sorted(received) == list(range(10))
    assert layer.channels == {}


async def test_bookkeeping_follows_live_state_not_traffic() -> None:
    """Joining and leaving, or sending and receiving, many times leaves no residue that
    grows with the traffic (deadlines of gone items are dropped in bulk)."""
    layer = InMemoryChannelLayer()
    for n in range(50_000):
        await layer.group_add("room", f"member{n % 7}")
        await layer.group_discard("room", f"member{n % 7}")
        await layer.send("busy", msg(n))
        assert await layer.receive("busy") == msg(n)
    assert layer.groups == {}
    assert layer.channels == {}
    assert len(layer._membership_deadlines) <= 2 * _MIN_COMPACTION
    assert len(layer._message_deadlines) <= 2 * _MIN_COMPACTION


async def test_queued_message_is_delivered_to_a_cancelled_receiver() -> None:
    """As upstream, a receive that finds a message queued returns it without a
    checkpoint; the cancellation lands at the next one, and nothing is lost."""
    layer = InMemoryChannelLayer()
    await layer.send("chan", msg(1))
    received: list[dict[str, Any]] = []
    with anyio.fail_after(5):
        with anyio.CancelScope() as scope:
            scope.cancel()
            received.append(await layer.receive("chan"))
            received.append(await layer.receive("chan"))  # must wait: cancelled here
        assert scope.cancelled_caught
        assert received == [msg(1)]
        assert layer.channels == {}
        await layer.send("chan", msg(2))
        assert await layer.receive("chan") == msg(2)


async def test_idle_channels_are_reused_within_bounds() -> None:
    """A channel that goes idle between messages keeps its capacity when it comes back,
    and idle channels kept for reuse stay bounded however many names pass through."""
    layer = InMemoryChannelLayer(channel_capacity={"small.*": 1})
    for n in range(6000):
        await layer.send(f"chan{n}", msg(n))
        assert await layer.receive(f"chan{n}") == msg(n)
    assert layer.channels == {}
    assert len(layer._idle) <= 4096
    for n in range(3):
        await layer.send("small.one", msg(n))
        with pytest.raises(ChannelFull):
            await layer.send("small.one", msg(99))
        assert await layer.receive("small.one") == msg(n)
        assert layer.channels == {}
    # Flushing forgets idle channels too; a name comes back validated and empty.
    await layer.flush()
    assert layer._idle == {}
    with pytest.raises(TypeError, match="Channel name must be"):
        await layer.receive("bad name")


async def test_flat_group_messages_are_copied_per_member() -> None:
    layer = InMemoryChannelLayer()
    for member in ("m1", "m2"):
        await layer.group_add("g", member)
    payload = {"type": "flat", "n": 1, "text": "hi"}
    await layer.group_send("g", payload)
    payload["n"] = 2
    one = await layer.receive("m1")
    one["text"] = "mine"
    assert await layer.receive("m2") == {"type": "flat", "n": 1, "text": "hi"}
    assert one == {"type": "flat", "n": 1, "text": "mine"}


async def test_expiry_after_a_channel_was_reused() -> None:
    layer = InMemoryChannelLayer(expiry=0.05)
    await layer.send("chan", msg(1))
    assert await layer.receive("chan") == msg(1)  # now idle, kept for reuse
    await layer.group_add("g", "chan")
    await layer.send("chan", msg(2))  # revived
    await anyio.sleep(0.1)
    layer.expiry = 60
    await layer.send("other", msg(3))
    assert await layer.receive("other") == msg(3)  # a receive expires what is due
    assert "chan" not in layer.channels
    assert "g" not in layer.groups  # its expired message took it out of the group


async def test_a_flooded_receiver_still_lets_other_tasks_run() -> None:
    """Receives that find messages queued skip the checkpoint, but not forever."""
    layer = InMemoryChannelLayer(capacity=0)
    for n in range(1000):
        await layer.send("flood", msg(n))
    async with TurnCounter() as others:
        for n in range(1000):
            assert await layer.receive("flood") == msg(n)
        during = others.turns
    assert 1000 // 64 - 1 <= during <= 1000 // 8  # the last tick may come after we look


async def test_a_flooded_receiver_can_be_cancelled_without_losing_a_message() -> None:
    layer = InMemoryChannelLayer(capacity=0)
    for n in range(200):
        await layer.send("flood", msg(n))
    received: list[dict[str, Any]] = []
    with anyio.CancelScope() as scope:
        scope.cancel()
        while True:
            received.append(await layer.receive("flood"))
    assert 0 < len(received) < 200
    rest = [await layer.receive("flood") for _ in range(200 - len(received))]
    assert received + rest == [msg(n) for n in range(200)]


async def test_a_woken_receiver_keeps_its_message_if_the_channel_is_dropped_meanwhile() -> None:
    """Channels' own suite deletes ``layer.channels[name]`` between a send and the wake-up
    of the receiver waiting on it; the receiver still gets the message."""
    layer = InMemoryChannelLayer()
    received: list[dict[str, Any]] = []

    async def receive() -> None:
        received.append(await layer.receive("chan"))

    async with anyio.create_task_group() as group:
        group.start_soon(receive)
        await anyio.wait_all_tasks_blocked()
        await layer.send("chan", msg(1))
        del layer.channels["chan"]
    assert received == [msg(1)]


def leave_a_receiver_on_a_closed_loop(layer: InMemoryChannelLayer, channel: str) -> object:
    """What happens between tests: a receive left waiting when its event loop closed."""
    import asyncio  # a loop of asyncio's that is closed under a waiting receiver

    loop = asyncio.new_event_loop()
    task = loop.create_task(layer.receive(channel))
    loop.run_until_complete(asyncio.sleep(0.01))
    loop.close()
    return task  # kept by the caller, so it is not reported as destroyed mid-test


async def test_group_send_delivers_to_every_member_one_of_which_cannot_be_woken() -> None:
    layer = InMemoryChannelLayer()
    stale = await anyio.to_thread.run_sync(leave_a_receiver_on_a_closed_loop, layer, "stale")
    for channel in ("before", "stale", "after"):
        await layer.group_add("g", channel)
    await layer.group_send("g", msg(1))
    assert await layer.receive("before") == msg(1)
    assert await layer.receive("after") == msg(1)
    # The message waits on the stale member's channel for a receiver that can take it.
    assert await layer.receive("stale") == msg(1)
    # A plain send to it works the same.
    await layer.send("stale", msg(2))
    assert await layer.receive("stale") == msg(2)
    del stale


async def test_group_send_tries_every_member_before_raising_a_delivery_error(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    layer = InMemoryChannelLayer()
    put = InMemoryChannelLayer._put

    def put_failing_for_broken(
        self: InMemoryChannelLayer, name: str, message: Any, now: float
    ) -> None:
        if name.startswith("broken"):
            raise RuntimeError(f"cannot deliver to {name}")
        put(self, name, message, now)

    monkeypatch.setattr(InMemoryChannelLayer, "_put", put_failing_for_broken)
    for channel in ("a", "broken1", "b", "broken2", "c"):
        await layer.group_add("g", channel)
    with pytest.raises(RuntimeError, match="cannot deliver to broken1"):
        await layer.group_send("g", msg(1))
    for channel in ("a", "b", "c"):
        assert await layer.receive(channel) == msg(1)
    assert "failed for 'broken2'" in caplog.text


async def test_a_receive_that_yields_does_not_make_the_others_in_its_pass_yield(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every 64th receive in a row that finds a message yields; the receives of other tasks
    that run while it is yielding start a new count rather than all yielding too."""
    from channels.layers.inmemory import _YIELD_EVERY

    layer = InMemoryChannelLayer(capacity=0)
    for n in range(_YIELD_EVERY - 1):
        await layer.send("flood", msg(n))
    for n in range(10):
        await layer.send(f"own.{n}", msg(n))
    yields = 0
    checkpoint = anyio.lowlevel.checkpoint

    async def counted_checkpoint() -> None:
        nonlocal yields
        yields += 1
        await checkpoint()

    monkeypatch.setattr(anyio.lowlevel, "checkpoint", counted_checkpoint)
    for n in range(_YIELD_EVERY - 1):
        assert await layer.receive("flood") == msg(n)
    assert yields == 0
    received: list[int] = []

    async def receive(n: int) -> None:
        received.append((await layer.receive(f"own.{n}"))["n"])

    async with anyio.create_task_group() as group:
        for n in range(10):
            group.start_soon(receive, n)
    assert sorted(received) == list(range(10))
    assert yields == 1


async def test_group_send_gives_each_member_its_own_copy_of_a_nested_message() -> None:
    class Note:
        def __init__(self, text: str) -> None:
            self.text = text

        def __eq__(self, other: object) -> bool:
            return isinstance(other, Note) and other.text == self.text

    layer = InMemoryChannelLayer()
    members = [f"m{n}" for n in range(3)]
    for member in members:
        await layer.group_add("g", member)
    payload = {
        "type": "nested",
        "flat": {"a": 1},
        "deep": {"list": [1, {"b": [2, 3]}], "pair": (4, [5]), "frozen": (6, "seven")},
        "note": Note("hi"),
    }
    await layer.group_send("g", payload)
    first, second, third = [await layer.receive(member) for member in members]
    assert first == second == third == payload
    first["flat"]["a"] = 0
    first["deep"]["list"][1]["b"].append(9)
    first["deep"]["pair"][1].append(9)
    first["note"].text = "changed"
    assert second == third == payload  # the others', and the sender's, are untouched
    assert payload["flat"] == {"a": 1}
    assert payload["note"] == Note("hi")
    assert second["deep"] is not third["deep"]
    assert second["deep"]["list"][1] is not third["deep"]["list"][1]
    assert second["deep"]["pair"][1] is not third["deep"]["pair"][1]
    assert second["note"] is not third["note"]


async def test_call_on_message_calls_once_a_message_is_queued_and_leaves_it_queued() -> None:
    layer = InMemoryChannelLayer()
    calls: list[str] = []
    withdraw = layer.call_on_message("watched", lambda: calls.append("called"))
    assert "watched" in layer.channels  # waiting, like a receiver
    assert calls == []
    await layer.send("watched", msg(1))
    await layer.send("watched", msg(2))
    assert calls == ["called"]  # once
    assert await layer.receive("watched") == msg(1)
    assert await layer.receive("watched") == msg(2)
    withdraw()  # after the call: nothing to do
    assert layer.channels == {}

    await layer.send("queued", msg(3))
    layer.call_on_message("queued", lambda: calls.append("at once"))
    assert calls == ["called", "at once"]
    assert await layer.receive("queued") == msg(3)


async def test_call_on_message_can_be_withdrawn_and_waits_its_turn() -> None:
    layer = InMemoryChannelLayer()
    calls: list[str] = []
    withdraw = layer.call_on_message("idle", lambda: calls.append("idle"))
    withdraw()
    assert layer.channels == {}
    await layer.send("idle", msg(1))
    assert calls == []
    assert await layer.receive("idle") == msg(1)

    received: list[dict[str, Any]] = []
    async with anyio.create_task_group() as group:

        async def receive() -> None:
            received.append(await layer.receive("shared"))

        group.start_soon(receive)
        await wait_all_tasks_blocked()  # the receiver waits first
        layer.call_on_message("shared", lambda: calls.append("shared"))
        await layer.send("shared", msg(2))
        assert calls == []  # the message went to the receiver that waited longer
        await layer.send("shared", msg(3))
        assert calls == ["shared"]
    assert received == [msg(2)]
    assert await layer.receive("shared") == msg(3)
    assert layer.channels == {}
