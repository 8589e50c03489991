"""Django's async entry points, made to work under trio.

Django and asgiref find "the event loop" by asking asyncio. Under trio that question has
no answer, so three things go wrong, and :func:`install` mends each at its narrowest point:

The ``SynchronousOnlyOperation`` guard
    ``django.utils.asyncio.async_unsafe`` asks ``asyncio.get_running_loop()`` whether the
    current thread runs an event loop. Under trio it says no, so a blocking ORM call on the
    event-loop thread runs and stalls every connection. The guard is given a lookup that
    also recognises a trio run on the current thread (trio marks it in
    ``sniffio.thread_local``, which is per thread, so worker threads are not mistaken for
    the loop). The asyncio answer and ``DJANGO_ALLOW_ASYNC_UNSAFE`` are untouched.

``asgiref.sync.sync_to_async``
    Django's async ORM methods (``aget``, ``acount``, ``asave``...), its session and auth
    helpers (``session.aget``, ``aget_user``, ``alogin``), its middleware adapters and
    user code all call asgiref's ``SyncToAsync``, which needs an asyncio loop. Under trio
    (and only there) a call is routed to :func:`channels.concurrency.run_sync`, keeping
    ``thread_sensitive``: thread-sensitive calls run on the same single worker thread that
    asgiref uses on asyncio, so the ORM sees one connection per process on both backends.
    An ``executor=`` given to asgiref is not used under trio (the call runs in an anyio
    worker thread), and ``ThreadSensitiveContext`` does not pick a thread there.

``asgiref.sync.async_to_sync``
    Django adapts a sync middleware that wraps async code with asgiref's ``async_to_sync``,
    and sync user code (a ``SyncConsumer`` handler, a sync view) calls it too. In a thread
    that runs a sync call for a trio loop, asgiref would find no asyncio loop to go back
    to; there (and only there) the call goes through
    :func:`channels.concurrency.async_to_sync`, which runs the coroutine on the trio loop
    and sends thread-sensitive calls it makes back to the waiting thread, as asgiref does.
    Without :func:`install` (no ``channels`` in ``INSTALLED_APPS``) such a call raises
    :class:`~channels.exceptions.AsyncBridgeError` instead.

``Signal.asend`` / ``Signal.asend_robust``
    They gather receivers with ``asyncio.gather``. Under trio they run the same steps in an
    anyio task group: the sync receivers one after another in one thread-sensitive call,
    the async receivers concurrently, responses in Django's order. One difference: when a
    receiver raises, ``asend`` cancels the receivers still running (``asyncio.gather``
    leaves them running unattended); the receiver's exception propagates as itself.

A *sync* ``Signal.send`` with *async* receivers, from a thread serving a trio loop, goes
through asgiref's ``async_to_sync`` (routed as above) into ``asyncio.gather``: it fails
there with asyncio's "no running event loop". Django's own request signals have sync
receivers only, and :mod:`channels.http` sends them with ``send`` from the thread-sensitive
worker; connect async receivers to them only if you serve on asyncio.

Why patches, and why here: the alternative, asking users to avoid Django's async API under
trio, would leave "works on asyncio, 500 on trio" in every project. Each patch changes
behaviour only when no asyncio loop runs on the current thread and trio does, so asyncio
code paths run Django's and asgiref's code unchanged. This module is about Django rather
than threads and loops, so it lives apart from :mod:`channels.concurrency`, and uses it.
"""

from __future__ import annotations

import asyncio  # interop: the guard and the routing check for a running asyncio loop first
import functools
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import sniffio
from asgiref.sync import AsyncToSync as _AsgirefAsyncToSync
from asgiref.sync import SyncToAsync as _AsgirefSyncToAsync
from django.dispatch import Signal
from django.dispatch.dispatcher import NO_RECEIVERS

from .concurrency import async_to_sync, run_sync, serves_trio_loop
from .utils import unwrap_exception_groups

__all__ = ["install", "trio_runs_here"]

_lock = threading.Lock()
_installed = False


def trio_runs_here() -> bool:
    """Whether this thread is running a trio event loop (and no asyncio loop).

    Not ``sniffio.current_async_library()``: that also consults a context variable, which
    worker threads inherit from the task that started them.
    """
    return asyncio._get_running_loop() is None and sniffio.thread_local.name == "trio"


