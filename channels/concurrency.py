"""Moving calls between the event loop and threads, on asyncio and trio.

This is the one module that knows about threads and event loops. Everything else calls
:func:`sync_to_async` / :class:`SyncToAsync` and :func:`async_to_sync` and stays
backend-neutral.

Where sync code runs
    ``thread_sensitive=True`` (the default, and what Django's ORM needs) runs the call on
    one process-wide worker thread, asgiref's, so every thread-sensitive call, ours and
    Django's own, sees the same thread-local database connection. Three exceptions keep
    Django's rules: inside a :func:`thread_sensitive_context` block (one per HTTP
    request), they run on that block's own thread; while a thread-sensitive (or loop-less)
    sync thread is blocked in :func:`async_to_sync`, thread-sensitive calls made by the
    coroutine it waits for run *on that thread*, ours and asgiref's alike (anywhere else
    would deadlock, and a Django ``TestCase`` transaction lives there); and under
    asgiref's own ``async_to_sync`` (Django's async test methods) they go where asgiref
    sends them.
    ``thread_sensitive=False`` runs the call on one of 40 threads fed from one FIFO
    queue, as asgiref's executor does. Context variables, asgiref ``Local`` data
    included, travel with every call in both directions.

Order
    Calls start in the order they are made, and resume in the order they returned: calls
    started one after another (100 tasks each serialising a notification, say) resume in
    that order on asyncio and trio, while a slow call holds up no call that returned
    before it. (Threads report back to the loop in either order, and trio runs the tasks
    it wakes together in either order; a per-loop line puts them back in return order.)

Cancellation
    A sync call cannot be interrupted. The awaiting task is shielded until the call
    returns and is then cancelled at once; nothing the call started outlives the task that
    awaited it. That holds for asyncio's plain ``Task.cancel()`` too (test runners and
    asgiref's ``ApplicationCommunicator`` end applications so), which gets through
    shields: the task keeps waiting for the call and raises the cancellation after it.
    Coroutines that the sync call runs through :func:`async_to_sync` are not
    shielded: once the awaiting task is cancelled they are cancelled too, and the
    cancellation exception is raised in the sync thread, so the sync code unwinds at its
    next trip to the event loop.

Where each part lives
    This module is the public face; each concern has a private module a newcomer can
    read alone: :mod:`channels._threads` (which thread runs a call, :func:`run_sync`),
    :mod:`channels._handoff` (what passes between a thread and its task),
    :mod:`channels._async_to_sync`, :mod:`channels._iterate` (:func:`iterate_in_thread`),
    and :mod:`channels._asgiref_compat` (everything we touch inside asgiref).

Interop points that need asyncio
    These live in :mod:`channels._asgiref_compat` and :mod:`channels._async_to_sync`.
    asgiref's ``async_to_sync`` finds the event loop through a thread-local that its own
    ``SyncToAsync`` sets. Our threads set it too, so existing code calling
    ``asgiref.sync.async_to_sync(...)`` from a sync consumer reaches the running asyncio
    loop. Under trio it is pointed at a stand-in that refuses with
    :class:`~channels.exceptions.AsyncBridgeError`, naming :func:`async_to_sync`.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, Self, TypeVar, overload

from ._asgiref_compat import markcoroutinefunction

if TYPE_CHECKING:
    from ._async_to_sync import async_to_sync as async_to_sync
    from ._async_to_sync import serves_trio_loop as serves_trio_loop
    from ._iterate import iterate_in_thread as iterate_in_thread
    from ._threads import run_sync as run_sync
    from ._threads import thread_sensitive_context as thread_sensitive_context

__all__ = [
    "SyncToAsync",
    "async_to_sync",
    "iterate_in_thread",
    "run_sync",
    "sync_to_async",
    "thread_sensitive_context",
]

# The names this module serves from its private modules, each loaded on first use
# (:func:`__getattr__`), so that importing Channels does not load what a process may never
# call: an ASGI server of async consumers never runs ``async_to_sync`` (nor loads
# ``anyio.from_thread``) or ``iterate_in_thread``.
_LAZY_NAMES = {
    "async_to_sync": "._async_to_sync",
    "serves_trio_loop": "._async_to_sync",
    "iterate_in_thread": "._iterate",
    "run_sync": "._threads",
    "thread_sensitive_context": "._threads",
}


def __getattr__(name: str) -> Any:
    """Load the private module behind ``name`` the first time it is asked for."""
    module = _LAZY_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __package__), name)
    globals()[name] = value  # later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY_NAMES})


_P = ParamSpec("_P")
_Q = ParamSpec("_Q")
_R = TypeVar("_R")
_S = TypeVar("_S")


class SyncToAsync(Generic[_P, _R]):
    """A sync callable made awaitable: each call runs in a thread (see module docstring).

    Works as a decorator on functions and methods. Subclasses may override
    :meth:`call_in_thread` to wrap every call (``DatabaseSyncToAsync`` does).
    """

    def __init__(self, func: Callable[_P, _R], *, thread_sensitive: bool = True) -> None:
        if not callable(func) or _is_async_callable(func):
            raise TypeError("sync_to_async can only be applied to sync functions.")
        self.func = func
        self.thread_sensitive = thread_sensitive
        functools.update_wrapper(self, func)
        markcoroutinefunction(self)

    def call_in_thread(self, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        """Runs in the worker thread; the hook for subclasses."""
        return self.func(*args, **kwargs)

    async def __call__(self, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        from ._threads import run_sync  # loaded on the first call (see _LAZY_NAMES)

        return await run_sync(
            self.call_in_thread, *args, thread_sensitive=self.thread_sensitive, **kwargs
        )

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> Self: ...

    @overload
    def __get__(
        self: SyncToAsync[Concatenate[_S, _Q], _R], instance: _S, owner: type | None = None
    ) -> Callable[_Q, Coroutine[Any, Any, _R]]: ...

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        """As a method decorator: the instance's method, awaitable, without ``self``."""
        if instance is None:
            return self
        bound: Any = functools.partial(self.__call__, instance)  # type: ignore[arg-type]
        markcoroutinefunction(bound)
        return functools.update_wrapper(bound, self.func)


def _is_async_callable(func: object) -> bool:
    while isinstance(func, functools.partial):
        func = func.func
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004 - instances with an async __call__
    )


@overload
def sync_to_async(
    func: Callable[_P, _R], *, thread_sensitive: bool = True
) -> SyncToAsync[_P, _R]: ...


@overload
def sync_to_async(
    func: None = None, *, thread_sensitive: bool = True
) -> Callable[[Callable[_P, _R]], SyncToAsync[_P, _R]]: ...


def sync_to_async(
    func: Callable[_P, _R] | None = None, *, thread_sensitive: bool = True
) -> SyncToAsync[_P, _R] | Callable[[Callable[_P, _R]], SyncToAsync[_P, _R]]:
    """Make a sync callable awaitable; usable as ``@sync_to_async`` or with arguments."""
    if func is None:
        return functools.partial(SyncToAsync, thread_sensitive=thread_sensitive)
    return SyncToAsync(func, thread_sensitive=thread_sensitive)
