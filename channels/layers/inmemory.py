"""A channel layer inside one process, for development, tests and single-process servers.

Why it is shaped this way:

- Each channel is a deque of messages plus the receivers waiting on it. A message stays
  in the deque until a receiver actually takes it, and a woken receiver that is cancelled
  passes its wake-up on, so a cancelled ``receive`` never loses a message (a hand-off to a
  chosen receiver, as memory streams and ``asyncio.Queue`` do, can lose the message when
  that receiver is cancelled just after being chosen).
- A waiting receiver may also be a function to call (:meth:`InMemoryChannelLayer.call_on_message`):
  a consumer waits on its channel that way, without a task, until a message comes. Most
  live channels are such idle consumers', so a channel holds no deque while it has no
  message, and its waiters are a list.
- ``expiry`` and ``group_expiry`` are the same for every message and membership, so
  deadlines arrive in the order items were added. One FIFO of deadlines for messages and
  one for memberships let each call expire what is due at a cost proportional to what
  expires, instead of sweeping every channel and group on every call (upstream Channels
  does that, which makes fan-out to large groups slow); a call made before the earliest
  deadline skips expiry altogether.
- Expiry happens where upstream's does, on ``receive`` and ``group_send``, so what
  ``channels`` and ``groups`` show matches upstream's. ``send`` and ``group_add`` expire
  too, but only once a whole batch of deadlines has passed: a process that only ever
  sends (to channels nobody reads any more) still holds a bounded amount of expired data,
  and the one expired message upstream's tests look at is left for ``receive`` to drop.
  Expiry runs through ``_clean_expired`` and ``_remove_from_groups``, upstream's private
  names, which test suites patch.
- Each delivery gets its own copy of the message, so neither a sender mutating it later
  nor one receiver mutating its copy affects anyone else. Flat messages (only str, int,
  float, bool, bytes, None values), the usual case, are copied with ``dict.copy()``;
  ``group_send`` works out once per message which of its parts are mutable, and each
  member's copy rebuilds only those.
- The hot paths are plain code, not layers of calls: ``receive`` of a queued message costs
  a clock read and a few dict and deque operations. It is therefore not a checkpoint (see
  :meth:`InMemoryChannelLayer.receive`); a checkpoint through anyio costs more than the
  rest of the call.
"""

from __future__ import annotations

import copy
import logging
import random
import string
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, cast

import anyio
import anyio.lowlevel

from ..exceptions import ChannelFull
from ..types import Message
from .base import BaseChannelLayer, CapacityPattern
from .durable import (
    POSITION_KEY,
    GroupHistory,
    GroupPattern,
    HistoryPolicy,
    StreamPosition,
    check_history_limit,
    new_epoch,
    presence_event,
    validate_presence_info,
)

__all__ = ["InMemoryChannelLayer"]

logger: logging.Logger = logging.getLogger("channels.layers")

# Deadline queues are rebuilt past this length at the least (see ``_compact_messages_at``).
# An entry weighs about 120 bytes: a busy channel's dead entries then hold a few hundred
# KiB at most (16,384 of them were 2-3 MiB of a benchmark's peak RSS), and a rebuild every
# couple of thousand sends costs less than a microsecond per send.
_MIN_COMPACTION = 2048

# Channels that went idle kept for reuse (see ``InMemoryChannelLayer._channel``), at most.
_IDLE_CACHE = 4096

_NEVER = float("inf")

# ``send`` and ``group_add`` expire only once this many deadlines of one kind are due.
_EXPIRY_BATCH = 1024

# Receives that found a message queued may skip the checkpoint this many times in a row.
_YIELD_EVERY = 64

_monotonic = time.monotonic

_IMMUTABLE = frozenset({str, int, float, bool, bytes, type(None)})

# What a channel holds as its messages while it has none (``_put`` makes the deque).
_NO_MESSAGES = cast("deque[Message]", ())


def _is_flat(message: Message) -> bool:
    """True if every value is immutable, so a shallow copy is a deep one."""
    # A loop, not all(<generator>): this runs for every message and the loop is faster.
    for value in message.values():  # noqa: SIM110
        if type(value) not in _IMMUTABLE:
            return False
    return True


