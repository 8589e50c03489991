"""A consumer's side of durable groups: recovery replays and presence entries.

:meth:`AsyncConsumer.group_join <channels.consumer.AsyncConsumer.group_join>` with a
position must hand the consumer every message of the group after it exactly once, in
order, even while others keep sending. The join does, in this order:

1. ``group_add``: from now on every message sent to the group is delivered to us live;
2. ``group_history(after=...)``: every message sent before step 2 is in the history read.

A layer assigns a message's offset atomically with reading the group's members (or before
publishing it), so every message is live, in the history, or both. The overlap is found
by offset: a live message at or below the top the history read saw was replayed already
and is dropped. Replayed messages are queued and dispatched by their own listener, one
turn at a time like any other message, after the handler that joined returns; a live
message of the group that arrives while its replay is still queued waits behind it.

From then on the consumer follows the stream: handlers see each group's messages in
offset order, none twice, none skipped. Messages from concurrent senders (two processes
sending to one group) can arrive out of offset order; one that arrives past a missing
offset makes the consumer read the missing ones from the history and handle them first.
A client that keeps the last position it was sent can therefore always resume from it.
Epochs are unique per group's stream, so a message's ``__position__`` tells which
joined group it belongs to.

Presence entries a consumer makes are its own: refreshed by a heartbeat task in the
consumer's task group (for layers whose entries expire, every ``presence_timeout / 3``)
and removed when the consumer ends, whatever ended it.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, cast

import anyio

from .layers.durable import POSITION_KEY, StreamPosition
from .types import ChannelLayer, HistoryChannelLayer, Message, PresenceChannelLayer
from .utils import Dispatcher, SourceExhausted

__all__ = ["DurableState"]

logger = logging.getLogger("channels.consumer")

# How long leaving groups and presence may take when a consumer ends (shielded from the
# cancellation that may be ending it).
CLEANUP_TIMEOUT = 5.0


class _Followed:
    """A group's stream as one consumer follows it: the next offset to hand on."""

    __slots__ = ("group", "next", "unordered_upto")

    def __init__(self, group: str, next_offset: int, unordered_upto: int) -> None:
        self.group = group
        self.next = next_offset
        # Offsets up to this one are handed on as they come: a join without a replay
        # reads the top after becoming a member, so messages at or below it may still
        # arrive live, once each, and were never replayed.
        self.unordered_upto = unordered_upto


