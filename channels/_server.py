"""The worker behind :func:`channels.serving.serve_async`: it accepts connections itself,
hands each to hypercorn's per-connection server (through :mod:`channels._hypercorn`), and
so holds every connection's socket. That gives the two things hypercorn alone lacks:

An end to the graceful stop
    After ``graceful_timeout``, the connections still open are aborted: their sockets are
    shut down (and reset when closed), which wakes a send blocked on a peer that stopped
    reading. Their applications then receive ``websocket.disconnect`` (or
    ``http.disconnect``) as for any lost connection, and get :data:`ABORT_GRACE` seconds
    to finish; what still runs after that is cancelled. Only then does lifespan shutdown
    run.

WebSocket keepalive with a pong timeout
    hypercorn pings every open WebSocket each ``ping_interval`` seconds but never checks
    the answer. Here, a WebSocket from which nothing at all (a frame, a pong) has arrived
    for ``ping_interval + ping_timeout`` seconds, so that a ping has gone unanswered for
    at least ``ping_timeout`` seconds, is aborted; its consumer gets
    ``websocket.disconnect`` with code 1006 and leaves its groups. daphne counts the same
    way: it pings after ``ping_interval`` without traffic and drops the peer when the
    pong is ``ping_timeout`` late.

A deadline for the closing handshake
    Once the server has written a WebSocket close frame (the application's
    ``websocket.close``, the stop's 1001, or one hypercorn sends by itself, such as 1009
    for a message over its size limit), the peer has :data:`CLOSE_TIMEOUT` seconds to
    answer it and hypercorn to end the connection. After that it is aborted, so its
    application gets ``websocket.disconnect`` even when the peer never answers, pings
    are off, or hypercorn missed the answer: after a 1009, hypercorn stops reading the
    frames that arrived with the oversized one, the peer's close among them.

Every send is a cancellation point, and lets other tasks run often
    An application's ``send`` can be cancelled, and one in every :data:`SCHEDULE_EVERY`
    lets other tasks run. hypercorn's own does neither always: on asyncio it awaits
    nothing while the socket takes the data (on trio, neither does our direct write, see
    :mod:`channels._hypercorn`), and on either loop it returns at once, awaiting nothing,
    once the connection is gone. A consumer sending in a loop would then starve the
    event loop, and a stop could never cancel it. Letting others run on every send, as
    trio's ``send_all`` does, cost a pass through the event loop per frame: in a
    1,000-member broadcast on asyncio, about 40% of the server's CPU. The check comes
    before the message is handed to hypercorn, as trio checks for cancellation before
    it writes: a yield after it would send the task to the back of the queue just when
    its peer's answer is on the way, which cost a fifth of the connections per second on
    asyncio.
"""

from __future__ import annotations

import contextvars
import errno
import functools
import logging
import math
import socket
import struct
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel

from . import _hypercorn
from .types import ASGIApp, Message, Receive, Scope, Send
from .utils import unwrap_exception_groups

#: Seconds the applications of aborted connections get to finish (``disconnect()``, group
#: cleanup) before they are cancelled.
ABORT_GRACE = 1.0
#: One application send in this many lets other tasks run; every one can be cancelled.
SCHEDULE_EVERY = 16
#: Seconds a WebSocket connection may stay open once the server wrote its close frame.
#: A peer answers in one round trip; websockets' ``close_timeout`` is the same idea.
CLOSE_TIMEOUT = 2.0

logger = logging.getLogger("channels.serving")

# Accept errors that say "not now" (out of descriptors or memory), not "never".
_TRANSIENT_ACCEPT_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


@dataclass(eq=False)
class _Connection:
    """One accepted connection: its socket, when its peer last sent anything, and what
    the server has written to it.

    Once it is an accepted WebSocket, one task watches it (:func:`_watch_websocket`,
    started in ``watchers``); the connection wakes that task when its deadlines change
    and when it ends, so the task ends by returning, never by being cancelled.
    """

    sock: socket.socket
    last_received: float
    #: The task group the WebSocket's watch runs in.
    watchers: anyio.abc.TaskGroup
    #: Seconds the peer of a WebSocket may stay silent; ``None``: no limit.
    silence_allowed: float | None
    input_ended: anyio.Event = field(default_factory=anyio.Event)
    #: When the server wrote its WebSocket close frame; ``None`` until it does.
    close_sent_at: float | None = None
    ended: bool = False
    websocket: bool = False
    #: The application's sends so far (every :data:`SCHEDULE_EVERY`-th lets others run).
    sends: int = 0
    #: The WebSocket frames written, followed from the accept until a close frame.
    frames: _FrameWatch | None = None
    _wake: anyio.Event | None = None

    def received(self) -> None:
        self.last_received = anyio.current_time()

    def sent(self, data: bytes) -> None:
        if self.frames is not None and self.frames.feed(data):
            self.frames = None
            self.close_sent_at = anyio.current_time()
            self.wake()

    def websocket_accepted(self) -> None:
        """The handshake response is out: every write from now on is a frame."""
        self.websocket = True
        self.frames = _FrameWatch()
        self.received()  # the peer's silence counts from the accept
        self.watchers.start_soon(_watch_websocket, self)

    def end(self) -> None:
        self.ended = True
        self.wake()

    def wake(self) -> None:
        if self._wake is not None:
            self._wake.set()
            self._wake = None

    async def wait(self, deadline: float) -> None:
        """Until :meth:`wake` or ``deadline``, whichever comes first."""
        self._wake = wake = anyio.Event()
        with anyio.CancelScope(deadline=deadline):
            await wake.wait()

    def abort(self) -> None:
        """Shut the socket down, waking whoever waits on it; reset it when it closes.

        Shutting down (rather than closing) leaves the descriptor to hypercorn, which
        closes it as for any lost connection.
        """
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed by hypercorn, or reset by the peer

    def has_unread_data(self) -> bool:
        """Whether data from the peer waits in the kernel: hypercorn reads only as fast
        as the application takes messages, so a busy peer can look silent."""
        try:
            return bool(self.sock.recv(1, socket.MSG_PEEK))
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return False


