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


async def test_the_first_source_is_listened_to_by_the_calling_task() -> None:
    """A waiting consumer costs one task fewer: its own task waits on the first source."""
    from channels.utils import Dispatcher

    caller = anyio.get_current_task()
    listeners: list[anyio.TaskInfo] = []

    async def source() -> str:
        listeners.append(anyio.get_current_task())
        raise LookupError("done")

    async def dispatch(item: str) -> None: ...

    with pytest.raises(LookupError, match="done"):
        await Dispatcher(dispatch).run([source])
    assert listeners == [caller]


async def test_a_deferred_source_gets_its_listener_when_it_says_it_is_ready() -> None:
    from channels.utils import Dispatcher, SourceExhausted

    log: list[str] = []
    ready: list[object] = []  # the start functions armed, in order
    withdrawn: list[str] = []
    items = ["layer 1", "layer 2"]
    tasks_armed = 0

    def arm(start: object) -> object:
        nonlocal tasks_armed
        tasks_armed = len(anyio.get_running_tasks())
        ready.append(start)
        return lambda: withdrawn.append("layer")

    async def deferred() -> str:
        if not items:
            raise SourceExhausted
        return items.pop(0)

    stop = anyio.Event()

    async def first() -> str:
        if log:
            await stop.wait()
            raise LookupError("stopped")
        return "client 1"

    async def dispatch(item: str) -> None:
        log.append(item)
        if item == "layer 2":
            stop.set()

    async with anyio.create_task_group() as group:

        async def run() -> None:
            with pytest.raises(LookupError, match="stopped"):
                await Dispatcher(dispatch).run([first], deferred=[(deferred, arm)])  # type: ignore[list-item]

        group.start_soon(run)
        await anyio.wait_all_tasks_blocked()
        assert log == ["client 1"]
        assert len(anyio.get_running_tasks()) == tasks_armed, "a listener before it was ready"
        (start,) = ready
        start()  # type: ignore[operator]
        start()  # type: ignore[operator]  # once only: a second call starts nothing
    assert log == ["client 1", "layer 1", "layer 2"]
    assert withdrawn == ["layer"]  # withdrawn when the dispatcher ended


async def test_a_deferred_source_is_listened_to_once_the_first_one_is_exhausted() -> None:
    from channels.utils import Dispatcher, SourceExhausted

    log: list[str] = []

    async def first() -> str:
        raise SourceExhausted

    items = ["late"]

    async def deferred() -> str:
        if not items:
            raise SourceExhausted
        return items.pop()

    async def dispatch(item: str) -> None:
        log.append(item)

    with anyio.fail_after(5):
        await Dispatcher(dispatch).run([first], deferred=[(deferred, lambda start: lambda: None)])
    assert log == ["late"]
