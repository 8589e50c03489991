"""Driving an ASGI application from a test, one message at a time."""

from __future__ import annotations

import asyncio  # interop point: ApplicationCancelled subclasses asyncio.CancelledError
import concurrent.futures
import contextlib
import contextvars
import weakref
from collections import deque
from collections.abc import Generator
from types import TracebackType
from typing import Any

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup
from asgiref.compatibility import guarantee_single_callable

from ..db import keep_connections, release_kept_connections
from ..types import ASGIApp, Message, Scope
from ..utils import unwrap_exception_groups
from ._hosting import start_detached

__all__ = ["ApplicationCancelled", "ApplicationCommunicator"]


class ApplicationCancelled(asyncio.CancelledError):
    """The application was cancelled (a ``receive_output`` timed out, or
    ``future.cancel()``), so it can no longer be talked to.

    A subclass of :class:`asyncio.CancelledError` on both backends, because that is what
    asgiref's communicator raises and what Channels' test suites expect. Like it, this is
    a ``BaseException``: ``except Exception`` does not catch it.
    """


class _Mailbox:
    """An unbounded queue for one event loop whose waiters can look without taking."""

    def __init__(self) -> None:
        self.items: deque[Message] = deque()
        self._arrived: anyio.Event | None = None

    def put(self, message: Message) -> None:
        self.items.append(message)
        self.wake()

    def wake(self) -> None:
        if self._arrived is not None:
            self._arrived.set()
            self._arrived = None

    async def wait(self) -> None:
        """Wait until something is put in, or :meth:`wake` is called."""
        if self._arrived is None:
            self._arrived = anyio.Event()
        await self._arrived.wait()

    async def get(self) -> Message:
        await anyio.lowlevel.checkpoint_if_cancelled()
        while not self.items:
            await self.wait()
        return self.items.popleft()


class _Run:
    """One run of the application, and what became of it.

    Kept apart from the communicator so that the running task does not keep the
    communicator alive: dropping the communicator is what cancels a plain one.
    """

    def __init__(self, application: ASGIApp, scope: Scope) -> None:
        self.application = application
        self.scope = scope
        self.inputs: _Mailbox = _Mailbox()
        self.outputs: _Mailbox = _Mailbox()
        self.cancel_scope: anyio.CancelScope = anyio.CancelScope()
        self.finished: anyio.Event = anyio.Event()
        self.result: Any = None
        self.error: Exception | None = None
        self.cancelled: bool = False
        self.token: anyio.lowlevel.EventLoopToken = anyio.lowlevel.current_token()

    async def run(self) -> None:
        keep_connections.set(True)
        try:
            with self.cancel_scope:
                try:
                    self.result = await self.application(self.scope, self.inputs.get, self._send)
                except Exception as exc:
                    self.error = exc
            self.cancelled = self.cancel_scope.cancelled_caught
        finally:
            with anyio.CancelScope(shield=True):
                await release_kept_connections()
            self.finished.set()
            self.outputs.wake()

    async def _send(self, message: Message) -> None:
        self.outputs.put(message)
        await anyio.lowlevel.checkpoint()

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error

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

    async def next_output(self, timeout: float) -> Message | None:
        """The next message the application sent, or ``None`` if it ended or time ran out."""
        with anyio.move_on_after(timeout):
            while not self.outputs.items and not self.finished.is_set():
                await self.outputs.wait()
        return self.outputs.items.popleft() if self.outputs.items else None


