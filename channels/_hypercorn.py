"""The one place that touches hypercorn's private parts (tested with hypercorn 0.18).

:mod:`channels.serving` runs its own accept loop, so that it owns every connection's
socket: that is what lets it abort the connections a graceful stop leaves behind and
drop a WebSocket peer that stopped answering pings. Each accepted connection is then
served by hypercorn's own per-connection server (``TCPServer``, one per event loop),
with hypercorn's lifespan driver and worker context. None of these is hypercorn's
public API, so everything we use of them is named here, and :func:`check` compares it
with the installed hypercorn; ``tests/test_hypercorn_adapter.py`` runs that check, so
an upgrade that moves something fails there, naming this module, rather than deep
inside a server.

Imports of hypercorn happen inside the functions: ``channels`` imports without it.
``import asyncio`` and ``import trio`` appear here because hypercorn's per-connection
servers are per event loop (a documented interop point, like ``channels.concurrency``).
"""

from __future__ import annotations

import functools
import inspect
import socket
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager as AsyncContextManager
from typing import Any, Protocol, cast

import anyio
import sniffio

from .types import ASGIApp

__all__ = [
    "HypercornChanged",
    "Lifespan",
    "check",
    "make_config",
    "serve_connection",
    "sockets_for",
    "worker_context",
    "wrap_application",
]

#: The hypercorn versions this adapter is written for (pyproject.toml caps the same).
SUPPORTED = ">=0.18,<0.19"

#: What we use of each private part: dotted path -> the parameters we pass, in order.
RELIED_ON: dict[str, tuple[str, ...]] = {
    "hypercorn.config.Config": (),
    "hypercorn.utils.wrap_app": ("app", "wsgi_max_body_size", "mode"),
    "hypercorn.utils.LifespanFailureError": ("stage", "message"),
    "hypercorn.trio.tcp_server.TCPServer": ("app", "config", "context", "state", "stream"),
    "hypercorn.trio.lifespan.Lifespan": ("app", "config", "state"),
    "hypercorn.trio.worker_context.WorkerContext": ("max_requests",),
    "hypercorn.asyncio.tcp_server.TCPServer": (
        "app",
        "loop",
        "config",
        "context",
        "state",
        "reader",
        "writer",
    ),
    "hypercorn.asyncio.lifespan.Lifespan": ("app", "config", "loop", "lifespan_state"),
    "hypercorn.asyncio.worker_context.WorkerContext": ("max_requests",),
    "hypercorn.events.RawData": ("data", "address"),
    "hypercorn.events.Closed": (),
    "hypercorn.trio.tcp_server.MAX_RECV": (),
}
#: Attributes and methods we use on hypercorn's objects.
RELIED_ON_MEMBERS: dict[str, tuple[str, ...]] = {
    "hypercorn.config.Config": (
        "graceful_timeout",
        "root_path",
        "accesslog",
        "errorlog",
        "websocket_ping_interval",
        "wsgi_max_body_size",
        "keep_alive_timeout",
        "backlog",
        "bind",
        "create_sockets",
    ),
    "hypercorn.trio.tcp_server.TCPServer": (
        "run",
        "protocol_send",
        "_read_data",
        "_initiate_server_close",
    ),
    "hypercorn.asyncio.tcp_server.TCPServer": ("run", "_initiate_server_close"),
    "hypercorn.trio.lifespan.Lifespan": (
        "handle_lifespan",
        "wait_for_startup",
        "wait_for_shutdown",
    ),
    "hypercorn.asyncio.lifespan.Lifespan": (
        "handle_lifespan",
        "wait_for_startup",
        "wait_for_shutdown",
    ),
    "hypercorn.trio.worker_context.WorkerContext": ("terminated",),
    "hypercorn.asyncio.worker_context.WorkerContext": ("terminated",),
}
#: Behaviour we rely on, as a phrase the source must contain: the trio server writes
#: under ``send_lock``, reads in ``_read_data`` (which :func:`_direct_send_trio_server`
#: replaces, so it must still be hypercorn's way to read) and keeps its task group.
RELIED_ON_SOURCE: dict[str, str] = {
    # The trio server's writes, which _direct_send_trio_server takes over when it can.
    "hypercorn.trio.tcp_server.TCPServer.__init__": "self.send_lock = trio.Lock()",
    # The keep-alive wait, which _WatchedIdle stands in for.
    "hypercorn.trio.tcp_server.TCPServer._idle_timeout": "await self._initiate_server_close()",
    "hypercorn.asyncio.tcp_server.TCPServer._idle_timeout": "self._initiate_server_close()",
    "hypercorn.asyncio.tcp_server.TCPServer._close": "await self.idle_task.stop()",
    "hypercorn.trio.tcp_server.TCPServer.protocol_send": "await self.stream.send_all(event.data)",
    "hypercorn.trio.tcp_server.TCPServer.run": "await self._read_data()",
    "hypercorn.trio.tcp_server.TCPServer._read_data": (
        "await self.protocol.handle(RawData(bytes(data)))"
    ),
}


