"""Reaching Django's ORM from async code.

Django keeps one database connection per thread and never notices when a long-lived
process lets one go stale, so every ORM call from a consumer goes through
:func:`database_sync_to_async`: it runs on the thread-sensitive worker thread and closes
connections that are broken or past ``CONN_MAX_AGE`` before and after the call, as Django's
request cycle does around each request.
"""

from __future__ import annotations

import threading
from contextvars import ContextVar
from typing import Any, ParamSpec, TypeVar

from django.db.backends.signals import connection_created

from ._django_compat import initialized_connections
from .concurrency import SyncToAsync

__all__ = [
    "DatabaseSyncToAsync",
    "aclose_old_connections",
    "close_old_connections",
    "database_sync_to_async",
]

_P = ParamSpec("_P")
_R = TypeVar("_R")


# Threads that may hold an open database connection. Consumers close stale connections
# before every handler; when no thread holds one there is nothing to close, and the trip
# to the worker thread (which would cost more than the handler) is skipped. Connections
# opened before this module was imported are unknown to it, so the first check always
# makes the trip and records what it finds.
_threads_with_connections: set[int] = set()
_first_check_done = False


# Set by the testing communicators for the application they drive: a test database's
# connection must survive the application's handlers, as upstream's tests arrange.
keep_connections: ContextVar[bool] = ContextVar("channels_keep_connections", default=False)


def _note_connection(sender: object, **kwargs: Any) -> None:
    _threads_with_connections.add(threading.get_ident())


connection_created.connect(_note_connection, dispatch_uid="channels.db.note_connection")


def close_old_connections() -> None:
    """Close this thread's connections that are broken or past ``CONN_MAX_AGE``.

    Django's own ``close_old_connections``, except that a connection inside an atomic
    block is left alone: the code running here is inside that transaction (a ``TestCase``
    test, or sync code that called into async code from within ``atomic()``), and closing
    the connection would break it (the next query fails with "Cannot operate on a closed
    database"). Upstream Channels closes it regardless.
    """
    if keep_connections.get():
        return
    still_open = False
    for connection in initialized_connections():
        if not connection.in_atomic_block:
            connection.close_if_unusable_or_obsolete()
        still_open = still_open or connection.connection is not None
    if still_open:
        _threads_with_connections.add(threading.get_ident())
    else:
        _threads_with_connections.discard(threading.get_ident())


class DatabaseSyncToAsync(SyncToAsync[_P, _R]):
    """:class:`~channels.concurrency.SyncToAsync` that tidies DB connections around calls."""

    def call_in_thread(self, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        close_old_connections()
        try:
            return self.func(*args, **kwargs)
        finally:
            close_old_connections()


database_sync_to_async = DatabaseSyncToAsync
"""Decorator or wrapper: ``await database_sync_to_async(func)(...)``.

Spelled in lower case, like upstream, because it is used as a function.
"""


async def aclose_old_connections() -> None:
    """Close stale connections of the thread where thread-sensitive ORM calls run.

    That thread is also where Django's async ORM methods (``aget``, ``acount``...) run
    their queries on asyncio, so their connections are tidied too.
    """
    global _first_check_done
    if keep_connections.get():
        return
    if _threads_with_connections or not _first_check_done:
        from ._threads import run_sync  # not at import: see channels.concurrency

        await run_sync(close_old_connections)
        _first_check_done = True


def _close_connections_outside_transactions() -> None:
    for connection in initialized_connections():
        if not connection.in_atomic_block:
            connection.close()
    _threads_with_connections.discard(threading.get_ident())


async def release_kept_connections() -> None:
    """Close the worker thread's connections that :data:`keep_connections` kept open.

    The testing communicators call this when their application ends, so a connection a
    test's application opened does not outlive the test (where the next test, perhaps
    one not allowed to touch the database, would trip over it). Connections inside a
    transaction belong to the test and are left alone. ``close()`` is used rather than
    the health check, which would have to reach the database.
    """
    if _threads_with_connections:
        from ._threads import run_sync

        await run_sync(_close_connections_outside_transactions)
