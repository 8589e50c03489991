"""Message bytes as channels_redis 4.x writes them, so either package reads the other's.

``[random prefix] ‖ [Fernet token of] serialized message``. The core layer adds a 12-byte
random prefix so that two equal messages are two members of a sorted set; the pub/sub layer
adds none. With ``symmetric_encryption_keys``, each key's SHA-256 digest (url-safe base64) is
a Fernet key; the first encrypts, any of them decrypts.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import msgpack

from ...types import Message

if TYPE_CHECKING:
    from cryptography.fernet import MultiFernet

__all__ = ["Serializer"]

_FORMATS = ("msgpack", "json")


class Serializer:
    """Turns messages into the bytes stored in Redis and back.

    :param ttl: with encryption, tokens older than this many seconds fail to decrypt
        (channels_redis passes ``expiry + 10`` on the core layer, nothing on pub/sub).
    """

    def __init__(
        self,
        serializer_format: str = "msgpack",
        symmetric_encryption_keys: Iterable[str | bytes] | None = None,
        random_prefix_length: int = 0,
        ttl: int | None = None,
    ) -> None:
        if serializer_format not in _FORMATS:
            raise ValueError(
                f"serializer_format must be one of {', '.join(_FORMATS)}, "
                f"got {serializer_format!r}"
            )
        self.format = serializer_format
        self.random_prefix_length = random_prefix_length
        self.ttl = ttl
        self.crypter: MultiFernet | None = _multi_fernet(symmetric_encryption_keys)

    def dumps(self, message: Message) -> bytes:
        """The bytes for ``message``.

        :raises TypeError: if the message holds a value the format cannot carry.
        """
        if self.format == "msgpack":
            data: bytes = msgpack.packb(message)
        else:
            data = json.dumps(message).encode("utf-8")
        if self.crypter is not None:
            data = self.crypter.encrypt(data)
        if self.random_prefix_length:
            data = (
                random.getrandbits(8 * self.random_prefix_length).to_bytes(
                    self.random_prefix_length, "big"
                )
                + data
            )
        return data

    def loads(self, data: bytes) -> Message:
        """The message in ``data``.

        :raises ValueError: if the bytes are not a message in this format (or, with
            encryption, were not encrypted with one of our keys, or are too old).
        """
        data = data[self.random_prefix_length :]
        if self.crypter is not None:
            from cryptography.fernet import InvalidToken

            try:
                data = self.crypter.decrypt(data, ttl=self.ttl)
            except InvalidToken:
                raise ValueError(
                    "Cannot decrypt a channel layer message: it was encrypted with another "
                    "key, or is older than its time to live"
                ) from None
        message: Any
        if self.format == "msgpack":
            message = msgpack.unpackb(data)
        else:
            message = json.loads(data.decode("utf-8"))
        if not isinstance(message, dict):
            raise ValueError(
                f"A channel layer message must be a map, got {type(message).__name__}"
            )
        return message


def _multi_fernet(keys: Iterable[str | bytes] | None) -> MultiFernet | None:
    if not keys:
        return None
    if isinstance(keys, (str, bytes)):
        raise ValueError("symmetric_encryption_keys must be a list of keys, not one key")
    try:
        from cryptography.fernet import Fernet, MultiFernet
    except ImportError:  # pragma: no cover - the redis extra installs it
        raise ValueError(
            "symmetric_encryption_keys needs the 'cryptography' package "
            "(pip install 'channels-anyio[redis]')"
        ) from None
    fernets = []
    for key in keys:
        raw = key.encode("utf-8") if isinstance(key, str) else key
        fernets.append(Fernet(base64.urlsafe_b64encode(hashlib.sha256(raw).digest())))
    return MultiFernet(fernets)
