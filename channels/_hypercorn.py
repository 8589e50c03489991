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
from typing import Any, cast

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
        "backlog",
        "bind",
        "create_sockets",
    ),
    "hypercorn.trio.tcp_server.TCPServer": ("run", "protocol_send"),
    "hypercorn.asyncio.tcp_server.TCPServer": ("run",),
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
    "hypercorn.trio.worker_context.WorkerContext": ("terminated", "sleep"),
    "hypercorn.asyncio.worker_context.WorkerContext": ("terminated", "sleep"),
}
#: Behaviour we rely on, as a phrase the source must contain: WebSocket pings are sent
#: by ``WSStream._send_pings``, which sleeps through the worker context (see
#: :func:`worker_context`); the trio server writes under ``send_lock`` (see
#: :func:`_direct_send_trio_server`).
RELIED_ON_SOURCE: dict[str, str] = {
    "hypercorn.protocol.ws_stream.WSStream._send_pings": "self.context.sleep(",
    # The trio server's writes, which _direct_send_trio_server takes over when it can.
    "hypercorn.trio.tcp_server.TCPServer.__init__": "self.send_lock = trio.Lock()",
    "hypercorn.trio.tcp_server.TCPServer.protocol_send": "await self.stream.send_all(event.data)",
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


def make_config(*, graceful_timeout: float, root_path: str, ping_interval: float | None) -> Any:
    """hypercorn's ``Config`` for our worker: no access log of its own (ours is
    :class:`channels.serving.AccessLog`), and its WebSocket pings every ``ping_interval``."""
    import logging

    from hypercorn.config import Config

    config = Config()
    config.graceful_timeout = graceful_timeout
    config.root_path = root_path
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.websocket_ping_interval = ping_interval
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


def worker_context(sleep: Callable[[float], Awaitable[None]]) -> Any:
    """hypercorn's per-worker state for the running event loop; setting its
    ``terminated`` event tells idle keep-alive connections to close.

    hypercorn's WebSocket ping loop sleeps through the context's ``sleep`` and its
    connection lingers until that sleep ends, even after the socket closed: ``sleep``
    replaces it, so the caller can end it early.
    """
    if sniffio.current_async_library() == "trio":
        from hypercorn.trio.worker_context import WorkerContext as Base
    else:
        from hypercorn.asyncio.worker_context import WorkerContext as Base  # type: ignore[assignment]

    class Context(Base):
        pass

    Context.sleep = staticmethod(sleep)  # type: ignore[method-assign,assignment]
    return Context(None)


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


async def serve_connection(
    wrapped: Any,
    config: Any,
    context: Any,
    state: dict[str, Any],
    sock: socket.socket,
    on_receive: Callable[[], None],
    on_end_of_input: Callable[[], None],
    on_send: Callable[[bytes], None],
) -> None:
    """Serve one accepted connection with hypercorn's server for the running event loop.

    ``on_receive`` is called each time hypercorn reads data from the peer,
    ``on_end_of_input`` once reading has ended (end of file, an error, the socket
    closed), and ``on_send`` with each piece of data hypercorn writes, before it is
    written. The socket stays the caller's to shut down; hypercorn closes it when the
    connection ends.
    """
    if sniffio.current_async_library() == "trio":
        import trio  # interop: hypercorn's trio server takes a trio stream
        from hypercorn.typing import ConnectionState

        stream = _NotingTrioStream(trio.SocketStream(trio.socket.from_stdlib_socket(sock)), sock)
        stream.on_receive, stream.on_end_of_input = on_receive, on_end_of_input
        stream.on_send = on_send
        await _direct_send_trio_server()(
            wrapped, config, context, ConnectionState(state.copy()), cast(Any, stream)
        ).run()
    else:
        import asyncio  # interop: hypercorn's asyncio server takes asyncio streams

        from hypercorn.asyncio.tcp_server import TCPServer as AsyncioServer

        reader, writer = await asyncio.open_connection(sock=sock)
        noting = _NotingReader(reader, on_receive, on_end_of_input)
        loop = asyncio.get_running_loop()
        await AsyncioServer(
            wrapped,
            loop,
            config,
            context,
            state.copy(),
            cast(Any, noting),
            cast(Any, _NotingWriter(writer, on_send)),
        ).run()


@functools.cache
def _direct_send_trio_server() -> type[Any]:
    """hypercorn's trio ``TCPServer``, writing what the socket takes at once itself.

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
    """
    import trio  # interop: hypercorn's trio server
    from hypercorn.events import Closed, RawData
    from hypercorn.trio.tcp_server import TCPServer

    class DirectSendServer(TCPServer):
        async def protocol_send(self, event: Any) -> None:
            if type(event) is not RawData or self.send_lock.locked():
                await super().protocol_send(event)
                return
            stream = cast(_NotingTrioStream, self.stream)  # what serve_connection gives it
            rest = stream.send_now(event.data)
            if rest is None:
                return
            async with self.send_lock:  # as hypercorn writes, for what is left
                try:
                    with trio.CancelScope(shield=True):
                        await stream.send_rest(rest)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    await self.protocol.handle(Closed())

    return DirectSendServer


class _NotingTrioStream:
    """A trio ``SocketStream`` as hypercorn's trio ``TCPServer`` uses it, calling
    ``on_receive`` after each read and ``on_end_of_input`` when reading ends. It has no
    ``do_handshake``: hypercorn takes that as "not TLS"."""

    def __init__(self, stream: Any, sock: socket.socket) -> None:
        self._stream = stream
        self._sock = sock  # the same socket, for send_now
        self.socket = stream.socket
        self.on_receive: Callable[[], None] = _nothing
        self.on_end_of_input: Callable[[], None] = _nothing
        self.on_send: Callable[[bytes], None] = _ignore

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        try:
            data: bytes = await self._stream.receive_some(max_bytes)
        except BaseException:
            self.on_end_of_input()
            raise
        if data:
            self.on_receive()
        else:
            self.on_end_of_input()
        return data

    async def send_all(self, data: bytes) -> None:
        self.on_send(data)
        await self._stream.send_all(data)

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
        """Write the rest of data already reported by :meth:`send_now`."""
        await self._stream.send_all(rest)

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()


class _NotingReader:
    """An asyncio ``StreamReader`` as hypercorn's asyncio ``TCPServer`` uses it."""

    def __init__(
        self,
        reader: Any,
        on_receive: Callable[[], None],
        on_end_of_input: Callable[[], None],
    ) -> None:
        self._reader = reader
        self._on_receive = on_receive
        self._on_end_of_input = on_end_of_input

    async def read(self, n: int = -1) -> bytes:
        try:
            data: bytes = await self._reader.read(n)
        except BaseException:
            self._on_end_of_input()
            raise
        if data:
            self._on_receive()
        else:
            self._on_end_of_input()
        return data

    def at_eof(self) -> bool:
        # hypercorn checks this before each read: once the transport is closed, it stops
        # here without reading the end of file.
        if self._reader.at_eof():
            self._on_end_of_input()
            return True
        return False


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


def _nothing() -> None:
    pass


def _ignore(data: bytes) -> None:
    pass


@functools.cache
def checked() -> None:
    """:func:`check`, once per process: :func:`channels.serving.serve_async` calls it
    before serving, so a mismatched hypercorn fails with this module's message."""
    check()
