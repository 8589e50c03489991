"""How the Redis layers turn messages into bytes: channels_redis's serializer registry.

Names, constructor signatures and meanings are ``channels_redis.serializers``' (4.3), so
a project that registered its own format there registers it here the same way::

    from channels.layers.redis.serializers import BaseMessageSerializer, registry

    class CBORSerializer(BaseMessageSerializer):
        def as_bytes(self, message, *args, **kwargs):
            return cbor2.dumps(message)

        def from_bytes(self, message, *args, **kwargs):
            return cbor2.loads(message)

    registry.register_serializer("cbor", CBORSerializer)
    # CHANNEL_LAYERS = {"default": {..., "CONFIG": {"serializer_format": "cbor"}}}

A subclass only turns a message into bytes and back (:meth:`~BaseMessageSerializer.as_bytes`,
:meth:`~BaseMessageSerializer.from_bytes`); :meth:`~BaseMessageSerializer.serialize` adds
the rest, which is what keeps the bytes readable by channels_redis::

    [random prefix] ‖ [Fernet token of] as_bytes(message)

The core layer asks for a 12-byte random prefix so that two equal messages are two
members of a sorted set; the pub/sub layer asks for none. With
``symmetric_encryption_keys``, each key's SHA-256 digest (url-safe base64) is a Fernet
key; the first encrypts, any of them decrypts.
"""

from __future__ import annotations

import abc
import base64
import hashlib
import inspect
import json
import random
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, runtime_checkable

if TYPE_CHECKING:
    from cryptography.fernet import Fernet, MultiFernet

__all__ = [
    "BaseMessageSerializer",
    "InvalidSerializerError",
    "JSONSerializer",
    "MessageSerializer",
    "MissingSerializer",
    "MsgPackSerializer",
    "SerializerDoesNotExist",
    "SerializersRegistry",
    "registry",
]


class SerializerDoesNotExist(KeyError, ValueError):
    """No serializer is registered for the requested ``serializer_format``.

    A :exc:`KeyError`, as channels_redis's; also a :exc:`ValueError`, because it is a bad
    setting and this package raised that before the registry existed.
    """

    def __init__(self, format: object) -> None:
        super().__init__(format)
        self.format = format

    def __str__(self) -> str:
        known = ", ".join(repr(name) for name in registry.formats())
        return (
            f"No serializer is registered for serializer_format {self.format!r} "
            f"(registered: {known}); register one with "
            "channels.layers.redis.serializers.registry.register_serializer()"
        )


class InvalidSerializerError(TypeError, AssertionError):
    """A class given to :meth:`SerializersRegistry.register_serializer` cannot serialize.

    A :exc:`TypeError`; also an :exc:`AssertionError` because channels_redis checks it
    with ``assert``, and code may expect that.
    """


@runtime_checkable
class MessageSerializer(Protocol):
    """What a layer needs of a serializer: messages to bytes and back.

    Classes registered without subclassing :class:`BaseMessageSerializer` must have these
    two methods, and a constructor taking the keyword arguments ``symmetric_encryption_keys``,
    ``random_prefix_length`` and ``expiry``.
    """

    def serialize(self, message: Any) -> bytes: ...

    def deserialize(self, message: bytes) -> Any: ...


