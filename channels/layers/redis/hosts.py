"""The ``hosts`` setting: where each shard lives, and which shard a name belongs to.

The accepted forms are channels_redis's, so a ``CHANNEL_LAYERS`` setting carries over:
URL strings, ``(host, port)`` pairs, dicts with an ``address`` URL plus connection options,
and Sentinel dicts with ``master_name`` and ``sentinels``. The order of the list matters:
a name's shard is its position on a CRC-32 ring as long as the list.
"""

from __future__ import annotations

import binascii
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from coredis import ConnectionPool
from coredis.connection import TCPLocation, UnixDomainSocketLocation

__all__ = ["DEFAULT_HOST", "Host", "consistent_hash", "decode_hosts", "parse_hosts"]

DEFAULT_HOST = "redis://localhost:6379"

# Options of one host, besides where it is. ``socket_*`` are redis-py's names for the
# same timeouts, accepted because channels_redis settings are written for redis-py.
_OPTIONS = frozenset(
    {
        "db",
        "username",
        "password",
        "client_name",
        "connect_timeout",
        "socket_connect_timeout",
        "stream_timeout",
        "socket_timeout",
        "ssl",
        "ssl_context",
        "ssl_keyfile",
        "ssl_certfile",
        "ssl_ca_certs",
        "ssl_cert_reqs",
        "ssl_check_hostname",
    }
)
_PLACES = frozenset({"address", "host", "port", "unix_socket_path"})
_SENTINEL = frozenset({"master_name", "sentinels", "sentinel_kwargs"})


@dataclass(frozen=True, eq=False)
class Host:
    """One shard: how to reach it and how to log in once connected.

    Exactly one of ``address`` (TCP), ``path`` (Unix socket) or ``master_name`` (ask the
    ``sentinels`` where the master is) says where the server is.
    """

    address: tuple[str, int] | None = None
    path: str | None = None
    master_name: str | None = None
    sentinels: tuple[tuple[str, int], ...] = ()
    sentinel_kwargs: Mapping[str, Any] = field(default_factory=dict)
    #: How to reach and log in to each sentinel (``sentinel_kwargs`` applied).
    sentinel_hosts: tuple[Host, ...] = ()
    db: int = 0
    username: str | None = None
    password: str | None = None
    client_name: str | None = None
    ssl_context: ssl.SSLContext | None = None
    connect_timeout: float = 5.0
    stream_timeout: float = 30.0

    def describe(self) -> str:
        if self.master_name is not None:
            return f"sentinel master {self.master_name!r}/{self.db}"
        if self.path is not None:
            return f"unix:{self.path}/{self.db}"
        assert self.address is not None
        return f"{self.address[0]}:{self.address[1]}/{self.db}"


def consistent_hash(name: str | bytes, ring_size: int) -> int:
    """The shard of ``name``: channels_redis's ring, so both packages agree on it.

    CRC-32 of the name (UTF-8 if a ``str``), low 12 bits, scaled onto ``ring_size`` slots.

    :raises ValueError: if ``ring_size`` is less than 1 (there is no shard to pick).
    """
    if ring_size == 1:
        return 0  # the common case, and the layers call this for every message
    if ring_size < 1:
        raise ValueError(f"ring_size must be at least 1 (the number of hosts), got {ring_size}")
    if isinstance(name, str):
        name = name.encode("utf8")
    bucket = binascii.crc32(name) & 0xFFF
    return int(bucket / (4096 / float(ring_size)))


def decode_hosts(hosts: object) -> list[dict[str, Any]]:
    """The ``hosts`` setting as one dict of connection options per shard, in order.

    channels_redis's normal form, so code that reads the setting sees what it saw there: a
    URL becomes ``{"address": url}``, a ``(host, port)`` pair ``{"host": ..., "port": ...}``,
    a dict stays as it is (copied), and no hosts means ``[{"address":
    "redis://localhost:6379"}]``. The options are checked when a layer is built from them.

    :raises ValueError: for a bare string instead of a list, or an entry that is neither a
        URL, a pair nor a dict (channels_redis would fail later, or not at all).
    """
    if not hosts:
        return [{"address": DEFAULT_HOST}]
    if isinstance(hosts, (str, bytes)):
        raise ValueError("You must pass a list of Redis hosts, even if there is only one.")
    if not isinstance(hosts, Sequence):
        raise ValueError(f"hosts must be a list, got {type(hosts).__name__}")
    return [_decode_entry(entry) for entry in hosts]


def _decode_entry(entry: object) -> dict[str, Any]:
    if isinstance(entry, str):
        return {"address": entry}
    if isinstance(entry, (tuple, list)):
        if len(entry) != 2:
            raise ValueError(f"A host given as a pair must be (host, port), got {entry!r}")
        return {"host": entry[0], "port": entry[1]}
    if isinstance(entry, Mapping):
        return dict(entry)
    raise ValueError(
        f"Cannot use {entry!r} as a Redis host: give a URL, a (host, port) pair or a dict"
    )


def parse_hosts(hosts: object) -> list[Host]:
    """Turn the ``hosts`` setting into one :class:`Host` per shard, in order.

    :raises ValueError: for a bare string instead of a list, or an entry or option that
        is not understood (the message names it and lists what is accepted).
    """
    return [_parse_options(options) for options in decode_hosts(hosts)]


