"""A small structured harness for driving ASGI applications in tests."""

from __future__ import annotations

import math

import anyio

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
