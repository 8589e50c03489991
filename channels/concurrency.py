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
    ``thread_sensitive=False`` runs the call in an anyio worker thread. Context variables,
    asgiref ``Local`` data included, travel with every call in both directions.

Cancellation
    A sync call cannot be interrupted. The awaiting task is shielded until the call
    returns and is then cancelled at once; nothing the call started outlives the task that
    awaited it. Coroutines that the sync call runs through :func:`async_to_sync` are not
    shielded: once the awaiting task is cancelled they are cancelled too, and the
    cancellation exception is raised in the sync thread, so the sync code unwinds at its
    next trip to the event loop.

Interop points that need asyncio (the reason this module imports it)
    asgiref's ``async_to_sync`` finds the event loop through a thread-local that its own
    ``SyncToAsync`` sets. Our threads set it too, so existing code calling
    ``asgiref.sync.async_to_sync(...)`` from a sync consumer reaches the running asyncio
    loop. Under trio it is pointed at a stand-in that refuses with
    :class:`~channels.exceptions.AsyncBridgeError`, naming :func:`async_to_sync`.
"""

from __future__ import annotations

import asyncio  # interop: asgiref's bridges and Django's async tests are asyncio-only
import contextlib
import contextvars
import functools
import inspect
import logging
import math
import os
import queue
import threading
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
)
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Concatenate, Generic, ParamSpec, Self, TypeVar, cast, overload

import anyio
import anyio.from_thread
import anyio.lowlevel
import sniffio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from asgiref.sync import AsyncToSync as _AsgirefAsyncToSync
from asgiref.sync import SyncToAsync as _AsgirefSyncToAsync
from asgiref.sync import ThreadSensitiveContext as _AsgirefThreadSensitiveContext
from asgiref.sync import _restore_context as _asgiref_restore_context  # see _adopt
from asgiref.sync import markcoroutinefunction

from .exceptions import AsyncBridgeError
from .utils import unwrap_exception_groups

__all__ = [
    "SyncToAsync",
    "async_to_sync",
    "iterate_in_thread",
    "run_sync",
    "sync_to_async",
    "thread_sensitive_context",
]

logger: logging.Logger = logging.getLogger("channels.concurrency")

_P = ParamSpec("_P")
_Q = ParamSpec("_Q")
_R = TypeVar("_R")
_S = TypeVar("_S")


# -- outcomes and messages passed between a thread and the task awaiting it -----------------


@dataclass(eq=False, slots=True)
class _Outcome:
    """The result of a call: a value or an exception, carried across threads."""

    value: Any = None
    error: BaseException | None = None

    def unwrap(self) -> Any:
        if self.error is None:
            return self.value
        error, self.error = self.error, None
        try:
            raise error
        finally:
            del error  # no reference cycle through the traceback


@dataclass(eq=False, slots=True)
class _Done:
    """Posted by a worker thread when its sync call has finished.

    ``context`` is the call's context as the call left it, so that context variables it
    set are seen by the awaiting task afterwards, as with asgiref.
    """

    outcome: _Outcome
    context: contextvars.Context
    ticket: int  # its place in the loop's resume line


@dataclass(eq=False, slots=True)
class _Request:
    """Posted by a sync thread that wants a coroutine run on the event loop."""

    func: Callable[..., Awaitable[Any]]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    inbox: _ThreadInbox
    context: contextvars.Context


@dataclass(eq=False, slots=True)
class _Reply:
    """The outcome of a :class:`_Request`, and the context the coroutine left behind."""

    outcome: _Outcome
    context: contextvars.Context


class _ThreadInbox:
    """What a sync thread blocked in :func:`async_to_sync` works through while it waits.

    It receives the reply it waits for and, until then, the thread-sensitive calls made
    by the coroutine it waits for: they must run here, because this thread is the one that
    is blocked.
    """

    __slots__ = ("_lock", "_open", "_queue")

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Callable[[], None] | _Reply] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._open = True

    def submit(self, job: Callable[[], None]) -> bool:
        """Queue ``job`` to run on this thread; False once the thread stopped waiting."""
        with self._lock:
            if self._open:
                self._queue.put(job)
            return self._open

    def reply(self, reply: _Reply) -> None:
        self._queue.put(reply)

    def wait(self) -> _Reply:
        while True:
            item = self._queue.get()
            if isinstance(item, _Reply):
                break
            item()
        with self._lock:
            self._open = False
        # A job submitted just before we closed still runs here, where it was promised.
        while True:
            try:
                leftover = self._queue.get_nowait()
            except queue.Empty:
                return item
            if not isinstance(leftover, _Reply):
                leftover()


class _InboxExecutor(Executor):
    """Lets asgiref's thread-sensitive calls reach a thread blocked in our async_to_sync.

    Django's async ORM methods run their queries through asgiref's ``sync_to_async``.
    Inside a coroutine that a sync thread awaits through us, asgiref must send them to that
    thread, like ours, or they would queue behind it forever. asgiref looks for such a
    thread in ``AsyncToSync.executors.current``; this is what we put there.
    """

    def __init__(self, inbox: _ThreadInbox) -> None:
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
            return _AsgirefSyncToAsync.single_thread_executor.submit(fn, *args, **kwargs)
        return future


@dataclass(eq=False, slots=True)
class _OuterThread:
    """Marks coroutines run on behalf of a sync thread that is blocked waiting for them.

    ``executor`` is what asgiref's ``AsyncToSync.executors.current`` held when the mark
    was made: if it holds something else now, asgiref's bridge is the nearer one.
    """

    inbox: _ThreadInbox
    executor: object


_outer_thread: contextvars.ContextVar[_OuterThread | None] = contextvars.ContextVar(
    "channels_outer_thread", default=None
)


class _ResumeLine:
    """Calls made on one event loop resume in the order they returned.

    A worker thread takes a ticket the moment its call returns (before it reports back to
    the loop), and the awaiting task resumes only after the task holding the previous
    ticket has: reports from several threads can reach the loop in either order, and trio
    deliberately runs the tasks it wakes together in either order. A ticket is only ever
    held by a call that is over and about to report, so waiting for one's turn is a wait
    for a report already on its way, never for a running call: a slow call holds up
    nobody that returned before it.
    """

    __slots__ = ("_issued", "_left", "_lock", "_next", "_waiting")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._issued = 0
        self._next = 0
        self._left: set[int] = set()
        self._waiting: dict[int, anyio.Event] = {}

    def issue(self) -> int:
        """Called by a worker thread as soon as its call has returned."""
        with self._lock:
            ticket, self._issued = self._issued, self._issued + 1
        return ticket

    async def wait_turn(self, ticket: int) -> None:
        if ticket != self._next:
            await self._waiting.setdefault(ticket, anyio.Event()).wait()

    def leave(self, ticket: int) -> None:
        """Give up ``ticket`` (resumed, or failed before its turn) and wake the next."""
        self._waiting.pop(ticket, None)
        self._left.add(ticket)
        while self._next in self._left:
            self._left.remove(self._next)
            self._next += 1
        waiter = self._waiting.get(self._next)
        if waiter is not None:
            waiter.set()


_resume_lines: anyio.lowlevel.RunVar[_ResumeLine] = anyio.lowlevel.RunVar("channels_resume_line")


def _resume_line() -> _ResumeLine:
    """The current event loop's line."""
    try:
        return _resume_lines.get()
    except LookupError:
        line = _ResumeLine()
        _resume_lines.set(line)
        return line


