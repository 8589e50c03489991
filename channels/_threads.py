"""Running a sync call in a thread: which thread, and how its task waits for it.

:func:`run_sync` is the one way sync code leaves the event loop (see
:mod:`channels.concurrency` for the rules it keeps). Which thread runs the call:

- a thread blocked in ``async_to_sync`` whose coroutine made the call, if thread-sensitive
  (its :class:`~channels._handoff.ThreadInbox` runs the call there);
- else the thread of the :func:`thread_sensitive_context` block, lent from a pool;
- else asgiref's single thread-sensitive worker, shared with Django's async ORM;
- ``thread_sensitive=False``: one of 40 threads fed from one FIFO queue.

The task waits in :func:`_serve`, running the coroutines the thread asks for, and resumes
in its loop's :class:`~channels._handoff.ResumeLine`.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import anyio
import anyio.lowlevel
import sniffio

from . import _asgiref_compat as asgiref_compat
from ._handoff import (
    Done,
    Link,
    Outcome,
    OuterThread,
    Posted,
    Reply,
    ResumeLine,
    ThreadInbox,
    outer_thread,
    resume_line,
    thread_state,
)

__all__ = ["on_behalf_of", "run_sync", "thread_sensitive_context"]

logger: logging.Logger = logging.getLogger("channels.concurrency")

_R = TypeVar("_R")


# -- a sync thread waiting for a coroutine, and asgiref's idea of it ------------------------


def _asgiref_is_nearer() -> bool:
    """True when asgiref's async_to_sync, not ours, is the innermost sync thread waiting."""
    executor = asgiref_compat.waiting_thread()
    if executor is None:
        return False
    ours = outer_thread.get()
    return ours is None or ours.executor is not executor


@contextlib.contextmanager
def on_behalf_of(inbox: ThreadInbox, library: str) -> Iterator[None]:
    """Run what follows as work a sync thread, blocked on ``inbox``, is waiting for."""
    previous = asgiref_compat.waiting_thread()
    executor: object = previous
    if library == "asyncio":
        executor = asgiref_compat.InboxExecutor(inbox)
        asgiref_compat.set_waiting_thread(executor)
    marker = outer_thread.set(OuterThread(inbox, executor))
    try:
        yield
    finally:
        outer_thread.reset(marker)
        if library == "asyncio":
            asgiref_compat.set_waiting_thread(previous)


_unchanged = contextlib.nullcontext


@dataclass(eq=False, slots=True)
class _Call:
    """A sync call on its way to a thread, with what it needs to find its way back."""

    func: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    context: contextvars.Context
    link: Link
    asgiref_loop: object

    def run(self) -> None:
        """Run in the worker thread and report back; never raises."""
        previous_link = thread_state.link
        thread_state.link = self.link
        saved = asgiref_compat.point_at(self.asgiref_loop)
        try:
            outcome = Outcome(value=self.context.run(self._in_context))
        except BaseException as exc:
            outcome = Outcome(error=exc)
        finally:
            ticket = self.link.line.issue()  # first thing once the call is over
            thread_state.link = previous_link
            asgiref_compat.restore(saved)
        try:
            self.link.post(Done(outcome, self.context, ticket))
        except BaseException:  # pragma: no cover - the loop died under a shielded task
            logger.exception("Could not report a finished sync call to its event loop")

    def _in_context(self) -> Any:
        asgiref_compat.adopt(self.context)  # re-homes asgiref Local storage to this thread
        return self.func(*self.args, **self.kwargs)


async def _serve(
    posted: Posted,
    line: ResumeLine,
    thread_sensitive: bool,
) -> Done:
    """Await a linked thread's call, running the coroutines it asks for meanwhile.

    While the thread-sensitive thread waits for such a coroutine, thread-sensitive calls
    the coroutine makes are sent to it. A thread-insensitive thread is not one Django's
    code may be tied to, so calls from coroutines it waits for keep going where they would
    have gone anyway.
    """
    library = sniffio.current_async_library()
    cancelled: list[BaseException] = []
    while True:
        item = await _through_cancellation(posted.take, cancelled)
        if isinstance(item, Done):
            try:
                await _through_cancellation(
                    functools.partial(line.wait_turn, item.ticket), cancelled
                )
                if cancelled:
                    raise cancelled[0]
                # Delivered now: a cancellation that arrived during the shielded wait.
                await anyio.lowlevel.checkpoint_if_cancelled()
                return item
            finally:
                line.leave(item.ticket)
        asgiref_compat.adopt(item.context)
        behalf = on_behalf_of(item.inbox, library) if thread_sensitive else _unchanged()
        with behalf, anyio.CancelScope() as scope:
            if cancelled:
                scope.cancel()  # the awaiting task is cancelled: so is what it runs
            try:
                outcome = Outcome(value=await item.func(*item.args, **item.kwargs))
            except BaseException as exc:
                if isinstance(exc, anyio.get_cancelled_exc_class()) and not cancelled:
                    cancelled.append(exc)
                outcome = Outcome(error=exc)
        item.inbox.reply(Reply(outcome, contextvars.copy_context()))


