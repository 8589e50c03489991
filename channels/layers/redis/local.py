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
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from typing import Generic, TypeVar

import anyio
import anyio.lowlevel

from ...types import Message
from ..inmemory import copy_message

__all__ = ["Mailboxes", "PerLoop", "Readers", "deliver"]

logger: logging.Logger = logging.getLogger("channels.layers.redis")

S = TypeVar("S")

# Receives that found a message filed may skip the checkpoint this many times in a row.
_YIELD_EVERY = 64


class PerLoop(Generic[S]):
    """One ``S`` per running event loop, made by ``create`` and closed by ``close``."""

    def __init__(self, create: Callable[[], S], close: Callable[[S], Awaitable[None]]) -> None:
        self._create = create
        self._close = close
        self._states: dict[object, tuple[S, AsyncGenerator[None, None]]] = {}

    async def get(self) -> S:
        """The current loop's state, made on first use."""
        loop = anyio.lowlevel.current_token().native_token
        entry = self._states.get(loop)
        if entry is None:
            state = self._create()
            guard = self._guard(loop, state)
            # Runs to the yield without suspending, so no other task can get here first;
            # being iterated inside the loop registers it with the loop's shutdown.
            await guard.asend(None)
            entry = self._states[loop] = (state, guard)
        return entry[0]

    def current(self) -> S | None:
        """The current loop's state if it has one (never makes one)."""
        try:
            loop = anyio.lowlevel.current_token().native_token
        except RuntimeError:
            # anyio's NoEventLoopError, or the backend's own RuntimeError when sniffio names
            # a library whose loop is not running here (its context variable is inherited).
            return None
        entry = self._states.get(loop)
        return None if entry is None else entry[0]

    async def aclose_current(self) -> None:
        """Close the current loop's state; the next :meth:`get` makes a new one."""
        loop = anyio.lowlevel.current_token().native_token
        entry = self._states.get(loop)
        if entry is not None:
            await entry[1].aclose()

    async def _guard(self, loop: object, state: S) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            if self._states.get(loop, (None,))[0] is state:
                del self._states[loop]
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
        self._deadlines: deque[tuple[float, str]] = deque()

    def file(self, channel: str, message: Message, now: float | None = None) -> None:
        """Buffer ``message`` for ``channel``; ``now`` saves a clock read per member when a
        group message is filed for many channels at once."""
        if now is None:
            now = time.monotonic()
        if self._deadlines and self._deadlines[0][0] <= now:
            self.expire(now)
        buffer = self.buffers.get(channel)
        if buffer is None:
            buffer = self.buffers[channel] = deque()
        buffer.append((now + self.expiry, message))
        self._deadlines.append((now + self.expiry, channel))
        capacity = self.capacity(channel)
        if 0 < capacity < len(buffer):
            buffer.popleft()
            self.dropped(channel)

    def take(self, channel: str) -> Message | None:
        buffer = self.buffers.get(channel)
        if not buffer:
            return None
        now = time.monotonic()
        if self._deadlines and self._deadlines[0][0] <= now:
            self.expire(now)
        if not buffer:
            return None
        message = buffer.popleft()[1]
        if not buffer:
            del self.buffers[channel]
        return message

    def has(self, channel: str) -> bool:
        return bool(self.buffers.get(channel))

    def expire(self, now: float) -> None:
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, channel = deadlines.popleft()
            buffer = self.buffers.get(channel)
            while buffer and buffer[0][0] <= now:
                buffer.popleft()
            if buffer is not None and not buffer:
                del self.buffers[channel]

    def clear(self) -> None:
        self.buffers.clear()
        self._deadlines.clear()


class Readers:
    """Who, among one loop's receivers of process-local channels, reads the source now.

    ``receive`` returns a channel's next message, taking the reader role when nobody has
    it; ``fetch`` (given by the layer) reads the source once and files what it got.
    """

    def __init__(self, mailboxes: Mailboxes) -> None:
        self.mailboxes = mailboxes
        self.reading: bool = False
        self.waiters: dict[str, list[anyio.Event]] = {}
        self._without_yield = 0

    def wake(self, channel: str) -> None:
        """Wake the receivers of ``channel`` (something was filed for it)."""
        for event in self.waiters.get(channel, ()):
            event.set()

    def _hand_off(self) -> None:
        """Wake one receiver that has nothing to take, so it becomes the reader."""
        if self.reading:
            return
        for channel, events in self.waiters.items():
            if not self.mailboxes.has(channel):
                for event in events:
                    if not event.is_set():
                        event.set()
                        return

    async def receive(self, channel: str, fetch: Callable[[], Awaitable[None]]) -> Message:
        # As the in-memory layer: a message already filed is returned without a checkpoint
        # (upstream's queue ``get()`` has none either), except after ``_YIELD_EVERY`` such
        # receives in a row, so a flooded receiver still lets others run. Waiting and
        # reading are checkpoints.
        if self.mailboxes.has(channel):
            self._without_yield += 1
            if self._without_yield >= _YIELD_EVERY:
                self._without_yield = 0
                await anyio.lowlevel.checkpoint()
        while True:
            message = self.mailboxes.take(channel)
            if message is not None:
                return message
            if not self.reading:
                self.reading = True
                try:
                    await fetch()
                finally:
                    self.reading = False
                    self._hand_off()
                continue
            event = anyio.Event()
            self.waiters.setdefault(channel, []).append(event)
            try:
                await event.wait()
            except BaseException:
                self._forget(channel, event)
                if event.is_set():
                    # Woken, perhaps to read, but leaving (cancelled): pass the role on.
                    self._hand_off()
                raise
            self._forget(channel, event)

    async def until(
        self, key: str, done: Callable[[], bool], fetch: Callable[[], Awaitable[None]]
    ) -> None:
        """Return once ``done()``, reading the source in turn with the receivers.

        For something the reader notices without filing a message (a subscription's
        confirmation): whoever notices it calls :meth:`wake` with ``key``. ``key`` must be
        no channel's name.
        """
        while not done():
            if not self.reading:
                self.reading = True
                try:
                    await fetch()
                finally:
                    self.reading = False
                    self._hand_off()
                continue
            event = anyio.Event()
            self.waiters.setdefault(key, []).append(event)
            try:
                await event.wait()
            except BaseException:
                self._forget(key, event)
                if event.is_set():
                    self._hand_off()
                raise
            self._forget(key, event)

    def _forget(self, channel: str, event: anyio.Event) -> None:
        events = self.waiters[channel]
        events.remove(event)
        if not events:
            del self.waiters[channel]


def deliver(
    mailboxes: Mailboxes,
    readers: Readers,
    targets: Iterable[str],
    message: Message,
    now: float | None = None,
) -> bool:
    """File ``message`` for each of ``targets`` and wake their receivers; True if any.

    The first target gets ``message`` itself, every other one its own copy, so no receiver
    sees another's changes. Synchronous, so whoever read ``message`` off a connection files
    it before its next checkpoint (see the module docstring).
    """
    if now is None:
        now = time.monotonic()
    filed = False
    for target in targets:
        mailboxes.file(target, copy_message(message) if filed else message, now)
        readers.wake(target)
        filed = True
    return filed