@dataclass(eq=False, slots=True)
class _Link:
    """How a worker thread reaches the task that awaits its call."""

    token: anyio.lowlevel.EventLoopToken
    requests: MemoryObjectSendStream[_Request | _Done]
    line: _ResumeLine

    def post(self, item: _Request | _Done) -> None:
        """Hand ``item`` to the awaiting task without waiting for the loop to take it."""
        self.token.backend_class.run_sync_soon(self._arrive, (item,), self.token.native_token)

    def _arrive(self, item: _Request | _Done) -> None:
        try:
            self.requests.send_nowait(item)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            # The awaiting task is gone (it died of something a thread cannot outlast,
            # such as KeyboardInterrupt). Nobody may wait for it: not the thread, not
            # the calls behind it in the line.
            if isinstance(item, _Request):
                gone = RuntimeError("the task awaiting this sync call has ended")
                item.inbox.reply(_Reply(_Outcome(error=gone), item.context))
            else:
                self.line.leave(item.ticket)


class _ThreadState(threading.local):
    link: _Link | None = None


_thread_state = _ThreadState()


# -- asgiref interop ------------------------------------------------------------------------


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


_ASGIREF_ON_TRIO = _AsgirefOnTrio()


def _point_asgiref_at(loop: object) -> tuple[object, object, object]:
    local = _AsgirefSyncToAsync.threadlocal
    saved = (
        getattr(local, "main_event_loop", None),
        getattr(local, "main_event_loop_pid", None),
        getattr(local, "task_context", None),
    )
    local.main_event_loop = loop
    local.main_event_loop_pid = os.getpid()
    local.task_context = None
    return saved


