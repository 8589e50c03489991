"""State a Redis layer keeps in the process: per event loop, and per local channel.

Two problems are solved here, for both Redis layers.

Connections belong to an event loop, and a layer outlives loops: a management command or
``async_to_sync`` in a script runs each call on a new loop. :class:`PerLoop` keeps one
state per running loop and closes it with the layer or, at the latest, when its loop
shuts down. The hook for "loop shuts down" is an async generator parked at a ``yield``:
asyncio (``shutdown_asyncgens``) and trio both close such generators, inside the loop,
before the loop ends, so sockets are closed where they were opened and no "Event loop is
closed" or unclosed-socket warning follows. No task runs in the background for this.

Process-local channels share one source (a Redis key, or pub/sub connections), so one
receiver at a time reads it and files what it read into per-channel :class:`Mailboxes`,
waking whoever waits for those channels. The reader files a message in the same step
that takes it off the connection, so a reader cancelled at any point has either not taken
a message or has already filed it: nothing is lost, nothing reordered. When the reader
leaves (it got its own message, or was cancelled) it hands the role to a waiter.

This is the hot path of a group delivered to many local members: every delivery is one
filing and one receiver woken. So the filing decides a group message's copy and its
expiry once, not once per member; and, an interop point with the event loops (like
``channels.concurrency``), a receiver that waits is parked on the loop's own primitive (a
bare future on asyncio, the task itself on trio) and the loop is identified through
sniffio and the loop itself: ``anyio.Event()`` and ``anyio.lowlevel.current_token()``
each look the backend up again on every call, which cost more than the rest of a
delivery.
"""

from __future__ import annotations

# Interop point (see the module docstring): futures are asyncio's cheapest wait.
import asyncio
import functools
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import anyio
import anyio.lowlevel
import sniffio

from ...types import Message
from ..inmemory import _is_flat, copy_message

__all__ = ["Mailboxes", "PerLoop", "Readers", "deliver"]

logger: logging.Logger = logging.getLogger("channels.layers.redis")

S = TypeVar("S")

# Receives that found a message filed may skip the checkpoint this many times in a row.
_YIELD_EVERY = 64

# Mailboxes remember this many channels' capacities (then start over): a capacity is a
# pattern match, and a process can see an unbounded number of channel names.
_CAPACITIES_KEPT = 4096

# The deadline queue is rebuilt when it names this many channels at the least, keeping
# the entries whose messages are still buffered: a busy channel's filings otherwise stay
# queued for ``expiry`` seconds after their messages were taken, each entry holding its
# message's target names (20,000 p2p filings were 5 MiB of a benchmark's peak RSS, 1,000
# group messages to 100 members 13 MiB). ``InMemoryChannelLayer``'s deadline queues follow
# the same rule.
_MIN_COMPACTION = 2048


def _current_loop() -> object:
    """The running event loop, as ``anyio.lowlevel.current_token().native_token``.

    anyio runs on asyncio or trio, and trio names itself in sniffio's thread-local while
    its tasks run (in guest mode too): anything else here is asyncio or no loop.

    :raises RuntimeError: outside an event loop.
    """
    if sniffio.thread_local.name == "trio":
        return _trio_lowlevel().current_trio_token()
    return asyncio.get_running_loop()


@functools.cache
def _trio_lowlevel() -> Any:
    # Interop point: trio is optional, imported only once a trio loop is running.
    import trio.lowlevel

    return trio.lowlevel