def copy_message(value: Any) -> Any:
    """A deep copy, with fast paths for the JSON-like data messages almost always are."""
    cls = type(value)
    if cls in _IMMUTABLE:
        return value
    if cls is dict:
        if _is_flat(value):
            return value.copy()
        return {key: copy_message(item) for key, item in value.items()}
    if cls is list:
        return [copy_message(item) for item in value]
    if cls is tuple:
        return tuple(copy_message(item) for item in value)
    return copy.deepcopy(value)


def _share(value: Any) -> Any:
    return value


def _copier(value: Any) -> Callable[[Any], Any]:
    """A function that deep-copies ``value`` (this object, as it is now) again and again.

    ``group_send`` hands each member its own copy of one message: what is immutable in
    it is found once, here, and each copy only rebuilds the containers (a nested payload
    used to be looked through again for every member).
    """
    cls = type(value)
    if cls in _IMMUTABLE:
        return _share
    if cls is dict:
        nested = [
            (key, _copier(item)) for key, item in value.items() if type(item) not in _IMMUTABLE
        ]
        if not nested:
            return dict.copy

        def copy_dict(original: dict[Any, Any]) -> dict[Any, Any]:
            copied = original.copy()
            for key, copy_item in nested:
                copied[key] = copy_item(original[key])
            return copied

        return copy_dict
    if cls is list or cls is tuple:
        items = [_copier(item) for item in value]
        if all(copy_item is _share for copy_item in items):
            return list.copy if cls is list else _share

        def copy_list(original: Any) -> Any:
            return [copy_item(item) for copy_item, item in zip(items, original, strict=True)]

        if cls is list:
            return copy_list
        return lambda original: tuple(copy_list(original))
    return copy.deepcopy


class _Callback:
    """A receiver waiting on a channel as a function to call, not a task: see
    :meth:`InMemoryChannelLayer.call_on_message`. Woken like the receivers' events."""

    __slots__ = ("_layer", "_queue", "set")

    def __init__(
        self, layer: InMemoryChannelLayer, queue: _Channel, callback: Callable[[], object]
    ) -> None:
        self._layer = layer
        self._queue = queue
        self.set = callback

    def withdraw(self) -> None:
        queue = self._queue
        if self in queue.waiters:
            queue.waiters.remove(self)
            self._layer._forget_if_idle(queue)


class _Channel:
    """One channel: its queued messages and the receivers waiting for one."""

    __slots__ = ("added", "capacity", "messages", "name", "removed", "waiters")

    def __init__(self, name: str, capacity: int) -> None:
        self.name = name
        self.capacity = capacity
        # Until its first message, a channel shares this empty tuple rather than holding
        # an empty deque (about 760 bytes): most live channels are a consumer's, waiting.
        # Once made, the deque is kept (a consumer's channel empties after every message,
        # and a deque made for each one cost about 5% of a fan-out's delivery).
        self.messages: deque[Message] = _NO_MESSAGES
        # Oldest first. A list, not a deque: there is rarely more than one, and an empty
        # deque costs about 700 bytes more than an empty list (each open WebSocket's
        # consumer has a channel waiting here).
        self.waiters: list[anyio.Event | _Callback] = []
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
        message = self.messages.popleft()
        if not self.messages:
            self.messages = _NO_MESSAGES
        return message

    def wake_one(self) -> None:
        """Wake the receiver that has waited longest (woken receivers leave ``waiters``).

        A receiver whose event loop has closed (left waiting by an earlier test, say) is
        dropped and the next one woken: the message stays for a receiver that can take it.
        """
        while self.waiters:
            try:
                self.waiters.pop(0).set()
            except RuntimeError:  # asyncio's "Event loop is closed": nobody to wake there
                continue
            return