_current: contextvars.ContextVar[_Connection | None] = contextvars.ContextVar(
    "channels_serving_connection", default=None
)


class Worker:
    """Serves ``application`` on ``sockets`` until ``shutdown_trigger()`` returns."""

    def __init__(
        self,
        application: ASGIApp,
        config: Any,
        sockets: Sequence[socket.socket],
        *,
        ping_interval: float | None,
        ping_timeout: float | None,
    ) -> None:
        self.config = config
        self.sockets = list(sockets)
        self.silence_allowed: float | None = None
        if ping_interval is not None and ping_timeout is not None:
            self.silence_allowed = ping_interval + ping_timeout
        self.wrapped = _hypercorn.wrap_application(_NoteWebSockets(application), config)
        self.connections: set[_Connection] = set()
        self._all_ended = anyio.Event()
        self._stopping = False

    async def run(self, shutdown_trigger: Callable[[], Awaitable[object]]) -> None:
        state: dict[str, Any] = {}
        context = _hypercorn.worker_context(_sleep_while_open)
        lifespan = _hypercorn.Lifespan(self.wrapped, self.config, state)
        # A lifespan failure, or a connection task's, raises as itself.
        with unwrap_exception_groups():
            async with anyio.create_task_group() as lifespan_group:
                await lifespan.start(lifespan_group)
                await lifespan.wait_for_startup()
                with unwrap_exception_groups():
                    async with anyio.create_task_group() as connections:
                        await self._accept_until(shutdown_trigger, connections, context, state)
                        await self._stop(connections, context)
                await lifespan.wait_for_shutdown()
                lifespan_group.cancel_scope.cancel()

    async def _accept_until(
        self,
        shutdown_trigger: Callable[[], Awaitable[object]],
        connections: anyio.abc.TaskGroup,
        context: Any,
        state: dict[str, Any],
    ) -> None:
        with unwrap_exception_groups():
            async with anyio.create_task_group() as accepting:
                for sock in self.sockets:
                    accepting.start_soon(self._accept, sock, connections, context, state)
                await shutdown_trigger()
                accepting.cancel_scope.cancel()
        for sock in self.sockets:
            sock.close()  # refuse new connections from now on

    async def _stop(self, connections: anyio.abc.TaskGroup, context: Any) -> None:
        self._stopping = True
        if not self.connections:
            self._all_ended.set()
        await context.terminated.set()  # hypercorn closes idle keep-alive connections
        with anyio.move_on_after(self.config.graceful_timeout):
            await self._all_ended.wait()
        if self.connections:
            logger.warning(
                "Aborting %d connection(s) still open after the %gs graceful timeout.",
                len(self.connections),
                self.config.graceful_timeout,
            )
            for connection in list(self.connections):
                connection.abort()
            with anyio.move_on_after(ABORT_GRACE):
                await self._all_ended.wait()
        connections.cancel_scope.cancel()

    async def _accept(
        self,
        listener: socket.socket,
        connections: anyio.abc.TaskGroup,
        context: Any,
        state: dict[str, Any],
    ) -> None:
        listener.setblocking(False)
        while True:
            await anyio.wait_readable(listener)
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as exc:
                if exc.errno not in _TRANSIENT_ACCEPT_ERRORS:
                    raise
                logger.error("Cannot accept a connection (%s); retrying.", exc)
                await anyio.sleep(0.1)
                continue
            sock.setblocking(False)
            connection = _Connection(sock, anyio.current_time(), connections, self.silence_allowed)
            self.connections.add(connection)
            connections.start_soon(self._serve, connection, context, state)

    async def _serve(self, connection: _Connection, context: Any, state: dict[str, Any]) -> None:
        # hypercorn's asyncio server can leave its task with a pending cancellation
        # request (from its internal TaskGroup): nothing awaits here after it.
        _current.set(connection)  # seen by the application's tasks, spawned from this one
        try:
            await _hypercorn.serve_connection(
                self.wrapped,
                self.config,
                context,
                state,
                connection.sock,
                connection.received,
                connection.input_ended.set,
                connection.sent,
            )
        finally:
            connection.end()  # its WebSocket's watch, if any, returns
            with connection.sock:
                pass  # hypercorn closed it; this covers a failure before it took it over
            self.connections.discard(connection)
            if self._stopping and not self.connections:
                self._all_ended.set()