def _restore_asgiref(saved: tuple[object, object, object]) -> None:
    local = _AsgirefSyncToAsync.threadlocal
    local.main_event_loop, local.main_event_loop_pid, local.task_context = saved


def _asgiref_waiting_thread() -> object:
    return getattr(_AsgirefAsyncToSync.executors, "current", None)


def _asgiref_is_nearer() -> bool:
    """True when asgiref's async_to_sync, not ours, is the innermost sync thread waiting."""
    executor = _asgiref_waiting_thread()
    if executor is None:
        return False
    ours = _outer_thread.get()
    return ours is None or ours.executor is not executor


@contextlib.contextmanager
def _on_behalf_of(inbox: _ThreadInbox, library: str) -> Iterator[None]:
    """Run what follows as work a sync thread, blocked on ``inbox``, is waiting for."""
    previous = _asgiref_waiting_thread()
    executor: object = previous
    if library == "asyncio":
        executor = _InboxExecutor(inbox)
        _AsgirefAsyncToSync.executors.current = executor
    marker = _outer_thread.set(_OuterThread(inbox, executor))
    try:
        yield
    finally:
        _outer_thread.reset(marker)
        if library == "asyncio":
            _AsgirefAsyncToSync.executors.current = previous


_unchanged = contextlib.nullcontext


def _adopt(context: contextvars.Context) -> None:
    """Take on the values of ``context`` that differ from the current context's.

    asgiref's own helper, used by its bridges for the same purpose: it also moves asgiref
    ``Local`` storage (which Django uses, e.g. for the active translation) to the current
    thread, where a plain copy would leave it invisible.
    """
    _asgiref_restore_context(context)


# -- running a sync call in a thread --------------------------------------------------------


@dataclass(eq=False, slots=True)
class _Call:
    """A sync call on its way to a thread, with what it needs to find its way back."""

    func: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    context: contextvars.Context
    link: _Link
    asgiref_loop: object

    def run(self) -> None:
        """Run in the worker thread and report back; never raises."""
        previous_link = _thread_state.link
        _thread_state.link = self.link
        saved = _point_asgiref_at(self.asgiref_loop)
        try:
            outcome = _Outcome(value=self.context.run(self._in_context))
        except BaseException as exc:
            outcome = _Outcome(error=exc)
        finally:
            ticket = self.link.line.issue()  # first thing once the call is over
            _thread_state.link = previous_link
            _restore_asgiref(saved)
        try:
            self.link.post(_Done(outcome, self.context, ticket))
        except BaseException:  # pragma: no cover - the loop died under a shielded task
            logger.exception("Could not report a finished sync call to its event loop")

    def _in_context(self) -> Any:
        _adopt(self.context)  # re-homes asgiref Local storage to this thread
        return self.func(*self.args, **self.kwargs)