class HypercornChanged(RuntimeError):
    """The installed hypercorn no longer has what ``channels/_hypercorn.py`` uses."""


def _load(path: str) -> Any:
    module_name, _, name = path.rpartition(".")
    module = __import__(module_name, fromlist=[name])
    return getattr(module, name)


def check() -> None:
    """Compare what this adapter uses with the installed hypercorn.

    :raises HypercornChanged: naming each part that moved or changed its parameters.
    :raises ImportError: if hypercorn is not installed.
    """
    import hypercorn  # noqa: F401  (an ImportError here means: not installed)

    problems: list[str] = []
    for path, expected in RELIED_ON.items():
        try:
            thing = _load(path)
        except (ImportError, AttributeError) as exc:
            problems.append(f"{path} is gone ({exc})")
            continue
        if expected:
            target = thing.__init__ if inspect.isclass(thing) else thing
            names = [
                parameter.name
                for parameter in inspect.signature(target).parameters.values()
                if parameter.name != "self"
                and parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD)
            ]
            if tuple(names[: len(expected)]) != expected:
                problems.append(f"{path} takes {names}, the adapter passes {list(expected)}")
    for path, members in RELIED_ON_MEMBERS.items():
        try:
            thing = _load(path)
        except (ImportError, AttributeError):
            continue  # reported above
        # Config and WorkerContext set these in __init__: look at an instance.
        instance: Any = thing
        if path.endswith(".Config"):
            instance = thing()
        elif path.endswith(".WorkerContext"):
            instance = thing(None)
        missing = [member for member in members if not hasattr(instance, member)]
        if missing:
            problems.append(f"{path} has no {', '.join(missing)}")
    for path, phrase in RELIED_ON_SOURCE.items():
        owner, _, method = path.rpartition(".")
        try:
            source = inspect.getsource(getattr(_load(owner), method))
        except (ImportError, AttributeError, OSError, TypeError) as exc:
            problems.append(f"{path} is gone ({exc})")
            continue
        if phrase not in source:
            what = f"calls {phrase[:-1]}()" if phrase.endswith("(") else f"has {phrase!r}"
            problems.append(f"{path} no longer {what}")
    if problems:
        raise HypercornChanged(
            f"channels/_hypercorn.py (written for hypercorn{SUPPORTED}) does not match the "
            f"installed hypercorn {_installed_version()}: " + "; ".join(problems)
        )


def _installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hypercorn")
    except PackageNotFoundError:
        return "(unknown version)"


def make_config(*, graceful_timeout: float, root_path: str) -> Any:
    """hypercorn's ``Config`` for our worker: no access log of its own (ours is
    :class:`channels.serving.AccessLog`), and no WebSocket pings of its own (the
    worker's are in :mod:`channels._server`)."""
    import logging

    from hypercorn.config import Config

    config = Config()
    config.graceful_timeout = graceful_timeout
    config.root_path = root_path
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    # hypercorn pings every interval from a task per WebSocket, from the accept on; our
    # worker's watch pings a WebSocket once it has been silent that long (daphne's rule).
    config.websocket_ping_interval = None
    return config


def sockets_for(config: Any, binds: Sequence[str]) -> list[socket.socket]:
    """Listening sockets for ``unix:PATH`` and ``fd://N`` binds, made by hypercorn's code."""
    config.bind = list(binds)
    made: list[socket.socket] = list(config.create_sockets().insecure_sockets)
    return made


def bound_addresses(config: Any) -> list[str]:
    """The binds hypercorn made sockets for, as it names them."""
    return list(config.bind)


def wrap_application(application: ASGIApp, config: Any) -> Any:
    """``application`` as hypercorn's servers call it (with its sync-spawn arguments)."""
    from hypercorn.utils import wrap_app

    return wrap_app(cast(Any, application), config.wsgi_max_body_size, "asgi")


