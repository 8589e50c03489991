"""The serializer registry: channels_redis's names, formats and bytes."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
from collections.abc import Iterator
from typing import Any

import anyio
import coredis
import msgpack
import pytest
from cryptography.fernet import Fernet

from channels.layers.redis import RedisChannelLayer, RedisPubSubChannelLayer
from channels.layers.redis.serializers import (
    BaseMessageSerializer,
    InvalidSerializerError,
    JSONSerializer,
    MsgPackSerializer,
    SerializerDoesNotExist,
    SerializersRegistry,
    registry,
)
from tests.test_layers_redis_processes import upstream_python  # noqa: F401 (a fixture)


class ReversedJSON(BaseMessageSerializer):
    """A custom format as projects write them: only the bytes, nothing else."""

    def as_bytes(self, message: Any, *args: Any, **kwargs: Any) -> bytes:
        return json.dumps(message).encode()[::-1]

    def from_bytes(self, message: bytes, *args: Any, **kwargs: Any) -> Any:
        return json.loads(message[::-1])


class DuckSerializer:
    """Not a subclass: channels_redis also takes any class with serialize/deserialize."""

    def __init__(self, **options: Any) -> None:
        self.options = options

    def serialize(self, message: Any) -> bytes:
        return b"duck:" + json.dumps(message).encode()

    def deserialize(self, message: bytes) -> Any:
        assert message.startswith(b"duck:")
        return json.loads(message[5:])


@pytest.fixture
def custom_formats() -> Iterator[None]:
    registry.register_serializer("reversed-json", ReversedJSON)
    registry.register_serializer("duck", DuckSerializer)
    yield
    for name in ("reversed-json", "duck"):
        registry._registry.pop(name, None)


MESSAGE = {"type": "chat.message", "text": "héllo", "n": [1, 2.5, None, True]}


def test_builtin_formats_write_channels_redis_bytes() -> None:
    packed = MsgPackSerializer(random_prefix_length=12).serialize(MESSAGE)
    assert len(packed) == 12 + len(msgpack.packb(MESSAGE))
    assert packed[12:] == msgpack.packb(MESSAGE)
    assert JSONSerializer().serialize(MESSAGE) == json.dumps(MESSAGE).encode("utf-8")
    assert registry.formats()[:2] == ["json", "msgpack"]
    assert isinstance(registry.get_serializer("msgpack"), MsgPackSerializer)
    assert isinstance(registry.get_serializer("json"), JSONSerializer)


@pytest.mark.parametrize("length", [0, -3])
async def test_no_random_prefix(redis_url: str, prefix: str, length: int) -> None:
    layer = RedisChannelLayer(hosts=[redis_url], prefix=prefix, random_prefix_length=length)
    try:
        await layer.send("q", MESSAGE)
        async with coredis.Redis.from_url(redis_url) as redis:
            (stored,) = await redis.zrange(prefix + "q", 0, -1)
        assert stored == msgpack.packb(MESSAGE)  # nothing before the message
        assert await layer.receive("q") == MESSAGE
    finally:
        await layer.flush()
        await layer.close()


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
async def test_custom_format_through_the_layer(
    redis_url: str, prefix: str, custom_formats: None, encrypted: bool
) -> None:
    keys = ["custom-secret"] if encrypted else None
    layer = RedisChannelLayer(
        hosts=[redis_url],
        prefix=prefix,
        serializer_format="reversed-json",
        symmetric_encryption_keys=keys,
    )
    try:
        await layer.send("q", MESSAGE)
        async with coredis.Redis.from_url(redis_url) as redis:
            (stored,) = await redis.zrange(prefix + "q", 0, -1)
        body = stored[12:]
        if encrypted:
            key = base64.urlsafe_b64encode(hashlib.sha256(b"custom-secret").digest())
            body = Fernet(key).decrypt(body)
        assert body == json.dumps(MESSAGE).encode()[::-1]
        assert await layer.receive("q") == MESSAGE
    finally:
        await layer.flush()
        await layer.close()


async def test_duck_typed_serializer_on_both_layers(
    redis_url: str, prefix: str, custom_formats: None
) -> None:
    core = RedisChannelLayer(hosts=[redis_url], prefix=prefix, serializer_format="duck")
    pubsub = RedisPubSubChannelLayer(hosts=[redis_url], prefix=prefix, serializer_format="duck")
    assert core.serialize({"type": "x"}) == b'duck:{"type": "x"}'
    try:
        await core.send("q", {"type": "x"})
        assert await core.receive("q") == {"type": "x"}
        channel = await pubsub.new_channel()
        await pubsub.send(channel, {"type": "y"})
        with anyio.fail_after(5):
            assert await pubsub.receive(channel) == {"type": "y"}
    finally:
        await core.flush()
        await core.close()
        await pubsub.close()


def test_bad_serializer_classes_are_refused() -> None:
    class Abstract(BaseMessageSerializer):
        def as_bytes(self, message: Any, *args: Any, **kwargs: Any) -> bytes:
            return b""

    class Nothing:
        pass

    fresh = SerializersRegistry()
    for bad, words in [
        (ReversedJSON(), "needs a class"),
        (Abstract, "does not implement from_bytes"),
        (Nothing, "serialize() and deserialize()"),
    ]:
        with pytest.raises(InvalidSerializerError, match=re.escape(words)) as caught:
            fresh.register_serializer("bad", bad)
        # channels_redis asserts here, so code may catch either.
        assert isinstance(caught.value, AssertionError)
        assert isinstance(caught.value, TypeError)
    assert fresh.formats() == []  # nothing half-registered
    with pytest.raises(SerializerDoesNotExist):
        fresh.get_serializer("bad")


def test_unregistered_format() -> None:
    for make in (RedisChannelLayer, RedisPubSubChannelLayer):
        with pytest.raises(SerializerDoesNotExist, match=r"pickle.*registered: 'json', 'msgpack'"):
            make(serializer_format="pickle")
    with pytest.raises(KeyError):  # channels_redis's base class
        registry.get_serializer("pickle")
    with pytest.raises(SerializerDoesNotExist):
        registry.get_serializer(["unhashable"])


_UPSTREAM_READS = """
import json, sys
from channels_redis.serializers import registry
fmt, keys, hexed = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
serializer = registry.get_serializer(
    fmt, random_prefix_length=12, expiry=60, symmetric_encryption_keys=keys
)
message = serializer.deserialize(bytes.fromhex(hexed))
print(json.dumps(message))
print(serializer.serialize({"type": "from.upstream", "text": "ünï"}).hex())
"""


@pytest.mark.parametrize("fmt", ["msgpack", "json"])
@pytest.mark.parametrize("keys", [None, ["k1", "k2"]], ids=["plain", "encrypted"])
def test_upstream_reads_our_bytes_and_we_read_theirs(
    upstream_python: str,  # noqa: F811
    fmt: str,
    keys: list[str] | None,
) -> None:
    ours = registry.get_serializer(
        fmt, random_prefix_length=12, expiry=60, symmetric_encryption_keys=keys
    )
    message = {"type": "from.ours", "text": "héllo", "n": [1, 2.5, None, True]}
    done = subprocess.run(
        [
            upstream_python,
            "-c",
            _UPSTREAM_READS,
            fmt,
            json.dumps(keys),
            ours.serialize(message).hex(),
        ],
        capture_output=True,
        text=True,
        cwd="/",
        env={"PATH": "/usr/bin:/bin"},
        check=True,
    )
    read, theirs = done.stdout.splitlines()
    assert json.loads(read) == message
    assert ours.deserialize(bytes.fromhex(theirs)) == {"type": "from.upstream", "text": "ünï"}
