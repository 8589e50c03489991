"""channels_redis 4.3 names a project may reach for, beyond the layers' own API.

``channels.layers.redis.utils`` (``decode_hosts``, ``_consistent_hash``), the serializers'
``MissingSerializer``, the pub/sub layer taking the core layer's settings, and the
attributes channels_redis's pub/sub layer forwards to its per-loop layer.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import anyio
import coredis
import pytest
import sniffio
from django.test import override_settings

from channels.layers import get_channel_layer
from channels.layers.redis import RedisChannelLayer, RedisPubSubChannelLayer
from channels.layers.redis.serializers import (
    BaseMessageSerializer,
    MissingSerializer,
    MsgPackSerializer,
    registry,
)
from channels.layers.redis.utils import _consistent_hash, decode_hosts
from tests.redis_server import db_url
from tests.test_layers_redis_processes import upstream_python  # noqa: F401 (a fixture)


def run_upstream(python: str, script: str, *args: str) -> Any:
    """Run ``script`` with channels_redis importable; it prints one JSON value."""
    done = subprocess.run(
        [python, "-c", script, *args],
        capture_output=True,
        text=True,
        cwd="/",
        env={"PATH": "/usr/bin:/bin"},
        check=True,
    )
    return json.loads(done.stdout)


# -- utils.decode_hosts ----------------------------------------------------------------------

HOSTS_SETTINGS: list[Any] = [
    None,
    [],
    ["redis://localhost:6379/0"],
    ["redis://a:6379/1", "rediss://b:6380/2", "unix:///tmp/redis.sock?db=3"],
    [["redis.example", 6379], ["10.0.0.2", 6380]],
    [{"address": "redis://a:6379", "password": "pw", "db": 2}],
    [{"host": "a", "port": 6379, "socket_timeout": 3}],
    [{"master_name": "mymaster", "sentinels": [["s1", 26379]], "sentinel_kwargs": {}}],
    ["redis://mixed:1", ["pair", 2], {"address": "redis://dict:3"}],
]

_UPSTREAM_DECODE = """
import json, sys
from channels_redis.utils import decode_hosts
print(json.dumps([decode_hosts(hosts) for hosts in json.loads(sys.argv[1])]))
"""


def test_decode_hosts_returns_what_channels_redis_returns(
    upstream_python: str,  # noqa: F811
) -> None:
    theirs = run_upstream(upstream_python, _UPSTREAM_DECODE, json.dumps(HOSTS_SETTINGS))
    ours = [decode_hosts(hosts) for hosts in HOSTS_SETTINGS]
    assert json.loads(json.dumps(ours)) == theirs
    # Pairs as projects write them, tuples: the same dicts.
    assert decode_hosts([("redis.example", 6379)]) == [{"host": "redis.example", "port": 6379}]


def test_decode_hosts_copies_and_refuses_what_no_layer_can_use() -> None:
    entry = {"address": "redis://a:6379", "db": 1}
    (decoded,) = decode_hosts([entry])
    decoded["db"] = 5
    assert entry == {"address": "redis://a:6379", "db": 1}

    with pytest.raises(ValueError, match="list of Redis hosts, even if there is only one"):
        decode_hosts("redis://localhost:6379")
    with pytest.raises(ValueError, match="must be a list, got int"):
        decode_hosts(6379)
    with pytest.raises(ValueError, match=r"must be \(host, port\), got \('a', 1, 2\)"):
        decode_hosts([("a", 1, 2)])
    with pytest.raises(ValueError, match="Cannot use 42 as a Redis host"):
        decode_hosts(["redis://a:1", 42])


async def test_a_layer_built_from_decoded_hosts_is_the_same_layer(
    redis_url: str, prefix: str
) -> None:
    # A project that normalises its setting with decode_hosts and hands the result on.
    hosts = [db_url(redis_url, 4), db_url(redis_url, 5)]
    for layer_class in (RedisChannelLayer, RedisPubSubChannelLayer):
        direct = layer_class(hosts=hosts, prefix=prefix)
        decoded = layer_class(hosts=decode_hosts(hosts), prefix=prefix)
        try:
            assert repr(decoded) == repr(direct)
            channel = await decoded.new_channel()
            await direct.send(channel, {"type": "via.decoded"})
            with anyio.fail_after(5):
                assert await decoded.receive(channel) == {"type": "via.decoded"}
        finally:
            await direct.close()
            await decoded.close()


# -- utils._consistent_hash -----------------------------------------------------------------

NAMES: list[str] = [
    "",
    "room1",
    "asgi__group__room1",
    "asgispecific.0123456789abcdef!fedcba9876543210",
    "ünïcödé-grüppe",
    "a" * 300,
    *[f"name{n}" for n in range(200)],
]
RING_SIZES = [1, 2, 3, 4, 5, 7, 16, 100]

_UPSTREAM_HASH = """
import json, sys
from channels_redis.utils import _consistent_hash
names, sizes = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(json.dumps({
    "str": [[_consistent_hash(name, size) for size in sizes] for name in names],
    "bytes": [[_consistent_hash(name.encode(), size) for size in sizes] for name in names],
}))
"""


def test_consistent_hash_is_channels_redis_s(upstream_python: str) -> None:  # noqa: F811
    theirs = run_upstream(
        upstream_python, _UPSTREAM_HASH, json.dumps(NAMES), json.dumps(RING_SIZES)
    )
    assert [[_consistent_hash(name, size) for size in RING_SIZES] for name in NAMES] == (
        theirs["str"]
    )
    assert [[_consistent_hash(name.encode(), size) for size in RING_SIZES] for name in NAMES] == (
        theirs["bytes"]
    )
    assert len({_consistent_hash(name, 7) for name in NAMES}) == 7


def test_consistent_hash_needs_a_ring() -> None:
    with pytest.raises(ValueError, match="ring_size must be at least 1"):
        _consistent_hash("room", 0)


async def test_consistent_hash_says_where_a_group_lives(redis_url: str, prefix: str) -> None:
    # What a project's test or management command does with it: find a group's shard.
    hosts = [db_url(redis_url, db) for db in (6, 7, 8)]
    layer = RedisChannelLayer(hosts=hosts, prefix=prefix)
    try:
        groups = [f"room{n}" for n in range(6)]
        for group in groups:
            await layer.group_add(group, "member.one")
        for group in groups:
            home = _consistent_hash(group, len(hosts))
            for shard, url in enumerate(hosts):
                redis: coredis.Redis[bytes] = coredis.Redis.from_url(url)
                async with redis:
                    count = await redis.zcard(f"{prefix}:group:{group}")
                assert count == (1 if shard == home else 0), (group, shard)
    finally:
        await layer.flush()
        await layer.close()


# -- serializers.MissingSerializer ----------------------------------------------------------


class CBORSerializer(MissingSerializer):
    """As a project registers a format whose package may be absent."""

    exception = ImportError("No module named 'cbor2'")


@pytest.fixture
def missing_cbor() -> Iterator[None]:
    registry.register_serializer("cbor", CBORSerializer)
    yield
    registry._registry.pop("cbor", None)


@pytest.mark.usefixtures("missing_cbor")
def test_a_missing_format_fails_when_the_layer_is_configured(redis_url: str) -> None:
    for backend in (
        "channels.layers.redis.RedisChannelLayer",
        "channels.layers.redis.RedisPubSubChannelLayer",
    ):
        config = {
            "default": {
                "BACKEND": backend,
                "CONFIG": {"hosts": [redis_url], "serializer_format": "cbor"},
            }
        }
        with override_settings(CHANNEL_LAYERS=config):
            with pytest.raises(ImportError, match="No module named 'cbor2'"):
                get_channel_layer()
            # Again: the same error, not a traceback grown by the first attempt.
            with pytest.raises(ImportError, match="No module named 'cbor2'") as again:
                get_channel_layer()
            assert len(list(_frames(again.value))) < 20


def _frames(exc: BaseException) -> Iterator[object]:
    tb = exc.__traceback__
    while tb is not None:
        yield tb
        tb = tb.tb_next


def test_missing_serializer_without_a_reason_says_so() -> None:
    class Forgot(MissingSerializer):
        pass

    registry_error = "Forgot stands for a serializer that cannot be used.*set its `exception`"
    with pytest.raises(ImportError, match=registry_error):
        Forgot()
    assert issubclass(MissingSerializer, BaseMessageSerializer)
    assert not issubclass(MsgPackSerializer, MissingSerializer)  # msgpack is installed here


_WITHOUT_MSGPACK = """
import sys
sys.modules["msgpack"] = None  # as if it were not installed
import anyio
from channels.layers.redis import RedisChannelLayer, RedisPubSubChannelLayer
from channels.layers.redis.serializers import MissingSerializer, MsgPackSerializer

