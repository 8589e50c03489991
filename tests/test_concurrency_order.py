"""Order and cancellation across the thread bridge: what libraries built on it rely on.

Calls started one after another resume in that order (a library that serialises
notifications in threads and then sends them keeps them in order), and ending an
application with asyncio's plain ``Task.cancel()`` (as test runners and asgiref's
``ApplicationCommunicator`` do) leaves nothing behind: no thread still running, nothing
logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest

from channels.concurrency import async_to_sync, sync_to_async
from channels.db import database_sync_to_async


@pytest.mark.parametrize("thread_sensitive", [False, True], ids=["insensitive", "sensitive"])
async def test_calls_started_in_sequence_resume_in_start_order(thread_sensitive: bool) -> None:
    def serialise(index: int) -> str:
        return json.dumps({"index": index, "payload": list(range(50))})

    serialise_in_thread = sync_to_async(serialise, thread_sensitive=thread_sensitive)
    started: list[int] = []
    resumed: list[int] = []

    async def notify(index: int) -> None:
        started.append(index)  # on trio, sibling tasks start in either order
        await serialise_in_thread(index)
        resumed.append(index)

    for _ in range(5):
        started.clear()
        resumed.clear()
        async with anyio.create_task_group() as group:
            for index in range(100):
                group.start_soon(notify, index)
        assert resumed == started


async def test_a_slow_call_does_not_hold_up_later_calls_that_returned() -> None:
    """The order kept is the order calls return in, not a queue behind the slowest."""
    slow_running = threading.Event()
    later_resumed = threading.Event()
    resumed: list[str] = []

    def slow() -> None:
        slow_running.set()
        assert later_resumed.wait(10), "the slow call held up the fast one"

    async def run(name: str, func: Any) -> None:
        await sync_to_async(func, thread_sensitive=False)()
        resumed.append(name)
        if name == "fast":
            later_resumed.set()

    async with anyio.create_task_group() as group:
        group.start_soon(run, "slow", slow)
        await anyio.to_thread.run_sync(slow_running.wait)
        group.start_soon(run, "fast", lambda: None)

    assert resumed == ["fast", "slow"]


def _run_and_cancel_natively(thread_sensitive: bool, calls_back: bool) -> dict[str, Any]:
    """Cancel, with ``Task.cancel()``, a task waiting in ``database_sync_to_async``."""
    seen: dict[str, Any] = {"loop_errors": [], "thread": []}

    async def coroutine() -> None:
        await anyio.lowlevel.checkpoint()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda loop, context: seen["loop_errors"].append(context))
        started = asyncio.Event()
        cancelled = threading.Event()

        def slow() -> str:
            loop.call_soon_threadsafe(started.set)
            cancelled.wait(10)
            if calls_back:
                try:
                    async_to_sync(coroutine)()
                except BaseException as exc:
                    seen["thread"].append(type(exc).__name__)
            seen["thread"].append("finished")
            return "result"

        task = asyncio.create_task(
            database_sync_to_async(slow, thread_sensitive=thread_sensitive)()
        )
        await asyncio.wait(
            [task, asyncio.ensure_future(started.wait())], return_when="FIRST_COMPLETED"
        )
        assert not task.done(), task.exception()
        task.cancel()
        await asyncio.sleep(0.01)  # let the cancellation land while the thread runs
        cancelled.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        seen["thread_done_when_task_ended"] = "finished" in seen["thread"]
        seen["task_cancelled"] = task.cancelled()
        await asyncio.sleep(0.05)  # anything the thread posts late would land here

    asyncio.run(main())
    return seen


@pytest.mark.django_db(transaction=True)  # database_sync_to_async checks connections
@pytest.mark.parametrize("thread_sensitive", [True, False], ids=["sensitive", "insensitive"])
@pytest.mark.parametrize("calls_back", [False, True], ids=["plain", "calls-back"])
def test_asyncio_task_cancel_during_a_sync_call_is_quiet_and_waits_for_it(
    thread_sensitive: bool, calls_back: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Plain asyncio (this test drives its own loop, so it is asyncio only): the task
    waits for the thread, is then cancelled, and nothing is logged; a coroutine the
    thread runs after the cancellation is cancelled too."""
    with caplog.at_level(logging.DEBUG):
        seen = _run_and_cancel_natively(thread_sensitive, calls_back)

    assert seen["loop_errors"] == []
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert seen["task_cancelled"]
    assert seen["thread_done_when_task_ended"], "the sync call outlived its task"
    if calls_back:
        assert seen["thread"] == ["CancelledError", "finished"]