async def _sleep_while_open(seconds: float) -> None:
    """hypercorn's sleep between WebSocket pings, cut short once the connection's input
    has ended: its ping loop then sees the stream closed and stops, rather than keep the
    connection's task (and a graceful stop) waiting up to ``ping_interval``."""
    connection = _current.get()
    with anyio.move_on_after(seconds):
        if connection is None:
            await anyio.sleep_forever()
        else:
            await connection.input_ended.wait()


async def _watch_websocket(connection: _Connection) -> None:
    """Abort ``connection``'s WebSocket when its peer has been silent for
    ``silence_allowed`` seconds, or :data:`CLOSE_TIMEOUT` seconds after the server wrote
    its close frame; return once the connection has ended.

    One task and one deadline, the nearer of the two, recomputed each time it passes or
    the connection wakes the task: a WebSocket costs a single sleeping task.
    """
    while not connection.ended:
        now = anyio.current_time()
        if connection.close_sent_at is not None:
            close_deadline = connection.close_sent_at + CLOSE_TIMEOUT
            if now >= close_deadline:
                logger.info(
                    "Closing a WebSocket whose closing handshake did not end within %gs.",
                    CLOSE_TIMEOUT,
                )
                connection.abort()
                return
        else:
            close_deadline = math.inf
        silence_deadline = math.inf
        if connection.silence_allowed is not None:
            silence_deadline = connection.last_received + connection.silence_allowed
            if now >= silence_deadline:
                if connection.has_unread_data():
                    connection.received()
                    continue
                logger.info(
                    "Closing a WebSocket whose peer has answered nothing for %.1fs.",
                    now - connection.last_received,
                )
                connection.abort()
                return
        await connection.wait(min(close_deadline, silence_deadline))


class _NoteWebSockets:
    """Gives the application a ``send`` that is a checkpoint, and tells the
    connection's watch when its WebSocket is accepted."""

    def __init__(self, application: ASGIApp) -> None:
        self.application = application

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        connection = _current.get()
        if connection is None:
            return await self.application(scope, receive, send)
        return await self.application(scope, receive, functools.partial(_send, connection, send))


async def _send(connection: _Connection, send: Send, message: Message) -> None:
    # First: see "Every send is a cancellation point, and lets other tasks run often".
    connection.sends += 1
    if connection.sends % SCHEDULE_EVERY:
        await anyio.lowlevel.checkpoint_if_cancelled()
    else:
        await anyio.lowlevel.checkpoint()
    await send(message)
    if message["type"] == "websocket.accept" and not connection.websocket:
        connection.websocket_accepted()


class _FrameWatch:
    """Follows the WebSocket frames written to a connection, to notice a close frame.

    It reads only the headers (two bytes, the extended length, a mask key if any) and
    steps over each payload, so its cost is per frame, not per byte.
    """

    CLOSE = 0x8

    def __init__(self) -> None:
        self._head = bytearray()
        self._payload_left = 0

    def feed(self, data: bytes) -> bool:
        """Take the next written bytes; whether a close frame starts in them."""
        # The usual write: one whole frame, with nothing left over from the last one.
        size = len(data)
        if size >= 2 and not self._payload_left and not self._head:
            first, second = data[0], data[1]
            if first & 0x0F == self.CLOSE:
                return True
            code = second & 0x7F
            if code < 126:
                head, length = 2, code
            elif code == 126 and size >= 4:
                head, length = 4, (data[2] << 8) | data[3]
            else:
                head, length = 0, 0  # a 64-bit length: the general path below
            if head and size == head + length + (4 if second & 0x80 else 0):
                return False
        view = memoryview(data)
        position = 0
        while position < len(view):
            if self._payload_left:
                step = min(self._payload_left, len(view) - position)
                self._payload_left -= step
                position += step
                continue
            needed = self._head_size() - len(self._head)
            self._head += view[position : position + needed]
            position += min(needed, len(view) - position)
            if self._head[0] & 0x0F == self.CLOSE:
                return True
            if len(self._head) < self._head_size():
                continue  # the rest of the header is in a later write
            self._payload_left = self._payload_length()
            self._head.clear()
        return False

    def _head_size(self) -> int:
        if len(self._head) < 2:
            return 2
        code = self._head[1] & 0x7F
        extended = 2 if code == 126 else 8 if code == 127 else 0
        return 2 + extended + (4 if self._head[1] & 0x80 else 0)

    def _payload_length(self) -> int:
        code = self._head[1] & 0x7F
        if code == 126:
            return int.from_bytes(self._head[2:4], "big")
        if code == 127:
            return int.from_bytes(self._head[2:10], "big")
        return code
