"""A channel layer inside one process, for development, tests and single-process servers.

Why it is shaped this way:

- Each channel is a deque of ``(deadline, message)`` plus the receivers waiting on it. A
  message stays in the deque until a receiver actually takes it, and a woken receiver that
  is cancelled passes its wake-up on, so a cancelled ``receive`` never loses a message (a
  hand-off to a chosen receiver, as memory streams and ``asyncio.Queue`` do, can lose the
  message when that receiver is cancelled just after being chosen).
- ``expiry`` and ``group_expiry`` are the same for every message and membership, so
  deadlines arrive in the order items were added. One FIFO of deadlines for messages and
  one for memberships let each call expire what is due at a cost proportional to what
  expires, instead of sweeping every channel and group on every call (upstream Channels
  does that, which makes fan-out to large groups slow).
- Each delivery gets its own copy of the message, so neither a sender mutating it later
  nor one receiver mutating its copy affects anyone else.
"""

from __future__ import annotations

import copy
import logging
import random
import string
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

import anyio
import anyio.lowlevel

from ..exceptions import ChannelFull
from ..types import Message
from .base import BaseChannelLayer, CapacityPattern

__all__ = ["InMemoryChannelLayer"]

logger = logging.getLogger("channels.layers")

_MIN_COMPACTION = 16384

_IMMUTABLE = frozenset({str, int, float, bool, bytes, type(None)})


def copy_message(value: Any) -> Any:
    """A deep copy, with fast paths for the JSON-like data messages almost always are."""
    cls = type(value)
    if cls in _IMMUTABLE:
        return value
    if cls is dict:
        for item in value.values():
            if type(item) not in _IMMUTABLE:
                return {key: copy_message(item) for key, item in value.items()}
        return value.copy()
    if cls is list:
        return [copy_message(item) for item in value]
    if cls is tuple:
        return tuple(copy_message(item) for item in value)
    return copy.deepcopy(value)


class _Channel:
    """One channel: its queued messages and the receivers waiting for one."""

    __slots__ = ("added", "capacity", "messages", "name", "removed", "waiters")

    def __init__(self, name: str, capacity: int) -> None:
        self.name = name
        self.capacity = capacity
        self.messages: deque[tuple[float, Message]] = deque()
        self.waiters: deque[anyio.Event] = deque()
        # Messages ever appended / taken from the head: the n-th message is still queued
        # exactly when n >= removed, which is how a deadline finds out if it still matters.
        self.added = 0
        self.removed = 0

    def qsize(self) -> int:
        return len(self.messages)

    def empty(self) -> bool:
        return not self.messages

    def full(self) -> bool:
        return 0 < self.capacity <= len(self.messages)

    def __len__(self) -> int:
        return len(self.messages)

    def __repr__(self) -> str:
        return (
            f"<channel {self.name!r} messages={len(self.messages)}/{self.capacity}"
            f" waiting={len(self.waiters)}>"
        )

    def pop(self) -> Message:
        self.removed += 1
        return self.messages.popleft()[1]

    def wake_one(self) -> None:
        """Wake the first waiting receiver that has not already been woken."""
        for waiter in self.waiters:
            if not waiter.is_set():
                waiter.set()
                return