class PerLoop(Generic[S]):
    """One ``S`` per running event loop, made by ``create`` and closed by ``close``.

    Finding the running loop costs asyncio a system call (``get_running_loop`` checks
    the process id), once per receive. So the asyncio loop found last is remembered and
    taken again while it runs in this thread (its ``_thread_id``, which every asyncio
    loop built on ``BaseEventLoop`` keeps; a loop without it is looked up each time).
    """

    def __init__(self, create: Callable[[], S], close: Callable[[S], Awaitable[None]]) -> None:
        self._create = create
        self._close = close
        self._states: dict[object, tuple[S, AsyncGenerator[None, None]]] = {}
        #: The loop and state found last, if that loop is an asyncio one.
        self._recent: tuple[object, S] | None = None

    def _remember(self, loop: object, state: S) -> None:
        if getattr(loop, "_thread_id", None) is not None:
            self._recent = (loop, state)

    async def get(self) -> S:
        """The current loop's state, made on first use.

        ``current()`` first is cheaper where the state usually exists (a receive).
        """
        loop = _current_loop()
        entry = self._states.get(loop)
        if entry is None:
            state = self._create()
            guard = self._guard(loop, state)
            # Runs to the yield without suspending, so no other task can get here first;
            # being iterated inside the loop registers it with the loop's shutdown.
            await guard.asend(None)
            entry = self._states[loop] = (state, guard)
        self._remember(loop, entry[0])
        return entry[0]

    def current(self) -> S | None:
        """The current loop's state if it has one (never makes one)."""
        recent = self._recent
        if (
            recent is not None
            and getattr(recent[0], "_thread_id", None) == threading.get_ident()
            # Not trio's tasks, running as a guest of this asyncio loop.
            and sniffio.thread_local.name != "trio"
        ):
            return recent[1]
        try:
            loop = _current_loop()
        except RuntimeError:
            return None
        entry = self._states.get(loop)
        if entry is None:
            return None
        self._remember(loop, entry[0])
        return entry[0]

    async def aclose_current(self) -> None:
        """Close the current loop's state; the next :meth:`get` makes a new one."""
        loop = _current_loop()
        entry = self._states.get(loop)
        if entry is not None:
            await entry[1].aclose()

    async def _guard(self, loop: object, state: S) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            if self._states.get(loop, (None,))[0] is state:
                del self._states[loop]
            if self._recent is not None and self._recent[1] is state:
                self._recent = None
            with anyio.CancelScope(shield=True):
                await self._close(state)


