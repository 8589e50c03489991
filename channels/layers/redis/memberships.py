"""The group memberships a core layer added, kept so a restarted Redis can get them back.

A Redis without persistence forgets every group when it restarts; the consumers' sockets
stay open and nothing fails, yet no group message reaches them again. Each process knows
which of its channels joined which group, and which of those channels are still alive
(somebody receives on them), so when the layer's next connection to a shard finds a new
server there (its ``run_id`` changed) it re-adds those memberships with their original
join times. See ``RedisChannelLayer._on_connect`` for who does that work.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

__all__ = ["Memberships"]


class Memberships:
    """Which group each channel joined (and when), and which channels are alive.

    A channel is alive while a ``receive`` on it is pending, and for ``live_for`` seconds
    after one ended or after it joined a group: a consumer between two messages is alive, a
    channel whose consumer went away without leaving its groups stops being restored (and
    is forgotten) once ``live_for`` has passed.
    """

    def __init__(self, live_for: float) -> None:
        self.live_for = live_for
        #: channel -> {group: join time (Unix seconds, the score in Redis)}
        self.groups_of: dict[str, dict[str, float]] = {}
        #: channel -> receives pending on it
        self.receiving: dict[str, int] = {}
        #: channel (with memberships) -> when it was last seen alive (monotonic)
        self._seen: dict[str, float] = {}
        self._pruned = time.monotonic()

    def added(self, group: str, channel: str, joined: float) -> None:
        self.groups_of.setdefault(channel, {})[group] = joined
        now = time.monotonic()
        self._seen[channel] = now
        if now - self._pruned >= self.live_for:
            self._prune(now)

    def discarded(self, group: str, channel: str) -> None:
        groups = self.groups_of.get(channel)
        if groups is not None:
            groups.pop(group, None)
            if not groups:
                del self.groups_of[channel]
                self._seen.pop(channel, None)

    def receive_started(self, channel: str) -> None:
        self.receiving[channel] = self.receiving.get(channel, 0) + 1

    def receive_ended(self, channel: str) -> None:
        count = self.receiving[channel] - 1
        if count:
            self.receiving[channel] = count
        else:
            del self.receiving[channel]
        if channel in self.groups_of:
            self._seen[channel] = time.monotonic()

    def alive(self, channel: str, now: float) -> bool:
        return channel in self.receiving or now - self._seen.get(channel, -self.live_for) < (
            self.live_for
        )

    def live(self) -> Iterator[tuple[str, str, float]]:
        """``(group, channel, joined)`` for every membership of a live channel."""
        now = time.monotonic()
        self._prune(now)
        for channel, groups in self.groups_of.items():
            for group, joined in groups.items():
                yield group, channel, joined

    def _prune(self, now: float) -> None:
        self._pruned = now
        for channel in [name for name in self.groups_of if not self.alive(name, now)]:
            del self.groups_of[channel]
            self._seen.pop(channel, None)