class InMemoryChannelLayer(BaseChannelLayer):
    """The in-memory layer: Channels' ``InMemoryChannelLayer`` API on anyio.

    ``channels`` maps channel names to their queues (``qsize()``, ``empty()``, ``full()``)
    and ``groups`` maps group names to ``{channel: join time}``. Both only hold live
    entries: a channel with no message and no waiting receiver, and a group with no member,
    are removed.

    A receiver waiting on a channel makes the channel appear in ``channels`` at once.
    ``close()`` has nothing to release.
    """

    extensions = ["groups", "flush"]

    def __init__(
        self,
        expiry: float = 60,
        group_expiry: float = 86400,
        capacity: int = 100,
        channel_capacity: Mapping[CapacityPattern, int] | None = None,
    ) -> None:
        super().__init__(expiry=expiry, capacity=capacity, channel_capacity=channel_capacity)
        self.group_expiry = group_expiry
        self.channels: dict[str, _Channel] = {}
        self.groups: dict[str, dict[str, float]] = {}
        self._memberships: dict[str, set[str]] = {}
        self._message_deadlines: deque[tuple[float, _Channel, int]] = deque()
        self._membership_deadlines: deque[tuple[float, str, str, float]] = deque()
        # Deadlines of messages already received, or of memberships already left or
        # renewed, stay queued until due; past these lengths the queues are rebuilt with
        # only live entries, so memory follows live state, not traffic.
        self._compact_messages_at = _MIN_COMPACTION
        self._compact_memberships_at = _MIN_COMPACTION

    # -- channels ------------------------------------------------------------------------

    async def send(self, channel: str, message: Message) -> None:
        """Queue a copy of ``message`` on ``channel``.

        :raises ~channels.exceptions.ChannelFull: if the channel is at capacity; nothing
            was queued.
        """
        self.require_valid_message(message)
        self._require_valid_channel(channel)
        now = time.monotonic()
        self._expire(now)
        self._put(channel, message, now)

    async def receive(self, channel: str) -> Message:
        """Take the next message from ``channel``, waiting for one if there is none.

        With several receivers waiting on one channel, each message goes to one of them.
        Cancelling a waiting receiver loses no message.
        """
        self._require_valid_channel(channel)
        await anyio.lowlevel.checkpoint_if_cancelled()
        self._expire(time.monotonic())
        while True:
            queue = self.channels.get(channel)
            if queue is None:
                queue = self.channels[channel] = _Channel(channel, self.get_capacity(channel))
            if queue.messages:
                break
            waiter = anyio.Event()
            queue.waiters.append(waiter)
            try:
                await waiter.wait()
            except BaseException:
                queue.waiters.remove(waiter)
                if waiter.is_set() and queue.messages:
                    queue.wake_one()
                self._forget_if_idle(queue)
                raise
            queue.waiters.remove(waiter)
            # Deadlines that passed while we slept may have taken the message (and, with
            # it, the channel: the next turn of the loop looks it up again).
            self._expire(time.monotonic())
        message = queue.pop()
        if queue.messages:
            queue.wake_one()
        self._forget_if_idle(queue)
        return message

    async def new_channel(self, prefix: str = "specific.") -> str:
        """A new process-local channel name (``<prefix>.inmemory!<12 letters>``)."""
        suffix = "".join(random.choices(string.ascii_letters, k=12))
        return f"{prefix}.inmemory!{suffix}"

    def _require_valid_channel(self, name: str) -> None:
        # A channel already in the layer was validated when it was made: skip the regex.
        try:
            if name in self.channels:
                return
        except TypeError:  # unhashable: let validation give its usual message
            pass
        self.require_valid_channel_name(name)

    def _put(self, name: str, message: Message, now: float) -> None:
        queue = self.channels.get(name)
        capacity = queue.capacity if queue is not None else self.get_capacity(name)
        # As upstream's asyncio.Queue(maxsize=...), a capacity of 0 or less means unbounded.
        if queue is not None and 0 < capacity <= len(queue.messages):
            raise ChannelFull(name)
        if queue is None:
            queue = self.channels[name] = _Channel(name, capacity)
        deadline = now + self.expiry
        queue.messages.append((deadline, copy_message(message)))
        self._message_deadlines.append((deadline, queue, queue.added))
        if len(self._message_deadlines) > self._compact_messages_at:
            self._compact_message_deadlines()
        queue.added += 1
        if queue.waiters:
            queue.wake_one()

    def _forget_if_idle(self, queue: _Channel) -> None:
        if not queue.messages and not queue.waiters and self.channels.get(queue.name) is queue:
            del self.channels[queue.name]

    # -- expiry --------------------------------------------------------------------------

    def _expire(self, now: float) -> None:
        """Drop messages and memberships whose deadline has passed.

        As upstream, a channel that had a message expire is removed from all its groups:
        nobody is reading it, so it should stop receiving group messages.
        """
        deadlines = self._message_deadlines
        while deadlines and deadlines[0][0] <= now:
            _, queue, number = deadlines.popleft()
            if number < queue.removed or self.channels.get(queue.name) is not queue:
                continue  # received already, or flushed
            while queue.removed <= number:
                queue.pop()
            self._leave_all_groups(queue.name)
            self._forget_if_idle(queue)

        memberships = self._membership_deadlines
        while memberships and memberships[0][0] <= now:
            _, group, channel, joined = memberships.popleft()
            if self.groups.get(group, {}).get(channel) == joined:
                self._discard(group, channel)

    def _compact_message_deadlines(self) -> None:
        self._message_deadlines = deque(
            entry
            for entry in self._message_deadlines
            if entry[2] >= entry[1].removed and self.channels.get(entry[1].name) is entry[1]
        )
        self._compact_messages_at = max(_MIN_COMPACTION, 2 * len(self._message_deadlines))

    def _compact_membership_deadlines(self) -> None:
        self._membership_deadlines = deque(
            entry
            for entry in self._membership_deadlines
            if self.groups.get(entry[1], {}).get(entry[2]) == entry[3]
        )
        self._compact_memberships_at = max(_MIN_COMPACTION, 2 * len(self._membership_deadlines))

    # -- groups --------------------------------------------------------------------------

    async def group_add(self, group: str, channel: str) -> None:
        """Add ``channel`` to ``group``; joining again restarts its ``group_expiry``."""
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        now = time.monotonic()
        self._expire(now)
        joined = time.time()
        self.groups.setdefault(group, {})[channel] = joined
        self._memberships.setdefault(channel, set()).add(group)
        self._membership_deadlines.append((now + self.group_expiry, group, channel, joined))
        if len(self._membership_deadlines) > self._compact_memberships_at:
            self._compact_membership_deadlines()

    async def group_discard(self, group: str, channel: str) -> None:
        """Remove ``channel`` from ``group``; a group left empty disappears."""
        self.require_valid_channel_name(channel)
        self.require_valid_group_name(group)
        self._discard(group, channel)

    async def group_send(self, group: str, message: Message) -> None:
        """Send a copy of ``message`` to every member of ``group``.

        A member whose channel is full is skipped (and logged); the others still get it.
        """
        self.require_valid_message(message)
        self.require_valid_group_name(group)
        now = time.monotonic()
        self._expire(now)
        members = self.groups.get(group)
        if not members:
            return
        full = []
        for channel in list(members):
            try:
                self._put(channel, message, now)
            except ChannelFull:
                full.append(channel)
        if full:
            logger.info(
                "group_send to %r skipped %d full channel(s): %s",
                group,
                len(full),
                ", ".join(full[:5]) + (", ..." if len(full) > 5 else ""),
            )

    def _discard(self, group: str, channel: str) -> None:
        members = self.groups.get(group)
        if members is not None:
            members.pop(channel, None)
            if not members:
                del self.groups[group]
        joined = self._memberships.get(channel)
        if joined is not None:
            joined.discard(group)
            if not joined:
                del self._memberships[channel]

    def _leave_all_groups(self, channel: str) -> None:
        for group in self._memberships.pop(channel, ()):
            members = self.groups.get(group)
            if members is not None:
                members.pop(channel, None)
                if not members:
                    del self.groups[group]

    # -- flush extension -----------------------------------------------------------------

    async def flush(self) -> None:
        """Drop every message and group. Receivers already waiting keep waiting."""
        for name, queue in list(self.channels.items()):
            queue.removed += len(queue.messages)
            queue.messages.clear()
            if not queue.waiters:
                del self.channels[name]
        self.groups.clear()
        self._memberships.clear()
        self._message_deadlines.clear()
        self._membership_deadlines.clear()

    async def close(self) -> None:
        """Nothing to release: the layer holds no connections."""
