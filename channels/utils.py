"""Small helpers shared by consumers, routers and the testing tools."""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
import sniffio

__all__ = ["await_many_dispatch", "name_that_thing", "unwrap_exception_groups"]

_T = TypeVar("_T")


class _Turn:
    """A lock for tasks of one event loop, taken without a checkpoint when it is free.

    ``anyio.Lock`` checks for cancellation even when it is free; dispatching a message
    already pays for checkpoints elsewhere, and this is on every message's path.
    """

    def __init__(self) -> None:
        self._held = False
        self._waiters: deque[anyio.Event] = deque()

    async def take(self) -> None:
        if not self._held:
            self._held = True
            return
        waiter = anyio.Event()
        self._waiters.append(waiter)
        try:
            await waiter.wait()
        except BaseException:
            if waiter.is_set():
                self.give_up()  # handed the turn while being cancelled: pass it on
            else:
                self._waiters.remove(waiter)
            raise

    def give_up(self) -> None:
        if self._waiters:
            self._waiters.popleft().set()  # the turn passes straight to the next waiter
        else:
            self._held = False


def name_that_thing(thing: object) -> str:
    """A dotted name for a function, method or class, or for an instance's class.

    Used to name applications and handlers in log lines and error messages.
    """
    qualname = getattr(thing, "__qualname__", None)
    if not isinstance(qualname, str):  # an instance: name its class
        return name_that_thing(type(thing))
    module = getattr(thing, "__module__", None)
    return f"{module}.{qualname}" if module else qualname


async def await_many_dispatch(
    consumer_callables: Sequence[Callable[[], Awaitable[_T]]],
    dispatch: Callable[[_T], Awaitable[Any]],
) -> None:
    """Await each callable again and again, handing every result to ``dispatch``.

    Results are dispatched one at a time, in the order they arrive; a source whose result
    waits for its turn is not awaited again until it has been dispatched. Runs until a
    source or ``dispatch`` raises (the error propagates as itself, and the other sources
    are cancelled; a source's error first waits for a dispatch under way to finish) or
    until the caller is cancelled.
    """
    turn = _Turn()
    ended = False
    # Between two dispatches, one pass through the event loop, as upstream's loop makes:
    # a task the handler just started runs (up to its first wait) before the next message
    # already queued is handled; libraries register state in such tasks. asyncio runs ready
    # tasks first in, first out, so one yield is a pass. trio runs each batch of ready
    # tasks in a random order, so it takes a second yield to be sure that the batch
    # holding the new task has run.
    loop_passes = 2 if sniffio.current_async_library() == "trio" else 1

    async def pump(source: Callable[[], Awaitable[_T]]) -> None:
        nonlocal ended
        while True:
            try:
                result = await source()
            except Exception:
                # Wait for the dispatch under way before the error cancels it: it may be
                # inside the server's send(), and a cancellation landing there breaks the
                # server's own work (hypercorn-trio arms its keep-alive timer in send()).
                # Dispatches are one at a time anyway; this one is the last.
                await turn.take()
                ended = True
                turn.give_up()
                raise
            await turn.take()
            try:
                # A source waiting for its turn when a dispatch raised gets the turn before
                # the cancellation reaches it: it must not start another dispatch.
                if ended:
                    return
                await dispatch(result)
            except BaseException:
                ended = True
                raise
            finally:
                turn.give_up()
            for _ in range(loop_passes):
                await anyio.lowlevel.checkpoint()

    with unwrap_exception_groups():
        async with anyio.create_task_group() as group:
            for source in consumer_callables:
                group.start_soon(pump, source)


@contextmanager
def unwrap_exception_groups() -> Iterator[None]:
    """Re-raise a task group's lone error as itself rather than inside an exception group.

    A consumer's handler error reaches its server as the original exception: that is
    what ASGI servers, test clients and ``except SomeError`` in user code expect.
    Cancellations that the error caused in sibling tasks are ignored. Only the task
    group's own level is looked at: an exception group raised by a handler is its error
    and is passed on whole. A group with several errors, or only cancellations, is
    re-raised untouched.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        errors = [exc for exc in group.exceptions if not _is_cancellation(exc)]
        if len(errors) != 1:
            raise
        error = errors[0]
    else:
        return
    # Raising here would record the group as the error's context and hide the error's own
    # ("During handling of the above exception..."): keep what the error had.
    context, suppress = error.__context__, error.__suppress_context__
    try:
        raise error
    finally:
        error.__context__, error.__suppress_context__ = context, suppress
        del error, errors


def _is_cancellation(exc: BaseException) -> bool:
    cancelled = anyio.get_cancelled_exc_class()
    if isinstance(exc, BaseExceptionGroup):
        return all(_is_cancellation(inner) for inner in exc.exceptions)
    return isinstance(exc, cancelled)
