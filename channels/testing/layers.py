"""A conformance suite for channel layers: ours, and anyone's.

Subclass :class:`ChannelLayerConformance` in a test module, give it a ``make_layer``
factory, and pytest collects a test per rule of the layer contract, run on asyncio and
trio::

    from channels.testing.layers import ChannelLayerConformance

    class TestMyLayer(ChannelLayerConformance):
        async def make_layer(self, **config):
            return MyLayer(**config)

What each group of tests checks, and how a layer says what it does not do:

- Tests of an *extension* (``"groups"``, ``"flush"``, ``"history"``, ``"presence"``) run
  only for layers that list it in ``extensions``. A subclass that sets
  :attr:`ChannelLayerConformance.expected_extensions` gets no test of the others at all
  (and a test that the layer lists exactly those); one that does not gets them skipped
  with the reason ``layer does not list extension 'X'``. That is the only skip in the
  suite.
- Some rules of the core contract are left out, on purpose, by some layers: a broadcast
  layer (Redis pub/sub) stores nothing, so it has no ``ChannelFull`` and no expiry. Such a
  layer names those *features* in :attr:`ChannelLayerConformance.lacks`, each with its
  reason. Their tests still run, marked ``xfail(strict=True)`` with that reason: they are
  reported as expected failures, and a test that passes anyway fails the run, so a
  declaration cannot outlive the gap it describes. :data:`FEATURES` lists the names.

Every layer a test makes is flushed (if it lists ``"flush"``) and closed when the test
ends, however it ends. ``pytest`` and ``anyio``'s pytest plugin (installed with anyio) are
needed; this module is not imported by :mod:`channels.testing`, so applications that do
not test layers do not need pytest.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import random
import re
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar, cast

import anyio
import anyio.lowlevel
import pytest

from ..exceptions import ChannelFull
from ..layers.durable import POSITION_KEY, GroupHistory, StreamPosition
from ..types import ChannelLayer, HistoryChannelLayer, Message, PresenceChannelLayer

__all__ = [
    "CONFIG_KEYS",
    "FEATURES",
    "KNOWN_EXTENSIONS",
    "ChannelLayerConformance",
]

#: The core-contract features a layer may declare it lacks (see
#: :attr:`ChannelLayerConformance.lacks`), with what their tests check.
FEATURES: Mapping[str, str] = {
    "channel_full": (
        "send() raises ChannelFull on a channel holding `capacity` messages (per-channel "
        "capacities from `channel_capacity` globs and regexes) and queues nothing then; "
        "group_send skips full members and still delivers to the others"
    ),
    "message_expiry": "a message nobody receives within `expiry` seconds is dropped",
    "group_expiry": "a membership not renewed within `group_expiry` seconds ends",
    "stored_messages": (
        "a message sent to a named channel before anyone receives on it waits for the first "
        "receive; several receivers can share a named channel; a channel used before a "
        "flush() keeps working after it, empty"
    ),
}

#: The ``CONFIG`` keys the kit passes to ``make_layer``, each only to the tests that need it.
CONFIG_KEYS: tuple[str, ...] = (
    "expiry",
    "group_expiry",
    "capacity",
    "channel_capacity",
    "group_history",
    "presence_events",
    "presence_timeout",
)

# Upstream's messages, word for word (``channels/layers/base.py``): projects assert on them.
_INVALID_NAME = (
    "{} name must be a valid unicode string with length < 100 containing only ASCII "
    "alphanumerics, hyphens, underscores, or periods."
)
_CHANNEL_NAME = re.compile(r"^[a-zA-Z\d\-_.]+(\![\d\w\-_.]*)?$", re.ASCII)
_BAD_NAMES: tuple[object, ...] = ("has space", "", "x" * 100, "ünïcode", "a/b", 7, None, b"bytes")

# Tests that exercise a feature carry its name here (set by ``_feature``), and tests of
# extensions the extensions they need (set by ``_extensions``).
_FEATURE_ATTRIBUTE = "__channels_conformance_feature__"
_EXTENSIONS_ATTRIBUTE = "__channels_conformance_extensions__"
_ORIGINAL_ATTRIBUTE = "__channels_conformance_original__"

#: The extensions the kit has tests for.
KNOWN_EXTENSIONS: tuple[str, ...] = ("groups", "flush", "history", "presence")

_F = TypeVar("_F", bound=Callable[..., Awaitable[None]])


def _feature(name: str) -> Callable[[_F], _F]:
    """Mark a test as checking ``name`` (one of :data:`FEATURES`)."""
    assert name in FEATURES, name

    def mark(test: _F) -> _F:
        setattr(test, _FEATURE_ATTRIBUTE, name)
        return test

    return mark


def _extensions(*names: str) -> Callable[[_F], _F]:
    """Mark a test as needing the layer to list every extension in ``names``."""
    assert set(names) <= set(KNOWN_EXTENSIONS), names

    def mark(test: _F) -> _F:
        setattr(test, _EXTENSIONS_ATTRIBUTE, names)
        return test

    return mark


class ChannelLayerConformance:
    """The layer contract as test methods; subclass it and define :meth:`make_layer`.

    The class is not collected itself (its name does not start with ``Test``); a
    subclass named ``Test...`` is, with every test run once per backend in
    :attr:`anyio_backends`. The subclass needs nothing else: the backend is parametrized
    here (a class-level ``pytest_generate_tests``), overriding any ``anyio_backend``
    fixture for these tests only.
    """

    #: Core-contract features (names from :data:`FEATURES`) this layer does not provide,
    #: each with the reason. Their tests run as ``xfail(strict=True)``.
    lacks: ClassVar[Mapping[str, str]] = {}

    #: The extensions the layer lists, if the subclass wants to say so (``None``: find
    #: out from the layer). When given, tests of other extensions are not generated at
    #: all, and ``test_layer_lists_the_expected_extensions`` checks that the layer lists
    #: exactly these (of :data:`KNOWN_EXTENSIONS`): no skips, and a layer that gains an
    #: extension fails that test until its tests are switched on here.
    expected_extensions: ClassVar[Sequence[str] | None] = None

    #: The event loops to run every test on.
    anyio_backends: ClassVar[Sequence[str]] = ("asyncio", "trio")

    #: Seconds a receive that should succeed may take before the test fails.
    receive_timeout: ClassVar[float] = 5.0

    #: The ``expiry``, ``group_expiry`` and history ``ttl`` the expiry tests configure, in
    #: seconds. A whole number by default, as layers on Redis require; a layer that takes
    #: fractions can lower it to make those tests quicker.
    short_expiry: ClassVar[float] = 1

    #: Seconds past :attr:`short_expiry` the expiry tests wait before expecting the item
    #: gone. Layers whose clocks count whole seconds (Redis scores) need more than a second.
    expiry_margin: ClassVar[float] = 1.2

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.anyio]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        unknown = set(cls.lacks) - set(FEATURES)
        if unknown:
            raise TypeError(
                f"{cls.__name__}.lacks names unknown features {sorted(unknown)!r}; the kit's "
                f"features are {sorted(FEATURES)!r} (extensions a layer does not support "
                "are left out of its `extensions` instead)"
            )
        expected = cls.expected_extensions
        if expected is not None and (
            isinstance(expected, str) or not set(expected) <= set(KNOWN_EXTENSIONS)
        ):
            raise TypeError(
                f"{cls.__name__}.expected_extensions must be a list of names from "
                f"{list(KNOWN_EXTENSIONS)!r}, got {expected!r}"
            )
        for name in dir(cls):
            if not name.startswith("test_"):
                continue
            test = cls._original_test(name)
            if test is None:
                continue
            needed = getattr(test, _EXTENSIONS_ATTRIBUTE, ())
            feature: str = getattr(test, _FEATURE_ATTRIBUTE, "")
            if expected is not None and not set(needed) <= set(expected):
                setattr(cls, name, None)  # not generated: pytest collects no None
            elif feature in cls.lacks:
                setattr(cls, name, cls._expected_failure(test, feature))
            elif getattr(cls, name) is not test:
                setattr(cls, name, test)  # a parent class's choice, undone here

    @classmethod
    def _original_test(cls, name: str) -> Any:
        """The test function ``name`` as written, under any wrapper or ``None`` that a
        parent class put in its place (a subclass may say otherwise)."""
        for klass in cls.__mro__:
            value = klass.__dict__.get(name)
            if value is not None:
                return getattr(value, _ORIGINAL_ATTRIBUTE, value)
        return None

    @classmethod
    def _expected_failure(cls, test: Callable[..., Awaitable[None]], feature: str) -> Any:
        # A copy of the test for this subclass alone: marking the base class's function
        # would mark it for every other layer too.
        async def expected_failure(self: ChannelLayerConformance) -> None:
            await test(self)

        # Not functools.wraps: its ``__wrapped__`` would send pytest to the original.
        for attribute in ("__module__", "__name__", "__qualname__", "__doc__"):
            setattr(expected_failure, attribute, getattr(test, attribute))
        setattr(expected_failure, _ORIGINAL_ATTRIBUTE, test)
        reason = f"layer lacks {feature!r}: {cls.lacks[feature]}"
        return pytest.mark.xfail(strict=True, reason=reason)(expected_failure)

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        """Run each test once per backend in :attr:`anyio_backends`."""
        if "anyio_backend" in metafunc.fixturenames:
            metafunc.parametrize("anyio_backend", list(self.anyio_backends))

    # -- what a subclass provides --------------------------------------------------------

    async def make_layer(self, **config: Any) -> ChannelLayer:
        """Make a new, empty layer with these ``CONFIG`` settings (keys from
        :data:`CONFIG_KEYS`), as ``CHANNEL_LAYERS`` would.

        Override it. Each call must give a layer that shares nothing with earlier ones
        (for Redis: a fresh key prefix). Raise :exc:`TypeError` for a key the layer does
        not support: the test then fails saying which key.
        """
        raise TypeError(
            f"{type(self).__name__} must define `async def make_layer(self, **config)` "
            "returning a new channel layer"
        )

    # -- helpers the tests share (also for a subclass's own tests) -------------------------

    @contextlib.asynccontextmanager
    async def open_layer(
        self, *extensions: str, **config: Any
    ) -> AsyncGenerator[ChannelLayer, None]:
        """A layer from :meth:`make_layer`, flushed and closed on the way out.

        Skips the test (the suite's only skip) if the layer does not list every one of
        ``extensions``.
        """
        layer = await self._make(config, extensions)
        try:
            listed = list(layer.extensions)
            for extension in extensions:
                if extension not in listed:
                    pytest.skip(f"layer does not list extension {extension!r}")
            yield layer
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    if "flush" in layer.extensions:
                        await layer.flush()
                finally:
                    await layer.close()

    async def _make(
        self, config: dict[str, Any], extensions: tuple[str, ...] = ()
    ) -> ChannelLayer:
        try:
            return await self.make_layer(**config)
        except TypeError as error:
            if not config:
                raise
            if extensions:
                # The settings of an extension the layer does not list may well be
                # refused: that is a skip, not a failure.
                plain = await self.make_layer()
                try:
                    listed = list(plain.extensions)
                finally:
                    with anyio.CancelScope(shield=True):
                        await plain.close()
                for extension in extensions:
                    if extension not in listed:
                        pytest.skip(f"layer does not list extension {extension!r}")
            rejected = await self._rejected_keys(config)
            keys = rejected or sorted(config)
            raise AssertionError(
                f"{type(self).__name__}.make_layer rejected the CONFIG key(s) {keys!r} "
                f"({type(error).__name__}: {error}); this test needs them: "
                f"{ {key: config[key] for key in keys}!r}. A layer without the feature "
                "they configure declares it in `lacks` (or leaves the extension out of "
                "`extensions`)"
            ) from error

    async def _rejected_keys(self, config: dict[str, Any]) -> list[str]:
        """Which of ``config``'s keys the factory refuses on their own."""
        rejected: list[str] = []
        for key in sorted(config):
            try:
                layer = await self.make_layer(**{key: config[key]})
            except TypeError:
                rejected.append(key)
            else:
                with anyio.CancelScope(shield=True):
                    await layer.close()
        return rejected

    async def receive(self, layer: ChannelLayer, channel: str) -> Message:
        """The next message on ``channel``; fails after :attr:`receive_timeout` seconds."""
        with anyio.move_on_after(self.receive_timeout):
            return await layer.receive(channel)
        raise AssertionError(
            f"nothing arrived on {channel!r} within {self.receive_timeout} s (receive_timeout)"
        )

    async def _wait(self, event: anyio.Event, failure: str) -> None:
        with anyio.move_on_after(self.receive_timeout):
            await event.wait()
            return
        raise AssertionError(f"{failure} within {self.receive_timeout} s (receive_timeout)")

    async def assert_nothing_queued(self, layer: ChannelLayer, channel: str) -> None:
        """Check that ``channel`` holds nothing: a marker sent now is the next message."""
        marker = {"type": "conformance.marker", "id": uuid.uuid4().hex}
        await layer.send(channel, marker)
        got = await self.receive(layer, channel)
        assert got == marker, f"{channel!r} held {got!r} before the marker"

    @staticmethod
    def named_channel(prefix: str = "conformance") -> str:
        """A fresh normal (not process-specific) channel name."""
        return f"{prefix}.{uuid.uuid4().hex[:12]}"

    @staticmethod
    def group_name(prefix: str = "conformance") -> str:
        """A fresh group name starting with ``prefix``."""
        return f"{prefix}.{uuid.uuid4().hex[:12]}"

    # == names ===========================================================================

    async def test_channel_names_are_validated(self) -> None:
        """send() rejects bad channel names with upstream's TypeError, and a bad receive()
        does too; nothing is queued by a rejected call."""
        async with self.open_layer() as layer:
            message = _INVALID_NAME.format("Channel")
            for name in _BAD_NAMES:
                with pytest.raises(TypeError) as raised:
                    await layer.send(cast(str, name), {"type": "x"})
                assert str(raised.value) == message, (name, str(raised.value))
                with pytest.raises(TypeError) as raised, anyio.fail_after(self.receive_timeout):
                    await layer.receive(cast(str, name))
                assert str(raised.value) == message, (name, str(raised.value))
            # The longest valid name, and every allowed character, are accepted.
            await layer.send("a" * 99, {"type": "x"})
            await layer.send("Az09-_.", {"type": "x"})

    @_extensions("groups")
    async def test_group_names_are_validated(self) -> None:
        """group_add, group_discard and group_send reject bad group names (and bad channel
        names) with upstream's TypeError."""
        async with self.open_layer("groups") as layer:
            channel = await layer.new_channel()
            group_message = _INVALID_NAME.format("Group")
            for name in (*_BAD_NAMES, "group!bang"):
                bad = cast(str, name)
                for call in (
                    functools.partial(layer.group_add, bad, channel),
                    functools.partial(layer.group_discard, bad, channel),
                    functools.partial(layer.group_send, bad, {"type": "x"}),
                ):
                    with pytest.raises(TypeError) as raised:
                        await call()
                    assert str(raised.value) == group_message, (name, str(raised.value))
            for name in _BAD_NAMES:
                with pytest.raises(TypeError) as raised:
                    await layer.group_add("good", cast(str, name))
                assert str(raised.value) == _INVALID_NAME.format("Channel")
            await layer.group_send("good", {"type": "x"})
            await self.assert_nothing_queued(layer, channel)

    async def test_layer_lists_the_expected_extensions(self) -> None:
        """The layer's ``extensions`` hold exactly :attr:`expected_extensions` (of those the
        kit knows), when the subclass gives them; the layer must satisfy
        :class:`~channels.types.ChannelLayer` in any case."""
        async with self.open_layer() as layer:
            assert isinstance(layer, ChannelLayer), "the layer lacks ChannelLayer's methods"
            listed = list(layer.extensions)
            assert all(isinstance(name, str) for name in listed), listed
            if self.expected_extensions is not None:
                known = sorted(set(listed) & set(KNOWN_EXTENSIONS))
                assert known == sorted(self.expected_extensions), (
                    f"the layer lists {known!r}, the test class expects "
                    f"{sorted(self.expected_extensions)!r}: update expected_extensions"
                )

    # == new_channel =====================================================================

    async def test_new_channel_names_are_unique_and_valid(self) -> None:
        """new_channel() gives valid, distinct names holding the prefix it was given; a
        process-specific name (with ``!``) has exactly one ``!``, after a non-empty part."""
        async with self.open_layer() as layer:
            names = [await layer.new_channel() for _ in range(50)]
            names += [await layer.new_channel("kit.") for _ in range(50)]
            assert len(set(names)) == len(names), "new_channel() repeated a name"
            for name in names:
                assert isinstance(name, str)
                assert len(name) < 100, name
                assert _CHANNEL_NAME.fullmatch(name), f"{name!r} is not a valid channel name"
                assert name.count("!") <= 1, name
                assert not name.startswith("!"), name
            assert all("kit" in name.partition("!")[0] for name in names[50:]), names[50:]

    async def test_new_channel_receives_what_is_sent(self) -> None:
        """A channel from new_channel() gets what is sent to it, and only that."""
        async with self.open_layer() as layer:
            one, two = await layer.new_channel(), await layer.new_channel()
            await layer.send(one, {"type": "to.one"})
            await layer.send(two, {"type": "to.two"})
            assert await self.receive(layer, two) == {"type": "to.two"}
            assert await self.receive(layer, one) == {"type": "to.one"}

    # == send and receive ================================================================

    async def test_messages_arrive_in_order_and_intact(self) -> None:
        """Messages on one channel arrive in the order sent, equal to what was sent
        (str, int, float, bool, None, bytes, lists and nested dicts)."""
        async with self.open_layer() as layer:
            channel = await layer.new_channel()
            sent = [
                {
                    "type": "kit.message",
                    "n": n,
                    "text": f"é{n}",
                    "ratio": n / 4,
                    "flag": n % 2 == 0,
                    "nothing": None,
                    "blob": bytes([n, 0, 255]),
                    "items": [n, "x", [1, 2]],
                    "nested": {"deep": {"n": n}},
                }
                for n in range(20)
            ]
            for message in sent:
                await layer.send(channel, message)
            received = [await self.receive(layer, channel) for _ in sent]
            assert received == sent

    async def test_messages_are_isolated(self) -> None:
        """Changing a message after send() changes nothing delivered, and changing a
        received message changes nobody else's copy."""
        async with self.open_layer() as layer:
            one, two = await layer.new_channel(), await layer.new_channel()
            message: Message = {"type": "kit.shared", "items": [1], "nested": {"k": "v"}}
            original = copy.deepcopy(message)
            await layer.send(one, message)
            await layer.send(two, message)
            message["items"].append(2)
            message["nested"]["k"] = "changed"
            message["added"] = True
            first = await self.receive(layer, one)
            assert first == original
            first["items"].append(3)
            first["nested"]["k"] = "mine"
            assert await self.receive(layer, two) == original

    @_extensions("groups")
    async def test_group_messages_are_isolated(self) -> None:
        """Each member of a group gets its own copy of a group message."""
        async with self.open_layer("groups") as layer:
            group = self.group_name()
            members = [await layer.new_channel() for _ in range(3)]
            for channel in members:
                await layer.group_add(group, channel)
            message: Message = {"type": "kit.shared", "items": [1], "nested": {"k": "v"}}
            original = copy.deepcopy(message)
            await layer.group_send(group, message)
            message["items"].append("sender")
            for channel in members:
                got = await self.receive(layer, channel)
                assert got == original
                got["items"].append("receiver")
                got["nested"]["k"] = "receiver"

    async def test_bad_messages_are_rejected(self) -> None:
        """A message that is not a dict, or holds the reserved ``__asgi_channel__`` key, is
        refused by send() and group_send() and queues nothing.

        Not a dict: :exc:`TypeError` (or :exc:`AssertionError`, upstream's ``assert``);
        the reserved key: :exc:`ValueError` (or :exc:`AssertionError`).
        """
        async with self.open_layer() as layer:
            channel = await layer.new_channel()
            groups = "groups" in layer.extensions
            if groups:
                await layer.group_add("kit-bad", channel)
            for bad in ("text", ["type", "x"], None, 3, b"{}"):
                with pytest.raises((TypeError, AssertionError)):
                    await layer.send(channel, cast(Message, bad))
                if groups:
                    with pytest.raises((TypeError, AssertionError)):
                        await layer.group_send("kit-bad", cast(Message, bad))
            reserved = {"type": "x", "__asgi_channel__": channel}
            with pytest.raises((ValueError, AssertionError)):
                await layer.send(channel, reserved)
            if groups:
                with pytest.raises((ValueError, AssertionError)):
                    await layer.group_send("kit-bad", reserved)
            await self.assert_nothing_queued(layer, channel)

    @_feature("stored_messages")
    async def test_named_channel_keeps_messages_for_the_first_receive(self) -> None:
        """A message sent to a named channel nobody receives on yet waits for the first
        receive, in order, on the longest valid name too."""
        async with self.open_layer() as layer:
            for channel in (self.named_channel(), "n" * 99):
                await layer.send(channel, {"type": "kit.first"})
                await layer.send(channel, {"type": "kit.second"})
                assert await self.receive(layer, channel) == {"type": "kit.first"}
                assert await self.receive(layer, channel) == {"type": "kit.second"}

    # == capacity ========================================================================

    @_feature("channel_full")
    async def test_full_channel_raises_and_queues_nothing(self) -> None:
        """At ``capacity`` messages, send() raises ChannelFull and queues nothing; after a
        receive there is room again.

        The capacity tests use named channels: process-specific channels of one layer may
        share one capacity (channels_redis's do, and ours on Redis).
        """
        async with self.open_layer(capacity=3) as layer:
            channel = self.named_channel()
            for n in range(3):
                await layer.send(channel, {"type": "kit.fill", "n": n})
            with pytest.raises(ChannelFull):
                await layer.send(channel, {"type": "kit.over", "n": 3})
            assert (await self.receive(layer, channel))["n"] == 0
            await layer.send(channel, {"type": "kit.fill", "n": 4})
            got = [(await self.receive(layer, channel))["n"] for _ in range(3)]
            assert got == [1, 2, 4], "the refused message was queued"
            await self.assert_nothing_queued(layer, channel)

    @_feature("channel_full")
    async def test_channel_capacity_patterns(self) -> None:
        """``channel_capacity`` globs and compiled regexes, matched against the whole
        channel name in order, set per-channel capacities; others get ``capacity``."""
        config = {
            "capacity": 5,
            "channel_capacity": {"small.*": 1, re.compile(r"medium\..*"): 2, "other.*": 4},
        }
        async with self.open_layer(**config) as layer:
            for prefix, capacity in (("small.", 1), ("medium.", 2), ("other.", 4)):
                channel = self.named_channel(prefix + "kit")
                for n in range(capacity):
                    await layer.send(channel, {"type": "kit.fill", "n": n})
                with pytest.raises(ChannelFull):
                    await layer.send(channel, {"type": "kit.over"})
                for n in range(capacity):
                    assert (await self.receive(layer, channel))["n"] == n

    @_extensions("groups")
    @_feature("channel_full")
    async def test_group_send_skips_full_members(self) -> None:
        """group_send() to a group with a full member raises nothing, delivers to the other
        members, and queues nothing on the full one."""
        async with self.open_layer("groups", capacity=1) as layer:
            group = self.group_name()
            full, free = self.named_channel(), self.named_channel()
            await layer.group_add(group, full)
            await layer.group_add(group, free)
            await layer.send(full, {"type": "kit.fill"})
            await layer.group_send(group, {"type": "kit.group"})
            assert await self.receive(layer, free) == {"type": "kit.group"}
            assert await self.receive(layer, full) == {"type": "kit.fill"}
            await self.assert_nothing_queued(layer, full)

    # == expiry ==========================================================================

    @_feature("message_expiry")
    async def test_messages_expire(self) -> None:
        """A message not received within ``expiry`` seconds is never delivered."""
        async with self.open_layer(expiry=self.short_expiry) as layer:
            channel = await layer.new_channel()
            await layer.send(channel, {"type": "kit.stale"})
            await anyio.sleep(self.short_expiry + self.expiry_margin)
            await self.assert_nothing_queued(layer, channel)

    @_extensions("groups")
    @_feature("group_expiry")
    async def test_memberships_expire(self) -> None:
        """A membership older than ``group_expiry`` seconds receives no group message."""
        async with self.open_layer("groups", group_expiry=self.short_expiry) as layer:
            group = self.group_name()
            channel = await layer.new_channel()
            await layer.group_add(group, channel)
            await anyio.sleep(self.short_expiry + self.expiry_margin)
            await layer.group_send(group, {"type": "kit.late"})
            await self.assert_nothing_queued(layer, channel)

    # == groups ==========================================================================

    @_extensions("groups")
    async def test_group_send_reaches_every_member_once(self) -> None:
        """group_send() delivers one copy to each member, adding a member twice included,
        and nothing to non-members."""
        async with self.open_layer("groups") as layer:
            group = self.group_name()
            members = [await layer.new_channel() for _ in range(3)]
            outsider = await layer.new_channel()
            for channel in members:
                await layer.group_add(group, channel)
            await layer.group_add(group, members[0])
            await layer.group_send(group, {"type": "kit.group", "n": 1})
            for channel in members:
                assert await self.receive(layer, channel) == {"type": "kit.group", "n": 1}
                await self.assert_nothing_queued(layer, channel)
            await self.assert_nothing_queued(layer, outsider)

    @_extensions("groups")
    async def test_group_discard(self) -> None:
        """A discarded channel gets no more group messages; discarding a non-member, or
        from a group that does not exist, and sending to an empty or unknown group, are
        not errors."""
        async with self.open_layer("groups") as layer:
            group = self.group_name()
            stays, leaves = await layer.new_channel(), await layer.new_channel()
            await layer.group_add(group, stays)
            await layer.group_add(group, leaves)
            await layer.group_discard(group, leaves)
            await layer.group_discard(group, leaves)
            await layer.group_discard(self.group_name(), stays)
            await layer.group_send(group, {"type": "kit.group"})
            assert await self.receive(layer, stays) == {"type": "kit.group"}
            await self.assert_nothing_queued(layer, leaves)
            await layer.group_discard(group, stays)
            await layer.group_send(group, {"type": "kit.nobody"})
            await layer.group_send(self.group_name(), {"type": "kit.nobody"})
            await self.assert_nothing_queued(layer, stays)

    @_extensions("groups")
    async def test_channel_in_several_groups(self) -> None:
        """A channel in two groups gets each group's messages; leaving one keeps the other."""
        async with self.open_layer("groups") as layer:
            first, second = self.group_name(), self.group_name()
            channel = await layer.new_channel()
            await layer.group_add(first, channel)
            await layer.group_add(second, channel)
            await layer.group_send(first, {"type": "kit.first"})
            await layer.group_send(second, {"type": "kit.second"})
            assert await self.receive(layer, channel) == {"type": "kit.first"}
            assert await self.receive(layer, channel) == {"type": "kit.second"}
            await layer.group_discard(first, channel)
            await layer.group_send(first, {"type": "kit.first"})
            await layer.group_send(second, {"type": "kit.second"})
            assert await self.receive(layer, channel) == {"type": "kit.second"}
            await self.assert_nothing_queued(layer, channel)

    # == flush and close =================================================================

    @_extensions("flush", "groups")
    async def test_flush_then_the_layer_works(self) -> None:
        """After flush() no group has members, and new channels and groups work."""
        async with self.open_layer("groups", "flush") as layer:
            group = self.group_name()
            old = await layer.new_channel()
            await layer.group_add(group, old)
            await layer.send(old, {"type": "kit.before"})
            await layer.flush()
            new = await layer.new_channel()
            await layer.group_add(group, new)
            await layer.group_send(group, {"type": "kit.after"})
            assert await self.receive(layer, new) == {"type": "kit.after"}
            await self.assert_nothing_queued(layer, new)

    @_extensions("flush", "groups")
    @_feature("stored_messages")
    async def test_flush_drops_messages_and_memberships(self) -> None:
        """flush() drops queued messages and memberships; the channels keep working."""
        async with self.open_layer("groups", "flush") as layer:
            group = self.group_name()
            local, named = await layer.new_channel(), self.named_channel()
            for channel in (local, named):
                await layer.group_add(group, channel)
                await layer.send(channel, {"type": "kit.before"})
            await layer.flush()
            await layer.group_send(group, {"type": "kit.after"})
            for channel in (local, named):
                await self.assert_nothing_queued(layer, channel)

    async def test_close_is_idempotent(self) -> None:
        """close() on a used layer, then again, raises nothing."""
        layer = await self._make({})
        try:
            channel = await layer.new_channel()
            await layer.send(channel, {"type": "kit.x"})
            assert await self.receive(layer, channel) == {"type": "kit.x"}
        finally:
            with anyio.CancelScope(shield=True):
                await layer.close()
        await layer.close()

    # == cancellation and concurrency =====================================================

    async def test_cancelled_receives_lose_nothing(self) -> None:
        """Receives cancelled at every kind of point (before a checkpoint, while waiting,
        mid-I/O) while messages keep arriving lose none and reorder none."""
        total = 300
        rng = random.Random(1405)
        async with self.open_layer() as layer:
            channel = await layer.new_channel()
            received: list[int] = []
            progress = anyio.Event()

            async def sender() -> None:
                nonlocal progress
                for n in range(total):
                    # A few in flight at most, so receives often find the channel empty
                    # and wait (where most cancellations land), and no capacity is hit.
                    while n - len(received) >= 3:
                        await progress.wait()
                    await layer.send(channel, {"type": "kit.n", "n": n})
                    pause = rng.randrange(8)
                    if pause < 6:
                        for _ in range(pause):
                            await anyio.lowlevel.checkpoint()
                    else:  # long enough for waiting receives to be cancelled
                        await anyio.sleep(rng.random() * 0.002)

            async def receive_once(how: int) -> None:
                nonlocal progress
                with anyio.CancelScope() as scope:
                    async with anyio.create_task_group() as group:

                        async def cancel_soon() -> None:
                            if how < 6:
                                for _ in range(how):
                                    await anyio.lowlevel.checkpoint()
                            else:
                                await anyio.sleep(rng.random() * 0.003)
                            scope.cancel()

                        group.start_soon(cancel_soon)
                        message = await layer.receive(channel)
                        received.append(message["n"])
                        progress.set()
                        progress = anyio.Event()
                        scope.cancel()

            cancelled = 0
            async with anyio.create_task_group() as group:
                group.start_soon(sender)
                last_progress = anyio.current_time()
                while len(received) < total:
                    before = len(received)
                    await receive_once(rng.randrange(8))
                    if len(received) > before:
                        last_progress = anyio.current_time()
                    elif anyio.current_time() - last_progress > self.receive_timeout:
                        raise AssertionError(
                            f"{len(received)} of {total} messages received, then none for "
                            f"{self.receive_timeout} s (receive_timeout)"
                        )
                    else:
                        cancelled += 1
            assert received == list(range(total)), "messages were lost or reordered"
            assert cancelled > 0, "no receive was cancelled: the test proved nothing"
            await self.assert_nothing_queued(layer, channel)

    async def test_concurrent_receivers_share_a_channel(self) -> None:
        """Several receivers of one new_channel() channel: each message reaches one."""
        await self._share_channel(local=True)

    @_feature("stored_messages")
    async def test_concurrent_receivers_share_a_named_channel(self) -> None:
        """Several receivers of one named channel (workers): each message reaches one."""
        await self._share_channel(local=False)

    async def _share_channel(self, *, local: bool) -> None:
        total, receivers = 200, 4
        async with self.open_layer() as layer:
            channel = await layer.new_channel() if local else self.named_channel("kit-jobs")
            got: list[list[int]] = [[] for _ in range(receivers)]
            done = anyio.Event()
            progress = anyio.Event()

            async def receiver(mine: list[int]) -> None:
                nonlocal progress
                while True:
                    mine.append((await layer.receive(channel))["n"])
                    progress.set()
                    progress = anyio.Event()
                    if sum(map(len, got)) >= total:
                        done.set()

            # Named channels: the first messages are sent before anyone receives, so they
            # must be kept for the receivers (a layer that stores nothing fails here,
            # always, rather than by a race with its subscriptions).
            early = 0 if local else 5
            for n in range(early):
                await layer.send(channel, {"type": "kit.n", "n": n})
            async with anyio.create_task_group() as group:
                for mine in got:
                    group.start_soon(receiver, mine)
                for n in range(early, total):
                    while n - sum(map(len, got)) >= 20:
                        await self._wait(progress, "no message was received")
                    await layer.send(channel, {"type": "kit.n", "n": n})
                await self._wait(done, "not every message arrived")
                group.cancel_scope.cancel()
            every = sorted(n for mine in got for n in mine)
            assert every == list(range(total)), "a message was lost or delivered twice"
            for mine in got:
                assert mine == sorted(mine), "one receiver saw messages out of order"
            await self.assert_nothing_queued(layer, channel)

    # == history extension ===============================================================

    def history_config(self) -> dict[str, dict[str, float]]:
        """The ``group_history`` setting the history tests pass: ``hist.*`` groups keep 5
        messages, ``brief.*`` ones :attr:`short_expiry` seconds, ``long.*`` ones 1000."""
        return {
            "hist.*": {"size": 5, "ttl": 3600},
            "brief.*": {"size": 100, "ttl": self.short_expiry},
            "long.*": {"size": 1000, "ttl": 3600},
        }

    @contextlib.asynccontextmanager
    async def _history_layer(self, *extensions: str) -> AsyncGenerator[HistoryChannelLayer, None]:
        async with self.open_layer(
            "groups", "history", *extensions, group_history=self.history_config()
        ) as layer:
            yield cast(HistoryChannelLayer, layer)

    async def _send_history(
        self, layer: HistoryChannelLayer, group: str, count: int, start: int = 1
    ) -> list[Message]:
        sent = [{"type": "kit.history", "n": n} for n in range(start, start + count)]
        for message in sent:
            await layer.group_send(group, message)
        return sent

    @_extensions("groups", "history")
    async def test_history_positions(self) -> None:
        """Members of a history group get each message with ``__position__``: one epoch,
        offsets 1, 2, 3...; the sender's dict is not changed; group_history() returns the
        top and the messages, oldest first."""
        async with self._history_layer() as layer:
            group = self.group_name("hist")
            member = await layer.new_channel()
            await layer.group_add(group, member)
            sent = await self._send_history(layer, group, 3)
            assert all(POSITION_KEY not in message for message in sent), "caller's dict changed"
            got = [await self.receive(layer, member) for _ in sent]
            epoch = got[0][POSITION_KEY]["epoch"]
            assert isinstance(epoch, str)
            assert epoch
            for offset, (message, original) in enumerate(zip(got, sent, strict=True), 1):
                assert message == {**original, POSITION_KEY: {"epoch": epoch, "offset": offset}}
            history = await layer.group_history(group)
            assert history == GroupHistory(StreamPosition(epoch, 3), got, False)
            assert isinstance(history.position, StreamPosition)

    @_extensions("groups", "history")
    async def test_history_of_a_new_group(self) -> None:
        """A history group that was never sent to: offset 0, a fresh epoch that the first
        message then carries, no messages; history is kept with no member too."""
        async with self._history_layer() as layer:
            group, other = self.group_name("hist"), self.group_name("hist")
            empty = await layer.group_history(group)
            assert empty.messages == []
            assert empty.recovered is False
            assert empty.position is not None
            assert empty.position.offset == 0
            assert (await layer.group_history(other)).position != empty.position
            await layer.group_send(group, {"type": "kit.history", "n": 1})
            after = await layer.group_history(group)
            assert after.position == StreamPosition(empty.position.epoch, 1)
            assert after.messages == [
                {
                    "type": "kit.history",
                    "n": 1,
                    POSITION_KEY: {"epoch": empty.position.epoch, "offset": 1},
                }
            ]

    @_extensions("groups", "history")
    async def test_history_after_a_position(self) -> None:
        """``after``: every message after it and recovered=True; at the top: none and
        True; past the top, or another epoch: none and False. Dicts work as positions."""
        async with self._history_layer() as layer:
            group = self.group_name("hist")
            await self._send_history(layer, group, 3)
            top = (await layer.group_history(group)).position
            assert top is not None
            epoch = top.epoch
            replay = await layer.group_history(group, after=StreamPosition(epoch, 1))
            assert [m["n"] for m in replay.messages] == [2, 3]
            assert replay.recovered is True
            assert replay.position == top
            as_dict = await layer.group_history(group, after=_any({"epoch": epoch, "offset": 0}))
            assert [m["n"] for m in as_dict.messages] == [1, 2, 3]
            assert as_dict.recovered is True
            for after, recovered in (
                (StreamPosition(epoch, 3), True),
                (StreamPosition(epoch, 4), False),
                (StreamPosition("not-" + epoch, 1), False),
            ):
                result = await layer.group_history(group, after=after)
                assert result == GroupHistory(top, [], recovered), after

    @_extensions("groups", "history")
    async def test_history_limit_is_whole_or_refused(self) -> None:
        """``limit`` caps after=None at the latest messages; a replay longer than
        ``limit`` is refused (none, recovered=False), never cut."""
        async with self._history_layer() as layer:
            group = self.group_name("hist")
            await self._send_history(layer, group, 4)
            top = (await layer.group_history(group)).position
            assert top is not None
            latest = await layer.group_history(group, limit=2)
            assert [m["n"] for m in latest.messages] == [3, 4]
            assert latest.recovered is False
            assert (await layer.group_history(group, limit=0)).messages == []
            start = StreamPosition(top.epoch, 1)
            assert await layer.group_history(group, after=start, limit=2) == GroupHistory(
                top, [], False
            )
            exact = await layer.group_history(group, after=start, limit=3)
            assert [m["n"] for m in exact.messages] == [2, 3, 4]
            assert exact.recovered is True

    @_extensions("groups", "history")
    async def test_history_rejects_bad_arguments(self) -> None:
        """A bad ``after`` raises TypeError or ValueError, a bad ``limit`` ValueError."""
        async with self._history_layer() as layer:
            group = self.group_name("hist")
            await self._send_history(layer, group, 1)
            for after in ("e:1", 5, {"epoch": "e"}, {"epoch": 1, "offset": 1}, ("e", -1)):
                with pytest.raises((TypeError, ValueError)):
                    await layer.group_history(group, after=_any(after))
            for limit in (-1, 1.5, "2", True):
                with pytest.raises(ValueError):  # noqa: PT011 (the kit checks the type only)
                    await layer.group_history(group, limit=_any(limit))

    @_extensions("groups", "history")
    async def test_history_is_trimmed_to_size(self) -> None:
        """A stream keeps its ``size`` newest messages; a replay from before them is
        refused, one from just before the oldest kept is whole."""
        async with self._history_layer() as layer:
            group = self.group_name("hist")
            await self._send_history(layer, group, 8)
            history = await layer.group_history(group)
            assert history.position is not None
            epoch = history.position.epoch
            assert [m[POSITION_KEY]["offset"] for m in history.messages] == [4, 5, 6, 7, 8]
            gone = await layer.group_history(group, after=StreamPosition(epoch, 2))
            assert (gone.messages, gone.recovered) == ([], False)
            kept = await layer.group_history(group, after=StreamPosition(epoch, 3))
            assert [m["n"] for m in kept.messages] == [4, 5, 6, 7, 8]
            assert kept.recovered is True

    @_extensions("groups", "history")
    async def test_history_expires_after_ttl(self) -> None:
        """Messages older than ``ttl`` leave the stream, and a replay that needed them is
        refused. The stream may keep its position, or be forgotten whole (a new epoch at
        offset 0): both tell a client the truth."""
        async with self._history_layer() as layer:
            group = self.group_name("brief")
            await self._send_history(layer, group, 2)
            before = (await layer.group_history(group)).position
            assert before is not None
            await anyio.sleep(self.short_expiry + self.expiry_margin)
            history = await layer.group_history(group)
            assert history.messages == []
            assert history.position is not None
            kept = history.position.epoch == before.epoch
            assert history.position.offset == (2 if kept else 0), history.position
            refused = await layer.group_history(group, after=StreamPosition(before.epoch, 0))
            assert (refused.messages, refused.recovered) == ([], False)
            at_top = await layer.group_history(group, after=before)
            assert (at_top.messages, at_top.recovered) == ([], kept)

    @_extensions("groups", "history")
    async def test_history_join_is_gap_free(self) -> None:
        """Joining while messages are being sent (group_add, then group_history): every
        message from the oldest the history returned on is in that history or delivered
        live, or both: no gap. Tried with the join landing at several points of a send."""
        async with self._history_layer() as layer:
            for delay in range(6):
                await self._join_while_sending(layer, delay)

    async def _join_while_sending(self, layer: HistoryChannelLayer, delay: int) -> None:
        total = 40
        group = self.group_name("long")
        member = await layer.new_channel()
        started = anyio.Event()

        async def sender() -> None:
            for n in range(1, total + 1):
                await layer.group_send(group, {"type": "kit.h", "n": n})
                if n == 10:
                    started.set()
                await anyio.lowlevel.checkpoint()

        history = GroupHistory(None, [], False)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(sender)
            await started.wait()
            for _ in range(delay):
                await anyio.lowlevel.checkpoint()
            await layer.group_add(group, member)
            history = await layer.group_history(group)
        await layer.group_send(group, {"type": "kit.h", "n": total + 1})
        live: list[int] = []
        while not live or live[-1] != total + 1:
            live.append((await self.receive(layer, member))[POSITION_KEY]["offset"])
        assert live == sorted(set(live)), f"live messages repeated or out of order: {live}"
        kept = [message[POSITION_KEY]["offset"] for message in history.messages]
        assert kept, "the history of a group sent to 10 times was empty"
        missing = set(range(kept[0], total + 2)) - set(kept) - set(live)
        assert not missing, (
            f"offsets neither in the history nor delivered (join after {delay} "
            f"checkpoints): {sorted(missing)}"
        )

    @_feature("channel_full")
    @_extensions("groups", "history")
    async def test_history_keeps_what_a_full_member_missed(self) -> None:
        """A member skipped because its channel is full can find the message in the
        history: the stream records every group_send, whoever received it."""
        async with self.open_layer(
            "groups", "history", capacity=1, group_history=self.history_config()
        ) as opened:
            layer = cast(HistoryChannelLayer, opened)
            group = self.group_name("hist")
            full, free = self.named_channel(), self.named_channel()
            await layer.group_add(group, full)
            await layer.group_add(group, free)
            await layer.send(full, {"type": "kit.fill"})
            await layer.group_send(group, {"type": "kit.h", "n": 1})
            assert (await self.receive(layer, free))["n"] == 1
            assert await self.receive(layer, full) == {"type": "kit.fill"}
            history = await layer.group_history(group)
            assert [message["n"] for message in history.messages] == [1]

    @_extensions("groups", "history")
    async def test_history_replaces_a_forwarded_position(self) -> None:
        """A message that already carries ``__position__`` gets this stream's."""
        async with self._history_layer() as layer:
            group = self.group_name("hist")
            member = await layer.new_channel()
            await layer.group_add(group, member)
            forwarded = {"type": "kit.fwd", POSITION_KEY: {"epoch": "elsewhere", "offset": 9}}
            await layer.group_send(group, forwarded)
            got = await self.receive(layer, member)
            assert got[POSITION_KEY]["offset"] == 1
            assert got[POSITION_KEY]["epoch"] != "elsewhere"
            assert forwarded[POSITION_KEY] == {"epoch": "elsewhere", "offset": 9}

    @_extensions("groups", "history")
    async def test_history_messages_are_copies(self) -> None:
        """Changing a message group_history() returned changes nothing stored."""
        async with self._history_layer() as layer:
            group = self.group_name("hist")
            await layer.group_send(group, {"type": "kit.h", "items": [1]})
            first = await layer.group_history(group)
            first.messages[0]["items"].append(2)
            first.messages[0][POSITION_KEY]["offset"] = 99
            again = await layer.group_history(group)
            assert again.messages[0]["items"] == [1]
            assert again.messages[0][POSITION_KEY]["offset"] == 1

    @_extensions("groups", "history")
    async def test_groups_without_history_are_untouched(self) -> None:
        """A group matching no ``group_history`` pattern: members get the message exactly
        as sent, and group_history() says it keeps none (position None)."""
        async with self._history_layer() as layer:
            group = self.group_name("plain")
            member = await layer.new_channel()
            await layer.group_add(group, member)
            await layer.group_send(group, {"type": "kit.plain", "n": 1})
            assert await self.receive(layer, member) == {"type": "kit.plain", "n": 1}
            assert await layer.group_history(group) == GroupHistory(None, [], False)
            assert await layer.group_history(group, after=StreamPosition("e", 1)) == GroupHistory(
                None, [], False
            )

    @_extensions("groups", "history")
    async def test_history_position_from_a_lost_stream_is_refused(self) -> None:
        """A position from a stream whose history was lost (here: another layer, made
        empty by the factory, as a restarted process or an emptied server is) never
        matches: a different epoch, and no replay even where the offsets would fit."""
        async with self._history_layer() as before, self._history_layer() as after:
            group = self.group_name("hist")
            await self._send_history(before, group, 2)
            old = (await before.group_history(group)).position
            assert old is not None
            await self._send_history(after, group, 4, start=10)
            new = await after.group_history(group, after=old)
            assert new.position is not None
            assert new.position.epoch != old.epoch, "two streams got the same epoch"
            assert (new.messages, new.recovered) == ([], False)

    @_extensions("flush", "groups", "history")
    async def test_history_flush_starts_new_epochs(self) -> None:
        """After flush() a history group's stream is new: another epoch, offset 0, and a
        position from before is refused."""
        async with self._history_layer("flush") as layer:
            group = self.group_name("hist")
            await self._send_history(layer, group, 2)
            old = (await layer.group_history(group)).position
            assert old is not None
            await layer.flush()
            new = await layer.group_history(group)
            assert new.position is not None
            assert new.position.epoch != old.epoch
            assert (new.position.offset, new.messages) == (0, [])
            refused = await layer.group_history(group, after=old)
            assert (refused.messages, refused.recovered) == ([], False)

    # == presence extension ==============================================================

    @contextlib.asynccontextmanager
    async def _presence_layer(
        self, *extensions: str
    ) -> AsyncGenerator[PresenceChannelLayer, None]:
        async with self.open_layer(
            "groups", "presence", *extensions, presence_events=["room.*"], presence_timeout=30
        ) as layer:
            yield cast(PresenceChannelLayer, layer)

    @_extensions("groups", "presence")
    async def test_presence_join_and_leave(self) -> None:
        """presence() maps each joined channel to its info ({} for None); leave removes
        it; leaving when absent, and an unknown group, are fine."""
        async with self._presence_layer() as layer:
            group = self.group_name("lobby")
            one, two = await layer.new_channel(), await layer.new_channel()
            assert await layer.presence(group) == {}
            await layer.presence_join(group, one, {"user": 1, "name": "Ann"})
            await layer.presence_join(group, two)
            assert await layer.presence(group) == {one: {"user": 1, "name": "Ann"}, two: {}}
            await layer.presence_leave(group, one)
            await layer.presence_leave(group, one)
            await layer.presence_leave(self.group_name("lobby"), two)
            assert await layer.presence(group) == {two: {}}

    @_extensions("groups", "presence")
    async def test_presence_join_is_idempotent(self) -> None:
        """Joining again keeps one entry and takes the new info."""
        async with self._presence_layer() as layer:
            group = self.group_name("lobby")
            channel = await layer.new_channel()
            await layer.presence_join(group, channel, {"v": 1})
            await layer.presence_join(group, channel, {"v": 1})
            assert await layer.presence(group) == {channel: {"v": 1}}
            await layer.presence_join(group, channel, {"v": 2})
            assert await layer.presence(group) == {channel: {"v": 2}}

    @_extensions("groups", "presence")
    async def test_presence_validates_its_arguments(self) -> None:
        """Bad group or channel names (upstream's messages) and info that is not a
        JSON-serialisable dict raise TypeError and record nothing."""
        async with self._presence_layer() as layer:
            group = self.group_name("lobby")
            channel = await layer.new_channel()
            for name in _BAD_NAMES:
                with pytest.raises(TypeError) as raised:
                    await layer.presence_join(cast(str, name), channel)
                assert str(raised.value) == _INVALID_NAME.format("Group")
                with pytest.raises(TypeError) as raised:
                    await layer.presence_join(group, cast(str, name))
                assert str(raised.value) == _INVALID_NAME.format("Channel")
            for info in ("name", ["a"], 3, {"when": object()}, {"blob": {1, 2}}):
                with pytest.raises(TypeError):
                    await layer.presence_join(group, channel, _any(info))
            assert await layer.presence(group) == {}

    @_extensions("groups", "presence")
    async def test_presence_events_for_announced_groups(self) -> None:
        """In a ``presence_events`` group, a new join and an info change send
        ``presence.join``, a leave of a present channel ``presence.leave`` with the last
        info; a refresh with the same info, or a leave when absent, sends nothing."""
        async with self._presence_layer() as layer:
            group = self.group_name("room")
            watcher, joiner = await layer.new_channel(), await layer.new_channel()
            await layer.group_add(group, watcher)

            def event(kind: str, info: dict[str, Any]) -> Message:
                return {
                    "type": f"presence.{kind}",
                    "group": group,
                    "channel": joiner,
                    "info": info,
                }

            await layer.presence_join(group, joiner, {"name": "Ann"})
            assert _strip(await self.receive(layer, watcher)) == event("join", {"name": "Ann"})
            await layer.presence_join(group, joiner, {"name": "Ann"})
            await self.assert_nothing_queued(layer, watcher)
            await layer.presence_join(group, joiner, {"name": "Bo"})
            assert _strip(await self.receive(layer, watcher)) == event("join", {"name": "Bo"})
            await layer.presence_leave(group, joiner)
            assert _strip(await self.receive(layer, watcher)) == event("leave", {"name": "Bo"})
            await layer.presence_leave(group, joiner)
            await self.assert_nothing_queued(layer, watcher)

    @_extensions("groups", "presence")
    async def test_presence_events_only_where_announced(self) -> None:
        """Groups matching no ``presence_events`` pattern get no presence messages."""
        async with self._presence_layer() as layer:
            group = self.group_name("quiet")
            watcher, joiner = await layer.new_channel(), await layer.new_channel()
            await layer.group_add(group, watcher)
            await layer.presence_join(group, joiner, {"name": "Ann"})
            await layer.presence_leave(group, joiner)
            await self.assert_nothing_queued(layer, watcher)

    @_extensions("groups", "presence")
    async def test_presence_entries_expire_unless_refreshed(self) -> None:
        """For a layer whose ``presence_expires`` is true (the default), an entry not
        refreshed (joined again) within ``presence_timeout`` disappears, and its
        ``presence.leave`` is sent once; a refreshed one stays. For a layer that says its
        entries do not expire (the in-memory layer's die with its process), both stay."""
        timeout = 2 * self.short_expiry
        async with self.open_layer(
            "groups", "presence", presence_events=["room.*"], presence_timeout=timeout
        ) as opened:
            layer = cast(PresenceChannelLayer, opened)
            expires = bool(getattr(layer, "presence_expires", True))
            group = self.group_name("room")
            watcher, gone, kept = [await layer.new_channel() for _ in range(3)]
            await layer.group_add(group, watcher)
            await layer.presence_join(group, gone, {"n": 1})
            await layer.presence_join(group, kept, {"n": 2})
            for _ in range(2):
                assert _strip(await self.receive(layer, watcher))["type"] == "presence.join"
            await anyio.sleep(timeout / 2)
            await layer.presence_join(group, kept, {"n": 2})
            # A quarter of the timeout past the first entry's end, and before the
            # refreshed one's.
            await anyio.sleep(timeout * 3 / 4)
            present = await layer.presence(group)
            if not expires:
                assert present == {gone: {"n": 1}, kept: {"n": 2}}
            else:
                assert present == {kept: {"n": 2}}
                leave = _strip(await self.receive(layer, watcher))
                assert leave == {
                    "type": "presence.leave",
                    "group": group,
                    "channel": gone,
                    "info": {"n": 1},
                }
                assert await layer.presence(group) == {kept: {"n": 2}}
            await self.assert_nothing_queued(layer, watcher)

    @_extensions("flush", "groups", "presence")
    async def test_presence_flush(self) -> None:
        """flush() removes presence entries too."""
        async with self._presence_layer("flush") as layer:
            group = self.group_name("lobby")
            await layer.presence_join(group, await layer.new_channel(), {"v": 1})
            await layer.flush()
            assert await layer.presence(group) == {}


def _any(value: object) -> Any:
    """``value`` passed where the type checker expects something else (bad input tests)."""
    return value


def _strip(message: Message) -> Message:
    """A presence event without the ``__position__`` a history group would add."""
    return {key: value for key, value in message.items() if key != POSITION_KEY}
