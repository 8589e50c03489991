"""A small structured harness for driving ASGI applications in tests."""

from __future__ import annotations

import math
from typing import Any

import anyio
import anyio.lowlevel

from channels.types import ASGIApp, Message, Scope


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


class TurnCounter:
    """How many times a task that only ever yields got to run: inside ``async with``, a
    measure of how often the code under test let other tasks in."""

    def __init__(self) -> None:
        self.turns = 0
        self._group: Any = None

    async def _spin(self) -> None:
        while True:
            self.turns += 1
            await anyio.lowlevel.checkpoint()

    async def __aenter__(self) -> TurnCounter:
        self._group = anyio.create_task_group()
        await self._group.__aenter__()
        self._group.start_soon(self._spin)
        await anyio.sleep(0.01)  # let it start
        self.turns = 0
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        self._group.cancel_scope.cancel()
        return await self._group.__aexit__(*exc_info)  # type: ignore[no-any-return]


async def stored_session(**data: Any) -> str:
    """The key of a new session saved in the database with ``data``."""
    from django.contrib.sessions.backends.db import SessionStore

    from channels.db import database_sync_to_async

    def save() -> str:
        session = SessionStore()
        session.update(data)
        session.save()
        assert session.session_key is not None
        return session.session_key

    return await database_sync_to_async(save)()