def worker_context() -> Any:
    """hypercorn's per-worker state for the running event loop; setting its
    ``terminated`` event tells idle keep-alive connections to close."""
    if sniffio.current_async_library() == "trio":
        from hypercorn.trio.worker_context import WorkerContext
    else:
        from hypercorn.asyncio.worker_context import WorkerContext  # type: ignore[assignment]
    return WorkerContext(None)


def clock() -> Callable[[], float]:
    """The running loop's clock (:func:`anyio.current_time`'s), bound once: the server
    reads it on every read from a peer."""
    if sniffio.current_async_library() == "trio":
        import trio  # interop: the clock of trio's run

        return trio.current_time
    import asyncio  # interop: the clock of the running loop

    return asyncio.get_running_loop().time


def connection_group() -> AsyncContextManager[Any]:
    """The task group the connections' tasks run in (``start_soon``, ``cancel_scope``).

    On trio, a nursery: anyio's task group wraps each task it starts in a coroutine of
    its own, with its own cancel scope and event, which about tripled the cost of
    starting a connection's task there. On asyncio, anyio's task group.
    """
    if sniffio.current_async_library() == "trio":
        import trio  # interop: see above

        return trio.open_nursery()
    return anyio.create_task_group()


class Lifespan:
    """hypercorn's lifespan driver for the running event loop, started in our task group.

    :meth:`wait_for_startup` raises ``hypercorn.utils.LifespanFailureError`` if the
    application answers ``lifespan.startup.failed``; an application without lifespan
    support is served without it, as hypercorn does.
    """

    def __init__(self, wrapped: Any, config: Any, state: dict[str, Any]) -> None:
        self._trio = sniffio.current_async_library() == "trio"
        if self._trio:
            from hypercorn.trio.lifespan import Lifespan as TrioLifespan

            self._driver: Any = TrioLifespan(wrapped, config, state)
        else:
            import asyncio  # interop: hypercorn's asyncio lifespan needs the loop

            from hypercorn.asyncio.lifespan import Lifespan as AsyncioLifespan

            self._driver = AsyncioLifespan(wrapped, config, asyncio.get_running_loop(), state)

    async def start(self, group: anyio.abc.TaskGroup) -> None:
        if self._trio:
            await group.start(self._driver.handle_lifespan)  # trio's task_status protocol
        else:
            group.start_soon(self._driver.handle_lifespan)

    async def wait_for_startup(self) -> None:
        await self._driver.wait_for_startup()

    async def wait_for_shutdown(self) -> None:
        await self._driver.wait_for_shutdown()


class Connection(Protocol):
    """What :func:`serve_connection` needs of the connection it serves."""

    sock: socket.socket

    def can_ping(self, send_ping: Callable[[], None]) -> None:
        """Called once with what writes a WebSocket ping frame now, unless another
        write is under way (the peer is being written to anyway)."""

    def received(self) -> None:
        """hypercorn read data from the peer."""

    def sent(self, data: bytes) -> None:
        """hypercorn is about to write ``data``."""

    def idle(self, close: Callable[[], Awaitable[None]] | None) -> None:
        """hypercorn's keep-alive wait between requests began (``close`` ends the
        connection once it has lasted ``keep_alive_timeout``) or ended (``None``)."""


class _WatchedIdle:
    """Stands in for a hypercorn server's ``idle_task``, the keep-alive wait between a
    connection's requests: hypercorn runs it as a task, started each time the connection
    goes idle (on trio with ``nursery.start``, on asyncio with a lock and a cancelled
    task to wait for), which was a tenth of a short WebSocket connection's CPU. Here it
    is a deadline that the worker's watch keeps (:meth:`Connection.idle`). As
    hypercorn's, it closes the connection at once when the worker is stopping."""

    def __init__(
        self, connection: Connection, context: Any, close: Callable[[], Awaitable[None]]
    ) -> None:
        self._connection = connection
        self._context = context
        self._close = close

    async def restart(self, task_group: Any, action: object) -> None:
        if self._context.terminated.is_set():
            task_group.spawn(self._close)
        else:
            self._connection.idle(self._close)

    async def stop(self) -> None:
        self._connection.idle(None)


#: A server's WebSocket ping: FIN, opcode 9, unmasked, no payload.
PING_FRAME = b"\x89\x00"