def install() -> None:
    """Make Django's async entry points work under trio; safe to call any number of times."""
    global _installed
    with _lock:
        if _installed:
            return
        _guard_detects_trio()
        _route_asgiref_sync_to_async()
        _route_asgiref_async_to_sync()
        _send_signals_without_asyncio()
        _installed = True


class _TrioLoop:
    """What the guard's loop lookup returns for a trio run; Django only checks it exists."""

    def __repr__(self) -> str:
        return "<trio event loop>"


_TRIO_LOOP = _TrioLoop()


def _running_loop_or_trio() -> object:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        if sniffio.thread_local.name == "trio":
            return _TRIO_LOOP
        raise


def _guard_detects_trio() -> None:
    import django.utils.asyncio

    # async_unsafe's wrapper looks this name up in its module at each call.
    django.utils.asyncio.get_running_loop = _running_loop_or_trio  # type: ignore[attr-defined]


def _route_asgiref_sync_to_async() -> None:
    original: Any = _AsgirefSyncToAsync.__call__

    @functools.wraps(original)
    async def __call__(self: _AsgirefSyncToAsync[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not trio_runs_here():
            return await original(self, *args, **kwargs)
        func: Callable[..., Any] = self.func
        if self.context is not None:
            func = functools.partial(self.context.run, func)
        return await run_sync(func, *args, thread_sensitive=self._thread_sensitive, **kwargs)

    _AsgirefSyncToAsync.__call__ = __call__  # type: ignore[method-assign]


def _route_asgiref_async_to_sync() -> None:
    original: Any = _AsgirefAsyncToSync.__call__

    @functools.wraps(original)
    def __call__(self: _AsgirefAsyncToSync[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self.force_new_loop or not serves_trio_loop():
            return original(self, *args, **kwargs)
        return async_to_sync(self.awaitable)(*args, **kwargs)

    _AsgirefAsyncToSync.__call__ = __call__  # type: ignore[method-assign]


def _send_signals_without_asyncio() -> None:
    original_asend = Signal.asend
    original_asend_robust = Signal.asend_robust

    @functools.wraps(original_asend)
    async def asend(self: Signal, sender: Any, **named: Any) -> list[tuple[Any, Any]]:
        if not trio_runs_here():
            return await original_asend(self, sender, **named)
        return await _send_in_task_group(self, sender, named, robust=False)

    @functools.wraps(original_asend_robust)
    async def asend_robust(self: Signal, sender: Any, **named: Any) -> list[tuple[Any, Any]]:
        if not trio_runs_here():
            return await original_asend_robust(self, sender, **named)
        return await _send_in_task_group(self, sender, named, robust=True)

    Signal.asend = asend  # type: ignore[method-assign]
    Signal.asend_robust = asend_robust  # type: ignore[method-assign]


async def _send_in_task_group(
    signal: Signal, sender: Any, named: dict[str, Any], *, robust: bool
) -> list[tuple[Any, Any]]:
    if not signal.receivers or signal.sender_receivers_cache.get(sender) is NO_RECEIVERS:
        return []
    sync_receivers, async_receivers = signal._live_receivers(sender)

    def call(receiver: Callable[..., Any]) -> Any:
        try:
            return receiver(signal=signal, sender=sender, **named)
        except Exception as exc:
            if not robust:
                raise
            signal._log_robust_failure(receiver, exc)  # type: ignore[attr-defined]
            return exc

    def send_sync() -> list[tuple[Any, Any]]:
        return [(receiver, call(receiver)) for receiver in sync_receivers]

    sync_responses: list[tuple[Any, Any]] = []
    async_responses: list[Any] = [None] * len(async_receivers)

    async def send_sync_in_thread() -> None:
        sync_responses.extend(await run_sync(send_sync))

    async def send_async(index: int, receiver: Callable[..., Coroutine[Any, Any, Any]]) -> None:
        try:
            async_responses[index] = await receiver(signal=signal, sender=sender, **named)
        except Exception as exc:
            if not robust:
                raise
            signal._log_robust_failure(receiver, exc)  # type: ignore[attr-defined]
            async_responses[index] = exc

    with unwrap_exception_groups():
        async with anyio.create_task_group() as group:
            if sync_receivers:
                group.start_soon(send_sync_in_thread)
            for index, receiver in enumerate(async_receivers):
                group.start_soon(send_async, index, receiver)
    return sync_responses + list(zip(async_receivers, async_responses, strict=True))
