"""Every place channels reaches inside asgiref, and the stand-ins it puts there.

channels and Django's async API must agree on threads: Django's async ORM methods run on
asgiref's thread-sensitive worker, so ours do too; Django's handler gives each request a
thread through asgiref's ``ThreadSensitiveContext``, and so does ours; asgiref's
``async_to_sync`` finds its event loop in thread-locals that asgiref's ``SyncToAsync``
sets, so our worker threads set them as well. None of that is asgiref's public API.

So each such access is a function here and nowhere else, ``pyproject.toml`` caps asgiref
at the versions tested, and ``tests/test_dependency_adapters.py`` checks every attribute
used below on the installed asgiref, failing with a message naming this module when an
upgrade moves one. What is relied on, in asgiref.sync:

- ``_restore_context(context)``: adopts a context's values, re-homing ``Local`` storage;
- ``SyncToAsync.threadlocal``: ``main_event_loop``, ``main_event_loop_pid``,
  ``task_context``, read by ``AsyncToSync.__call__`` to find the loop;
- ``SyncToAsync.single_thread_executor``: the one thread-sensitive worker;
- ``SyncToAsync.thread_sensitive_context`` (a ``ContextVar``) and
  ``SyncToAsync.context_to_thread_executor``: per-request threads;
- ``AsyncToSync.executors.current``: the sync thread waiting in ``async_to_sync``;
- instance attributes ``SyncToAsync.func``, ``.context``, ``._thread_sensitive`` and
  ``AsyncToSync.awaitable``, ``.force_new_loop`` (read by :mod:`channels._django_trio`).
"""

from __future__ import annotations

import asyncio  # interop: asgiref's bridges hand coroutines to a running asyncio loop
import contextvars
import functools
import inspect
import os
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Executor, Future
from typing import Any, Protocol, TypeVar

import sniffio
from asgiref.sync import AsyncToSync as AsyncToSync
from asgiref.sync import SyncToAsync as SyncToAsync
from asgiref.sync import ThreadSensitiveContext
from asgiref.sync import _restore_context as _asgiref_restore_context
from asgiref.sync import markcoroutinefunction as markcoroutinefunction

from .exceptions import AsyncBridgeError

_R = TypeVar("_R")

LoopState = tuple[object, object, object]
"""What :func:`point_at` replaced, for :func:`restore`."""


# -- context -------------------------------------------------------------------------------


def adopt(context: contextvars.Context) -> None:
    """Take on the values of ``context`` that differ from the current context's.

    asgiref's own helper, used by its bridges for the same purpose: it also moves asgiref
    ``Local`` storage (which Django uses, e.g. for the active translation) to the current
    thread, where a plain copy would leave it invisible.

    Which async library runs here is not taken on: ``context`` comes from another
    thread's event loop, and sniffio's variable from it would make this thread look like
    it runs that loop (a later ``anyio.run()`` there then fails with "Already running").
    """
    library = sniffio.current_async_library_cvar.get()
    _asgiref_restore_context(context)
    if sniffio.current_async_library_cvar.get() != library:
        sniffio.current_async_library_cvar.set(library)


# -- the loop asgiref's async_to_sync goes back to ---------------------------------------


def point_at(loop: object) -> LoopState:
    """Make asgiref's ``async_to_sync`` in this thread go to ``loop``."""
    local = SyncToAsync.threadlocal
    saved = (
        getattr(local, "main_event_loop", None),
        getattr(local, "main_event_loop_pid", None),
        getattr(local, "task_context", None),
    )
    local.main_event_loop = loop
    local.main_event_loop_pid = os.getpid()
    local.task_context = None
    return saved


def restore(saved: LoopState) -> None:
    local = SyncToAsync.threadlocal
    local.main_event_loop, local.main_event_loop_pid, local.task_context = saved


def main_event_loop() -> object:
    """The loop asgiref's ``async_to_sync`` would use from this thread, if any."""
    return getattr(SyncToAsync.threadlocal, "main_event_loop", None)


def runs_under_asgiref_loop() -> bool:
    """Whether this thread runs a call for an asyncio loop that asgiref's bridge knows."""
    loop = main_event_loop()
    return isinstance(loop, asyncio.AbstractEventLoop) and loop.is_running()


def loop_for(library: str) -> object:
    """What our worker threads point asgiref at: the asyncio loop, or the trio stand-in."""
    return asyncio.get_running_loop() if library == "asyncio" else ON_TRIO


def call_through_asgiref(invoke: Callable[[], Awaitable[_R]]) -> _R:
    """Run ``invoke()`` through asgiref's ``async_to_sync``, as the thread expects."""
    return AsyncToSync(invoke)()


async def run_through_asgiref(func: Callable[[], _R]) -> _R:
    """Run ``func`` through asgiref's thread-sensitive ``sync_to_async``."""
    return await SyncToAsync(func, thread_sensitive=True)()


