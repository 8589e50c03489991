"""The helpers in channels.utils."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from channels.consumer import AsyncConsumer
from channels.utils import await_many_dispatch, name_that_thing


def test_name_that_thing_names_functions_methods_classes_and_instances() -> None:
    def local() -> None: ...

    assert name_that_thing(name_that_thing) == "channels.utils.name_that_thing"
    assert name_that_thing(AsyncConsumer) == "channels.consumer.AsyncConsumer"
    assert name_that_thing(AsyncConsumer()) == "channels.consumer.AsyncConsumer"
    assert name_that_thing(AsyncConsumer.dispatch) == "channels.consumer.AsyncConsumer.dispatch"
    assert name_that_thing(AsyncConsumer().send) == "channels.consumer.AsyncConsumer.send"
    assert name_that_thing(local).endswith(
        "test_name_that_thing_names_functions_methods_classes_and_instances.<locals>.local"
    )
    assert name_that_thing(42) == "builtins.int"


async def test_await_many_dispatch_dispatches_one_at_a_time_in_arrival_order() -> None:
    fast_send, fast_receive = anyio.create_memory_object_stream[str](10)
    slow_send, slow_receive = anyio.create_memory_object_stream[str](10)
    log: list[str] = []
    active = 0

    async def dispatch(item: str) -> None:
        nonlocal active
        active += 1
        assert active == 1, "dispatch overlapped"
        log.append(item)
        await anyio.sleep(0.001)
        active -= 1
        if item == "stop":
            raise LookupError("done")

    for item in ("a1", "a2", "a3"):
        fast_send.send_nowait(item)
    slow_send.send_nowait("b1")
    slow_send.send_nowait("stop")
    sources = [fast_receive.receive, slow_receive.receive]
    with (
        fast_send,
        fast_receive,
        slow_send,
        slow_receive,
        pytest.raises(LookupError, match="done"),
    ):
        await await_many_dispatch(sources, dispatch)
    # Each source's results in its own order; nothing is dispatched after the error.
    assert log[-1] == "stop"
    assert log.index("b1") < log.index("stop")
    assert [item for item in log if item.startswith("a")] == ["a1", "a2", "a3"][: len(log) - 2]


async def test_turns_go_to_waiters_in_order_and_skip_cancelled_ones() -> None:
    from channels.utils import _Turn

    turn = _Turn()
    log: list[str] = []
    await turn.take()  # held by the test

    async def waiter(name: str, scope: anyio.CancelScope) -> None:
        with scope:
            await turn.take()
            log.append(name)
            turn.give_up()

    scopes = {name: anyio.CancelScope() for name in ("first", "second", "third")}
    async with anyio.create_task_group() as group:
        for name, scope in scopes.items():
            group.start_soon(waiter, name, scope)
            await anyio.wait_all_tasks_blocked()
        scopes["second"].cancel()
        await anyio.wait_all_tasks_blocked()
        turn.give_up()
    assert log == ["first", "third"]
    await turn.take()  # and the turn is free again


async def test_a_failing_source_lets_the_dispatch_under_way_finish() -> None:
    """A source's error waits for the dispatch under way: that dispatch may be inside the
    server's ``send()``, and a cancellation landing there would break the server's own work
    (hypercorn-trio arms its keep-alive timer inside ``send()``)."""
    started, release = anyio.Event(), anyio.Event()
    finished = False

    async def message() -> str:
        if started.is_set():
            await anyio.sleep_forever()
        return "message"

    async def failing() -> str:
        await started.wait()
        release.set()
        raise LookupError("the layer went away")

    async def dispatch(item: str) -> None:
        nonlocal finished
        started.set()
        await release.wait()
        # The server's remaining steps inside send(): each is a checkpoint.
        for _ in range(3):
            await anyio.lowlevel.checkpoint()
        finished = True

    with pytest.raises(LookupError, match="went away"):
        await await_many_dispatch([message, failing], dispatch)
    assert finished, "the source's error cancelled the dispatch under way"