async def _serve(
    requests: MemoryObjectReceiveStream[_Request | _Done],
    line: _ResumeLine,
    thread_sensitive: bool,
) -> _Done:
    """Await a linked thread's call, running the coroutines it asks for meanwhile.

    While the thread-sensitive thread waits for such a coroutine, thread-sensitive calls
    the coroutine makes are sent to it. A thread-insensitive thread is not one Django's
    code may be tied to, so calls from coroutines it waits for keep going where they would
    have gone anyway.
    """
    library = sniffio.current_async_library()
    cancelled: list[BaseException] = []
    while True:
        item = await _through_cancellation(requests.receive, cancelled)
        if isinstance(item, _Done):
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
        _adopt(item.context)
        behalf = _on_behalf_of(item.inbox, library) if thread_sensitive else _unchanged()
        with behalf, anyio.CancelScope() as scope:
            if cancelled:
                scope.cancel()  # the awaiting task is cancelled: so is what it runs
            try:
                outcome = _Outcome(value=await item.func(*item.args, **item.kwargs))
            except BaseException as exc:
                if isinstance(exc, anyio.get_cancelled_exc_class()) and not cancelled:
                    cancelled.append(exc)
                outcome = _Outcome(error=exc)
        item.inbox.reply(_Reply(outcome, contextvars.copy_context()))


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
        bound = functools.partial(func, *args, **kwargs)
        return await _AsgirefSyncToAsync(bound, thread_sensitive=True)()

    asgiref_loop = asyncio.get_running_loop() if library == "asyncio" else _ASGIREF_ON_TRIO
    sender, receiver = anyio.create_memory_object_stream[_Request | _Done](math.inf)
    with sender, receiver:
        link = _Link(anyio.lowlevel.current_token(), sender, _resume_line())
        call = _Call(func, args, kwargs, contextvars.copy_context(), link, asgiref_loop)
        if not thread_sensitive:
            _free_threads.submit(call.run)
        else:
            outer = _outer_thread.get()
            if outer is None or not outer.inbox.submit(call.run):
                _thread_sensitive_executor().submit(call.run)
        done = await _serve(receiver, link.line, thread_sensitive)
    _adopt(done.context)
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
    context = _AsgirefSyncToAsync.thread_sensitive_context.get(None)
    if context is None:
        return _AsgirefSyncToAsync.single_thread_executor
    executors = _AsgirefSyncToAsync.context_to_thread_executor
    executor = executors.get(context)
    if executor is None:
        executor = executors[context] = _request_threads.lend()
    return executor


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
    if _AsgirefSyncToAsync.thread_sensitive_context.get(None) is not None:
        yield
        return
    marker = _AsgirefThreadSensitiveContext()
    token = _AsgirefSyncToAsync.thread_sensitive_context.set(marker)
    try:
        yield
    finally:
        _AsgirefSyncToAsync.thread_sensitive_context.reset(token)
        executor = _AsgirefSyncToAsync.context_to_thread_executor.pop(marker, None)
        if executor is not None:
            _request_threads.give_back(executor)


# -- sync_to_async --------------------------------------------------------------------------


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


# -- iterating a sync iterator from async code ----------------------------------------------


class _Batches(Generic[_R]):
    """Items a thread produces, handed to the event loop in batches.

    The thread appends under a lock and wakes the loop only if the loop is waiting, so a
    fast iterator costs one wake-up per batch, not a round trip per item; it pauses while
    the items not yet taken weigh ``limit`` or more.
    """

    def __init__(
        self, limit: int, weight: Callable[[_R], int], token: anyio.lowlevel.EventLoopToken
    ) -> None:
        self._room = threading.Condition()
        self._pending: list[_R] = []
        self._load = 0
        self._limit = limit
        self._weight = weight
        self._token = token
        self._waiting: anyio.Event | None = None  # the loop waits on it for the next batch
        self._stopping = False
        self._finished = False

    def produce(self, items: Iterable[_R]) -> None:
        """Runs in the thread: the whole iteration, or until :meth:`stop`."""
        for item in items:
            with self._room:
                while self._load >= self._limit and not self._stopping:
                    self._room.wait()
                if self._stopping:
                    return
                self._pending.append(item)
                self._load += self._weight(item)
                waiting, self._waiting = self._waiting, None
            if waiting is not None:
                self._token.backend_class.run_sync_soon(waiting.set, (), self._token.native_token)

    def stop(self) -> None:
        with self._room:
            self._stopping = True
            self._room.notify()

    def finish(self) -> None:
        """Called on the loop once the thread is done: the last batch is the one pending."""
        with self._room:
            self._finished = True
            waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.set()

    async def batches(self) -> AsyncGenerator[list[_R]]:
        while True:
            with self._room:
                batch, self._pending, self._load = self._pending, [], 0
                self._room.notify()
                if not batch:
                    if self._finished:
                        return
                    waiting = self._waiting = anyio.Event()
            if batch:
                yield batch
            else:
                await waiting.wait()