# -- the sync thread waiting in async_to_sync ----------------------------------------------


def waiting_thread() -> object:
    """asgiref's record of the innermost sync thread blocked in its ``async_to_sync``."""
    return getattr(AsyncToSync.executors, "current", None)


def set_waiting_thread(executor: object) -> None:
    AsyncToSync.executors.current = executor


class Inbox(Protocol):
    def submit(self, job: Callable[[], None]) -> bool: ...


class InboxExecutor(Executor):
    """Lets asgiref's thread-sensitive calls reach a thread blocked in our async_to_sync.

    Django's async ORM methods run their queries through asgiref's ``sync_to_async``.
    Inside a coroutine that a sync thread awaits through us, asgiref must send them to that
    thread, like ours, or they would queue behind it forever. asgiref looks for such a
    thread in ``AsyncToSync.executors.current``; this is what we put there.
    """

    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox

    def submit(self, fn: Callable[..., _R], /, *args: Any, **kwargs: Any) -> Future[_R]:
        future: Future[_R] = Future()

        def job() -> None:
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args, **kwargs))
                except BaseException as exc:
                    future.set_exception(exc)

        if not self.inbox.submit(job):
            return single_thread_executor().submit(fn, *args, **kwargs)
        return future


# -- where thread-sensitive calls run -----------------------------------------------------


def single_thread_executor() -> Executor:
    """asgiref's one thread-sensitive worker, shared with Django's async ORM."""
    return SyncToAsync.single_thread_executor


def request_context() -> object | None:
    """The ``ThreadSensitiveContext`` this code runs in, if any."""
    return SyncToAsync.thread_sensitive_context.get(None)


def request_executor(context: object, lend: Callable[[], Executor]) -> Executor:
    """The executor of ``context`` (as asgiref's ``sync_to_async`` finds it); lent once."""
    executors: Any = SyncToAsync.context_to_thread_executor
    executor: Executor | None = executors.get(context)
    if executor is None:
        executor = executors[context] = lend()
    return executor


def enter_request_context() -> tuple[object, contextvars.Token[Any]]:
    marker = ThreadSensitiveContext()
    return marker, SyncToAsync.thread_sensitive_context.set(marker)


def leave_request_context(marker: object, token: contextvars.Token[Any]) -> Executor | None:
    """End the context; returns the executor it was lent, if it borrowed one."""
    SyncToAsync.thread_sensitive_context.reset(token)
    executors: Any = SyncToAsync.context_to_thread_executor
    executor: Executor | None = executors.pop(marker, None)
    return executor


# -- what channels._django_trio reads from asgiref's bridge objects -----------------------


def sync_to_async_call(bridge: SyncToAsync[..., Any]) -> tuple[Callable[..., Any], bool]:
    """The function an asgiref ``SyncToAsync`` calls (in its context) and its
    ``thread_sensitive``."""
    func: Callable[..., Any] = bridge.func
    context: contextvars.Context | None = bridge.context
    if context is not None:
        func = functools.partial(context.run, func)
    return func, bool(bridge._thread_sensitive)


def async_to_sync_call(bridge: AsyncToSync[..., Any]) -> tuple[Callable[..., Any], bool]:
    """The coroutine function an asgiref ``AsyncToSync`` calls, and ``force_new_loop``."""
    return bridge.awaitable, bool(bridge.force_new_loop)


# -- the stand-in for an asyncio loop under trio ------------------------------------------


class _AsgirefOnTrio:
    """Sits where asgiref looks for the main asyncio loop while a call runs under trio.

    asgiref would otherwise start a private asyncio loop and run the coroutine there, away
    from the trio loop that owns the consumer's state. Refusing, with directions, is better.
    """

    def is_running(self) -> bool:
        return True

    def create_task(self, coro: Coroutine[Any, Any, Any]) -> None:  # pragma: no cover
        raise AssertionError("never called: call_soon_threadsafe refuses first")

    def call_soon_threadsafe(self, callback: object, *args: object) -> None:
        for arg in args:
            if inspect.iscoroutine(arg):
                _discard_coroutine(arg)
        raise AsyncBridgeError(
            "asgiref.sync.async_to_sync() cannot reach a trio event loop. In code that "
            "runs under trio, use channels.concurrency.async_to_sync() instead: it works "
            "on asyncio and on trio."
        )


def _discard_coroutine(coro: Coroutine[Any, Any, Any]) -> None:
    """Close a never-started coroutine and the coroutines it was given as arguments."""
    frame = getattr(coro, "cr_frame", None)
    if frame is not None:
        for value in frame.f_locals.values():
            if inspect.iscoroutine(value):
                value.close()
    coro.close()


ON_TRIO = _AsgirefOnTrio()