class AppFuture:
    """The application's outcome, in the shape of a future.

    ``done()``, ``cancelled()``, ``result()``, ``exception()`` and ``cancel()`` behave like
    :class:`concurrent.futures.Future`'s; awaiting it waits for the application to end and
    returns its result or raises its exception.
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
        error = self.exception()
        if error is not None:
            raise error
        return self._run.result

    def exception(self) -> Exception | None:
        if not self.done():
            raise concurrent.futures.InvalidStateError("the application is still running")
        if self._run.cancelled:
            raise ApplicationCancelled("the application was cancelled")
        return self._run.error

    def __await__(self) -> Generator[Any, None, Any]:
        yield from self._run.finished.wait().__await__()
        return self.result()


class ApplicationCommunicator:
    """Runs an ASGI application in the test's event loop and talks to it.

    The application starts on first use and runs concurrently with the test, on asyncio
    or trio, whichever runs the test. It may be used plainly, as Channels' tests do (it is
    cancelled when the communicator is garbage-collected or the event loop ends), or as
    ``async with communicator:``, which runs the application in a task group and cancels
    it on leaving the block (re-raising its exception if no call had raised it yet).

    The application runs in a copy of the test's context, as a task the test started
    would (asgiref's communicator gives it an empty one). That copy is how Django's async
    ``TestCase`` sends the application's database calls to the test's thread, where the
    test's transaction and fixtures are; what the application sets stays in its copy.

    While the application runs, :func:`channels.db.close_old_connections` leaves
    connections open, so a test database keeps its connection.
    """

    def __init__(self, application: ASGIApp, scope: Scope) -> None:
        self.application: ASGIApp = guarantee_single_callable(application)  # type: ignore[no-untyped-call]
        self.scope = scope
        self._run: _Run | None = None
        self._group: TaskGroup | None = None
        self._error_raised = False

    # -- running ------------------------------------------------------------------------

    def _ensure_running(self) -> _Run:
        if self._run is None:
            self._run = _Run(self.application, self.scope)
            start_detached(self._run.run, contextvars.copy_context())
            weakref.finalize(self, self._run.cancel_from_anywhere)
        return self._run

    async def __aenter__(self) -> ApplicationCommunicator:
        if self._run is not None:
            raise RuntimeError("this communicator's application is already running")
        self._run = run = _Run(self.application, self.scope)
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
            if exc_type is None and not self._error_raised:
                self._raise_error()

    def _raise_error(self) -> None:
        assert self._run is not None
        if self._run.error is not None:
            self._error_raised = True
            raise self._run.error

    def _raise_if_over(self) -> None:
        """Raise the application's exception, or :exc:`ApplicationCancelled`, if either
        ended it."""
        self._raise_error()
        assert self._run is not None
        if self._run.cancelled:
            raise ApplicationCancelled("the application was cancelled")

    @property
    def future(self) -> AppFuture:
        """The application's outcome; starts the application if it has not started."""
        return AppFuture(self._ensure_running())

    # -- talking ------------------------------------------------------------------------

    async def send_input(self, message: Message) -> None:
        """Give the application ``message`` to receive.

        :raises Exception: the application's own exception, if it has crashed.
        :raises ApplicationCancelled: if the application had been cancelled.
        """
        run = self._ensure_running()
        self._raise_if_over()
        run.inputs.put(message)
        await anyio.lowlevel.checkpoint()

    async def receive_output(self, timeout: float = 1) -> Message:
        """The next message the application sends.

        :raises Exception: the application's own exception, if it has crashed.
        :raises TimeoutError: if it sends nothing within ``timeout`` seconds (the
            application is then cancelled, and waited for, as asgiref's communicator
            does), or it ended without sending anything more.
        :raises ApplicationCancelled: if the application had been cancelled.
        """
        run = self._ensure_running()
        self._raise_if_over()
        message = await run.next_output(timeout)
        if message is not None:
            return message
        self._raise_error()
        if run.finished.is_set():
            raise TimeoutError("the application ended without sending another message")
        run.cancel()
        with anyio.CancelScope(shield=True):
            await run.finished.wait()
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
        self._raise_if_over()
        with anyio.move_on_after(timeout):
            while not run.outputs.items and not run.finished.is_set():
                await run.outputs.wait()
        if run.outputs.items:
            return False
        self._raise_error()
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
            run.cancel()
            with anyio.CancelScope(shield=True):
                await run.finished.wait()
            raise TimeoutError(f"the application was still running after {timeout} seconds")
        self._raise_error()

    def stop(self, exceptions: bool = True) -> None:
        """Cancel the application if it runs; otherwise raise its exception if asked to."""
        if self._run is None:
            return
        if not self._run.cancel() and exceptions:
            self._raise_error()