def _parse_options(options: dict[str, Any]) -> Host:
    unknown = set(options) - _OPTIONS - _PLACES - _SENTINEL
    if unknown:
        raise ValueError(
            f"Unknown Redis host option(s) {sorted(unknown)}; accepted: "
            f"{sorted(_OPTIONS | _PLACES | _SENTINEL)}"
        )
    if "master_name" in options:
        return _from_sentinel(options)
    if "address" in options:
        address = options.pop("address")
        if not isinstance(address, str):
            raise ValueError(f"A host 'address' must be a redis:// URL, got {address!r}")
        return _from_url(address, options)
    return _from_options(options)


def _from_url(url: str, options: dict[str, Any]) -> Host:
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"Redis URL must start with redis://, rediss:// or unix://, got {url!r}")
    try:
        pool = ConnectionPool.from_url(url)
    except ValueError as exc:
        raise ValueError(f"Cannot parse Redis URL {url!r}: {exc}") from None
    kwargs: dict[str, Any] = dict(pool.connection_kwargs)
    kwargs.update(options)
    location = pool.location
    if isinstance(location, UnixDomainSocketLocation):
        kwargs["unix_socket_path"] = location.path
    elif isinstance(location, TCPLocation):
        kwargs["host"], kwargs["port"] = location.host, location.port
    return _from_options(kwargs)


def _from_options(options: Mapping[str, Any], **where: Any) -> Host:
    options = dict(options)
    if not where:
        path = options.pop("unix_socket_path", None)
        host = options.pop("host", "localhost")
        port = options.pop("port", 6379)
        if path is not None:
            where["path"] = str(path)
        else:
            if not isinstance(host, str) or not isinstance(port, int):
                raise ValueError(
                    f"Redis host must be a str and port an int, got {host!r}:{port!r}"
                )
            where["address"] = (host, port)
    connect_timeout = options.pop("connect_timeout", None)
    connect_timeout = options.pop("socket_connect_timeout", connect_timeout)
    stream_timeout = options.pop("stream_timeout", None)
    stream_timeout = options.pop("socket_timeout", stream_timeout)
    context = options.pop("ssl_context", None)
    ssl_options = {key: options.pop(key) for key in list(options) if key.startswith("ssl")}
    if context is None and ssl_options.pop("ssl", bool(ssl_options)):
        context = _ssl_context(ssl_options)
    db = options.pop("db", 0) or 0
    options = {key: value for key, value in options.items() if value is not None}
    options.pop("encoding", None)
    options.pop("decode_responses", None)
    options.pop("processing_budget", None)
    unknown = set(options) - {"username", "password", "client_name"}
    if unknown:
        raise ValueError(f"Unknown Redis host option(s) {sorted(unknown)}")
    return Host(
        db=int(db),
        username=options.get("username"),
        password=options.get("password"),
        client_name=options.get("client_name"),
        ssl_context=context,
        connect_timeout=float(connect_timeout) if connect_timeout is not None else 5.0,
        stream_timeout=float(stream_timeout) if stream_timeout is not None else 30.0,
        **where,
    )


def _from_sentinel(options: dict[str, Any]) -> Host:
    master_name = options.pop("master_name")
    sentinels = options.pop("sentinels", None)
    sentinel_kwargs = options.pop("sentinel_kwargs", None) or {}
    if not isinstance(master_name, str) or not master_name:
        raise ValueError(f"Sentinel 'master_name' must be a non-empty str, got {master_name!r}")
    if not sentinels or isinstance(sentinels, (str, bytes)):
        raise ValueError("A Sentinel host needs 'sentinels', a list of (host, port) pairs")
    pairs = []
    for sentinel in sentinels:
        if (
            not isinstance(sentinel, (tuple, list))
            or len(sentinel) != 2
            or not isinstance(sentinel[0], str)
            or not isinstance(sentinel[1], int)
        ):
            raise ValueError(f"Each sentinel must be a (host, port) pair, got {sentinel!r}")
        pairs.append((sentinel[0], sentinel[1]))
    if not isinstance(sentinel_kwargs, Mapping):
        raise ValueError("Sentinel 'sentinel_kwargs' must be a dict")
    for place in _PLACES & set(options):
        raise ValueError(f"A Sentinel host cannot also set {place!r}: the sentinels say where")
    sentinel_hosts = tuple(
        _from_options({**sentinel_kwargs, "host": name, "port": port}) for name, port in pairs
    )
    return _from_options(
        options,
        master_name=master_name,
        sentinels=tuple(pairs),
        sentinel_kwargs=dict(sentinel_kwargs),
        sentinel_hosts=sentinel_hosts,
    )


def _ssl_context(options: Mapping[str, Any]) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=options.get("ssl_ca_certs"))
    if options.get("ssl_certfile"):
        context.load_cert_chain(options["ssl_certfile"], options.get("ssl_keyfile"))
    requirement = options.get("ssl_cert_reqs", "required")
    modes = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
    context.check_hostname = bool(options.get("ssl_check_hostname", requirement == "required"))
    if isinstance(requirement, str):
        if requirement not in modes:
            raise ValueError(f"ssl_cert_reqs must be one of {sorted(modes)}, got {requirement!r}")
        requirement = modes[requirement]
    context.verify_mode = requirement
    return context
