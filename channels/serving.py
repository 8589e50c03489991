"""Serving an ASGI application on hypercorn, on asyncio or trio, with a graceful stop.

``runserver`` and the live-server test case both serve through :func:`serve`. It adds
what the plain ``hypercorn`` command leaves out:

Graceful shutdown, and its end
    SIGINT or SIGTERM stops the listeners, then every open WebSocket is sent a close frame
    with code 1001 ("going away"). Its application then receives ``websocket.disconnect``
    (code 1001) once the client answers, as for any other close, so consumers run
    ``disconnect()`` and leave their groups. HTTP requests in flight are allowed to finish.
    Connections get ``graceful_timeout`` seconds to end; those still open then (a client
    that stopped reading, a slow download) are aborted: their applications get their
    disconnect message and a second to act on it, then are cancelled. Then the
    application's ``lifespan.shutdown`` runs and :func:`serve` returns, so a stop always
    ends, about ``graceful_timeout`` + 1 seconds after the signal at most (plus the
    lifespan shutdown's own time). hypercorn by itself sends WebSockets nothing at
    shutdown, and can wait forever on a client that does not read.

WebSocket keepalive
    An open WebSocket whose peer has sent nothing for ``ping_interval`` seconds is
    pinged (again each ``ping_interval`` it stays silent); one whose peer has sent
    nothing (no frame, no pong) for ``ping_interval + ping_timeout`` seconds is dropped,
    and its consumer receives ``websocket.disconnect`` with code 1006. The names, the
    defaults (20 and 30) and the counting from the peer's last data are daphne's.

A deadline for closing
    Once the server has sent a WebSocket's close frame (the application's, the stop's,
    or hypercorn's own, such as 1009 for a message over its size limit), the connection
    ends within ``channels._server.CLOSE_TIMEOUT`` (2) seconds, answered or not, pings
    or none: its application then gets ``websocket.disconnect``.

Sends are cancellation points
    Every ``send()`` can be cancelled, and one in 16 (every one, once the connection is
    gone and the send goes nowhere) lets other tasks run, so a consumer sending in a loop
    cannot starve the event loop; a full pass through the loop on every frame cost a
    large share of a broadcast's CPU.

Knowing the port
    Listening sockets are bound and listening before ``on_ready`` is called with their
    addresses, so ``bind=["127.0.0.1:0"]`` gives a free port that a caller can read.
    A connection made before the application's lifespan startup has finished waits for it.

Access lines
    With ``access_log``, each HTTP response and each WebSocket handshake, accept, refusal
    and disconnect is logged there, in the format of Channels' ``runserver`` (daphne's).

The connections are accepted and watched in :mod:`channels._server`; the hypercorn
internals that serve each one are reached only through :mod:`channels._hypercorn`.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, Literal, get_args

import anyio
import anyio.abc
import anyio.lowlevel

from . import _hypercorn
from ._server import Worker
from .types import ASGIApp, Message, Receive, Scope, Send
from .utils import unwrap_exception_groups

__all__ = ["Backend", "GracefulShutdown", "serve", "serve_async"]

Backend = Literal["asyncio", "trio"]

#: The WebSocket close code sent to clients when the server stops.
GOING_AWAY = 1001
#: daphne's defaults for ``--ping-interval`` and ``--ping-timeout``, in seconds.
#: The code a WebSocket's application is given when the connection was lost or aborted.
ABNORMAL_CLOSURE = 1006
DEFAULT_PING_INTERVAL = 20.0
DEFAULT_PING_TIMEOUT = 30.0


def serve(
    application: ASGIApp,
    *,
    bind: Sequence[str] = ("127.0.0.1:8000",),
    backend: Backend = "asyncio",
    graceful_timeout: float = 5.0,
    handle_signals: bool = True,
    root_path: str = "",
    access_log: logging.Logger | str | None = None,
    ping_interval: float | None = DEFAULT_PING_INTERVAL,
    ping_timeout: float | None = DEFAULT_PING_TIMEOUT,
    on_ready: Callable[[list[str]], object] | None = None,
) -> None:
    """Serve ``application`` on hypercorn until SIGINT or SIGTERM; block until stopped.

    :param bind: addresses as hypercorn takes them: ``host:port`` (port 0 for any free
        port), ``unix:/path`` or ``fd://N``.
    :param backend: the event loop to run, ``"asyncio"`` or ``"trio"``.
    :param graceful_timeout: seconds open connections get to finish after a stop signal;
        what is still open then is aborted, and the server stops within about a second.
    :param handle_signals: install the SIGINT/SIGTERM handlers (possible only in the main
        thread; without them the server runs until the process ends).
    :param access_log: where to log requests and WebSocket events (see
        :class:`AccessLog`): a logger, ``"-"`` for standard output, or a file's path.
    :param ping_interval: seconds a WebSocket's peer may stay silent before it is
        pinged, and between the pings while it stays so (daphne's ``--ping-interval``);
        ``None`` sends none.
    :param ping_timeout: seconds a ping may go unanswered before the WebSocket is
        dropped and its consumer gets ``websocket.disconnect`` (code 1006); counted, as
        by daphne, from the last data the peer sent. ``None`` never drops.
    :param on_ready: called with the ``http://`` (or ``unix:``) addresses listened on, once
        connections are accepted.
    :raises ValueError: for an unknown backend, no bind address, an address that is not
        ``host:port``, ``unix:PATH`` or ``fd://N``, or a negative or zero timeout.
    :raises OSError: if an address cannot be bound (in use, not permitted), or the access
        log file cannot be opened.
    """
    if backend not in get_args(Backend):
        raise ValueError(f"backend must be 'asyncio' or 'trio', got {backend!r}")
    run = functools.partial(
        serve_async,
        application,
        bind=bind,
        graceful_timeout=graceful_timeout,
        handle_signals=handle_signals,
        root_path=root_path,
        access_log=access_log,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        on_ready=on_ready,
    )
    anyio.run(run, backend=backend)


async def serve_async(
    application: ASGIApp,
    *,
    bind: Sequence[str] = ("127.0.0.1:8000",),
    graceful_timeout: float = 5.0,
    handle_signals: bool = True,
    shutdown_trigger: Callable[[], Awaitable[object]] | None = None,
    root_path: str = "",
    access_log: logging.Logger | str | None = None,
    ping_interval: float | None = DEFAULT_PING_INTERVAL,
    ping_timeout: float | None = DEFAULT_PING_TIMEOUT,
    on_ready: Callable[[list[str]], object] | None = None,
) -> None:
    """:func:`serve` on the running event loop (asyncio or trio).

    Returns when the server has stopped: after a stop signal (with ``handle_signals``) or
    once ``shutdown_trigger()`` returns, whichever comes first, shutting down gracefully
    either way.
    """
    try:
        import hypercorn.config  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            "channels.serving needs hypercorn, a dependency of channels-anyio: reinstall "
            "it (pip install channels-anyio)."
        ) from exc
    _hypercorn.checked()
    if isinstance(bind, str) or not bind:
        raise ValueError(f"bind must be a non-empty list of addresses, got {bind!r}")
    if graceful_timeout < 0:
        raise ValueError(f"graceful_timeout must be >= 0, got {graceful_timeout!r}")
    for name, value in (("ping_interval", ping_interval), ("ping_timeout", ping_timeout)):
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be a number of seconds > 0 or None, got {value!r}")

    config = _hypercorn.make_config(graceful_timeout=graceful_timeout, root_path=root_path)
    stop = anyio.Event()
    with contextlib.ExitStack() as owned, unwrap_exception_groups():
        logger = owned.enter_context(_access_logger(access_log))
        if logger is not None:
            application = AccessLog(application, logger)
        graceful = GracefulShutdown(application)

        async def begin_shutdown() -> None:
            graceful.begin()
            stop.set()

        sockets, addresses = _listen(config, bind)
        for sock in sockets:
            owned.enter_context(sock)
        worker = Worker(
            graceful,
            config,
            sockets,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout if ping_interval is not None else None,
        )
        async with anyio.create_task_group() as group:
            if handle_signals:
                await group.start(_stop_on_signal, begin_shutdown)
            if shutdown_trigger is not None:
                group.start_soon(_stop_when, shutdown_trigger, begin_shutdown)
            if on_ready is not None:
                on_ready(addresses)
            await worker.run(stop.wait)
            group.cancel_scope.cancel()  # the signal watcher and the trigger are done with


@contextlib.contextmanager
def _access_logger(target: logging.Logger | str | None) -> Iterator[logging.Logger | None]:
    """The logger for ``access_log``: itself, or one writing to stdout (``"-"``) or a file
    in Django's ``runserver`` format (``[13/Mar/2026 10:00:00] HTTP GET / 200 [...]``)."""
    if target is None or isinstance(target, logging.Logger):
        yield target
        return
    if not isinstance(target, str) or not target:
        raise ValueError(
            f"access_log must be a logger, '-' (standard output) or a file path, got {target!r}"
        )
    handler: logging.Handler
    if target == "-":
        handler = logging.StreamHandler(sys.stdout)
    else:
        handler = logging.FileHandler(target, encoding="utf-8")
    handler.setFormatter(logging.Formatter("[%(asctime)s] %(message)s", "%d/%b/%Y %H:%M:%S"))
    # Not registered with logging's manager: private to this server, nothing propagates.
    logger = logging.Logger("channels.serving.access", logging.INFO)
    logger.addHandler(handler)
    try:
        yield logger
    finally:
        handler.close()


def _listen(config: Any, bind: Sequence[str]) -> tuple[list[socket.socket], list[str]]:
    """Listening sockets for ``bind``, and their addresses (``http://host:port`` for TCP).

    Listening here, not in hypercorn, is what lets a caller learn a port-0 port before
    the server runs, and connect without a race: the kernel queues connections until
    the server accepts them. ``unix:`` and ``fd://`` binds are made by hypercorn's code.
    """
    made: list[socket.socket] = []
    try:
        others = [address for address in bind if address.startswith(("unix:", "fd://"))]
        made.extend(_hypercorn.sockets_for(config, others))
        addresses = _hypercorn.bound_addresses(config)
        for address in bind:
            if address.startswith(("unix:", "fd://")):
                continue
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"bind address must be host:port, got {address!r}")
            host = host.strip("[]")
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
            made.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind((host, int(port)))
            name = sock.getsockname()
            shown = f"[{name[0]}]" if sock.family == socket.AF_INET6 else name[0]
            addresses.append(f"http://{shown}:{name[1]}")
        for sock in made:
            sock.listen(config.backlog)
    except BaseException:
        for sock in made:
            sock.close()
        raise
    return made, addresses


