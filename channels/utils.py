"""Small helpers shared by consumers, routers and the testing tools."""

from __future__ import annotations

import contextvars
import types
from collections import deque
from collections.abc import Awaitable, Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

import anyio
import anyio.abc
import anyio.lowlevel
import sniffio

__all__ = ["await_many_dispatch", "name_that_thing", "unwrap_exception_groups"]

_T = TypeVar("_T")
_S = TypeVar("_S")

#: How a deferred source says it has something (see :meth:`Dispatcher.run`): called with
#: the function to call then, it returns the function that withdraws it.
Arm = Callable[[Callable[[], None]], Callable[[], None]]


class _Turn:
    """A lock for tasks of one event loop, taken without a checkpoint when it is free.

    ``anyio.Lock`` checks for cancellation even when it is free; dispatching a message
    already pays for checkpoints elsewhere, and this is on every message's path.
    """

    def __init__(self) -> None:
        self._held = False
        # Made on first contention: an empty deque costs about 600 bytes, and each open
        # WebSocket's consumer holds one of these locks, almost never contended.
        self._waiters: deque[anyio.Event] | None = None

    def take_if_free(self) -> bool:
        """Take the turn if nobody holds it; True if it was taken."""
        if self._held:
            return False
        self._held = True
        return True

    async def take(self) -> None:
        if not self._held:
            self._held = True
            return
        waiters = self._waiters
        if waiters is None:
            waiters = self._waiters = deque()
        waiter = anyio.Event()
        waiters.append(waiter)
        try:
            await waiter.wait()
        except BaseException:
            if waiter.is_set():
                self.give_up()  # handed the turn while being cancelled: pass it on
            else:
                waiters.remove(waiter)
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
    await Dispatcher(dispatch).run(consumer_callables)


class SourceExhausted(Exception):
    """Raised by a source to say it has nothing more: its listener ends quietly."""


class Dispatcher(Generic[_T]):
    """The engine of :func:`await_many_dispatch`, which sources can also join later.

    A consumer uses it directly so that work it starts while running (a replay of
    missed group messages, a presence heartbeat) lives in the same task group as its
    listeners: owned by the consumer, cancelled with it, dispatched in the same turns.
    """

    def __init__(self, dispatch: Callable[[_T], Awaitable[Any]]) -> None:
        #: Where the results of the sources given to :meth:`run` go; may be replaced
        #: while running (the next result goes to the new one).
        self.dispatch = dispatch
        self._turn = _Turn()
        self._ended = False
        self._group: anyio.abc.TaskGroup | None = None
        # Between two dispatches, one pass through the event loop, as upstream's loop
        # makes: a task the handler just started runs (up to its first wait) before the
        # next message already queued is handled; libraries register state in such tasks.
        # asyncio runs ready tasks first in, first out, so one yield is a pass. trio runs
        # each batch of ready tasks in a random order, so it takes a second yield to be
        # sure that the batch holding the new task has run (tests/test_consumer.py has
        # the case: with one, a trio consumer misses its subscription about half the time).
        self._pass, self._second_pass = _loop_passes()

    async def run(
        self,
        sources: Sequence[Callable[[], Awaitable[_T]]],
        *,
        deferred: Sequence[tuple[Callable[[], Awaitable[_T]], Arm]] = (),
    ) -> None:
        """Listen on ``sources`` (and any added later) until one raises or we are cancelled.

        The first source is listened to by the task calling this, the others each by a
        task of their own: a consumer that is waiting costs one task fewer (a task is
        most of what an idle WebSocket's consumer holds).

        A ``deferred`` source is listened to only from when it has something: ``arm(start)``
        must call ``start()`` (once, from any task of this event loop) when the source
        would return without waiting, and return a function that withdraws ``start``;
        its listener task is made then. Until then the source costs no task at all.
        """
        # As unwrap_exception_groups(), without a context manager's objects per consumer.
        try:
            async with anyio.create_task_group() as group:
                self._group = group
                for source in sources[1:]:
                    group.start_soon(self._pump, source, None)
                waiting = [_Deferred(self, source, arm) for source, arm in deferred]
                try:
                    if sources:
                        await self._pump(sources[0], None)
                except BaseException:
                    for later in waiting:
                        later.withdraw()
                    raise
                # The first source is exhausted; the others are listened to until they are.
                for later in waiting:
                    later.withdraw()
                    later.start()
        except BaseExceptionGroup as errors:
            _raise_lone_error(errors)
            raise

    def add_source(
        self, source: Callable[[], Awaitable[_S]], dispatch: Callable[[_S], Awaitable[Any]]
    ) -> None:
        """Listen on ``source`` too, handing its results to ``dispatch`` in the same
        turns as every other source's, until it raises :class:`SourceExhausted`."""
        self.task_group.start_soon(self._pump, source, dispatch)

    @property
    def task_group(self) -> anyio.abc.TaskGroup:
        """The task group the listeners run in, for work that must end with them."""
        if self._group is None:
            raise RuntimeError("the dispatcher is not running")
        return self._group

    async def _pump(
        self,
        source: Callable[[], Awaitable[_S]],
        dispatch: Callable[[_S], Awaitable[Any]] | None,
    ) -> None:
        turn = self._turn
        while True:
            try:
                result = await source()
            except SourceExhausted:
                return
            except Exception:
                # Wait for the dispatch under way before the error cancels it: it may be
                # inside the server's send(), and a cancellation landing there breaks the
                # server's own work (hypercorn-trio arms its keep-alive timer in send()).
                # Dispatches are one at a time anyway; this one is the last.
                await turn.take()
                self._ended = True
                turn.give_up()
                raise
            if not turn.take_if_free():  # without a coroutine: every message comes here
                await turn.take()
            try:
                # A source waiting for its turn when a dispatch raised gets the turn before
                # the cancellation reaches it: it must not start another dispatch.
                if self._ended:
                    return
                if dispatch is None:
                    await self.dispatch(result)  # type: ignore[arg-type]  # _S is _T here
                else:
                    await dispatch(result)
            except BaseException:
                self._ended = True
                raise
            finally:
                turn.give_up()
            await self._pass()
            if self._second_pass is not None:
                await self._second_pass()