class Mailboxes:
    """Messages already read for process-local channels, waiting for their receivers.

    Buffers are plain data, shared by every loop (a script's next ``async_to_sync`` call
    finds what the previous one filed). Each buffered message expires ``expiry`` seconds
    after it was filed, and a channel keeps at most ``capacity`` of them (the oldest is
    dropped, as channels_redis does): a channel whose consumer is gone
    does not hold memory forever. ``dropped`` is told of each message dropped that way (the
    layer counts and logs it).

    A channel's buffer may stay in ``buffers`` empty until its last message's deadline
    has passed (a busy channel then does not make a new buffer per message).
    """

    def __init__(
        self,
        expiry: float,
        capacity: Callable[[str], int],
        dropped: Callable[[str], None],
    ) -> None:
        self.expiry = expiry
        self.capacity = capacity
        self.dropped = dropped
        self.buffers: dict[str, deque[tuple[float, Message]]] = {}
        # One entry per filing: when its messages expire, and the channels they went to.
        self._deadlines: deque[tuple[float, tuple[str, ...]]] = deque()
        self._named = 0  # channels named by the entries of ``_deadlines``, in all
        self._compact_at = _MIN_COMPACTION
        self._capacities: dict[str, int] = {}

    def capacity_of(self, channel: str) -> int:
        """``capacity(channel)``, remembered."""
        capacity = self._capacities.get(channel)
        if capacity is None:
            if len(self._capacities) >= _CAPACITIES_KEPT:
                self._capacities.clear()
            capacity = self._capacities[channel] = self.capacity(channel)
        return capacity

    def file(self, channel: str, message: Message, now: float | None = None) -> None:
        """Buffer ``message`` for ``channel`` (``now``: the clock, if the caller read it)."""
        self.file_each((channel,), message, message, now)

    def file_each(
        self,
        channels: tuple[str, ...],
        first: Message,
        message: Message,
        now: float | None = None,
        copy: Callable[[Message], Message] = copy_message,
    ) -> None:
        """Buffer ``first`` for ``channels[0]`` and ``copy(message)`` for each other one.

        One deadline for them all: they were filed at the same moment.
        """
        if now is None:
            now = time.monotonic()
        deadlines = self._deadlines
        if deadlines and deadlines[0][0] <= now:
            self.expire(now)
        if self._named >= self._compact_at:
            deadlines = self._compact()
        expires = now + self.expiry
        deadlines.append((expires, channels))
        self._named += len(channels)
        buffers = self.buffers
        capacities = self._capacities
        item: Message | None = first
        for channel in channels:
            if item is None:
                item = copy(message)
            buffer = buffers.get(channel)
            if buffer is None:
                buffer = buffers[channel] = deque()
            buffer.append((expires, item))
            item = None
            capacity = capacities.get(channel)
            if capacity is None:
                capacity = self.capacity_of(channel)
            if 0 < capacity < len(buffer):
                buffer.popleft()
                self.dropped(channel)

    def take(self, channel: str) -> Message | None:
        buffer = self.buffers.get(channel)
        if not buffer:
            return None
        deadlines = self._deadlines
        if deadlines:
            now = time.monotonic()
            if deadlines[0][0] <= now:
                self.expire(now)
                if not buffer:
                    return None
        return buffer.popleft()[1]

    def has(self, channel: str) -> bool:
        return bool(self.buffers.get(channel))

    def expire(self, now: float) -> None:
        deadlines = self._deadlines
        buffers = self.buffers
        while deadlines and deadlines[0][0] <= now:
            channels = deadlines.popleft()[1]
            self._named -= len(channels)
            for channel in channels:
                buffer = buffers.get(channel)
                if buffer is None:
                    continue
                while buffer and buffer[0][0] <= now:
                    buffer.popleft()
                if not buffer:
                    del buffers[channel]

    def _compact(self) -> deque[tuple[float, tuple[str, ...]]]:
        """Drop the deadlines whose messages are all taken (or dropped) already, and the
        buffers left empty; returns the new deadline queue.

        A buffer holds its messages in filing order, so a filing's message is still in a
        channel's buffer only if the buffer's oldest message expires no later than it.
        """
        buffers = self.buffers
        for channel in [channel for channel, buffer in buffers.items() if not buffer]:
            del buffers[channel]

        def live(entry: tuple[float, tuple[str, ...]]) -> bool:
            expires, channels = entry
            for channel in channels:
                buffer = buffers.get(channel)
                if buffer and buffer[0][0] <= expires:
                    return True
            return False

        self._deadlines = deadlines = deque(filter(live, self._deadlines))
        self._named = sum(len(channels) for _, channels in deadlines)
        self._compact_at = max(_MIN_COMPACTION, 2 * self._named)
        return deadlines

    def clear(self) -> None:
        self.buffers.clear()
        self._deadlines.clear()
        self._named = 0
        self._capacities.clear()


class _Waiter(Protocol):
    """What a waiting receiver is parked on: set once, by whoever files for it."""

    def set(self) -> None: ...

    def is_set(self) -> bool: ...

    def wait(self) -> Awaitable[object]: ...


class _FutureWaiter(asyncio.Future[None]):
    """A waiter on asyncio: the future the receiving task awaits, nothing around it."""

    __slots__ = ()

    def set(self) -> None:
        if not self.done():
            self.set_result(None)

    def is_set(self) -> bool:
        # Cancelled means the receiver was cancelled while waiting: it was never woken.
        return self.done() and not self.cancelled()

    def wait(self) -> _FutureWaiter:
        return self