class BaseMessageSerializer(abc.ABC):
    """Adds the random prefix and the encryption around a subclass's bytes.

    :param symmetric_encryption_keys: a list of keys (str or bytes); the first encrypts,
        any decrypts. ``None`` or empty: no encryption.
    :param random_prefix_length: random bytes put before each message; ``0`` or less:
        none.
    :param expiry: with encryption, tokens older than ``expiry + 10`` seconds fail to
        decrypt (``None``: no limit).
    :raises ValueError: if ``symmetric_encryption_keys`` is one key instead of a list.
    """

    crypter: MultiFernet | None

    def __init__(
        self,
        symmetric_encryption_keys: Iterable[str | bytes] | None = None,
        random_prefix_length: int = 0,
        expiry: float | None = None,
    ) -> None:
        self.random_prefix_length = random_prefix_length
        self.expiry = expiry
        self._setup_encryption(symmetric_encryption_keys)

    def _setup_encryption(self, symmetric_encryption_keys: Iterable[str | bytes] | None) -> None:
        if not symmetric_encryption_keys:
            self.crypter = None
            return
        if isinstance(symmetric_encryption_keys, (str, bytes)):
            raise ValueError("symmetric_encryption_keys must be a list of keys, not one key")
        try:
            from cryptography.fernet import MultiFernet
        except ImportError:  # pragma: no cover - the redis extra installs it
            raise ValueError(
                "symmetric_encryption_keys needs the 'cryptography' package "
                "(pip install 'channels-anyio[redis]')"
            ) from None
        self.crypter = MultiFernet([self.make_fernet(key) for key in symmetric_encryption_keys])

    def make_fernet(self, key: str | bytes) -> Fernet:
        """The Fernet for one configured key: its SHA-256 digest, url-safe base64."""
        from cryptography.fernet import Fernet

        raw = key.encode("utf-8") if isinstance(key, str) else key
        return Fernet(base64.urlsafe_b64encode(hashlib.sha256(raw).digest()))

    @abc.abstractmethod
    def as_bytes(self, message: Any, *args: Any, **kwargs: Any) -> bytes:
        """``message`` in this format (no prefix, no encryption)."""

    @abc.abstractmethod
    def from_bytes(self, message: bytes, *args: Any, **kwargs: Any) -> Any:
        """The message in ``message``, bytes in this format."""

    def serialize(self, message: Any) -> bytes:
        """The bytes stored in Redis for ``message``."""
        data = self.as_bytes(message)
        if self.crypter is not None:
            data = self.crypter.encrypt(data)
        if self.random_prefix_length > 0:
            prefix = random.getrandbits(8 * self.random_prefix_length)
            data = prefix.to_bytes(self.random_prefix_length, "big") + data
        return data

    def deserialize(self, message: bytes) -> Any:
        """The message in bytes read from Redis.

        :raises ValueError: with encryption, if the bytes were not encrypted with one of
            our keys, or are older than ``expiry + 10`` seconds.
        """
        if self.random_prefix_length > 0:
            message = message[self.random_prefix_length :]
        if self.crypter is not None:
            from cryptography.fernet import InvalidToken

            ttl = None if self.expiry is None else int(self.expiry + 10)
            try:
                message = self.crypter.decrypt(message, ttl)
            except InvalidToken:
                raise ValueError(
                    "Cannot decrypt a channel layer message: it was encrypted with another "
                    "key, or is older than its time to live"
                ) from None
        return self.from_bytes(message)


class JSONSerializer(BaseMessageSerializer):
    """JSON, as UTF-8 (``serializer_format="json"``): no bytes values, tuples become lists."""

    def as_bytes(self, message: Any, *args: Any, **kwargs: Any) -> bytes:
        return json.dumps(message, *args, **kwargs).encode("utf-8")

    def from_bytes(self, message: bytes, *args: Any, **kwargs: Any) -> Any:
        return json.loads(message, *args, **kwargs)


class MissingSerializer(BaseMessageSerializer):
    """A format whose library is not installed: building it raises :attr:`exception`.

    channels_redis's placeholder, for registering a format that depends on an optional
    package. The layer builds its serializer when it is made, so a missing package shows up
    when the layer is configured, not at the first message::

        try:
            import cbor2
        except ImportError as exc:
            class CBORSerializer(MissingSerializer):
                exception = exc
        else:
            class CBORSerializer(BaseMessageSerializer):
                ...

        registry.register_serializer("cbor", CBORSerializer)

    ``MsgPackSerializer`` is one when ``msgpack`` cannot be imported, so ``"json"`` still
    works without it.
    """

    #: What building the serializer raises (the ``ImportError``, normally).
    exception: BaseException | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._raise()

    @classmethod
    def _raise(cls) -> NoReturn:
        if cls.exception is None:
            raise ImportError(
                f"{cls.__qualname__} stands for a serializer that cannot be used, but does "
                "not say why: set its `exception` to the ImportError"
            )
        # The same object is raised by every attempt: start its traceback afresh each time.
        raise cls.exception.with_traceback(None)

    def as_bytes(self, message: Any, *args: Any, **kwargs: Any) -> NoReturn:
        self._raise()

    def from_bytes(self, message: bytes, *args: Any, **kwargs: Any) -> NoReturn:
        self._raise()


