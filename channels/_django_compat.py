"""Every place channels reaches inside Django, in one place.

:mod:`channels._django_trio` teaches Django's async entry points about trio and
:mod:`channels.db` tidies connections; both use parts of Django that are not its public
API. Each such access is a function here and nowhere else, ``pyproject.toml`` caps
Django at the versions tested, and ``tests/test_dependency_adapters.py`` checks each on
the installed Django, failing with a message naming this module when an upgrade moves one.
What is relied on:

- ``django.utils.asyncio.get_running_loop``: the name ``async_unsafe``'s wrapper looks up
  in its module at each call (the ``SynchronousOnlyOperation`` guard);
- ``Signal.receivers``, ``Signal.sender_receivers_cache``,
  ``django.dispatch.dispatcher.NO_RECEIVERS``, ``Signal._live_receivers(sender)``
  returning ``(sync_receivers, async_receivers)``, and
  ``Signal._log_robust_failure(receiver, err)``;
- ``ConnectionHandler.all(initialized_only=True)``;
- ``StreamingHttpResponse._iterator`` (:mod:`channels.http`) and
  ``StaticFilesHandlerMixin._should_handle(path)`` (:mod:`channels.staticfiles`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from django.db import connections
from django.dispatch import Signal
from django.dispatch.dispatcher import NO_RECEIVERS

# Only annotations name the database wrapper: importing its module (and the backend machinery
# behind it) is left to the first database backend a project loads.
if TYPE_CHECKING:
    from django.contrib.staticfiles.handlers import StaticFilesHandlerMixin
    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.http import StreamingHttpResponse


def replace_async_unsafe_loop_lookup(lookup: Callable[[], object]) -> None:
    """Make the ``SynchronousOnlyOperation`` guard ask ``lookup`` for the running loop."""
    import django.utils.asyncio

    django.utils.asyncio.get_running_loop = lookup  # type: ignore[attr-defined]


def live_receivers(signal: Signal, sender: Any) -> tuple[list[Any], list[Any]]:
    """The sync and the async receivers ``signal`` would call for ``sender``."""
    if not signal.receivers or signal.sender_receivers_cache.get(sender) is NO_RECEIVERS:
        return [], []
    sync_receivers, async_receivers = signal._live_receivers(sender)
    return sync_receivers, async_receivers


def log_robust_failure(signal: Signal, receiver: Callable[..., Any], error: Exception) -> None:
    """Log a receiver's exception as ``send_robust`` does."""
    signal._log_robust_failure(receiver, error)  # type: ignore[attr-defined]


def initialized_connections() -> Sequence[BaseDatabaseWrapper]:
    """This thread's database connections that have been used, without opening others."""
    return connections.all(initialized_only=True)


def streaming_source(response: StreamingHttpResponse) -> Any:
    """The iterator a streaming response wraps, unwrapped (``_iterator``).

    ``streaming_content`` wraps it in a generator that, for async iterators, would close
    only itself when abandoned; :mod:`channels.http` closes the source itself.
    """
    return response._iterator  # type: ignore[attr-defined]


def static_handler_serves(handler: StaticFilesHandlerMixin, path: str) -> bool:
    """Whether Django's static files handler would serve ``path`` (``_should_handle``)."""
    return bool(handler._should_handle(path))