url, prefix = sys.argv[1], sys.argv[2]
assert issubclass(MsgPackSerializer, MissingSerializer)
for layer_class in (RedisChannelLayer, RedisPubSubChannelLayer):
    try:
        layer_class(hosts=[url], prefix=prefix)
    except ImportError as exc:
        print(layer_class.__name__, exc)
    else:
        raise AssertionError("built a msgpack layer without msgpack")

async def round_trip():
    for layer_class in (RedisChannelLayer, RedisPubSubChannelLayer):
        layer = layer_class(hosts=[url], prefix=prefix, serializer_format="json")
        channel = await layer.new_channel()
        await layer.send(channel, {"type": "json.works"})
        with anyio.fail_after(5):
            assert await layer.receive(channel) == {"type": "json.works"}
        await layer.close()

for backend in ("asyncio", "trio"):
    anyio.run(round_trip, backend=backend)
print("json ok")
"""


def test_without_msgpack_the_default_format_says_what_to_install(
    redis_url: str, prefix: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_WITHOUT_MSGPACK), redis_url, prefix],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[2:] == ["json ok"], done.stdout
    assert [line.split()[0] for line in lines[:2]] == [
        "RedisChannelLayer",
        "RedisPubSubChannelLayer",
    ]
    for line in lines[:2]:
        assert "serializer_format 'msgpack' (the default) needs the msgpack package" in line
        assert "pip install 'channels-anyio[redis]'" in line


# -- the pub/sub layer takes the core layer's settings ------------------------------------

CORE = "channels.layers.redis.RedisChannelLayer"
PUBSUB = "channels.layers.redis.RedisPubSubChannelLayer"


def shared_config(redis_url: str, prefix: str) -> dict[str, Any]:
    """One CONFIG for both layers, as a project moving between them writes it."""
    return {
        "hosts": [redis_url],
        "prefix": prefix,
        "expiry": 30,
        "group_expiry": 3600,
        "capacity": 1500,
        "channel_capacity": {"http.request": 200},
        "random_prefix_length": 8,
        "symmetric_encryption_keys": ["shared-secret"],
    }


def ignored_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if " ignores " in record.getMessage()]


async def test_a_config_shared_with_the_core_layer(
    redis_url: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = shared_config(redis_url, prefix)
    layers = {
        "default": {"BACKEND": CORE, "CONFIG": config},
        "pubsub": {"BACKEND": PUBSUB, "CONFIG": config},
    }
    caplog.set_level(logging.INFO, logger="channels.layers.redis")
    with override_settings(CHANNEL_LAYERS=layers):
        core = get_channel_layer()
        pubsub = get_channel_layer("pubsub")
        assert isinstance(core, RedisChannelLayer)
        assert isinstance(pubsub, RedisPubSubChannelLayer)
        try:
            # What it uses, it uses: capacity and expiry bound its local buffers.
            assert (pubsub.capacity, pubsub.expiry) == (1500, 30)
            assert pubsub.get_capacity("http.request") == 200
            channel = await pubsub.new_channel()
            await pubsub.group_add("room", channel)
            await pubsub.group_send("room", {"type": "shared.config"})
            with anyio.fail_after(5):
                assert await pubsub.receive(channel) == {"type": "shared.config"}
            # The encryption key reached its serializer too.
            other = RedisPubSubChannelLayer(hosts=[redis_url], symmetric_encryption_keys=["x"])
            with pytest.raises(ValueError, match="Cannot decrypt"):
                other.deserialize(pubsub.serialize({"type": "secret"}))
        finally:
            await pubsub.close()
            await core.close()
    (record,) = ignored_records(caplog)
    assert record.levelno == logging.INFO
    assert record.name == "channels.layers.redis"
    assert record.getMessage() == (
        "RedisPubSubChannelLayer ignores group_expiry, random_prefix_length "
        "(RedisChannelLayer settings, unused without storage)"
    )


def test_unknown_settings_are_ignored_and_named(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="channels.layers.redis")
    # channels_redis's pub/sub layer takes any keyword; a typo is at least logged.
    layer = RedisPubSubChannelLayer(hosts=[redis_url], capactiy=5, group_expiry=10)
    assert layer.capacity == 100
    (record,) = ignored_records(caplog)
    assert record.getMessage() == (
        "RedisPubSubChannelLayer ignores group_expiry (RedisChannelLayer settings, unused "
        "without storage); capactiy (not a setting of either Redis layer: a typo?)"
    )
    caplog.clear()
    RedisPubSubChannelLayer(hosts=[redis_url], capacity=5, expiry=10)
    assert ignored_records(caplog) == []
    # The core layer stays strict, as channels_redis's is.
    with pytest.raises(TypeError, match="capactiy"):
        RedisChannelLayer(hosts=[redis_url], capactiy=5)  # type: ignore[call-arg]


def test_positional_arguments_are_channels_redis_s(redis_url: str, prefix: str) -> None:
    def on_disconnect() -> None: ...
    def on_reconnect() -> None: ...

    layer = RedisPubSubChannelLayer([redis_url], prefix, on_disconnect, on_reconnect)
    assert layer.prefix == prefix
    assert (layer.on_disconnect, layer.on_reconnect) == (on_disconnect, on_reconnect)
    with pytest.raises(TypeError):
        RedisPubSubChannelLayer([redis_url], prefix, None, None, ["key"])  # type: ignore[call-arg]


# -- what channels_redis's pub/sub layer forwards to its per-loop layer -------------------


async def test_channels_and_groups_of_this_event_loop(redis_url: str, prefix: str) -> None:
    config = {"pubsub": {"BACKEND": PUBSUB, "CONFIG": {"hosts": [redis_url], "prefix": prefix}}}
    with override_settings(CHANNEL_LAYERS=config):
        layer = get_channel_layer("pubsub")
        assert isinstance(layer, RedisPubSubChannelLayer)
        try:
            assert (layer.channels, layer.groups) == ({}, {})
            first, second = await layer.new_channel(), await layer.new_channel()
            assert layer.channels == {first: 0, second: 0}
            await layer.group_add("room", first)
            await layer.group_add("room", second)
            await layer.group_add("other", second)
            assert layer.groups == {
                f"{prefix}__group__room": {first, second},
                f"{prefix}__group__other": {second},
            }

            # One group message is filed for every local member in the same step.
            await layer.group_send("room", {"type": "fan"})
            with anyio.fail_after(5):
                assert await layer.receive(first) == {"type": "fan"}
            assert layer.channels == {first: 0, second: 1}
            assert first in layer.channels
            assert len(layer.channels) == 2

            await layer.group_discard("room", first)
            assert layer.groups[f"{prefix}__group__room"] == {second}
            # A snapshot: changing it changes nothing.
            layer.channels.clear()
            layer.groups.clear()
            assert len(layer.channels) == 2
            assert len(layer.groups) == 2

            await layer.flush()
            assert (layer.channels, layer.groups) == ({}, {})
        finally:
            await layer.close()


def test_channels_and_groups_outside_an_event_loop(redis_url: str) -> None:
    layer = RedisPubSubChannelLayer(hosts=[redis_url])
    assert (layer.channels, layer.groups) == ({}, {})


def test_outside_an_event_loop_even_when_sniffio_names_one(redis_url: str) -> None:
    # sniffio's context variable outlives the loop that set it in copied contexts (threads
    # started from async code inherit it): no loop runs here all the same.
    layer = RedisPubSubChannelLayer(hosts=[redis_url])
    for library in ("asyncio", "trio"):
        token = sniffio.current_async_library_cvar.set(library)
        try:
            assert (layer.channels, layer.groups) == ({}, {})
        finally:
            sniffio.current_async_library_cvar.reset(token)
