"""What passes between a worker thread and the task awaiting its call.

A task that starts a sync call gives the thread a :class:`Link`: the loop's token (so the
thread can post without waiting for the loop) and a stream the task reads. Over it the
thread sends :class:`Request` (run this coroutine for me, from ``async_to_sync``) and, last,
:class:`Done`. A thread blocked in ``async_to_sync`` waits on its :class:`ThreadInbox`
for the :class:`Reply`, running meanwhile the thread-sensitive calls its coroutine makes.
Finished calls resume in their loop's :class:`ResumeLine`, in the order they returned.
"""

from __future__ import annotations

import contextvars
import queue
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.lowlevel


@dataclass(eq=False, slots=True)
class Outcome:
    """The result of a call: a value or an exception, carried across threads."""

    value: Any = None
    error: BaseException | None = None

    def unwrap(self) -> Any:
        if self.error is None:
            return self.value
        error, self.error = self.error, None
        try:
            raise error
        finally:
            del error  # no reference cycle through the traceback


@dataclass(eq=False, slots=True)
class Done:
    """Posted by a worker thread when its sync call has finished.

    ``context`` is the call's context as the call left it, so that context variables it
    set are seen by the awaiting task afterwards, as with asgiref.
    """

    outcome: Outcome
    context: contextvars.Context
    ticket: int  # its place in the loop's resume line


@dataclass(eq=False, slots=True)
class Request:
    """Posted by a sync thread that wants a coroutine run on the event loop."""

    func: Callable[..., Awaitable[Any]]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    inbox: ThreadInbox
    context: contextvars.Context


@dataclass(eq=False, slots=True)
class Reply:
    """The outcome of a :class:`Request`, and the context the coroutine left behind."""

    outcome: Outcome
    context: contextvars.Context


class ThreadInbox:
    """What a sync thread blocked in :func:`async_to_sync` works through while it waits.

    It receives the reply it waits for and, until then, the thread-sensitive calls made
    by the coroutine it waits for: they must run here, because this thread is the one that
    is blocked.
    """

    __slots__ = ("_lock", "_open", "_queue")

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Callable[[], None] | Reply] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._open = True

    def submit(self, job: Callable[[], None]) -> bool:
        """Queue ``job`` to run on this thread; False once the thread stopped waiting."""
        with self._lock:
            if self._open:
                self._queue.put(job)
            return self._open

    def reply(self, reply: Reply) -> None:
        self._queue.put(reply)

    def wait(self) -> Reply:
        while True:
            item = self._queue.get()
            if isinstance(item, Reply):
                break
            item()
        with self._lock:
            self._open = False
        # A job submitted just before we closed still runs here, where it was promised.
        while True:
            try:
                leftover = self._queue.get_nowait()
            except queue.Empty:
                return item
            if not isinstance(leftover, Reply):
                leftover()


@dataclass(eq=False, slots=True)
class OuterThread:
    """Marks coroutines run on behalf of a sync thread that is blocked waiting for them.

    ``executor`` is what asgiref's ``AsyncToSync.executors.current`` held when the mark
    was made: if it holds something else now, asgiref's bridge is the nearer one.
    """

    inbox: ThreadInbox
    executor: object


outer_thread: contextvars.ContextVar[OuterThread | None] = contextvars.ContextVar(
    "channels_outer_thread", default=None
)


class ResumeLine:
    """Calls made on one event loop resume in the order they returned.

    A worker thread takes a ticket the moment its call returns (before it reports back to
    the loop), and the awaiting task resumes only after the task holding the previous
    ticket has: reports from several threads can reach the loop in either order, and trio
    deliberately runs the tasks it wakes together in either order. A ticket is only ever
    held by a call that is over and about to report, so waiting for one's turn is a wait
    for a report already on its way, never for a running call: a slow call holds up
    nobody that returned before it.
    """

    __slots__ = ("_issued", "_left", "_lock", "_next", "_waiting")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._issued = 0
        self._next = 0
        self._left: set[int] = set()
        self._waiting: dict[int, anyio.Event] = {}

    def issue(self) -> int:
        """Called by a worker thread as soon as its call has returned."""
        with self._lock:
            ticket, self._issued = self._issued, self._issued + 1
        return ticket

    async def wait_turn(self, ticket: int) -> None:
        if ticket != self._next:
            await self._waiting.setdefault(ticket, anyio.Event()).wait()

    def leave(self, ticket: int) -> None:
        """Give up ``ticket`` (resumed, or failed before its turn) and wake the next."""
        self._waiting.pop(ticket, None)
        self._left.add(ticket)
        while self._next in self._left:
            self._left.remove(self._next)
            self._next += 1
        waiter = self._waiting.get(self._next)
        if waiter is not None:
            waiter.set()


_resume_lines: anyio.lowlevel.RunVar[ResumeLine] = anyio.lowlevel.RunVar("channels_resume_line")


def resume_line() -> ResumeLine:
    """The current event loop's line."""
    try:
        return _resume_lines.get()
    except LookupError:
        line = ResumeLine()
        _resume_lines.set(line)
        return line


class Posted:
    """What a linked thread has posted and its task has not taken yet.

    Not a memory object stream: an item handed to a receiver that is then interrupted
    (asyncio's ``Task.cancel()`` gets through shields) would be lost with it. Here an item
    stays queued until :meth:`take` returns it, whatever interrupts the wait.
    """

    __slots__ = ("_arrived", "_closed", "_items")

    def __init__(self) -> None:
        self._items: deque[Request | Done] = deque()
        self._arrived: anyio.Event | None = None
        self._closed = False

    def put(self, item: Request | Done) -> bool:
        """On the loop: queue ``item``; False once the task stopped taking."""
        if self._closed:
            return False
        self._items.append(item)
        if self._arrived is not None:
            self._arrived.set()
        return True

    async def take(self) -> Request | Done:
        while not self._items:
            if self._arrived is None or self._arrived.is_set():
                self._arrived = anyio.Event()
            await self._arrived.wait()
        return self._items.popleft()

    def close(self) -> list[Request | Done]:
        """Stop taking; returns what was never taken."""
        self._closed = True
        left, self._items = list(self._items), deque()
        return left


@dataclass(eq=False, slots=True)
class Link:
    """How a worker thread reaches the task that awaits its call."""

    token: anyio.lowlevel.EventLoopToken
    posted: Posted
    line: ResumeLine

    def post(self, item: Request | Done) -> None:
        """Hand ``item`` to the awaiting task without waiting for the loop to take it."""
        self.token.backend_class.run_sync_soon(self._arrive, (item,), self.token.native_token)

    def _arrive(self, item: Request | Done) -> None:
        if not self.posted.put(item):
            self.abandon(item)

    def abandon(self, item: Request | Done) -> None:
        """The awaiting task is gone (it died of something a thread cannot outlast, such
        as KeyboardInterrupt). Nobody may wait for it: not the thread, not the calls
        behind it in the line."""
        if isinstance(item, Request):
            gone = RuntimeError("the task awaiting this sync call has ended")
            item.inbox.reply(Reply(Outcome(error=gone), item.context))
        else:
            self.line.leave(item.ticket)

    def close(self) -> None:
        """Called by the task when it stops waiting: whatever it did not take is abandoned."""
        for item in self.posted.close():
            self.abandon(item)


class _ThreadState(threading.local):
    link: Link | None = None


thread_state = _ThreadState()
