"""Driving an ASGI application from a test, one message at a time."""

from __future__ import annotations

import asyncio  # interop point: ApplicationCancelled subclasses asyncio.CancelledError
import concurrent.futures
import contextlib
import contextvars
from collections import deque
from collections.abc import Generator
from types import TracebackType
from typing import Any

import anyio
import anyio.lowlevel
import asgiref.testing
from anyio.abc import TaskGroup
from asgiref.compatibility import guarantee_single_callable

from ..db import keep_connections, release_kept_connections
from ..types import ASGIApp, Message, Scope
from ..utils import unwrap_exception_groups
from ._hosting import start_detached

__all__ = [
    "AppFuture",
    "ApplicationCancelled",
    "ApplicationCommunicator",
    "MessageQueue",
    "QueueEmpty",
]


class ApplicationCancelled(asyncio.CancelledError):
    """The application was cancelled (a ``receive_output`` timed out, or
    ``future.cancel()``), so it can no longer be talked to.

    A subclass of :class:`asyncio.CancelledError` on both backends, because that is what
    asgiref's communicator raises and what Channels' test suites expect. Like it, this is
    a ``BaseException``: ``except Exception`` does not catch it.
    """


class QueueEmpty(asyncio.QueueEmpty, anyio.WouldBlock):
    """:meth:`MessageQueue.get_nowait` found nothing: both asyncio's ``QueueEmpty`` (what
    code written for asgiref's queues catches) and anyio's ``WouldBlock``."""


class MessageQueue:
    """An unbounded FIFO of messages for one event loop, on asyncio or trio.

    It has the part of :class:`asyncio.Queue`'s interface that asgiref's communicator
    exposes as ``input_queue`` and ``output_queue`` (``get``, ``put``, ``get_nowait``,
    ``put_nowait``, ``empty``, ``qsize``, ``full``), so communicator subclasses written for
    asgiref work on both backends. Waiters can also wait for a change without taking.
    """

    maxsize: int = 0

    def __init__(self) -> None:
        self.items: deque[Message] = deque()
        self._changed: anyio.Event | None = None

    def qsize(self) -> int:
        return len(self.items)

    def empty(self) -> bool:
        return not self.items

    def full(self) -> bool:
        """Always ``False``: the queue is unbounded."""
        return False

    def put_nowait(self, message: Message) -> None:
        self.items.append(message)
        self.wake()

    async def put(self, message: Message) -> None:
        """Queue ``message``, then let other tasks run (the application's ``send``)."""
        self.put_nowait(message)
        await anyio.lowlevel.checkpoint()

    def get_nowait(self) -> Message:
        """:raises QueueEmpty: if nothing is queued."""
        if not self.items:
            raise QueueEmpty
        return self.items.popleft()

    async def get(self) -> Message:
        """Take the next message, waiting for one (the application's ``receive``).

        Cancelling a waiting ``get`` takes nothing.
        """
        await anyio.lowlevel.checkpoint_if_cancelled()
        while not self.items:
            await self.wait()
        return self.items.popleft()

    def wake(self) -> None:
        """Wake whoever is in :meth:`wait`."""
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def wait(self) -> None:
        """Wait until something is put in, or :meth:`wake` is called."""
        if self._changed is None:
            self._changed = anyio.Event()
        await self._changed.wait()

    def __repr__(self) -> str:
        return f"<MessageQueue qsize={len(self.items)}>"