class _TaskWaiter:
    """A waiter on trio: the task itself, parked until ``set`` reschedules it.

    What ``trio.Event`` does for one waiting task, without its parking lot.
    """

    __slots__ = ("_state", "_task")

    _WAITING, _SET, _ABORTED = 0, 1, 2
    #: ``trio.lowlevel``, once a trio loop has asked for a waiter (see _waiter_type).
    trio: ClassVar[Any] = None

    def __init__(self) -> None:
        self._state = self._WAITING
        self._task: Any = None

    def set(self) -> None:
        if self._state == self._WAITING:
            self._state = self._SET
            if self._task is not None:
                self.trio.reschedule(self._task)

    def is_set(self) -> bool:
        return self._state == self._SET

    def wait(self) -> Awaitable[object]:
        # Returns trio's own awaitable (no coroutine of ours around it): the caller
        # awaits it at once, in the task that called this.
        if self._state == self._SET:
            return self.trio.checkpoint()  # type: ignore[no-any-return]
        self._task = self.trio.current_task()
        return self.trio.wait_task_rescheduled(self._abort)  # type: ignore[no-any-return]

    def _abort(self, raise_cancel: object) -> object:
        # Cancelled (or interrupted) before being set: never reschedule this task now.
        self._state = self._ABORTED
        self._task = None
        return self.trio.Abort.SUCCEEDED


def _waiter_type() -> Callable[[], _Waiter]:
    """What the running loop's receivers wait on (``anyio.Event`` on other loops)."""
    try:
        library = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        return anyio.Event
    if library == "asyncio":
        return functools.partial(_FutureWaiter, loop=asyncio.get_running_loop())
    if library == "trio":
        _TaskWaiter.trio = _trio_lowlevel()
        return _TaskWaiter
    return anyio.Event