class _Stream:
    """One group's history: its epoch, the last offset given, and the retained messages.

    Entries are ``(offset, appended at, message)``; the message is kept without its
    ``__position__``, which is added to each copy handed out.
    """

    __slots__ = ("entries", "epoch", "expires", "policy", "top")

    def __init__(self, policy: HistoryPolicy) -> None:
        self.policy = policy
        self.epoch = new_epoch()
        self.top = 0
        self.entries: deque[tuple[int, float, Message]] = deque()
        self.expires = _NEVER

    def trim(self, now: float) -> None:
        entries = self.entries
        while len(entries) > self.policy.size:
            entries.popleft()
        oldest = now - self.policy.ttl
        while entries and entries[0][1] < oldest:
            entries.popleft()

    def position(self) -> StreamPosition:
        return StreamPosition(self.epoch, self.top)


def _positioned(message: Message, epoch: str, offset: int) -> Message:
    """A copy of ``message`` carrying its position (the caller's dict is left alone)."""
    copied: Message = copy_message(message)
    copied[POSITION_KEY] = {"epoch": epoch, "offset": offset}
    return copied


class InMemoryChannelLayer(BaseChannelLayer):
    """The in-memory layer: Channels' ``InMemoryChannelLayer`` API on anyio.

    ``channels`` maps channel names to their queues (``qsize()``, ``empty()``, ``full()``)
    and ``groups`` maps group names to ``{channel: join time}``. Both only hold live
    entries: a channel with no message and no waiting receiver, and a group with no member,
    are removed.

    A receiver waiting on a channel makes the channel appear in ``channels`` at once.
    ``close()`` has nothing to release.
    """

    extensions: list[str] = ["groups", "flush", "history", "presence"]
    presence_expires = False

    def __init__(
        self,
        expiry: float = 60,
        group_expiry: float = 86400,
        capacity: int = 100,
        channel_capacity: Mapping[CapacityPattern, int] | None = None,
        *,
        group_history: Mapping[GroupPattern, Mapping[str, Any]] | None = None,
        presence_events: list[GroupPattern] | tuple[GroupPattern, ...] | None = None,
        presence_timeout: float = 30,
    ) -> None:
        super().__init__(
            expiry=expiry,
            capacity=capacity,
            channel_capacity=channel_capacity,
            group_history=group_history,
            presence_events=presence_events,
            presence_timeout=presence_timeout,
        )
        # History: streams by group, oldest append first (see ``_expire_streams``), and
        # each group's policy once looked up.
        self._streams: dict[str, _Stream] = {}
        self._policies: dict[str, HistoryPolicy | None] = {}
        # Presence: {group: {channel: info}}. Entries live as long as this process, so
        # ``presence_timeout`` has nothing to do here.
        self._presence: dict[str, dict[str, dict[str, Any]]] = {}
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
        # The earliest deadline in either queue (or earlier): until then no call has
        # anything to expire and skips the expiry pass.
        self._next_deadline = _NEVER
        # When ``_EXPIRY_BATCH`` deadlines of one queue will have passed (or earlier):
        # from then on ``send`` and ``group_add`` expire too.
        self._batch_deadline = _NEVER
        self._idle: dict[str, _Channel] = {}
        self._receives_without_yield = 0

    # -- channels ------------------------------------------------------------------------

    async def send(self, channel: str, message: Message) -> None:
        """Queue a copy of ``message`` on ``channel``.

        :raises ~channels.exceptions.ChannelFull: if the channel is at capacity; nothing
            was queued.
        """
        if type(message) is dict and "__asgi_channel__" not in message:
            copied = message.copy() if _is_flat(message) else copy_message(message)
        else:
            self.require_valid_message(message)
            copied = copy_message(message)
        now = _monotonic()
        if self._batch_deadline <= now:
            self._clean_expired()
        self._put(channel, copied, now)

    async def receive(self, channel: str) -> Message:
        """Take the next message from ``channel``, waiting for one if there is none.

        With several receivers waiting on one channel, each message goes to one of them.
        Cancelling a waiting receiver loses no message.

        A message already queued is returned at once, without a checkpoint: like upstream
        Channels' layer (which awaits ``asyncio.Queue.get()``), this neither yields to
        other tasks nor checks for cancellation then; a cancellation arrives at the
        caller's next checkpoint, with the message delivered rather than lost. A
        ``receive`` that has to wait is a checkpoint, and so is every 64th receive in a
        row that did not, so a flooded receiver cannot starve the event loop.
        """
        now = _monotonic()
        if self._next_deadline <= now:
            self._clean_expired()
        try:
            queue = self.channels.get(channel)
        except TypeError:  # unhashable: the waiting path validates the name and says so
            queue = None
        if queue is not None and queue.messages:
            self._receives_without_yield += 1
            if self._receives_without_yield < _YIELD_EVERY:
                return self._take(queue)
            # A receiver that always finds messages would otherwise never let other tasks
            # run or a cancellation land: every so often, yield before taking (so a
            # cancellation here takes nothing). The count restarts first: the receivers
            # that run while this one yields have not been found at fault.
            self._receives_without_yield = 0
            await anyio.lowlevel.checkpoint()
        return await self._wait_and_take(channel)

    def call_on_message(self, channel: str, callback: Callable[[], object]) -> Callable[[], None]:
        """Call ``callback()`` once, when ``channel`` has a message for a receive to take
        (at once if it has one already); returns the function that withdraws it.

        Until it is called or withdrawn, ``callback`` counts as a receiver waiting on the
        channel (the channel is live, and a message wakes it in its turn with the others)
        but without a task: a consumer listens on its channel this way, and starts a
        listener task only once something arrives. The message is not taken: the
        callback's ``receive`` takes it. Withdrawing after the call does nothing.
        """
        queue = self._channel(channel)
        waiter = _Callback(self, queue, callback)
        if queue.messages:
            callback()
        else:
            queue.waiters.append(waiter)
        return waiter.withdraw

    async def _wait_and_take(self, channel: str) -> Message:
        queue = self._channel(channel)
        while not queue.messages:
            waiter = anyio.Event()
            queue.waiters.append(waiter)
            self._receives_without_yield = 0
            try:
                await waiter.wait()
            except BaseException:
                if not waiter.is_set():
                    queue.waiters.remove(waiter)
                elif queue.messages:  # chosen for a message it will not take: pass it on
                    queue.wake_one()
                self._forget_if_idle(queue)
                raise
            # Deadlines that passed while we slept may have taken the message (and, with
            # it, the channel: look it up again).
            if self._next_deadline <= _monotonic():
                self._clean_expired()
            if queue.messages:  # still ours, even if the channel was dropped meanwhile
                break
            queue = self._channel(channel)
        return self._take(queue)

    def _take(self, queue: _Channel) -> Message:
        queue.removed += 1
        messages = queue.messages
        message = messages.popleft()
        if messages:
            if queue.waiters:
                queue.wake_one()
        elif not queue.waiters:
            self._forget(queue)
        return message

    async def new_channel(self, prefix: str = "specific.") -> str:
        """A new process-local channel name (``<prefix>.inmemory!<12 letters>``)."""
        suffix = "".join(random.choices(string.ascii_letters, k=12))
        return f"{prefix}.inmemory!{suffix}"

    def _channel(self, name: str) -> _Channel:
        """The live channel ``name``, made live if needed.

        A channel that went idle recently is revived from ``_idle`` rather than rebuilt:
        a consumer's channel goes idle between every two messages it receives, and the
        name check and capacity lookup are most of what building one costs.
        """
        try:
            queue = self.channels.get(name)
            if queue is None:
                queue = self._idle.pop(name, None)
        except TypeError:  # unhashable: let validation give its usual message
            queue = None
        if queue is None:
            self.require_valid_channel_name(name)
            queue = _Channel(name, self.get_capacity(name))
        self.channels[name] = queue
        return queue

    def _put(self, name: str, message: Message, now: float) -> None:
        """Queue ``message`` (the caller's copy) on channel ``name``."""
        try:
            queue = self.channels.get(name)
        except TypeError:
            queue = None
        if queue is None:
            queue = self._channel(name)
        # As upstream's asyncio.Queue(maxsize=...), a capacity of 0 or less means unbounded.
        elif 0 < queue.capacity <= len(queue.messages):
            raise ChannelFull(name)
        if queue.messages is _NO_MESSAGES:
            queue.messages = deque()
        queue.messages.append(message)
        deadlines = self._message_deadlines
        deadline = now + self.expiry
        if not deadlines:
            self._next_deadline = min(self._next_deadline, deadline)
        deadlines.append((deadline, queue, queue.added))
        queue.added += 1
        if len(deadlines) == _EXPIRY_BATCH:
            self._batch_deadline = min(self._batch_deadline, deadline)
        elif len(deadlines) > self._compact_messages_at:
            self._compact_message_deadlines()
        if queue.waiters:
            queue.wake_one()

    def _forget_if_idle(self, queue: _Channel) -> None:
        if not queue.messages and not queue.waiters and self.channels.get(queue.name) is queue:
            self._forget(queue)

    def _forget(self, queue: _Channel) -> None:
        if self.channels.get(queue.name) is not queue:
            return  # ``channels`` was changed from outside; the queue is not ours to keep
        del self.channels[queue.name]
        idle = self._idle
        if len(idle) >= _IDLE_CACHE:
            del idle[next(iter(idle))]
        idle[queue.name] = queue

    # -- expiry --------------------------------------------------------------------------

    def _clean_expired(self) -> None:
        """Drop messages and memberships whose deadline has passed.

        As upstream, a channel that had a message expire is removed from all its groups
        (through :meth:`_remove_from_groups`): nobody is reading it, so it should stop
        receiving group messages. Upstream's private name and signature: test suites call
        it, or wrap it, to expire at moments they choose.
        """
        now = _monotonic()
        deadlines = self._message_deadlines
        while deadlines and deadlines[0][0] <= now:
            _, queue, number = deadlines.popleft()
            if number < queue.removed or self.channels.get(queue.name) is not queue:
                continue  # received already, or flushed
            while queue.removed <= number:
                queue.pop()
            self._remove_from_groups(queue.name)
            self._forget_if_idle(queue)

        memberships = self._membership_deadlines
        while memberships and memberships[0][0] <= now:
            _, group, channel, joined = memberships.popleft()
            if self.groups.get(group, {}).get(channel) == joined:
                self._discard(group, channel)
        self._find_next_deadline()

    def _find_next_deadline(self) -> None:
        # Both queues are in deadline order, so their heads are the earliest deadlines,
        # and the entries at _EXPIRY_BATCH - 1 the ones that complete a batch.
        messages, memberships = self._message_deadlines, self._membership_deadlines
        self._next_deadline = min(
            messages[0][0] if messages else _NEVER,
            memberships[0][0] if memberships else _NEVER,
        )
        self._batch_deadline = min(
            messages[_EXPIRY_BATCH - 1][0] if len(messages) >= _EXPIRY_BATCH else _NEVER,
            memberships[_EXPIRY_BATCH - 1][0] if len(memberships) >= _EXPIRY_BATCH else _NEVER,
        )

    def _compact_message_deadlines(self) -> None:
        self._message_deadlines = deque(
            entry
            for entry in self._message_deadlines
            if entry[2] >= entry[1].removed and self.channels.get(entry[1].name) is entry[1]
        )
        self._compact_messages_at = max(_MIN_COMPACTION, 2 * len(self._message_deadlines))
        self._find_next_deadline()

    def _compact_membership_deadlines(self) -> None:
        self._membership_deadlines = deque(
            entry
            for entry in self._membership_deadlines
            if self.groups.get(entry[1], {}).get(entry[2]) == entry[3]
        )
        self._compact_memberships_at = max(_MIN_COMPACTION, 2 * len(self._membership_deadlines))
        self._find_next_deadline()

    # -- groups --------------------------------------------------------------------------

    async def group_add(self, group: str, channel: str) -> None:
        """Add ``channel`` to ``group``; joining again restarts its ``group_expiry``."""
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        now = _monotonic()
        if self._batch_deadline <= now:
            self._clean_expired()
        joined = time.time()
        self.groups.setdefault(group, {})[channel] = joined
        self._memberships.setdefault(channel, set()).add(group)
        deadlines = self._membership_deadlines
        deadline = now + self.group_expiry
        if not deadlines:
            self._next_deadline = min(self._next_deadline, deadline)
        deadlines.append((deadline, group, channel, joined))
        if len(deadlines) == _EXPIRY_BATCH:
            self._batch_deadline = min(self._batch_deadline, deadline)
        elif len(deadlines) > self._compact_memberships_at:
            self._compact_membership_deadlines()

    async def group_discard(self, group: str, channel: str) -> None:
        """Remove ``channel`` from ``group``; a group left empty disappears."""
        self.require_valid_channel_name(channel)
        self.require_valid_group_name(group)
        self._discard(group, channel)

    async def group_send(self, group: str, message: Message) -> None:
        """Send a copy of ``message`` to every member of ``group``.

        A member whose channel is full is skipped, logged and counted (:meth:`stats`); the
        others still get it.
        """
        if type(message) is not dict or "__asgi_channel__" in message:
            self.require_valid_message(message)
        if group not in self.groups:  # groups only hold names that were validated
            self.require_valid_group_name(group)
        now = _monotonic()
        if self._next_deadline <= now:
            self._clean_expired()
        if self.group_history_policies:
            stream = self._append_to_history(group, message, now)
            if stream is not None:
                await self._deliver_positioned(group, message, stream.epoch, stream.top, now)
                return
        members = self.groups.get(group)
        if not members:
            return
        # Look at the message once, not once per member.
        self._deliver(group, members, message, _copier(message), now)

    async def _deliver_positioned(
        self, group: str, message: Message, epoch: str, offset: int, now: float
    ) -> None:
        members = self.groups.get(group)
        if members:
            copy_message = _copier(message)

            def copy(message: Message) -> Message:
                copied: Message = copy_message(message)
                copied[POSITION_KEY] = {"epoch": epoch, "offset": offset}
                return copied

            self._deliver(group, members, message, copy, now)

    def _deliver(
        self,
        group: str,
        members: dict[str, float],
        message: Message,
        copy: Any,
        now: float,
    ) -> None:
        full = []
        failed: list[tuple[str, Exception]] = []
        for channel in list(members):
            # Each member's delivery stands alone: one that fails does not keep the
            # message from the members after it.
            try:
                self._put(channel, copy(message), now)
            except ChannelFull:
                full.append(channel)
            except Exception as error:
                failed.append((channel, error))
        if full:
            self.record_group_send_skips(group, full, len(members))
        if failed:
            for channel, exc in failed[1:]:
                logger.error("group_send to %r failed for %r", group, channel, exc_info=exc)
            # As upstream's, once every member has been tried, the error is the caller's.
            raise failed[0][1]

    # -- history extension ---------------------------------------------------------------

    def _policy(self, group: str) -> HistoryPolicy | None:
        policies = self._policies
        try:
            return policies[group]
        except KeyError:
            pass
        if len(policies) >= _IDLE_CACHE:
            policies.clear()
        policy = policies[group] = self.history_policy(group)
        return policy

    def _stream(self, group: str, now: float, create: bool) -> _Stream | None:
        """``group``'s live stream (a fresh one, with a new epoch, if ``create``)."""
        self._expire_streams(now)
        stream = self._streams.get(group)
        if stream is not None and stream.expires <= now:
            del self._streams[group]
            stream = None
        if stream is None and create:
            policy = self._policy(group)
            if policy is not None:
                stream = self._streams[group] = _Stream(policy)
                stream.expires = now + policy.ttl
        return stream

    def _expire_streams(self, now: float) -> None:
        """Forget streams nothing was appended to for their ``ttl`` (their epoch with them).

        ``_streams`` is kept in order of last append, so the streams to forget are at its
        front; with several ``ttl``s one that lives longer can hold others back, which
        only delays when their (already expired) entries are freed.
        """
        streams = self._streams
        while streams:
            group = next(iter(streams))
            if streams[group].expires > now:
                return
            del streams[group]

    def _append_to_history(self, group: str, message: Message, now: float) -> _Stream | None:
        if self._policy(group) is None:
            return None
        stream = self._stream(group, now, create=True)
        assert stream is not None
        # Move to the end: ``_streams`` stays in order of last append.
        del self._streams[group]
        self._streams[group] = stream
        stream.top += 1
        stored = copy_message(message)
        stored.pop(POSITION_KEY, None)
        stream.entries.append((stream.top, now, stored))
        stream.expires = now + stream.policy.ttl
        stream.trim(now)
        return stream

    async def group_history(
        self, group: str, *, after: StreamPosition | None = None, limit: int | None = None
    ) -> GroupHistory:
        """The messages ``group``'s stream retains; see :class:`~channels.layers.GroupHistory`.

        A group that matches no ``group_history`` pattern keeps no stream:
        ``GroupHistory(None, [], False)``.
        """
        self.require_valid_group_name(group)
        check_history_limit(limit)
        since = None if after is None else StreamPosition.from_value(after)
        now = _monotonic()
        stream = self._stream(group, now, create=True)
        if stream is None:
            return GroupHistory(None, [], False)
        stream.trim(now)
        position = stream.position()
        entries = stream.entries
        if since is None:
            skip = 0 if limit is None else max(0, len(entries) - limit)
            chosen = list(entries)[skip:]
            recovered = False
        else:
            if since.epoch != stream.epoch or since.offset > stream.top:
                return GroupHistory(position, [], False)
            missed = stream.top - since.offset
            if missed == 0:
                return GroupHistory(position, [], True)
            if not entries or entries[0][0] > since.offset + 1:
                return GroupHistory(position, [], False)  # some were dropped already
            if limit is not None and missed > limit:
                return GroupHistory(position, [], False)  # never a partial replay
            chosen = list(entries)[len(entries) - missed :]
            recovered = True
        messages = [_positioned(message, stream.epoch, offset) for offset, _, message in chosen]
        return GroupHistory(position, messages, recovered)

    # -- presence extension --------------------------------------------------------------

    async def presence_join(
        self, group: str, channel: str, info: dict[str, Any] | None = None
    ) -> None:
        """Record ``channel`` as present in ``group``; joining again updates ``info``.

        For groups matching ``presence_events``, a new entry or changed ``info`` is sent
        to the group as ``presence.join``.
        """
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        kept = copy_message(validate_presence_info(info))
        entries = self._presence.setdefault(group, {})
        if entries.get(channel) == kept:
            return
        entries[channel] = kept
        if self.announces_presence(group):
            await self.group_send(group, presence_event("presence.join", group, channel, kept))

    async def presence_leave(self, group: str, channel: str) -> None:
        """Remove ``channel``'s entry in ``group`` (nothing happens if there is none).

        For groups matching ``presence_events``, the group is sent ``presence.leave``.
        """
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        entries = self._presence.get(group)
        if entries is None or channel not in entries:
            return
        info = entries.pop(channel)
        if not entries:
            del self._presence[group]
        if self.announces_presence(group):
            await self.group_send(group, presence_event("presence.leave", group, channel, info))

    async def presence(self, group: str) -> dict[str, dict[str, Any]]:
        """``{channel: info}`` for every entry in ``group`` (copies)."""
        self.require_valid_group_name(group)
        return {
            channel: copy_message(info) for channel, info in self._presence.get(group, {}).items()
        }

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

    def _remove_from_groups(self, channel: str) -> None:
        """Remove ``channel`` from every group (upstream's private name and signature)."""
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
            queue.messages = _NO_MESSAGES
            if not queue.waiters:
                del self.channels[name]
        self.groups.clear()
        self._memberships.clear()
        self._streams.clear()
        self._presence.clear()
        self._message_deadlines.clear()
        self._membership_deadlines.clear()
        self._next_deadline = self._batch_deadline = _NEVER
        self._idle.clear()

    async def close(self) -> None:
        """Nothing to release: the layer holds no connections."""