class _Run:
    """One run of the application, and what became of it.

    Kept apart from the communicator so that the running task does not keep the
    communicator alive: dropping the communicator is what cancels a plain one.
    """

    def __init__(
        self, application: ASGIApp, scope: Scope, inputs: MessageQueue, outputs: MessageQueue
    ) -> None:
        self.application = application
        self.scope = scope
        self.inputs = inputs
        self.outputs = outputs
        self.cancel_scope: anyio.CancelScope = anyio.CancelScope()
        self.finished: anyio.Event = anyio.Event()
        self.result: Any = None
        self.error: Exception | None = None
        # Whether a call has raised ``error`` (so leaving ``async with`` need not).
        self.error_raised: bool = False
        self.cancelled: bool = False
        self.token: anyio.lowlevel.EventLoopToken = anyio.lowlevel.current_token()

    async def run(self) -> None:
        keep_connections.set(True)
        try:
            with self.cancel_scope:
                try:
                    self.result = await self.application(
                        self.scope, self.inputs.get, self.outputs.put
                    )
                except Exception as exc:
                    self.error = exc
            self.cancelled = self.cancel_scope.cancelled_caught
        finally:
            with anyio.CancelScope(shield=True):
                await release_kept_connections()
            self.finished.set()
            self.outputs.wake()

    def raise_error(self) -> None:
        if self.error is not None:
            self.error_raised = True
            raise self.error

    def raise_outcome(self) -> None:
        """Raise the application's exception, or :exc:`ApplicationCancelled` if it was
        cancelled; return if neither ended it."""
        self.raise_error()
        if self.cancelled:
            raise ApplicationCancelled("the application was cancelled")

    def cancel(self) -> bool:
        if self.finished.is_set():
            return False
        self.cancel_scope.cancel()
        return True

    def cancel_from_anywhere(self) -> None:
        """Cancel the run from a finalizer, which may run in any thread at any moment."""
        if self.finished.is_set():
            return
        # If the event loop is gone, so is the run.
        with contextlib.suppress(Exception):
            self.token.backend_class.run_sync_soon(self.cancel, (), self.token.native_token)

    async def cancel_and_wait(self) -> None:
        """Cancel the application and wait until it has ended, even if we are cancelled."""
        self.cancel()
        with anyio.CancelScope(shield=True):
            await self.finished.wait()

    async def next_output(self, timeout: float) -> Message | None:
        """The next message the application sent, or ``None`` if it ended or time ran out."""
        with anyio.move_on_after(timeout):
            while not self.outputs.items and not self.finished.is_set():
                await self.outputs.wait()
        return self.outputs.items.popleft() if self.outputs.items else None


class AppFuture:
    """The application's outcome, in the shape of the task asgiref's ``future`` is.

    ``done()``, ``cancelled()``, ``result()``, ``exception()`` and ``cancel()`` behave like
    :class:`asyncio.Task`'s: ``result()`` and ``exception()`` raise
    :exc:`ApplicationCancelled` (an :class:`asyncio.CancelledError`) for a cancelled
    application. Awaiting it waits for the application to end and returns its result or
    raises its exception. It works the same on asyncio and trio.
    """

    def __init__(self, run: _Run) -> None:
        self._run = run

    def done(self) -> bool:
        return self._run.finished.is_set()

    def cancelled(self) -> bool:
        return self._run.cancelled

    def cancel(self) -> bool:
        """Cancel the application; ``False`` if it had already ended."""
        return self._run.cancel()

    def result(self) -> Any:
        """:raises concurrent.futures.InvalidStateError: if the application is still running."""
        self._require_done()
        self._run.raise_outcome()
        return self._run.result

    def exception(self) -> Exception | None:
        self._require_done()
        if self._run.cancelled:
            raise ApplicationCancelled("the application was cancelled")
        if self._run.error is not None:
            self._run.error_raised = True
        return self._run.error

    def _require_done(self) -> None:
        if not self.done():
            raise concurrent.futures.InvalidStateError("the application is still running")

    def __await__(self) -> Generator[Any, None, Any]:
        yield from self._run.finished.wait().__await__()
        return self.result()

    def __repr__(self) -> str:
        state = "running" if not self.done() else "cancelled" if self.cancelled() else "done"
        return f"<AppFuture {state}>"


