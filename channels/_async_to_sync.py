"""Calling async code from sync code running in a thread, on asyncio and trio."""

from __future__ import annotations

import asyncio  # interop: a thread running an asyncio loop must not block on it
import contextvars
import functools
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar, cast

import anyio
import anyio.from_thread
import anyio.lowlevel
import sniffio

from . import _asgiref_compat as asgiref_compat
from ._handoff import Outcome, Reply, Request, ThreadInbox, thread_state
from ._threads import on_behalf_of

__all__ = ["async_to_sync", "event_loop_runs_here", "serves_trio_loop"]

_P = ParamSpec("_P")
_R = TypeVar("_R")


def async_to_sync(
    func: Callable[_P, Awaitable[_R]], *, backend: str = "asyncio"
) -> Callable[_P, _R]:
    """Make an async callable callable from sync code running in a thread.

    In a thread running a :func:`sync_to_async` call, the coroutine runs on the event loop
    that made the call, on asyncio and trio alike. In an anyio worker thread it runs on
    that thread's loop; in a thread started by asgiref's ``sync_to_async`` it goes through
    asgiref. In a thread with no event loop at all (a script, a management command, a sync
    test) it runs on a new ``backend`` event loop in a helper thread, and thread-sensitive
    calls it makes come back to the calling thread, as Django expects.

    :raises RuntimeError: if called from a thread that is running an event loop.
    """

    @functools.wraps(func)
    def call(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        return cast(_R, _call_from_thread(func, args, kwargs, backend))

    return call


def _call_from_thread(
    func: Callable[..., Awaitable[Any]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    backend: str,
) -> Any:
    link = thread_state.link
    if link is not None:
        inbox = ThreadInbox()
        link.post(Request(func, args, kwargs, inbox, contextvars.copy_context()))
        reply = inbox.wait()
        asgiref_compat.adopt(reply.context)
        return reply.outcome.unwrap()

    if event_loop_runs_here():
        raise RuntimeError(
            "You cannot use async_to_sync in the same thread as an async event loop - "
            "just await the async function directly."
        )

    async def invoke() -> Any:
        return await func(*args, **kwargs)

    token = _anyio_worker_token()
    if token is not None:
        return anyio.from_thread.run(invoke, token=token)

    if asgiref_compat.runs_under_asgiref_loop():
        return asgiref_compat.call_through_asgiref(invoke)

    inbox = ThreadInbox()
    context = contextvars.copy_context()

    async def invoke_for_this_thread() -> None:
        asgiref_compat.adopt(context)
        with on_behalf_of(inbox, backend):
            try:
                outcome = Outcome(value=await invoke())
            except BaseException as exc:
                outcome = Outcome(error=exc)
        inbox.reply(Reply(outcome, contextvars.copy_context()))

    with anyio.from_thread.start_blocking_portal(backend) as portal:
        portal.start_task_soon(invoke_for_this_thread)
        reply = inbox.wait()
    asgiref_compat.adopt(reply.context)
    return reply.outcome.unwrap()


def event_loop_runs_here() -> bool:
    """Whether this thread is running an event loop (asyncio or trio), where blocking waits
    would stall it."""
    # Not sniffio.current_async_library(): worker threads inherit its context variable.
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return sniffio.thread_local.name is not None
    return True


def _anyio_worker_token() -> anyio.lowlevel.EventLoopToken | None:
    try:
        return anyio.from_thread.run_sync(anyio.lowlevel.current_token)
    except anyio.NoEventLoopError:
        return None


def serves_trio_loop() -> bool:
    """Whether this thread is running a sync call on behalf of a trio event loop.

    There, asgiref's ``async_to_sync`` finds our stand-in instead of an asyncio loop;
    :mod:`channels._django_trio` uses this to send such calls through
    :func:`async_to_sync` instead.
    """
    loop = asgiref_compat.main_event_loop()
    return loop is asgiref_compat.ON_TRIO and thread_state.link is not None