async def serve_connection(
    wrapped: Any, config: Any, context: Any, state: dict[str, Any], connection: Connection
) -> None:
    """Serve one accepted connection with hypercorn's server for the running event loop.

    ``connection.received()`` is called each time hypercorn reads data from the peer,
    and ``connection.sent(data)`` with each piece of data hypercorn writes, before it is
    written. The socket stays the caller's to shut down; hypercorn closes it when the
    connection ends.
    """
    sock = connection.sock
    if sniffio.current_async_library() == "trio":
        import trio  # interop: hypercorn's trio server takes a trio stream
        from hypercorn.typing import ConnectionState

        stream = _NotingTrioStream(trio.SocketStream(trio.socket.from_stdlib_socket(sock)), sock)
        stream.on_send = connection.sent
        server = _direct_send_trio_server()(
            wrapped, config, context, ConnectionState(state.copy()), cast(Any, stream)
        )
        server.on_receive = connection.received
        server.idle_task = _WatchedIdle(connection, context, server.close_shielded)
        connection.can_ping(server.send_ping)
        await server.run()
    else:
        import asyncio  # interop: hypercorn's asyncio server takes asyncio streams

        from hypercorn.asyncio.tcp_server import TCPServer as AsyncioServer

        reader, writer = await asyncio.open_connection(sock=sock)
        noting = _NotingReader(reader, connection.received)
        noting_writer = _NotingWriter(writer, connection.sent)
        connection.can_ping(noting_writer.send_ping)
        loop = asyncio.get_running_loop()
        server = AsyncioServer(
            wrapped,
            loop,
            config,
            context,
            state.copy(),
            cast(Any, noting),
            cast(Any, noting_writer),
        )

        async def close() -> None:
            await asyncio.shield(server._initiate_server_close())  # as hypercorn's timeout

        server.idle_task = _WatchedIdle(connection, context, close)  # type: ignore[assignment]
        await server.run()


@functools.cache
def _direct_send_trio_server() -> type[Any]:
    """hypercorn's trio ``TCPServer``, writing what the socket takes at once itself, and
    reading without a timeout scope per read when it has no read timeout.

    Each write of hypercorn's goes through ``protocol_send``: a ``trio.Lock``, a shielded
    cancel scope and trio's ``SocketStream.send_all`` (a conflict detector, a
    checkpoint, a retry helper) around one ``socket.send``. A profile of a 1,000-member
    WebSocket broadcast on trio put two thirds of the server's CPU there. When no other
    write is in progress (the lock is free), the data is written here with one
    non-blocking ``send``; only what the socket does not take then, or a write that
    fails, goes the usual way, so order, back-pressure and hypercorn's handling of a
    broken connection are unchanged. No cancellation point is lost: nothing is awaited
    here, and the application's sends are cancellation points of their own
    (``_server._send``).

    ``send_ping`` writes a ping frame the same way, from the worker's watch (not a task
    of the connection's): only when no write is under way, and if the socket takes only
    part of it, the rest goes first, under the lock, before anything else is written.
    """
    import trio  # interop: hypercorn's trio server
    from hypercorn.events import Closed, RawData
    from hypercorn.trio.tcp_server import MAX_RECV, TCPServer

    class DirectSendServer(TCPServer):
        on_receive: Callable[[], None] = _nothing

        async def protocol_send(self, event: Any) -> None:
            stream = cast(_NotingTrioStream, self.stream)  # what serve_connection gives it
            if type(event) is not RawData or self.send_lock.locked() or stream.unsent:
                await super().protocol_send(event)  # stream.send_all writes any unsent first
                return
            rest = stream.send_now(event.data)
            if rest is not None:
                await self._send_rest(rest)

        async def _send_rest(self, rest: memoryview | bytes) -> None:
            stream = cast(_NotingTrioStream, self.stream)
            async with self.send_lock:  # as hypercorn writes, for what is left
                try:
                    with trio.CancelScope(shield=True):
                        await stream.send_rest(rest)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    await self.protocol.handle(Closed())

        async def close_shielded(self) -> None:
            """What hypercorn's keep-alive timeout does when it ends."""
            with trio.CancelScope(shield=True):
                await self._initiate_server_close()

        def send_ping(self) -> None:
            stream = cast(_NotingTrioStream, self.stream)
            if self.send_lock.locked() or stream.unsent:
                return
            rest = stream.send_now(PING_FRAME)
            if rest is not None and len(rest) < len(PING_FRAME):
                stream.unsent = bytes(rest)  # written before anything else
                self._task_group.spawn(self._send_rest, b"")

        async def _read_data(self) -> None:
            # hypercorn's, calling on_receive after each read, and entering a timeout
            # scope per read only when there is a read timeout.
            receive = cast(_NotingTrioStream, self.stream).receive
            timeout = self.config.read_timeout
            on_receive = self.on_receive
            while True:
                try:
                    if timeout:
                        with trio.fail_after(timeout):
                            data = await receive(MAX_RECV)
                    else:
                        data = await receive(MAX_RECV)
                except (trio.ClosedResourceError, trio.BrokenResourceError, trio.TooSlowError):
                    break
                if data:
                    on_receive()
                await self.protocol.handle(RawData(bytes(data)))
                if data == b"":
                    break
            await self.idle_task.stop()  # no keep-alive wait once reading has ended
            await self.protocol.handle(Closed())

    return DirectSendServer


