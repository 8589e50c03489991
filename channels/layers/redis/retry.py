"""How every Redis layer waits for a server that is away: one backoff, one bound.

A call that needs the server (a send, a group call, a flush) retries for
``reconnect_timeout`` seconds counted from its first failure, then raises
:exc:`ConnectionError`; a reader (a pending ``receive``) waits without bound, since it has
nothing to give up. Between attempts it sleeps 20 ms, doubling up to one second, so a
server that comes back is noticed within a second and one that stays away is not
hammered. The sleeping happens in the task that made the call: nothing runs in the
background.
"""

from __future__ import annotations

import logging

import anyio

__all__ = ["FIRST_DELAY", "MAX_DELAY", "Backoff"]

logger: logging.Logger = logging.getLogger("channels.layers.redis")

FIRST_DELAY: float = 0.02
MAX_DELAY: float = 1.0


class Backoff:
    """The waits between one task's attempts to reach a server.

    ``timeout`` is how long after the first failure :meth:`wait` gives up (``None``:
    never). :meth:`reset` after a success starts the next failure's waits small again.
    """

    def __init__(self, timeout: float | None = None) -> None:
        self.timeout: float | None = timeout
        self.delay: float = FIRST_DELAY
        self._deadline: float | None = None

    def reset(self) -> None:
        self.delay = FIRST_DELAY
        self._deadline = None

    async def wait(self, where: str, exc: BaseException) -> None:
        """Sleep before the next attempt, after ``exc`` happened talking to ``where``.

        :raises ConnectionError: (from ``exc``) once the next attempt would start after
            the deadline.
        """
        now = anyio.current_time()
        if self.timeout is not None:
            if self._deadline is None:
                self._deadline = now + self.timeout
            if now + self.delay > self._deadline:
                raise ConnectionError(f"Redis at {where} is unreachable: {exc}") from exc
        logger.info("Redis at %s: %s; retrying in %.2f s", where, exc, self.delay)
        await anyio.sleep(self.delay)
        self.delay = min(self.delay * 2, MAX_DELAY)