async def _through_cancellation(
    wait: Callable[[], Awaitable[_R]], cancelled: list[BaseException]
) -> _R:
    """Await ``wait()`` shielded; a cancellation that gets through is kept in ``cancelled``.

    Only asyncio's ``Task.cancel()`` gets through a shield: it cancels the task directly,
    as test runners and asgiref's ``ApplicationCommunicator`` end an application. The
    thread cannot be stopped by it either, so the task goes on waiting for the call, and
    raises the cancellation once the call is over.
    """
    while True:
        try:
            with anyio.CancelScope(shield=True):
                return await wait()
        except anyio.get_cancelled_exc_class() as exc:
            cancelled.append(exc)


async def run_sync(
    func: Callable[..., _R],
    *args: Any,
    thread_sensitive: bool = True,
    **kwargs: Any,
) -> _R:
    """Run ``func(*args, **kwargs)`` in a thread and return its result.

    The lower-level form of :func:`sync_to_async`; see the module docstring for which
    thread runs it and what cancellation does.
    """
    await anyio.lowlevel.checkpoint_if_cancelled()
    library = sniffio.current_async_library()
    if thread_sensitive and library == "asyncio" and _asgiref_is_nearer():
        return await asgiref_compat.run_through_asgiref(functools.partial(func, *args, **kwargs))

    asgiref_loop = asgiref_compat.loop_for(library)
    link = Link(anyio.lowlevel.current_token(), Posted(), resume_line())
    try:
        call = _Call(func, args, kwargs, contextvars.copy_context(), link, asgiref_loop)
        if not thread_sensitive:
            _free_threads.submit(call.run)
        else:
            outer = outer_thread.get()
            if outer is None or not outer.inbox.submit(call.run):
                _thread_sensitive_executor().submit(call.run)
        done = await _serve(link.posted, link.line, thread_sensitive)
    finally:
        link.close()
    asgiref_compat.adopt(done.context)
    return cast(_R, done.outcome.unwrap())


class _FreeThreads:
    """The threads that run ``thread_sensitive=False`` calls: one FIFO queue, 40 threads.

    One queue, as asgiref's executor has, so calls start in the order they were made;
    with the resume line, calls of similar length resume in that order too (a library
    that serialises notifications in threads, then sends them, keeps them in order). Each
    call resumes as soon as it returns: a slow one does not hold up those behind it. 40 is
    anyio's default thread limit, which these calls used to share. Made per process:
    threads do not survive a fork.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._executor: tuple[int, ThreadPoolExecutor] | None = None

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._executor is None or self._executor[0] != os.getpid():
                executor = ThreadPoolExecutor(self._size, thread_name_prefix="channels-worker")
                self._executor = (os.getpid(), executor)
            self._executor[1].submit(job)


_free_threads = _FreeThreads(size=40)


# -- per-request threads -------------------------------------------------------------------


class _ThreadPool:
    """Single-thread executors lent to :func:`thread_sensitive_context` blocks.

    A returned thread keeps its thread-local database connection, so the next block that
    borrows it reuses the connection as ``CONN_MAX_AGE`` intends (Django's ASGI handler
    starts a fresh thread per request, which leaves every persistent connection behind).
    The most recently returned thread is lent first, so the hot ones stay hot; past
    ``keep_idle`` idle threads, returned ones are retired.
    """

    def __init__(self, keep_idle: int) -> None:
        self.keep_idle = keep_idle
        self._idle: list[Executor] = []
        self._lock = threading.Lock()

    def lend(self) -> Executor:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="channels-sensitive")

    def give_back(self, executor: Executor) -> None:
        with self._lock:
            if len(self._idle) < self.keep_idle:
                self._idle.append(executor)
                return
        executor.shutdown(wait=False)  # idle already: its thread exits at once


_request_threads = _ThreadPool(keep_idle=32)


def _thread_sensitive_executor() -> Executor:
    """Where a thread-sensitive call goes when no blocked sync thread is waiting for it."""
    context = asgiref_compat.request_context()
    if context is None:
        return asgiref_compat.single_thread_executor()
    return asgiref_compat.request_executor(context, _request_threads.lend)


@contextlib.contextmanager
def thread_sensitive_context() -> Iterator[None]:
    """Give the thread-sensitive calls made inside the block a thread of their own.

    Without it, every thread-sensitive call in the process shares one worker thread, so one
    slow sync view would hold up every other. :class:`channels.http.ASGIHandler` opens one
    per request, as Django's handler does with asgiref's ``ThreadSensitiveContext``, and
    asgiref's own ``sync_to_async`` honours it too. Unlike Django's, the thread is borrowed
    from a pool (only when the block first needs it) and returned at the end, with its
    database connection. Nested blocks share the outermost block's thread.

    Calls still running when the block ends keep their thread until they return; the
    block is meant to contain them, as a request contains its view.
    """
    if asgiref_compat.request_context() is not None:
        yield
        return
    marker, token = asgiref_compat.enter_request_context()
    try:
        yield
    finally:
        executor = asgiref_compat.leave_request_context(marker, token)
        if executor is not None:
            _request_threads.give_back(executor)
