"""Running a test's application in a task that belongs to no task group.

A communicator used plainly (``comm = WebsocketCommunicator(...)`` in a test, never
closed) must run its application while the test goes on, and nothing in that test owns a
task group to run it in. Channels' tests are written that way, so this is the one place in
the package that starts a task outside a task group. It is confined to the testing tools:
the task is the event loop's own (an asyncio task, or a trio system task), runs in a fresh
context, and is cancelled when the communicator is closed or garbage-collected, or when the
event loop shuts down at the end of the test. ``async with`` on a communicator runs the
application in a real task group instead.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable

import sniffio

__all__ = ["start_detached"]

# asyncio keeps only weak references to its tasks; these keep running ones alive.
_running: set[object] = set()


def start_detached(fn: Callable[[], Awaitable[None]], context: contextvars.Context) -> None:
    """Run ``fn()`` on the current event loop, in ``context``, owned by the loop itself.

    ``fn`` must not raise: a trio system task that raises crashes the whole run, so the
    caller records its outcome instead.
    """
    library = sniffio.current_async_library()
    if library == "trio":
        import trio  # interop point: trio's own facility for tasks owned by the run

        async def body() -> None:
            await fn()

        trio.lowlevel.spawn_system_task(body, name="channels.testing application", context=context)
    elif library == "asyncio":
        import asyncio  # interop point: the loop-owned task asgiref's communicator also uses

        async def coroutine() -> None:
            await fn()

        task = asyncio.get_running_loop().create_task(coroutine(), context=context)
        _running.add(task)
        task.add_done_callback(_running.discard)
    else:
        raise RuntimeError(f"channels.testing cannot run applications on {library}")