class Readers:
    """Who, among one loop's receivers of process-local channels, reads the source now.

    ``receive`` returns a channel's next message, taking the reader role when nobody has
    it; ``fetch`` (given by the layer) reads the source once and files what it got.
    Made in the loop whose receivers it serves.
    """

    def __init__(self, mailboxes: Mailboxes, *, interruptible: bool = False) -> None:
        self.mailboxes = mailboxes
        self.reading: bool = False
        #: The channel whose receive is reading now (``None`` while nobody reads): like
        #: the channels in ``waiters``, one with a receive pending.
        self.reading_for: str | None = None
        self.waiters: dict[str, list[_Waiter]] = {}
        #: Whether the read under way was stopped by :meth:`interrupt` (its fetch may then
        #: leave a command's reply to the next read, see ``RedisChannelLayer``).
        self.interrupted: bool = False
        #: Channels whose receives are at their periodic checkpoint, and how many.
        self.yielding: dict[str, int] = {}
        self._interruptible = interruptible
        self._read_scope: anyio.CancelScope | None = None
        self._without_yield = 0
        self._new_waiter = _waiter_type()

    def pending(self, channel: str) -> bool:
        """Whether a receive on ``channel`` is under way (waiting or reading)."""
        return channel in self.waiters or channel == self.reading_for or channel in self.yielding

    def wake(self, channel: str) -> None:
        """Wake the receivers of ``channel`` (something was filed for it)."""
        waiters = self.waiters.get(channel)
        if waiters is not None:
            for waiter in waiters:
                waiter.set()

    def _hand_off(self) -> None:
        """Wake one receiver that has nothing to take, so it becomes the reader."""
        if self.reading:
            return
        buffers = self.mailboxes.buffers
        for channel, waiters in self.waiters.items():
            if not buffers.get(channel):
                for waiter in waiters:
                    if not waiter.is_set():
                        waiter.set()
                        return

    def yield_due(self, channel: str) -> bool:
        """Whether a receive on ``channel`` must checkpoint before taking what is filed.

        A message already filed is returned without a checkpoint (as the in-memory
        layer, and upstream's queue ``get()``), except every ``_YIELD_EVERY``-th such
        receive in a row, so a flooded receiver still lets others run.
        """
        if self.mailboxes.buffers.get(channel):
            self._without_yield += 1
            if self._without_yield >= _YIELD_EVERY:
                self._without_yield = 0
                return True
        return False

    def park(self, channel: str) -> _Waiter:
        """A waiter for ``channel``'s next filing, which the caller awaits at once.

        After the wait, :meth:`unpark` it; if the wait raised, :meth:`abandon` it.
        """
        waiter = self._new_waiter()
        waiters = self.waiters.get(channel)
        if waiters is None:
            self.waiters[channel] = [waiter]
        else:
            waiters.append(waiter)
        return waiter

    def unpark(self, channel: str, waiter: _Waiter) -> None:
        waiters = self.waiters[channel]
        if len(waiters) == 1:
            del self.waiters[channel]
        else:
            waiters.remove(waiter)

    def abandon(self, channel: str, waiter: _Waiter) -> None:
        """Forget a waiter whose wait was cancelled; if it had been woken (perhaps to
        read), pass the reader role on."""
        self.unpark(channel, waiter)
        if waiter.is_set():
            self._hand_off()

    def interrupt(self, channel: str) -> None:
        """Stop the read under way if it is for ``channel``, which was just filed for.

        Only for readers made ``interruptible``: the read's fetch is cancelled (its own
        scope, nobody else's) and the receive takes what was filed.
        """
        scope = self._read_scope
        if scope is not None and self.reading_for == channel:
            self.interrupted = True
            scope.cancel()

    async def read(self, channel: str, fetch: Callable[[], Awaitable[None]]) -> None:
        """Take the reader role (nobody has it) for a receive on ``channel``: ``fetch``."""
        self.reading = True
        self.reading_for = channel
        try:
            if self._interruptible:
                with anyio.CancelScope() as self._read_scope:
                    await fetch()
            else:
                await fetch()
        finally:
            self._read_scope = None
            self.interrupted = False
            self.reading = False
            self.reading_for = None
            self._hand_off()

    async def receive(self, channel: str, fetch: Callable[[], Awaitable[None]]) -> Message:
        """``channel``'s next message, waiting for it or reading the source in turn.

        Waiting and reading are checkpoints; taking what is already filed is not (see
        :meth:`yield_due`). Cancelled, it has taken nothing.
        """
        if self.yield_due(channel):
            # Still a receive under way (``pending``) while it lets others run.
            self.yielding[channel] = self.yielding.get(channel, 0) + 1
            try:
                await anyio.lowlevel.checkpoint()
            finally:
                if self.yielding[channel] == 1:
                    del self.yielding[channel]
                else:
                    self.yielding[channel] -= 1
        take = self.mailboxes.take
        while (message := take(channel)) is None:
            await self.turn(channel, fetch)
        return message

    async def turn(self, key: str, fetch: Callable[[], Awaitable[None]]) -> None:
        """One turn of a wait on ``key``: wait for a wake while another task reads the
        source, or read it (``fetch``) when nobody does. Cancelled, it has taken nothing
        and passes the reader role on if it had been given it."""
        if self.reading:
            waiter = self.park(key)
            try:
                await waiter.wait()
            except BaseException:
                self.abandon(key, waiter)
                raise
            self.unpark(key, waiter)
        else:
            await self.read(key, fetch)

    async def until(
        self, key: str, done: Callable[[], bool], fetch: Callable[[], Awaitable[None]]
    ) -> None:
        """Return once ``done()``, reading the source in turn with the receivers.

        For something the reader notices without filing a message (a subscription's
        confirmation): whoever notices it calls :meth:`wake` with ``key``. ``key`` must be
        no channel's name.
        """
        while not done():
            await self.turn(key, fetch)


def deliver(
    mailboxes: Mailboxes,
    readers: Readers,
    targets: Iterable[str],
    message: Message,
    now: float | None = None,
) -> bool:
    """File ``message`` for each of ``targets`` and wake their receivers; True if any.

    The first target gets ``message`` itself, every other one its own copy, so no receiver
    sees another's changes (whether a shallow copy is a deep one is decided once).
    Synchronous, so whoever read ``message`` off a connection files it before its next
    checkpoint (see the module docstring).
    """
    channels = tuple(targets)
    if not channels:
        return False
    copy = dict.copy if type(message) is dict and _is_flat(message) else copy_message
    mailboxes.file_each(channels, message, message, now, copy)
    waiting = readers.waiters
    for channel in channels:
        waiters = waiting.get(channel)
        if waiters is not None:
            for waiter in waiters:
                waiter.set()
    return True
