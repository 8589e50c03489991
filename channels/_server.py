"""The worker behind :func:`channels.serving.serve_async`: it accepts connections itself,
hands each to hypercorn's per-connection server (through :mod:`channels._hypercorn`), and
so holds every connection's socket. That gives what hypercorn alone lacks:

An end to the graceful stop
    After ``graceful_timeout``, the connections still open are aborted: their sockets are
    shut down (and reset when closed), which wakes a send blocked on a peer that stopped
    reading. Their applications then receive ``websocket.disconnect`` (or
    ``http.disconnect``) as for any lost connection, and get :data:`ABORT_GRACE` seconds
    to finish; what still runs after that is cancelled. Only then does lifespan shutdown
    run.

WebSocket keepalive with a pong timeout
    hypercorn would ping every open WebSocket each ``ping_interval`` seconds from a task
    of its own per connection, starting at the accept, and never check the answer. Its
    pings are off here: a WebSocket from which nothing at all (a frame, a pong) has
    arrived for ``ping_interval`` seconds is pinged (and again each ``ping_interval``
    that it stays silent), and one silent for ``ping_interval + ping_timeout`` seconds,
    so that a ping has gone unanswered for ``ping_timeout`` seconds, is aborted; its
    consumer gets ``websocket.disconnect`` with code 1006 and leaves its groups. That is
    daphne's rule: it pings after ``ping_interval`` without traffic and drops the peer
    when the pong is ``ping_timeout`` late. A connection that talks is never pinged.

One watch for all the deadlines
    These deadlines are kept by one task per worker (:class:`_Watch`, a heap), not a task
    per WebSocket: with hypercorn's ping task and a watch of its own, each WebSocket
    used to start two more tasks, and write and read a ping and its pong, which cost a
    short-lived connection about a quarter of the server's CPU.

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
import heapq
import itertools
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
#: Connections taken from a listener's backlog at most per wake-up.
ACCEPT_BATCH = 16

logger = logging.getLogger("channels.serving")

# Accept errors that say "not now" (out of descriptors or memory), not "never".
_TRANSIENT_ACCEPT_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


@dataclass(eq=False)
class _Connection:
    """One accepted connection: its socket, when its peer last sent anything, and what
    the server has written to it.

    Once it is an accepted WebSocket, the worker's :class:`_Watch` keeps its deadlines
    (its keepalive and, once the server wrote a close frame, the closing handshake's):
    a WebSocket costs a heap entry, not a task of its own.
    """

    sock: socket.socket
    last_received: float
    watch: _Watch
    #: The loop's clock, :func:`anyio.current_time` without its per-call look-up.
    clock: Callable[[], float]
    #: When the server wrote its WebSocket close frame; ``None`` until it does.
    close_sent_at: float | None = None
    #: When the watch last pinged the peer; ``None`` until it does.
    pinged_at: float | None = None
    ended: bool = False
    websocket: bool = False
    #: The application's sends so far (every :data:`SCHEDULE_EVERY`-th lets others run).
    sends: int = 0
    #: The WebSocket frames written, followed from the accept until a close frame.
    frames: _FrameWatch | None = None
    #: Writes a ping frame unless another write is under way (set by the adapter).
    send_ping: Callable[[], None] = field(default=_hypercorn.nothing)
    #: The connection's live entry in the watch's heap, if any.
    entry: list[Any] | None = None
    #: Since when hypercorn has been waiting for the next request, if it is.
    idle_since: float | None = None
    close_idle: Callable[[], Awaitable[None]] | None = None

    def can_ping(self, send_ping: Callable[[], None]) -> None:
        self.send_ping = send_ping

    def received(self) -> None:
        self.last_received = self.clock()

    def idle(self, close: Callable[[], Awaitable[None]] | None) -> None:
        self.close_idle = close
        if close is None:
            self.idle_since = None
            return
        self.idle_since = now = self.clock()
        self.watch.schedule(self, now + self.watch.keep_alive_timeout)

    def end_idle(self) -> None:
        """Close the connection if hypercorn is waiting for its next request."""
        close = self.close_idle
        if close is not None and not self.ended:
            self.idle_since = self.close_idle = None
            self.watch.spawn(_close_unless_ended, self, close)

    def sent(self, data: bytes) -> None:
        if self.frames is not None and self.frames.feed(data):
            self.frames = None
            self.close_sent_at = now = self.clock()
            self.watch.schedule(self, now + CLOSE_TIMEOUT)

    def websocket_accepted(self) -> None:
        """The handshake response is out: every write from now on is a frame."""
        self.websocket = True
        self.frames = _FrameWatch()
        self.received()  # the peer's silence counts from the accept
        if self.watch.ping_interval is not None:
            self.watch.schedule(self, self.last_received + self.watch.ping_interval)

    def end(self) -> None:
        self.ended = True
        self.watch.forget(self)

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

    def check(self, now: float) -> float | None:
        """Act on the deadlines that have passed (abort, ping); the next one, or ``None``
        once there is none (the connection was aborted, or has nothing left to watch)."""
        if self.ended:
            return None
        next_check = math.inf
        if self.idle_since is not None:
            idle_deadline = self.idle_since + self.watch.keep_alive_timeout
            if now >= idle_deadline:
                self.end_idle()
            else:
                next_check = idle_deadline
        if not self.websocket:
            return next_check if next_check < math.inf else None
        if self.close_sent_at is not None:
            close_deadline = self.close_sent_at + CLOSE_TIMEOUT
            if now >= close_deadline:
                logger.info(
                    "Closing a WebSocket whose closing handshake did not end within %gs.",
                    CLOSE_TIMEOUT,
                )
                self.abort()
                return None
            next_check = close_deadline
        interval, silence_allowed = self.watch.ping_interval, self.watch.silence_allowed
        if interval is None:
            return next_check if next_check < math.inf else None
        if silence_allowed is not None:
            if now >= self.last_received + silence_allowed and self.has_unread_data():
                self.received()
            if now >= self.last_received + silence_allowed:
                logger.info(
                    "Closing a WebSocket whose peer has answered nothing for %.1fs.",
                    now - self.last_received,
                )
                self.abort()
                return None
            next_check = min(next_check, self.last_received + silence_allowed)
        # A ping after ``interval`` without a word from the peer (daphne's rule), and
        # again each ``interval`` that it stays silent; none once a close frame is out.
        if self.close_sent_at is None:
            quiet_since = self.last_received
            if self.pinged_at is not None and self.pinged_at > quiet_since:
                quiet_since = self.pinged_at
            if now >= quiet_since + interval:
                self.pinged_at = quiet_since = now
                self.send_ping()
            next_check = min(next_check, quiet_since + interval)
        return next_check


class _Watch:
    """The deadlines of a worker's WebSockets, kept by one task for them all.

    A heap of ``[when, order, connection]`` entries, each connection with at most one
    live entry; an entry is checked when its time comes (:meth:`_Connection.check`),
    which is when the connection's activity since it was filed is taken into account, so
    traffic costs a clock read per read, not a timer update. The task sleeps in a cancel
    scope whose deadline is the earliest entry's, moved earlier when a nearer one comes.
    """

    def __init__(
        self,
        ping_interval: float | None,
        silence_allowed: float | None,
        keep_alive_timeout: float = math.inf,
    ) -> None:
        self.ping_interval = ping_interval
        self.silence_allowed = silence_allowed
        self.keep_alive_timeout = keep_alive_timeout
        #: Where the tasks it needs go (closing an idle connection): the worker's
        #: connection group, once there is one.
        self.group: Any = None
        self._heap: list[list[Any]] = []
        self._order = itertools.count()
        self._dead = 0
        self._next = math.inf
        self._sleep: anyio.CancelScope | None = None

    def schedule(self, connection: _Connection, when: float) -> None:
        """Check ``connection`` at ``when``, or earlier if it is due earlier already."""
        if connection.entry is not None:
            if connection.entry[0] <= when:
                return
            self.forget(connection)
        entry = [when, next(self._order), connection]
        connection.entry = entry
        heapq.heappush(self._heap, entry)
        if when < self._next:
            self._next = when
            if self._sleep is not None:
                self._sleep.deadline = when

    def spawn(self, function: Callable[..., Awaitable[None]], *args: Any) -> None:
        self.group.start_soon(function, *args)

    def forget(self, connection: _Connection) -> None:
        entry = connection.entry
        if entry is None:
            return
        entry[2] = None  # the heap keeps the husk until its time, or a sweep
        connection.entry = None
        self._dead += 1
        if self._dead > 64 and self._dead * 2 > len(self._heap):
            self._heap = [entry for entry in self._heap if entry[2] is not None]
            heapq.heapify(self._heap)
            self._dead = 0

    async def run(self, clock: Callable[[], float]) -> None:
        heap = self._heap
        while True:
            with anyio.CancelScope(deadline=self._next) as self._sleep:
                await anyio.sleep_forever()
            self._sleep = None
            now = clock()
            heap = self._heap
            while heap and heap[0][0] <= now:
                entry = heapq.heappop(heap)
                connection: _Connection | None = entry[2]
                if connection is None:
                    self._dead -= 1
                    continue
                connection.entry = None
                when = connection.check(now)
                if when is not None:
                    connection.entry = entry = [when, next(self._order), connection]
                    heapq.heappush(heap, entry)
            self._next = heap[0][0] if heap else math.inf


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
        silence_allowed: float | None = None
        if ping_interval is not None and ping_timeout is not None:
            silence_allowed = ping_interval + ping_timeout
        self.watch = _Watch(ping_interval, silence_allowed, config.keep_alive_timeout)
        self.wrapped = _hypercorn.wrap_application(_NoteWebSockets(application), config)
        self.connections: set[_Connection] = set()
        self._all_ended = anyio.Event()
        self._stopping = False

    async def run(self, shutdown_trigger: Callable[[], Awaitable[object]]) -> None:
        state: dict[str, Any] = {}
        context = _hypercorn.worker_context()
        lifespan = _hypercorn.Lifespan(self.wrapped, self.config, state)
        clock = _hypercorn.clock()
        # A lifespan failure, or a connection task's, raises as itself.
        with unwrap_exception_groups():
            async with anyio.create_task_group() as lifespan_group:
                await lifespan.start(lifespan_group)
                await lifespan.wait_for_startup()
                lifespan_group.start_soon(self.watch.run, clock)
                with unwrap_exception_groups():
                    async with _hypercorn.connection_group() as connections:
                        self.watch.group = connections
                        await self._accept_until(
                            shutdown_trigger, connections, context, state, clock
                        )
                        await self._stop(connections, context)
                await lifespan.wait_for_shutdown()
                lifespan_group.cancel_scope.cancel()

    async def _accept_until(
        self,
        shutdown_trigger: Callable[[], Awaitable[object]],
        connections: Any,
        context: Any,
        state: dict[str, Any],
        clock: Callable[[], float],
    ) -> None:
        with unwrap_exception_groups():
            async with anyio.create_task_group() as accepting:
                for sock in self.sockets:
                    accepting.start_soon(self._accept, sock, connections, context, state, clock)
                await shutdown_trigger()
                accepting.cancel_scope.cancel()
        for sock in self.sockets:
            sock.close()  # refuse new connections from now on

    async def _stop(self, connections: Any, context: Any) -> None:
        self._stopping = True
        if not self.connections:
            self._all_ended.set()
        await context.terminated.set()  # hypercorn closes keep-alive connections that go idle
        for connection in list(self.connections):
            connection.end_idle()  # and those idle already
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
        connections: Any,
        context: Any,
        state: dict[str, Any],
        clock: Callable[[], float],
    ) -> None:
        listener.setblocking(False)
        while True:
            await anyio.wait_readable(listener)
            # Take what the backlog holds (up to a few), then wait again.
            for _ in range(ACCEPT_BATCH):
                try:
                    sock, _ = listener.accept()
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:
                    if exc.errno not in _TRANSIENT_ACCEPT_ERRORS:
                        raise
                    logger.error("Cannot accept a connection (%s); retrying.", exc)
                    await anyio.sleep(0.1)
                    break
                sock.setblocking(False)
                connection = _Connection(sock, clock(), self.watch, clock)
                self.connections.add(connection)
                connections.start_soon(self._serve, connection, context, state)

    async def _serve(self, connection: _Connection, context: Any, state: dict[str, Any]) -> None:
        # hypercorn's asyncio server can leave its task with a pending cancellation
        # request (from its internal TaskGroup): nothing awaits here after it.
        _current.set(connection)  # seen by the application's tasks, spawned from this one
        try:
            await _hypercorn.serve_connection(
                self.wrapped, self.config, context, state, connection
            )
        finally:
            connection.end()  # the watch lets it go
            with connection.sock:
                pass  # hypercorn closed it; this covers a failure before it took it over
            self.connections.discard(connection)
            if self._stopping and not self.connections:
                self._all_ended.set()


async def _close_unless_ended(
    connection: _Connection, close: Callable[[], Awaitable[None]]
) -> None:
    if not connection.ended:
        await close()


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