async def _stop_on_signal(
    begin_shutdown: Callable[[], Awaitable[None]],
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for _ in signals:
            await begin_shutdown()
            # A second signal is not fatal either: the shutdown under way continues.


async def _stop_when(
    trigger: Callable[[], Awaitable[object]], begin_shutdown: Callable[[], Awaitable[None]]
) -> None:
    await trigger()
    await begin_shutdown()


class GracefulShutdown:
    """Wraps an application so that :meth:`begin` closes its open WebSockets (code 1001).

    Each connection sends its close frame from its own task: the wait in its
    ``receive()``, where a Channels consumer's listener always is, is cancelled, the close
    goes out, and ``receive()`` goes on to return the ``websocket.disconnect`` that follows
    the client's answer, with code 1001. A socket not yet accepted is closed as soon as the
    application accepts it. After the close, and once the connection is gone, further
    sends from the application are dropped, since the server would refuse them; each
    dropped send still checkpoints, so a loop sending to a dead socket stays cancellable.
    """

    def __init__(self, application: ASGIApp) -> None:
        self.application: ASGIApp = application
        self.stopping: bool = False
        self._open: set[_WebSocket] = set()

    def begin(self) -> None:
        """Start closing every WebSocket, and any that is accepted from now on."""
        self.stopping = True
        for connection in list(self._open):
            connection.wake()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        if scope["type"] != "websocket":
            return await self.application(scope, receive, send)
        connection = _WebSocket(self, receive, send)
        self._open.add(connection)
        try:
            return await self.application(scope, connection.receive, connection.send)
        finally:
            self._open.discard(connection)


class _WebSocket:
    def __init__(self, server: GracefulShutdown, receive: Receive, send: Send) -> None:
        self.server = server
        self._receive = receive
        self._send = send
        self.accepted = False
        self.closed = False  # a close went out (ours or the application's)
        self.closed_by_us = False
        self.gone = False  # the application has received websocket.disconnect
        self._waiting: anyio.CancelScope | None = None

    def wake(self) -> None:
        """Ask the task waiting in ``receive()``, if any, to send our close."""
        if self.accepted and not self.closed and self._waiting is not None:
            self._waiting.cancel()

    async def receive(self) -> Message:
        if not (self.server.stopping and self.accepted and not self.closed):
            with anyio.CancelScope() as waiting:
                self._waiting = waiting
                try:
                    message = await self._receive()
                finally:
                    self._waiting = None
            if not waiting.cancelled_caught:
                return self._with_our_code(message)
        if not self.closed:
            self.closed = self.closed_by_us = True
            await self._send({"type": "websocket.close", "code": GOING_AWAY})
        return self._with_our_code(await self._receive())

    def _with_our_code(self, message: Message) -> Message:
        if message["type"] == "websocket.disconnect":
            self.gone = True
            if self.closed_by_us and message.get("code") != ABNORMAL_CLOSURE:
                return {**message, "code": GOING_AWAY}
        return message

    async def send(self, message: Message) -> None:
        if self.closed_by_us or self.gone:
            await anyio.lowlevel.checkpoint()
            return
        if message["type"] == "websocket.close":
            self.closed = True
        await self._send(message)
        if message["type"] == "websocket.accept":
            self.accepted = True
            if self.server.stopping:
                self.wake()


class AccessLog:
    """Logs each HTTP response and WebSocket event of ``application`` to ``logger``.

    Lines and levels follow Channels' ``runserver``: ``HTTP GET /path 200 [0.01,
    127.0.0.1:50000]`` (4xx at WARNING, 5xx at ERROR), ``WebSocket HANDSHAKING /ws/
    [client]``, ``WebSocket CONNECT``, ``WebSocket REJECT``, ``WebSocket DISCONNECT``.
    Each record carries ``status_code`` (``None`` for WebSocket events), which Django's
    ``ServerFormatter`` uses for its colours.
    """

    def __init__(self, application: ASGIApp, logger: logging.Logger) -> None:
        self.application: ASGIApp = application
        self.logger: logging.Logger = logger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        if scope["type"] == "http":
            return await self._http(scope, receive, send)
        if scope["type"] == "websocket":
            return await self._websocket(scope, receive, send)
        return await self.application(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> Any:
        started = time.monotonic()
        status: int | None = None

        async def logging_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                self._log_http(scope, status, time.monotonic() - started)

        return await self.application(scope, receive, logging_send)

    def _log_http(self, scope: Scope, status: int | None, taken: float) -> None:
        level = logging.INFO
        if status is None or status >= 500:
            level = logging.ERROR
        elif status >= 400:
            level = logging.WARNING
        self.logger.log(
            level,
            "HTTP %s %s %s [%.2f, %s]",
            scope.get("method", ""),
            _full_path(scope),
            status,
            taken,
            _client(scope),
            extra={"status_code": status, "request": None},
        )

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> Any:
        path, client = _full_path(scope), _client(scope)
        self._log_ws("HANDSHAKING", path, client)
        connected = False

        async def logging_send(message: Message) -> None:
            nonlocal connected
            await send(message)
            if message["type"] == "websocket.accept" and not connected:
                connected = True
                self._log_ws("CONNECT", path, client)
            elif message["type"] == "websocket.close" and not connected:
                self._log_ws("REJECT", path, client)

        try:
            return await self.application(scope, receive, logging_send)
        finally:
            if connected:
                self._log_ws("DISCONNECT", path, client)

    def _log_ws(self, event: str, path: str, client: str) -> None:
        self.logger.info(
            "WebSocket %s %s [%s]",
            event,
            path,
            client,
            extra={"status_code": None, "request": None},
        )


def _full_path(scope: Scope) -> str:
    path = str(scope.get("root_path", "")) + str(scope.get("path", ""))
    query = scope.get("query_string", b"")
    return f"{path}?{query.decode('latin-1')}" if query else path


def _client(scope: Scope) -> str:
    client = scope.get("client")
    if not client:
        return "unknown"
    host, port = client[0], client[1] if len(client) > 1 else None
    return f"{host}:{port}" if port is not None else str(host)


def add_keepalive_arguments(parser: argparse.ArgumentParser) -> None:
    """``--ping-interval`` and ``--ping-timeout``, with daphne's names and defaults; shared
    by ``python -m channels.serving`` and ``runserver``."""
    parser.add_argument(
        "--ping-interval",
        type=_seconds,
        default=DEFAULT_PING_INTERVAL,
        help="seconds a WebSocket may be idle before a keepalive ping is sent "
        "(default %(default)g)",
    )
    parser.add_argument(
        "--ping-timeout",
        type=_seconds,
        default=DEFAULT_PING_TIMEOUT,
        help="seconds a ping may go unanswered before the WebSocket is dropped "
        "(default %(default)g)",
    )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m channels.serving module:application [--bind ADDR] [--backend B] ...``.

    The plain ``hypercorn`` command, plus the graceful stop (and its end), the WebSocket
    keepalive and the access log of :func:`serve`. Prints ``Listening on URL`` for each
    address once connections are accepted.
    """
    import importlib

    parser = argparse.ArgumentParser(
        prog="python -m channels.serving",
        description="Serve an ASGI application on hypercorn (asyncio or trio); on "
        "SIGINT/SIGTERM, close open WebSockets with code 1001 and stop within the "
        "graceful timeout.",
    )
    parser.add_argument("application", help="module:attribute of the ASGI application")
    parser.add_argument(
        "--bind", "-b", action="append", help="address to listen on (default 127.0.0.1:8000)"
    )
    parser.add_argument("--backend", "-k", choices=get_args(Backend), default="asyncio")
    parser.add_argument(
        "--graceful-timeout",
        type=float,
        default=5.0,
        help="seconds connections get to end after a stop signal before they are aborted "
        "(default %(default)g)",
    )
    parser.add_argument("--root-path", default="")
    parser.add_argument(
        "--access-log",
        metavar="FILE",
        help="log requests and WebSocket events, as runserver does, to FILE ('-': stdout)",
    )
    add_keepalive_arguments(parser)
    options = parser.parse_args(argv)

    module_name, _, attribute = options.application.partition(":")
    if not attribute:
        parser.error(f"application must be given as module:attribute, got {options.application!r}")
    try:
        application = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        parser.error(f"cannot load {options.application!r}: {exc}")

    def announce(addresses: list[str]) -> None:
        for address in addresses:
            print(f"Listening on {address}", flush=True)

    try:
        serve(
            application,
            bind=options.bind or ["127.0.0.1:8000"],
            backend=options.backend,
            graceful_timeout=options.graceful_timeout,
            root_path=options.root_path,
            access_log=options.access_log,
            ping_interval=options.ping_interval,
            ping_timeout=options.ping_timeout,
            on_ready=announce,
        )
    except (ValueError, OSError) as exc:
        parser.exit(1, f"{parser.prog}: error: {exc}\n")


if __name__ == "__main__":
    main()