def _one(item: object) -> int:
    return 1


@contextlib.asynccontextmanager
async def iterate_in_thread(
    items: Iterable[_R],
    *,
    limit: int = 64,
    weight: Callable[[_R], int] = _one,
    thread_sensitive: bool = True,
) -> AsyncIterator[AsyncIterator[list[_R]]]:
    """Iterate ``items`` in a thread (see the module docstring for which), in batches.

    ``async with iterate_in_thread(rows) as batches: async for batch in batches: ...``;
    each batch is every item produced since the previous one (at least one), so a fast
    iterator costs a wake-up per batch where ``run_sync(next, ...)`` would cost a round
    trip per item, and a slow one still delivers each item as soon as it exists. The whole
    iteration is one sync call; the thread pauses while the items not yet taken weigh
    ``limit`` or more (each weighs ``weight(item)``, 1 by default).

    An exception raised by the iterator is raised by ``async for`` after the items before
    it. Leaving the block early (a ``break``, a cancellation) tells the thread to stop
    after the item it is producing, and the block waits for that, since a sync call cannot
    be interrupted: nothing outlives it. The iterator is not closed here; its owner does.

    Inside the block, do not wait for a thread-sensitive call: with ``thread_sensitive``
    the thread it needs is the one producing the items.

    :raises ValueError: if ``limit`` is less than 1.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    batches = _Batches(limit, weight, anyio.lowlevel.current_token())
    failure: list[Exception] = []

    async def produce() -> None:
        try:
            await run_sync(batches.produce, items, thread_sensitive=thread_sensitive)
        except Exception as exc:
            failure.append(exc)  # before finish(): the consumer then sees both
        finally:
            batches.finish()

    async def consume() -> AsyncGenerator[list[_R]]:
        async with contextlib.aclosing(batches.batches()) as source:
            async for batch in source:
                yield batch
        if failure:
            raise failure.pop()

    with unwrap_exception_groups():
        async with anyio.create_task_group() as group:
            group.start_soon(produce)
            consumer = consume()
            try:
                yield consumer
            finally:
                batches.stop()
                with anyio.CancelScope(shield=True):
                    await consumer.aclose()
    if failure:
        raise failure.pop()


# -- async_to_sync --------------------------------------------------------------------------


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
    link = _thread_state.link
    if link is not None:
        inbox = _ThreadInbox()
        link.post(_Request(func, args, kwargs, inbox, contextvars.copy_context()))
        reply = inbox.wait()
        _adopt(reply.context)
        return reply.outcome.unwrap()

    if _event_loop_runs_here():
        raise RuntimeError(
            "You cannot use async_to_sync in the same thread as an async event loop - "
            "just await the async function directly."
        )

    async def invoke() -> Any:
        return await func(*args, **kwargs)

    token = _anyio_worker_token()
    if token is not None:
        return anyio.from_thread.run(invoke, token=token)

    asgiref_loop = getattr(_AsgirefSyncToAsync.threadlocal, "main_event_loop", None)
    if isinstance(asgiref_loop, asyncio.AbstractEventLoop) and asgiref_loop.is_running():
        return _AsgirefAsyncToSync(invoke)()

    inbox = _ThreadInbox()
    context = contextvars.copy_context()

    async def invoke_for_this_thread() -> None:
        _adopt(context)
        with _on_behalf_of(inbox, backend):
            try:
                outcome = _Outcome(value=await invoke())
            except BaseException as exc:
                outcome = _Outcome(error=exc)
        inbox.reply(_Reply(outcome, contextvars.copy_context()))

    with anyio.from_thread.start_blocking_portal(backend) as portal:
        portal.start_task_soon(invoke_for_this_thread)
        reply = inbox.wait()
    _adopt(reply.context)
    return reply.outcome.unwrap()


def _event_loop_runs_here() -> bool:
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
    loop = getattr(_AsgirefSyncToAsync.threadlocal, "main_event_loop", None)
    return loop is _ASGIREF_ON_TRIO and _thread_state.link is not None
