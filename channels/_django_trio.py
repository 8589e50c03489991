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
    ``thread_sensitive``: thread-sensitive calls go where ours go (the request's own
    thread inside :func:`channels.concurrency.thread_sensitive_context`, else the single
    worker thread asgiref uses on asyncio), so the ORM sees the same connection as the
    rest of the request on both backends. An ``executor=`` given to asgiref is not used
    under trio (the call runs in an anyio worker thread).

``asgiref.sync.async_to_sync``
    Django adapts a sync middleware that wraps async code with asgiref's ``async_to_sync``,
    and sync user code (a ``SyncConsumer`` handler, a sync view) calls it too. In a thread
    that runs a sync call for a trio loop, asgiref would find no asyncio loop to go back
    to; there (and only there) the call goes through
    :func:`channels.concurrency.async_to_sync`, which runs the coroutine on the trio loop
    and sends thread-sensitive calls it makes back to the waiting thread, as asgiref does.
    Without :func:`install` (no ``channels`` in ``INSTALLED_APPS``) such a call raises
    :class:`~channels.exceptions.AsyncBridgeError` instead.

Signals: ``asend``, ``asend_robust``, and ``send``/``send_robust`` with async receivers
    Django gathers async receivers with ``asyncio.gather``. Under trio the same steps run
    in an anyio task group: for ``asend``, the sync receivers one after another in one
    thread-sensitive call alongside the async receivers, which run concurrently; for
    ``send`` from a thread serving trio, the sync receivers in that thread, then the async
    ones on the loop. Responses come in Django's order. One difference: when a receiver
    raises (non-robust sends), the receivers still running are cancelled
    (``asyncio.gather`` leaves them running unattended), and the receiver's exception
    propagates as itself. A sync ``send`` made on the trio loop thread itself is left to
    Django (asgiref then runs async receivers on a private asyncio loop in another thread
    while the trio loop waits, as from any thread without a loop).