try:
    import msgpack
except ImportError as _exc:  # the redis extra installs it
    _missing = ImportError(
        f"serializer_format 'msgpack' (the default) needs the msgpack package: {_exc}. "
        "Install it (pip install 'channels-anyio[redis]') or use 'json'"
    )
    _missing.__cause__ = _exc
    _msgpack_missing: ImportError | None = _missing
else:
    _msgpack_missing = None

if _msgpack_missing is None:

    class MsgPackSerializer(BaseMessageSerializer):
        """msgpack with its default options (``serializer_format="msgpack"``, the default).

        ``str`` and ``bytes`` keep their types; tuples become lists; map keys must be
        ``str`` or ``bytes``.
        """

        def as_bytes(self, message: Any, *args: Any, **kwargs: Any) -> bytes:
            data: bytes = msgpack.packb(message, *args, **kwargs)
            return data

        def from_bytes(self, message: bytes, *args: Any, **kwargs: Any) -> Any:
            return msgpack.unpackb(message, *args, **kwargs)

else:

    class MsgPackSerializer(MissingSerializer):  # type: ignore[no-redef]
        """msgpack is not installed: building this raises the ``ImportError``."""

        exception: BaseException | None = _msgpack_missing


class SerializersRegistry:
    """Serializer classes by ``serializer_format`` name (as Django's serializer registry)."""

    def __init__(self) -> None:
        self._registry: dict[Any, type[MessageSerializer]] = {}

    def register_serializer(self, format: Any, serializer_class: type[Any]) -> None:
        """Make ``serializer_format=format`` use ``serializer_class`` (replacing any other).

        :raises InvalidSerializerError: unless ``serializer_class`` is a concrete subclass
            of :class:`BaseMessageSerializer`, or a class with ``serialize`` and
            ``deserialize`` methods.
        """
        if not isinstance(serializer_class, type):
            raise InvalidSerializerError(
                f"register_serializer({format!r}, ...) needs a class, got {serializer_class!r}"
            )
        if issubclass(serializer_class, BaseMessageSerializer):
            if inspect.isabstract(serializer_class):
                missing = ", ".join(sorted(serializer_class.__abstractmethods__))
                raise InvalidSerializerError(
                    f"{serializer_class.__qualname__} does not implement {missing}: a "
                    "BaseMessageSerializer subclass must define as_bytes() and from_bytes()"
                )
        elif not (
            callable(getattr(serializer_class, "serialize", None))
            and callable(getattr(serializer_class, "deserialize", None))
        ):
            raise InvalidSerializerError(
                f"{serializer_class.__qualname__} cannot be a serializer: give a subclass of "
                "channels.layers.redis.serializers.BaseMessageSerializer, or a class with "
                "serialize() and deserialize() methods"
            )
        self._registry[format] = serializer_class

    def get_serializer(self, format: Any, *args: Any, **kwargs: Any) -> MessageSerializer:
        """A new serializer of the class registered for ``format``, built with the arguments.

        :raises SerializerDoesNotExist: if nothing is registered for ``format``.
        """
        try:
            serializer_class = self._registry[format]
        except (KeyError, TypeError):
            raise SerializerDoesNotExist(format) from None
        return serializer_class(*args, **kwargs)

    def formats(self) -> list[Any]:
        """The registered format names, in registration order."""
        return list(self._registry)


#: The registry the Redis layers look ``serializer_format`` up in.
registry: SerializersRegistry = SerializersRegistry()
registry.register_serializer("json", JSONSerializer)
registry.register_serializer("msgpack", MsgPackSerializer)


def as_message(value: Any) -> dict[str, Any]:
    """``value`` if it is a message (a map), for the layers' ``deserialize``.

    :raises ValueError: if what was decoded is not a map.
    """
    if not isinstance(value, dict):
        raise ValueError(f"A channel layer message must be a map, got {type(value).__name__}")
    return value