class ApplicationCommunicator(asgiref.testing.ApplicationCommunicator):
    """Runs an ASGI application in the test's event loop and talks to it.

    The application starts on first use and runs concurrently with the test, on asyncio
    or trio, whichever runs the test. It may be used plainly, as Channels' tests do (it is
    cancelled when the communicator is garbage-collected or the event loop ends), or as
    ``async with communicator:``, which runs the application in a task group and cancels
    it on leaving the block (re-raising its exception if no call had raised it yet).

    It keeps the surface of asgiref's communicator, which it subclasses, so subclasses
    written for asgiref's keep working: ``application``, ``scope``, ``input_queue`` (what
    the application receives from) and ``output_queue`` (what it sends to) as
    :class:`MessageQueue`, ``future`` (:class:`AppFuture`), ``wait(timeout)``,
    ``stop(exceptions=True)``. Every method is its own: none of asgiref's runs, so nothing
    here needs asyncio.

    The application runs in a copy of the test's context, as a task the test started
    would (asgiref's communicator gives it an empty one). That copy is how Django's async
    ``TestCase`` sends the application's database calls to the test's thread, where the
    test's transaction and fixtures are; what the application sets stays in its copy.

    While the application runs, :func:`channels.db.close_old_connections` leaves
    connections open, so a test database keeps its connection.
    """

    application: ASGIApp
    scope: Scope

    def __init__(self, application: ASGIApp, scope: Scope) -> None:
        # asgiref's attributes, with the same names and meanings: its methods are all
        # overridden below, so the queues and the future are ours, not asyncio's.
        self.application = guarantee_single_callable(application)  # type: ignore[no-untyped-call]
        self.scope = scope
        self._input_queue: MessageQueue = MessageQueue()
        self._output_queue: MessageQueue = MessageQueue()
        self._future: AppFuture | None = None
        self._run: _Run | None = None
        self._group: TaskGroup | None = None

    # -- asgiref's attributes -----------------------------------------------------------

    @property
    def input_queue(self) -> MessageQueue:
        """The messages the application's ``receive`` takes, in order."""
        return self._input_queue

    @property
    def output_queue(self) -> MessageQueue:
        """The messages the application has sent and nobody has taken yet."""
        return self._output_queue

    @property
    def future(self) -> AppFuture:
        """The application's outcome; starts the application if it has not started."""
        self._ensure_running()
        assert self._future is not None
        return self._future

    # -- running ------------------------------------------------------------------------

    def _new_run(self) -> _Run:
        self._run = run = _Run(self.application, self.scope, self._input_queue, self._output_queue)
        self._future = AppFuture(run)
        return run

    def _ensure_running(self) -> _Run:
        if self._run is None:
            start_detached(self._new_run().run, contextvars.copy_context())
        assert self._run is not None
        return self._run

    def __del__(self) -> None:
        # A plain communicator's application ends with it. (asgiref's __del__ would call
        # stop(), which is not safe from a finalizer on trio.)
        run = self.__dict__.get("_run")
        if run is not None:
            run.cancel_from_anywhere()

    async def __aenter__(self) -> ApplicationCommunicator:
        if self._run is not None:
            raise RuntimeError("this communicator's application is already running")
        run = self._new_run()
        self._group = anyio.create_task_group()
        await self._group.__aenter__()
        self._group.start_soon(run.run)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._run is not None
        assert self._group is not None
        self._run.cancel()
        try:
            # The application's errors are kept for the calls to raise, so the only error
            # the group can carry is the block's own: let it out as itself.
            with unwrap_exception_groups():
                return await self._group.__aexit__(exc_type, exc, tb)
        finally:
            self._group = None
            if exc_type is None and not self._run.error_raised:
                self._run.raise_error()

    # -- talking ------------------------------------------------------------------------

    async def send_input(self, message: Message) -> None:
        """Give the application ``message`` to receive.

        :raises Exception: the application's own exception, if it has crashed.
        :raises ApplicationCancelled: if the application had been cancelled.
        """
        run = self._ensure_running()
        run.raise_outcome()
        await self.input_queue.put(message)

    async def receive_output(self, timeout: float = 1) -> Message:
        """The next message the application sends.

        :raises Exception: the application's own exception, if it has crashed.
        :raises TimeoutError: if it sends nothing within ``timeout`` seconds (the
            application is then cancelled, and waited for, as asgiref's communicator
            does), or it ended without sending anything more.
        :raises ApplicationCancelled: if the application had been cancelled.
        """
        run = self._ensure_running()
        run.raise_outcome()
        message = await run.next_output(timeout)
        if message is not None:
            return message
        run.raise_error()
        if run.finished.is_set():
            raise TimeoutError("the application ended without sending another message")
        await run.cancel_and_wait()
        raise TimeoutError(f"the application sent nothing within {timeout} seconds")

    async def receive_nothing(self, timeout: float = 0.1, interval: float = 0.01) -> bool:
        """Whether the application sends nothing for ``timeout`` seconds.

        Returns as soon as a message is waiting (it is not taken). ``interval`` is accepted
        for compatibility: no polling happens, a sent message wakes this at once.

        :raises Exception: the application's own exception, if it has crashed.
        :raises ApplicationCancelled: if the application had been cancelled.
        """
        del interval
        run = self._ensure_running()
        run.raise_outcome()
        with anyio.move_on_after(timeout):
            while not run.outputs.items and not run.finished.is_set():
                await run.outputs.wait()
        if run.outputs.items:
            return False
        run.raise_error()
        return True

    async def wait(self, timeout: float = 1) -> None:
        """Wait for the application to end.

        :raises Exception: the application's own exception, if it crashed.
        :raises TimeoutError: if it is still running after ``timeout`` seconds; it is then
            cancelled (and waited for) before this raises.
        """
        run = self._ensure_running()
        with anyio.move_on_after(timeout):
            await run.finished.wait()
        if not run.finished.is_set():
            await run.cancel_and_wait()
            raise TimeoutError(f"the application was still running after {timeout} seconds")
        run.raise_error()

    def stop(self, exceptions: bool = True) -> None:
        """Cancel the application if it runs. If it has ended and ``exceptions`` is true,
        raise what ended it, as asgiref's ``stop`` does: its exception, or
        :exc:`ApplicationCancelled` if it was cancelled."""
        if self._run is None:
            return
        if not self._run.cancel() and exceptions:
            self._run.raise_outcome()