Why patches, and why here: the alternative, asking users to avoid Django's async API under
trio, would leave "works on asyncio, 500 on trio" in every project. Each patch changes
behaviour only when no asyncio loop runs on the current thread and trio does, so asyncio
code paths run Django's and asgiref's code unchanged. This module is about Django rather
than threads and loops, so it lives apart from :mod:`channels.concurrency`, and uses it.
What it touches inside asgiref and Django goes through :mod:`channels._asgiref_compat`
and :mod:`channels._django_compat`.
"""

from __future__ import annotations

import asyncio  # interop: the guard and the routing check for a running asyncio loop first
import functools
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import sniffio
from django.dispatch import Signal

from . import _asgiref_compat as asgiref_compat
from . import _django_compat as django_compat
from . import concurrency  # used through the module: its names load on first use
from ._asgiref_compat import AsyncToSync as _AsgirefAsyncToSync
from ._asgiref_compat import SyncToAsync as _AsgirefSyncToAsync
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
    django_compat.replace_async_unsafe_loop_lookup(_running_loop_or_trio)


def _route_asgiref_sync_to_async() -> None:
    original: Any = _AsgirefSyncToAsync.__call__

    @functools.wraps(original)
    async def __call__(self: _AsgirefSyncToAsync[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not trio_runs_here():
            return await original(self, *args, **kwargs)
        func, thread_sensitive = asgiref_compat.sync_to_async_call(self)
        return await concurrency.run_sync(func, *args, thread_sensitive=thread_sensitive, **kwargs)

    _AsgirefSyncToAsync.__call__ = __call__  # type: ignore[method-assign]


def _route_asgiref_async_to_sync() -> None:
    original: Any = _AsgirefAsyncToSync.__call__

    @functools.wraps(original)
    def __call__(self: _AsgirefAsyncToSync[..., Any], *args: Any, **kwargs: Any) -> Any:
        awaitable, force_new_loop = asgiref_compat.async_to_sync_call(self)
        if force_new_loop or not concurrency.serves_trio_loop():
            return original(self, *args, **kwargs)
        return concurrency.async_to_sync(awaitable)(*args, **kwargs)

    _AsgirefAsyncToSync.__call__ = __call__  # type: ignore[method-assign]


def _send_signals_without_asyncio() -> None:
    original_send = Signal.send
    original_send_robust = Signal.send_robust
    original_asend = Signal.asend
    original_asend_robust = Signal.asend_robust

    @functools.wraps(original_send)
    def send(self: Signal, sender: Any, **named: Any) -> list[tuple[Any, Any]]:
        if not concurrency.serves_trio_loop():
            return original_send(self, sender, **named)
        return _send_from_thread(self, sender, named, robust=False)

    @functools.wraps(original_send_robust)
    def send_robust(self: Signal, sender: Any, **named: Any) -> list[tuple[Any, Any]]:
        if not concurrency.serves_trio_loop():
            return original_send_robust(self, sender, **named)
        return _send_from_thread(self, sender, named, robust=True)

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

    Signal.send = send  # type: ignore[method-assign]
    Signal.send_robust = send_robust  # type: ignore[method-assign]
    Signal.asend = asend  # type: ignore[method-assign]
    Signal.asend_robust = asend_robust  # type: ignore[method-assign]


def _call(
    signal: Signal, receiver: Callable[..., Any], sender: Any, named: dict[str, Any], robust: bool
) -> Any:
    try:
        return receiver(signal=signal, sender=sender, **named)
    except Exception as exc:
        if not robust:
            raise
        django_compat.log_robust_failure(signal, receiver, exc)
        return exc


def _send_from_thread(
    signal: Signal, sender: Any, named: dict[str, Any], *, robust: bool
) -> list[tuple[Any, Any]]:
    """``send`` in a thread serving a trio loop: async receivers run on that loop."""
    sync_receivers, async_receivers = django_compat.live_receivers(signal, sender)
    responses = [(r, _call(signal, r, sender, named, robust)) for r in sync_receivers]
    if async_receivers:
        send_async = concurrency.async_to_sync(_send_to_async_receivers)
        responses += send_async(signal, async_receivers, sender, named, robust)
    return responses


async def _send_in_task_group(
    signal: Signal, sender: Any, named: dict[str, Any], *, robust: bool
) -> list[tuple[Any, Any]]:
    """``asend`` on trio: sync receivers in one thread-sensitive call, alongside the
    async receivers."""
    sync_receivers, async_receivers = django_compat.live_receivers(signal, sender)
    sync_responses: list[tuple[Any, Any]] = []

    def send_sync() -> list[tuple[Any, Any]]:
        return [(r, _call(signal, r, sender, named, robust)) for r in sync_receivers]

    async def send_sync_in_thread() -> None:
        sync_responses.extend(await concurrency.run_sync(send_sync))

    with unwrap_exception_groups():
        async with anyio.create_task_group() as group:
            if sync_receivers:
                group.start_soon(send_sync_in_thread)
            async_responses = await _send_to_async_receivers(
                signal, async_receivers, sender, named, robust
            )
    return sync_responses + async_responses


async def _send_to_async_receivers(
    signal: Signal,
    receivers: list[Callable[..., Coroutine[Any, Any, Any]]],
    sender: Any,
    named: dict[str, Any],
    robust: bool,
) -> list[tuple[Any, Any]]:
    """Run ``receivers`` concurrently; their responses in their order."""
    responses: list[Any] = [None] * len(receivers)

    async def call(index: int, receiver: Callable[..., Coroutine[Any, Any, Any]]) -> None:
        try:
            responses[index] = await receiver(signal=signal, sender=sender, **named)
        except Exception as exc:
            if not robust:
                raise
            django_compat.log_robust_failure(signal, receiver, exc)
            responses[index] = exc

    with unwrap_exception_groups():
        async with anyio.create_task_group() as group:
            for index, receiver in enumerate(receivers):
                group.start_soon(call, index, receiver)
    return list(zip(receivers, responses, strict=True))