@types.coroutine
def _yield_to_asyncio() -> Generator[None, None, None]:
    yield  # a bare yield: what asyncio.sleep(0), and so anyio's checkpoint there, comes to


def _loop_passes() -> tuple[Callable[[], Awaitable[None]], Callable[[], Awaitable[None]] | None]:
    """The checkpoint(s) the dispatcher makes between two dispatches, on this event loop.

    The event loop's own, not ``anyio.lowlevel.checkpoint``, which looks the backend up
    on every call: a pass is on every message's path, and that lookup was about a sixth
    of what Channels itself spent per message of an in-process broadcast (callgrind).
    """
    library = sniffio.current_async_library()
    if library == "asyncio":
        return _yield_to_asyncio, None
    if library == "trio":
        # Interop point: trio's own checkpoints (imported here, so asyncio users never
        # import trio). The second only has to yield: the first checked for cancellation.
        import trio.lowlevel

        return trio.lowlevel.checkpoint, trio.lowlevel.cancel_shielded_checkpoint
    return anyio.lowlevel.checkpoint, None


class _Deferred(Generic[_T]):
    """A source of :meth:`Dispatcher.run` whose listener is made when it has something."""

    __slots__ = ("_context", "_dispatcher", "_source", "_started", "withdraw")

    def __init__(
        self, dispatcher: Dispatcher[_T], source: Callable[[], Awaitable[_T]], arm: Arm
    ) -> None:
        self._dispatcher = dispatcher
        self._source = source
        self._started = False
        # ``start`` runs in whichever task made the source ready (a sender's): the listener
        # must still see the context it would have had if started now, as the others do.
        self._context = contextvars.copy_context()
        self.withdraw = arm(self.start)

    def start(self) -> None:
        dispatcher = self._dispatcher
        if self._started or dispatcher._ended:
            return
        self._started = True
        self._context.run(dispatcher.task_group.start_soon, dispatcher._pump, self._source, None)


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
        _raise_lone_error(group)
        raise


def _raise_lone_error(group: BaseExceptionGroup[BaseException]) -> None:
    """Raise ``group``'s one error that is not a cancellation, if it has exactly one."""
    errors = [exc for exc in group.exceptions if not _is_cancellation(exc)]
    if len(errors) != 1:
        return
    error = errors[0]
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