class _NotingTrioStream:
    """A trio ``SocketStream`` as hypercorn's trio ``TCPServer`` uses it, calling
    ``on_send`` before each write. It has no ``do_handshake``: hypercorn takes that as
    "not TLS"."""

    def __init__(self, stream: Any, sock: socket.socket) -> None:
        self._stream = stream
        self._sock = sock  # the same socket, for send_now
        self.socket = stream.socket
        self.receive: Callable[[int], Awaitable[bytes]] = stream.receive_some
        self.on_send: Callable[[bytes], None] = _ignore
        #: The rest of a ping frame the socket took only part of: written first.
        self.unsent: bytes | None = None

    async def send_all(self, data: bytes) -> None:
        self.on_send(data)
        await self.send_rest(data)

    def send_now(self, data: bytes) -> memoryview | bytes | None:
        """Write what the socket takes without waiting (reporting all of ``data`` to
        ``on_send``); ``None`` once all is written, otherwise what is left, to go
        through :meth:`send_rest`.

        A failure leaves all of ``data``: trio's ``send_all`` then meets the same
        error and raises it as hypercorn expects (``BrokenResourceError``, or
        ``ClosedResourceError`` once the stream is closed or shut for writing).
        """
        self.on_send(data)
        try:
            sent = self._sock.send(data)
        except OSError:  # BlockingIOError among them
            return data
        if sent == len(data):
            return None
        return memoryview(data)[sent:]

    async def send_rest(self, rest: memoryview | bytes) -> None:
        """Write data already reported to ``on_send`` (after any unsent ping)."""
        if self.unsent is not None:
            unsent, self.unsent = self.unsent, None
            await self._stream.send_all(unsent)
        if rest:
            await self._stream.send_all(rest)

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()


class _NotingReader:
    """An asyncio ``StreamReader`` as hypercorn's asyncio ``TCPServer`` uses it."""

    def __init__(self, reader: Any, on_receive: Callable[[], None]) -> None:
        self._reader = reader
        self._on_receive = on_receive
        self.at_eof = reader.at_eof

    async def read(self, n: int = -1) -> bytes:
        data: bytes = await self._reader.read(n)
        if data:
            self._on_receive()
        return data


class _NotingWriter:
    """An asyncio ``StreamWriter`` as hypercorn's asyncio ``TCPServer`` uses it, calling
    ``on_send`` before each write."""

    def __init__(self, writer: Any, on_send: Callable[[bytes], None]) -> None:
        self._writer = writer
        self._on_send = on_send

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._writer.get_extra_info(name, default)

    def write(self, data: bytes) -> None:
        self._on_send(data)
        self._writer.write(data)

    async def drain(self) -> None:
        await self._writer.drain()

    def write_eof(self) -> None:
        self._writer.write_eof()

    def close(self) -> None:
        self._writer.close()

    async def wait_closed(self) -> None:
        await self._writer.wait_closed()

    def send_ping(self) -> None:
        # The transport queues writes in order, so a ping never splits another frame;
        # hypercorn's next drain waits for it too.
        if not self._writer.is_closing():
            self.write(PING_FRAME)


def nothing() -> None:
    """Does nothing (a default for callbacks)."""


_nothing = nothing


def _ignore(data: bytes) -> None:
    pass


@functools.cache
def checked() -> None:
    """:func:`check`, once per process: :func:`channels.serving.serve_async` calls it
    before serving, so a mismatched hypercorn fails with this module's message."""
    check()
