"""A small structured harness for driving ASGI applications in tests."""

from __future__ import annotations

import math
from types import TracebackType
from typing import Any

import anyio
from anyio.abc import TaskGroup

from channels.types import ASGIApp, Message, Scope


class RunningApp:
    """Runs ``app`` in a task group; feed it with ``send_input``, read ``receive_output``.

    Leaving the ``async with`` block cancels the app if it is still running.
    """

    def __init__(self, app: ASGIApp, scope: Scope) -> None:
        self.app = app
        self.scope = scope
        self.input_send, self.input_receive = anyio.create_memory_object_stream[Message](math.inf)
        self.output_send, self.output_receive = anyio.create_memory_object_stream[Message](
            math.inf
        )
        self.finished = False
        self.result: Any = None
        self.error: Exception | None = None
        self._done = anyio.Event()
        self._group: TaskGroup | None = None

    async def __aenter__(self) -> RunningApp:
        self._group = anyio.create_task_group()
        await self._group.__aenter__()
        self._group.start_soon(self._run)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._group is not None
        self._group.cancel_scope.cancel()
        try:
            return await self._group.__aexit__(exc_type, exc, tb)
        finally:
            for stream in (
                self.input_send,
                self.input_receive,
                self.output_send,
                self.output_receive,
            ):
                stream.close()

    async def _run(self) -> None:
        try:
            self.result = await self.app(
                self.scope, self.input_receive.receive, self.output_send.send
            )
        except Exception as exc:
            self.error = exc
        finally:
            self.finished = True
            self._done.set()

    async def send_input(self, message: Message) -> None:
        await self.input_send.send(message)

    async def receive_output(self, timeout: float = 5) -> Message:
        with anyio.fail_after(timeout):
            return await self.output_receive.receive()

    async def wait(self, timeout: float = 5) -> Any:
        """Wait for the app to finish; return its result or raise its exception."""
        with anyio.fail_after(timeout):
            await self._done.wait()
        if self.error is not None:
            raise self.error
        return self.result


async def feed_and_run(app: ASGIApp, scope: Scope, *messages: Message) -> list[Message]:
    """Run ``app`` to completion on a fixed input, in the caller's task, and return output.

    Called directly (not in a task group) so that exceptions reach the caller exactly as
    a server would see them.
    """
    inputs_send, inputs_receive = anyio.create_memory_object_stream[Message](math.inf)
    outputs_send, outputs_receive = anyio.create_memory_object_stream[Message](math.inf)
    with inputs_send, inputs_receive, outputs_send, outputs_receive:
        for message in messages:
            inputs_send.send_nowait(message)
        with anyio.fail_after(5):
            await app(scope, inputs_receive.receive, outputs_send.send)
        output = []
        while True:
            try:
                output.append(outputs_receive.receive_nowait())
            except anyio.WouldBlock:
                return output