class DurableState:
    """What one consumer joined through ``group_join`` and ``presence_join``.

    Made on the first such call, so consumers that never use them pay nothing.
    """

    def __init__(
        self,
        layer: ChannelLayer,
        channel: str,
        dispatcher: Dispatcher[Message],
        dispatch: Callable[[Message], Awaitable[Any]],
    ) -> None:
        self.layer = layer
        self.channel = channel
        self.dispatcher = dispatcher
        self.dispatch = dispatch
        #: Groups joined with ``group_join`` (left when the consumer ends).
        self.joined: set[str] = set()
        #: ``{group: info}`` of our presence entries.
        self.present: dict[str, dict[str, Any] | None] = {}
        #: ``{epoch: followed}``: the streams of groups joined with ``group_join``.
        self.streams: dict[str, _Followed] = {}
        #: Messages waiting for their turn: replays, and live messages behind them.
        self.pending: deque[tuple[str, Message]] = deque()
        self.pending_by_group: dict[str, int] = {}
        self._draining = False
        self._heartbeat: anyio.CancelScope | None = None

    # -- replays and order -----------------------------------------------------------

    def follow(
        self, group: str, epoch: str, top: int, replay: list[Message] | None = None
    ) -> None:
        """Follow ``group``'s stream after ``top``, queueing ``replay`` (every message up
        to ``top`` the client missed) for dispatch first.

        Without a replay (a join with no position), live messages up to ``top`` are
        new to this consumer and handed on as they arrive.
        """
        for known, followed in list(self.streams.items()):
            if followed.group == group:
                del self.streams[known]
        self.streams[epoch] = _Followed(group, top + 1, -1 if replay is not None else top)
        replay = replay or []
        for message in replay:
            self._queue(group, message)

    def forget(self, group: str) -> None:
        """Drop what is followed or queued for ``group`` (it was left)."""
        self.joined.discard(group)
        for epoch, followed in list(self.streams.items()):
            if followed.group == group:
                del self.streams[epoch]
        if self.pending_by_group.pop(group, 0):
            self.pending = deque(item for item in self.pending if item[0] != group)

    async def dispatch_live(self, message: Message) -> None:
        """Dispatch a message from the layer, keeping each followed group's stream whole.

        A message at an offset already handled (it came in the replay too) is dropped. A
        message past the next offset means the ones between were sent concurrently (by
        another process, whose delivery is still on its way): they are read from the
        history and handled first, and dropped when they arrive live. A message whose
        group's replay is still queued waits behind it.
        """
        position = message.get(POSITION_KEY)
        if type(position) is dict:
            epoch = position.get("epoch")
            offset = position.get("offset")
            followed = self.streams.get(epoch) if type(epoch) is str else None
            if followed is not None and type(offset) is int and offset > followed.unordered_upto:
                assert isinstance(epoch, str)
                if offset < followed.next:
                    return  # handled already
                if offset > followed.next:
                    await self._fill_gap(followed, epoch)
                    if offset < followed.next:
                        return  # it came with the gap
                followed.next = offset + 1
                if self.pending_by_group.get(followed.group):
                    self._queue(followed.group, message)
                    return
        await self.dispatch(message)

    async def _fill_gap(self, followed: _Followed, epoch: str) -> None:
        group = followed.group
        history = await cast(HistoryChannelLayer, self.layer).group_history(
            group, after=StreamPosition(epoch, followed.next - 1)
        )
        top = history.position
        if history.recovered and top is not None and top.epoch == epoch:
            for message in history.messages:
                self._queue(group, message)
            followed.next = top.offset + 1
        # Otherwise the missing messages are gone from the history already (it is
        # shorter than the delay): the gap stays, as it would for the client.

    def _queue(self, group: str, message: Message) -> None:
        self.pending.append((group, message))
        self.pending_by_group[group] = self.pending_by_group.get(group, 0) + 1
        if not self._draining:
            self._draining = True
            self.dispatcher.add_source(self._next_pending, self._dispatch_pending)

    async def _next_pending(self) -> tuple[str, Message]:
        if not self.pending:
            self._draining = False
            raise SourceExhausted
        return self.pending.popleft()

    async def _dispatch_pending(self, item: tuple[str, Message]) -> None:
        group, message = item
        try:
            await self.dispatch(message)
        finally:
            # Counted down only now: until this message is handled, live messages of its
            # group still wait behind it.
            left = self.pending_by_group.get(group, 0) - 1
            if left > 0:
                self.pending_by_group[group] = left
            else:
                self.pending_by_group.pop(group, None)

    # -- presence --------------------------------------------------------------------

    def start_heartbeat(self) -> None:
        """Refresh our presence entries while we have any, if the layer's expire."""
        if self._heartbeat is not None or not getattr(self.layer, "presence_expires", True):
            return
        timeout = getattr(self.layer, "presence_timeout", None)
        if not isinstance(timeout, (int, float)) or timeout <= 0:
            return
        self._heartbeat = anyio.CancelScope()
        self.dispatcher.task_group.start_soon(self._beat, self._heartbeat, timeout / 3)

    async def _beat(self, scope: anyio.CancelScope, interval: float) -> None:
        with scope:
            while self.present:
                await anyio.sleep(interval)
                for group, info in list(self.present.items()):
                    try:
                        await self._presence_layer.presence_join(group, self.channel, info)
                    except Exception:
                        # The layer is down, say: the next beat tries again, and until
                        # then the entry lives out its presence_timeout.
                        logger.warning(
                            "Could not refresh presence of %r in %r",
                            self.channel,
                            group,
                            exc_info=True,
                        )
        self._heartbeat = None

    @property
    def _presence_layer(self) -> PresenceChannelLayer:
        return cast(PresenceChannelLayer, self.layer)

    # -- the end -----------------------------------------------------------------------

    async def clean_up(self) -> None:
        """Leave presence and groups, shielded and bounded: the consumer is ending."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        with anyio.move_on_after(CLEANUP_TIMEOUT, shield=True):
            for group in list(self.present):
                await self._quietly(self._presence_layer.presence_leave(group, self.channel))
                self.present.pop(group, None)
            for group in list(self.joined):
                await self._quietly(self.layer.group_discard(group, self.channel))
                self.joined.discard(group)

    async def _quietly(self, call: Awaitable[Any]) -> None:
        try:
            await call
        except Exception:
            logger.warning("Cleaning up %r failed", self.channel, exc_info=True)
