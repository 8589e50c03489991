"""Redis connections that belong to the task using them: no reader or writer tasks.

coredis's clients run each connection's reader and writer in a task group that a parent
task must enter before any task uses the pool, and leave afterwards. A channel layer is a
process-wide object called from whatever task needs it (every consumer, sync code through
``async_to_sync``, management commands), so there is no parent task that could own such a
group without outliving what started it. Here, instead, a connection is a byte stream plus
coredis's RESP parser: the task that borrows it writes its commands, reads its replies and
gives it back. Nothing runs in the background, and a connection whose reply was abandoned
halfway (cancellation, a timeout, a dropped socket) is closed, never reused out of step.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
from coredis.exceptions import RedisError
from coredis.parser import NotEnoughData, Parser

from .hosts import Host

__all__ = ["CONNECTION_ERRORS", "Command", "Connection", "ConnectionLost", "Pool"]

logger: logging.Logger = logging.getLogger("channels.layers.redis")

Arg = bytes | str | int | float
Command = Sequence[Arg]

_READ_SIZE = 65536


class ConnectionLost(ConnectionError):
    """The connection to a Redis server broke (or could not be made)."""


# What a network failure looks like from anyio, or from the server going away mid-reply.
# OSError covers ConnectionLost and TimeoutError (a reply that never came).
CONNECTION_ERRORS = (
    OSError,
    anyio.EndOfStream,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
)


def pack(commands: Sequence[Command]) -> bytes:
    """RESP-encode ``commands`` as one write."""
    out = []
    for command in commands:
        out.append(b"*%d\r\n" % len(command))
        for arg in command:
            if isinstance(arg, str):
                arg = arg.encode("utf-8")
            elif isinstance(arg, int):
                arg = b"%d" % arg
            elif isinstance(arg, float):
                arg = repr(arg).encode("ascii")
            out.append(b"$%d\r\n%b\r\n" % (len(arg), arg))
    return b"".join(out)


class Connection:
    """One connection to one server, used by one task at a time.

    ``client_id`` is the server's id for it, which another connection needs to wake it
    from a blocking command (``CLIENT UNBLOCK``).

    A plain TCP or Unix connection is a non-blocking socket driven directly: a command is
    written by a synchronous ``send`` (it fits in the socket buffer in all but pathological
    cases), and a reply is read after ``wait_readable``. That skips the per-call checkpoints
    and shielded scopes of an anyio byte stream, which cost more than the round trip itself
    on asyncio, and it makes writing a command atomic with respect to cancellation. TLS
    connections go through an anyio stream.
    """

    def __init__(self, transport: socket.socket | anyio.abc.ByteStream, host: Host) -> None:
        self.sock: socket.socket | None = None
        self.stream: anyio.abc.ByteStream | None = None
        if isinstance(transport, socket.socket):
            self.sock = transport
        else:
            self.stream = transport
        self.host = host
        self.parser: Parser = Parser()
        self.client_id = 0
        #: The server's ``run_id`` (``INFO server``): a new one means the server restarted
        #: (or another server took over) and lost what it held in memory.
        self.run_id: str | None = None
        self.broken: bool = False

    async def send(self, commands: Sequence[Command]) -> None:
        """Write ``commands``.

        Cancelled, it has written nothing the server will run: on a socket the write
        either completes without suspending or stops halfway, which breaks the
        connection (it is closed, and the server drops the partial command).
        """
        try:
            data = pack(commands)
            if self.sock is None:
                assert self.stream is not None
                await self.stream.send(data)
                return
            view = memoryview(data)
            while view:
                try:
                    view = view[self.sock.send(view) :]
                except BlockingIOError:
                    await anyio.wait_writable(self.sock)
        except BaseException:
            self.broken = True
            raise

    async def receive(self) -> bytes:
        """The next bytes from the server.

        Cancelled, it has taken none, so the connection stays usable (a pub/sub reader
        relies on that); a failed read breaks it.
        """
        try:
            if self.sock is None:
                assert self.stream is not None
                return await self.stream.receive()
            while True:
                await anyio.wait_readable(self.sock)
                try:
                    data = self.sock.recv(_READ_SIZE)
                except BlockingIOError:
                    continue
                if not data:
                    raise anyio.EndOfStream
                return data
        except Exception:
            self.broken = True
            raise

    def receive_nowait(self) -> bytes | None:
        """What the server has already sent, without waiting: ``b""`` if nothing.

        ``None`` on a TLS stream, which cannot be asked without waiting.

        :raises anyio.EndOfStream: if the server closed the connection (it is broken).
        """
        if self.sock is None:
            return None
        chunks: list[bytes] = []
        while True:
            try:
                data = self.sock.recv(_READ_SIZE)
            except BlockingIOError:
                return b"".join(chunks)
            except OSError:
                self.broken = True
                raise
            if not data:
                self.broken = True
                raise anyio.EndOfStream
            chunks.append(data)

    async def read_reply(self) -> Any:
        """The next reply; an error reply is returned as a :class:`RedisError`, not raised."""
        try:
            while True:
                parsed = self.parser.parse(decode=False)
                if not isinstance(parsed, NotEnoughData):
                    return parsed[1]
                self.parser.feed(await self.receive())
        except BaseException:
            self.broken = True  # abandoned before its reply: out of step from now on
            raise

    async def execute(
        self, commands: Sequence[Command], timeout: float | None = None
    ) -> list[Any]:
        """Send ``commands`` in one write, read their replies (one round trip).

        Error replies come back in the list as :class:`RedisError` instances, so one bad
        command does not leave the others' replies unread.
        """
        if timeout is None:
            timeout = self.host.stream_timeout
        # A bare scope, not fail_after(): this runs once per layer call, and the
        # context-manager wrapper costs a measurable share of a round trip.
        with anyio.CancelScope(deadline=anyio.current_time() + timeout) as scope:
            await self.send(commands)
            return [await self.read_reply() for _ in commands]
        assert scope.cancelled_caught
        raise TimeoutError(f"no reply from Redis at {self.host.describe()} in {timeout} s")

    async def aclose(self) -> None:
        self.broken = True
        if self.sock is not None:
            if self.sock.fileno() != -1:
                anyio.notify_closing(self.sock)
                self.sock.close()
            await anyio.lowlevel.checkpoint()
        else:
            assert self.stream is not None
            await anyio.aclose_forcefully(self.stream)


async def connect(host: Host, *, sentinel: bool = False) -> Connection:
    """Open a connection to ``host`` and log in (one round trip after the handshake).

    ``sentinel`` is for connections to a sentinel, which knows fewer commands.

    :raises ConnectionLost: if the server cannot be reached.
    :raises ~coredis.exceptions.RedisError: if it refuses the login or the database.
    """
    try:
        with anyio.fail_after(host.connect_timeout):
            stream = await _open_stream(host)
    except (*CONNECTION_ERRORS, RedisError) as exc:
        raise ConnectionLost(f"Cannot connect to Redis at {host.describe()}: {exc}") from exc
    connection = Connection(stream, host)
    setup: list[Command] = []
    if host.password is not None:
        setup.append(
            ("AUTH", host.username, host.password) if host.username else ("AUTH", host.password)
        )
    if host.db:
        setup.append(("SELECT", host.db))
    if host.client_name:
        setup.append(("CLIENT", "SETNAME", host.client_name))
    if not sentinel:
        setup += [("INFO", "server"), ("CLIENT", "ID")]
    if not setup:
        return connection
    try:
        replies = await connection.execute(setup, timeout=host.connect_timeout)
    except BaseException as exc:
        with anyio.CancelScope(shield=True):
            await connection.aclose()
        if isinstance(exc, CONNECTION_ERRORS):
            raise ConnectionLost(f"Lost Redis at {host.describe()} while logging in") from exc
        raise
    if not sentinel:
        # A server that refuses INFO (some managed services rename it) still serves; it
        # only cannot tell us when it restarted.
        info = replies.pop(-2)
        connection.run_id = None if isinstance(info, RedisError) else _run_id(info)
    for reply in replies:
        if isinstance(reply, RedisError):
            with anyio.CancelScope(shield=True):
                await connection.aclose()
            raise reply
    if not sentinel:
        connection.client_id = int(replies[-1])
    return connection


def _run_id(info: object) -> str | None:
    """The ``run_id`` line of an ``INFO server`` reply."""
    if isinstance(info, str):
        info = info.encode()
    if not isinstance(info, bytes):
        return None
    for line in info.splitlines():
        if line.startswith(b"run_id:"):
            run_id: bytes = line[7:].strip()
            return run_id.decode("ascii", "replace")
    return None


async def _open_stream(host: Host) -> socket.socket | anyio.abc.ByteStream:
    if host.path is not None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        return await _connect_socket(sock, host.path)
    if host.master_name is not None:
        address = await _ask_sentinels(host)
    else:
        assert host.address is not None
        address = host.address
    if host.ssl_context is not None:
        return await anyio.connect_tcp(*address, ssl_context=host.ssl_context)
    error: OSError | None = None
    for family, kind, proto, _, sockaddr in await anyio.getaddrinfo(
        *address, type=socket.SOCK_STREAM
    ):
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return await _connect_socket(sock, sockaddr)
        except OSError as exc:
            error = exc
    raise error or OSError(f"cannot resolve {address[0]!r}")


async def _connect_socket(sock: socket.socket, address: Any) -> socket.socket:
    """Connect ``sock`` without blocking the event loop; it is closed if that fails."""
    try:
        sock.setblocking(False)
        try:
            sock.connect(address)
        except BlockingIOError:
            await anyio.wait_writable(sock)
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                raise OSError(error, os.strerror(error)) from None
    except BaseException:
        if sock.fileno() != -1:
            anyio.notify_closing(sock)
        sock.close()
        raise
    return sock


async def _ask_sentinels(host: Host) -> tuple[str, int]:
    """Where the sentinels say ``host.master_name`` is now: the first answer wins."""
    for sentinel_host in host.sentinel_hosts:
        try:
            sentinel = await connect(sentinel_host, sentinel=True)
        except (ConnectionLost, RedisError) as exc:
            logger.info("Sentinel %s: %s", sentinel_host.describe(), exc)
            continue
        try:
            (reply,) = await sentinel.execute(
                [("SENTINEL", "GET-MASTER-ADDR-BY-NAME", host.master_name or "")]
            )
        except CONNECTION_ERRORS:
            continue
        finally:
            await sentinel.aclose()
        if isinstance(reply, list) and len(reply) == 2:
            return reply[0].decode("utf-8"), int(reply[1])
    raise ConnectionLost(f"No sentinel knows where master {host.master_name!r} is")


class Pool:
    """Idle connections to one shard, for the tasks of one event loop.

    A task borrows a connection with :meth:`acquire` and gives it back with
    :meth:`release`; a connection that went out of step (``broken``) is closed instead.
    At most ``max_idle`` connections are kept open while idle. ``on_connect`` runs on
    every new connection before it is handed out (the layer checks there whether the
    server restarted).
    """

    def __init__(
        self,
        host: Host,
        max_idle: int = 16,
        on_connect: Callable[[Connection], Awaitable[None]] | None = None,
    ) -> None:
        self.host = host
        self.max_idle = max_idle
        self.on_connect = on_connect
        self.idle: list[Connection] = []
        self.closed: bool = False

    async def acquire(self) -> Connection:
        """An idle connection, or a new one (given to ``on_connect`` first)."""
        if self.closed:
            raise anyio.ClosedResourceError("the channel layer's connections are closed")
        if self.idle:
            return self.idle.pop()
        connection = await connect(self.host)
        if self.on_connect is not None:
            try:
                await self.on_connect(connection)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await connection.aclose()
                raise
        return connection

    async def release(self, connection: Connection) -> None:
        if connection.broken or self.closed or len(self.idle) >= self.max_idle:
            with anyio.CancelScope(shield=True):
                await connection.aclose()
        else:
            self.idle.append(connection)

    async def execute(self, commands: Sequence[Command]) -> list[Any]:
        """Run ``commands`` in one round trip on a pooled connection."""
        connection = await self.acquire()
        try:
            return await connection.execute(commands)
        except BaseException:
            connection.broken = True
            raise
        finally:
            await self.release(connection)

    async def aclose(self) -> None:
        self.closed = True
        idle, self.idle = self.idle, []
        with anyio.CancelScope(shield=True):
            for connection in idle:
                await connection.aclose()
