"""Reaching Django's ORM from async code.

Django keeps one database connection per thread and never notices when a long-lived
process lets one go stale, so every ORM call from a consumer goes through
:func:`database_sync_to_async`: it runs on the thread-sensitive worker thread and closes
connections that are broken or past ``CONN_MAX_AGE`` before and after the call, as Django's
request cycle does around each request.
"""

from __future__ import annotations

from typing import ParamSpec, TypeVar

from django.db import close_old_connections

from .concurrency import SyncToAsync, run_sync

__all__ = ["DatabaseSyncToAsync", "aclose_old_connections", "database_sync_to_async"]

_P = ParamSpec("_P")
_R = TypeVar("_R")


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
    """Close stale connections of the thread where thread-sensitive ORM calls run."""
    await run_sync(close_old_connections)
