"""Errors of the Redis layers where channels_redis fails an ``assert``.

Each is the error this package raised before (a :exc:`TypeError` or :exc:`ValueError`,
with a message saying what to do), and also an :exc:`AssertionError`, so code written
against channels_redis that catches that keeps working.
"""

from __future__ import annotations

__all__ = ["ForeignChannelError", "InvalidPrefixError"]


class ForeignChannelError(ValueError, AssertionError):
    """``receive()`` on a process-local channel that another layer instance made.

    Its messages are read by that layer (in its process); this one would never see them.
    """


class InvalidPrefixError(TypeError, AssertionError):
    """The ``prefix`` setting is not a str."""
