"""The thread bridge: which thread runs what, and what cancellation does across it."""

from __future__ import annotations

import contextvars
import math
import random
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable

import anyio
import anyio.lowlevel
import anyio.to_thread
import asgiref.sync
import pytest
import sniffio
from anyio import wait_all_tasks_blocked

from channels.concurrency import (
    SyncToAsync,
    async_to_sync,
    iterate_in_thread,
    run_sync,
    sync_to_async,
)


def current_thread() -> int:
    return threading.get_ident()


async def test_thread_sensitive_calls_share_one_thread_one_at_a_time() -> None:
    loop_thread = current_thread()
    active = 0
    most_active = 0
    threads: list[int] = []
    lock = threading.Lock()

    def work() -> None:
        nonlocal active, most_active
        with lock:
            active += 1
            most_active = max(most_active, active)
        threads.append(current_thread())
        threading.Event().wait(0.01)  # overlap would show if calls ran concurrently
        with lock:
            active -= 1

    async with anyio.create_task_group() as group:
        for _ in range(8):
            group.start_soon(sync_to_async(work))

    assert len(threads) == 8
    assert len(set(threads)) == 1
    assert loop_thread not in threads
    assert most_active == 1


async def test_thread_insensitive_calls_run_concurrently_off_the_loop() -> None:
    barrier = threading.Barrier(2, timeout=5)
    threads: list[int] = []

    def meet() -> None:
        threads.append(current_thread())
        barrier.wait()  # only returns if both calls are running at the same time

    async with anyio.create_task_group() as group:
        group.start_soon(sync_to_async(meet, thread_sensitive=False))
        group.start_soon(sync_to_async(thread_sensitive=False)(meet))

    assert len(set(threads)) == 2
    assert current_thread() not in threads


async def test_results_exceptions_arguments_and_context_cross_the_bridge() -> None:
    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")
    request_id.set("abc")

    def combine(a: int, b: int, *, sep: str) -> str:
        return f"{a}{sep}{b}{sep}{request_id.get()}"

    assert await sync_to_async(combine)(1, 2, sep="-") == "1-2-abc"
    assert await sync_to_async(combine, thread_sensitive=False)(3, 4, sep="+") == "3+4+abc"

    class Boom(Exception):
        pass

    error = Boom("from the thread")

    def fail() -> None:
        raise error

    with pytest.raises(Boom) as caught:
        await sync_to_async(fail)()
    assert caught.value is error


async def test_decorates_functions_and_methods() -> None:
    class Counter:
        def __init__(self) -> None:
            self.count = 0

        @sync_to_async
        def bump(self, by: int) -> int:
            self.count += by
            return self.count

    counter = Counter()
    assert await counter.bump(2) == 2
    assert await counter.bump(by=3) == 5
    assert isinstance(Counter.__dict__["bump"], SyncToAsync)

    @sync_to_async
    def double(x: int) -> int:
        return x * 2

    assert await double(21) == 42
    assert double.__name__ == "double"


def test_refuses_async_functions() -> None:
    async def coroutine_function() -> None:
        pass

    with pytest.raises(TypeError, match="only be applied to sync functions"):
        sync_to_async(coroutine_function)


async def test_async_to_sync_in_a_worker_reaches_the_calling_loop() -> None:
    loop_thread = current_thread()
    library = sniffio.current_async_library()

    async def where() -> tuple[int, str]:
        await anyio.lowlevel.checkpoint()
        return current_thread(), sniffio.current_async_library()

    def from_thread() -> tuple[int, str]:
        return async_to_sync(where)()

    assert await sync_to_async(from_thread)() == (loop_thread, library)
    assert await sync_to_async(from_thread, thread_sensitive=False)() == (loop_thread, library)
    assert await anyio.to_thread.run_sync(from_thread) == (loop_thread, library)


async def test_thread_sensitive_call_inside_async_to_sync_runs_on_the_waiting_thread() -> None:
    def innermost() -> int:
        return current_thread()

    async def middle() -> int:
        return await sync_to_async(innermost)()

    def outer() -> tuple[int, int]:
        return current_thread(), async_to_sync(middle)()

    outer_thread, inner_thread = await sync_to_async(outer)()
    assert inner_thread == outer_thread


async def test_asgiref_async_to_sync_in_a_sync_handler() -> None:
    """Existing code calls asgiref's bridge from sync code: it reaches the loop that made
    the call, on asyncio and (with Django set up, see channels._django_trio) on trio."""
    loop_thread = current_thread()

    async def where() -> int:
        return current_thread()

    def call_through_asgiref() -> int:
        return asgiref.sync.async_to_sync(where)()

    assert await sync_to_async(call_through_asgiref)() == loop_thread


def test_asgiref_async_to_sync_under_trio_without_django_is_refused_with_directions() -> None:
    """Without channels' Django app (nothing installed the routing), asgiref's bridge
    fails under trio with directions instead of corrupting the loop's state."""
    script = """
import asgiref.sync, trio
from channels.concurrency import sync_to_async
from channels.exceptions import AsyncBridgeError

async def where():
    return 1

async def main():
    try:
        await sync_to_async(lambda: asgiref.sync.async_to_sync(where)())()
    except AsyncBridgeError as exc:
        print("refused:", exc)

trio.run(main)
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert "refused:" in result.stdout
    assert "channels.concurrency.async_to_sync" in result.stdout


async def test_cancelling_the_caller_waits_for_the_sync_call_then_cancels() -> None:
    started = threading.Event()
    release = threading.Event()
    finished: list[str] = []
    after_call: list[str] = []

    def blocking() -> str:
        started.set()
        release.wait(5)
        finished.append("sync call finished")
        return "result"

    async def caller(scope: anyio.CancelScope) -> None:
        with scope:
            await sync_to_async(blocking)()
            after_call.append("not cancelled")

    scope = anyio.CancelScope()
    async with anyio.create_task_group() as group:
        group.start_soon(caller, scope)
        await anyio.to_thread.run_sync(started.wait)
        scope.cancel()
        await wait_all_tasks_blocked()
        assert not finished, "the sync call cannot have been interrupted"
        release.set()

    assert finished == ["sync call finished"]
    assert after_call == []
    assert scope.cancelled_caught


@pytest.mark.parametrize("thread_sensitive", [True, False])
async def test_cancelling_the_caller_cancels_what_the_thread_awaits(
    thread_sensitive: bool,
) -> None:
    seen_in_thread: list[type[BaseException]] = []
    cancelled = anyio.get_cancelled_exc_class()
    entered = anyio.Event()

    async def wait_forever() -> None:
        entered.set()
        await anyio.sleep_forever()

    def waits_on_the_loop() -> None:
        try:
            async_to_sync(wait_forever)()
        except BaseException as exc:
            seen_in_thread.append(type(exc))
            raise

    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as group:
            group.start_soon(sync_to_async(waits_on_the_loop, thread_sensitive=thread_sensitive))
            await entered.wait()
            scope.cancel()
    assert scope.cancelled_caught
    assert seen_in_thread == [cancelled]


@pytest.mark.parametrize("thread_sensitive", [True, False])
async def test_an_already_cancelled_caller_does_not_start_the_sync_call(
    thread_sensitive: bool,
) -> None:
    ran: list[bool] = []
    with anyio.CancelScope() as scope:
        scope.cancel()
        await sync_to_async(lambda: ran.append(True), thread_sensitive=thread_sensitive)()
    assert scope.cancelled_caught
    assert ran == []


async def test_context_variables_cross_the_bridge_both_ways() -> None:
    user: contextvars.ContextVar[str] = contextvars.ContextVar("user", default="anonymous")
    seen: list[str] = []

    async def on_the_loop() -> None:
        seen.append(user.get())  # what the sync code set before calling us
        user.set("set on the loop")

    def in_the_thread() -> None:
        user.set("set in the thread")
        async_to_sync(on_the_loop)()
        seen.append(user.get())  # what the coroutine set

    for thread_sensitive in (True, False):
        seen.clear()
        user.set("anonymous")
        await sync_to_async(in_the_thread, thread_sensitive=thread_sensitive)()
        assert seen == ["set in the thread", "set on the loop"]
        assert user.get() == "set on the loop"  # as asgiref: the call's changes stay


async def test_djangos_active_language_follows_the_call() -> None:
    """Django keeps per-request state in asgiref ``Local``s; they must move with the call."""
    from django.utils import translation

    translation.activate("de")
    try:
        assert await sync_to_async(translation.get_language)() == "de"

        async def language_on_the_loop() -> str | None:
            return translation.get_language()

        def switch_then_ask() -> str | None:
            translation.activate("fr")
            return async_to_sync(language_on_the_loop)()

        assert await sync_to_async(switch_then_ask)() == "fr"
    finally:
        translation.deactivate()


async def test_async_to_sync_refuses_the_event_loop_thread() -> None:
    async def nothing() -> None:
        pass

    with pytest.raises(RuntimeError, match="same thread as an async event loop"):
        async_to_sync(nothing)()


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_async_to_sync_without_a_loop_runs_one(backend: str) -> None:
    """A script or management command: a new loop, and thread-sensitive calls made from
    it come back to the calling thread, where Django's sync code (and its transaction) is.
    """
    caller = current_thread()

    async def work(x: int) -> tuple[int, str, int]:
        ran_on = await sync_to_async(current_thread)()
        if backend == "asyncio":  # Django's async ORM goes through asgiref's bridge
            assert await asgiref.sync.sync_to_async(current_thread)() == caller
        return x * 2, sniffio.current_async_library(), ran_on

    assert async_to_sync(work, backend=backend)(21) == (42, backend, caller)


def test_async_to_sync_raises_the_coroutines_exception() -> None:
    async def fail() -> None:
        raise LookupError("missing")

    with pytest.raises(LookupError, match="missing"):
        async_to_sync(fail)()


def _random_chain(rng: random.Random, depth: int) -> Callable[[], Awaitable[int]]:
    """An async callable that crosses into threads and back ``depth`` times, choosing
    thread-sensitive or not, and sometimes fanning out, at random; it returns ``depth``."""
    if depth == 0:

        async def leaf() -> int:
            await anyio.sleep(rng.random() * 0.002)
            return 0

        return leaf

    inner = _random_chain(rng, depth - 1)
    thread_sensitive = rng.random() < 0.6
    fan_out = rng.random() < 0.3

    async def both() -> int:
        results: list[int] = []

        async def one() -> None:
            results.append(await inner())

        async with anyio.create_task_group() as group:
            group.start_soon(one)
            group.start_soon(one)
        return max(results)

    def in_thread() -> int:
        return async_to_sync(both if fan_out else inner)() + 1

    async def hop() -> int:
        return await sync_to_async(in_thread, thread_sensitive=thread_sensitive)()

    return hop


@pytest.mark.parametrize("seed", range(8))
async def test_random_nesting_never_deadlocks_even_when_cancelled(seed: int) -> None:
    rng = random.Random(seed)
    depths = [rng.randint(1, 5) for _ in range(8)]
    chains = [_random_chain(rng, depth) for depth in depths]
    deadlines = [rng.random() * 0.01 if n % 2 else math.inf for n in range(len(chains))]
    results: dict[int, int] = {}

    async def run(n: int) -> None:
        with anyio.move_on_after(deadlines[n]):
            results[n] = await chains[n]()

    with anyio.fail_after(20):
        async with anyio.create_task_group() as group:
            for n in range(len(chains)):
                group.start_soon(run, n)
    for n, depth in enumerate(depths):
        if deadlines[n] == math.inf:
            assert results[n] == depth


# -- iterate_in_thread ------------------------------------------------------------------


class Numbers:
    """A sync iterator that records where and how far it ran."""

    def __init__(self, limit: float = math.inf, fail_at: int | None = None) -> None:
        self.limit = limit
        self.fail_at = fail_at
        self.produced = 0
        self.threads: set[int] = set()
        self.running = False

    def __iter__(self) -> Numbers:
        return self

    def __next__(self) -> int:
        self.running = True
        try:
            self.threads.add(threading.get_ident())
            if self.produced >= self.limit:
                raise StopIteration
            if self.produced == self.fail_at:
                raise LookupError(f"no item {self.produced}")
            self.produced += 1
            return self.produced - 1
        finally:
            self.running = False


async def test_iterate_in_thread_yields_every_item_in_order_from_the_worker_thread() -> None:
    numbers = Numbers(limit=1000)
    async with iterate_in_thread(numbers, limit=4) as batches:
        sizes = []
        received: list[int] = []
        async for batch in batches:
            sizes.append(len(batch))
            received += batch
    assert received == list(range(1000))
    assert max(sizes) <= 4  # the thread never ran further ahead than the limit
    assert numbers.threads == {await run_sync(threading.get_ident)}
    assert threading.get_ident() not in numbers.threads


async def test_iterate_in_thread_weighs_items_as_told() -> None:
    words = ["a", "bb", "cccc", "dddddddd"] * 50
    async with iterate_in_thread(words, limit=8, weight=len) as batches:
        received = [batch async for batch in batches]
    assert [word for batch in received for word in batch] == words
    # A batch holds what the thread made before it had to wait: under 8 letters, plus one.
    assert all(sum(map(len, batch[:-1])) < 8 for batch in received)


async def test_iterate_in_thread_raises_the_iterators_error_after_the_items_before_it() -> None:
    received: list[int] = []

    async def consume() -> None:
        async with iterate_in_thread(Numbers(fail_at=5)) as batches:
            async for batch in batches:
                received.extend(batch)

    with pytest.raises(LookupError, match="no item 5"):
        await consume()
    assert received == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("leave", ["break", "cancel"])
async def test_leaving_iterate_in_thread_early_stops_the_thread_before_the_block_ends(
    leave: str,
) -> None:
    numbers = Numbers()  # endless: only the stop ends it
    with anyio.CancelScope() as scope:
        async with iterate_in_thread(numbers, limit=3) as batches:
            async for batch in batches:
                if batch[-1] >= 10:
                    if leave == "break":
                        break
                    scope.cancel()
                    await anyio.lowlevel.checkpoint()
    assert scope.cancelled_caught is (leave == "cancel")
    # The thread had stopped by the time the block ended, at most a limit's worth ahead.
    assert not numbers.running
    stopped_at = numbers.produced
    assert 11 <= stopped_at <= 13 + 3 + 1
    await anyio.sleep(0.01)
    assert numbers.produced == stopped_at


async def test_iterate_in_thread_refuses_a_limit_below_one() -> None:
    with pytest.raises(ValueError, match="limit must be at least 1, got 0"):
        async with iterate_in_thread(Numbers(limit=1), limit=0):
            pass


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_thread_without_a_loop_can_start_one_after_async_to_sync(backend: str) -> None:
    """async_to_sync from a plain thread runs the call on a loop of its own; what that
    loop's task leaves in the context must not make the thread look like it runs a loop."""

    async def answer() -> str:
        return sniffio.current_async_library()

    outcome: list[object] = []

    def plain_thread() -> None:
        try:
            assert async_to_sync(answer)() == "asyncio"
            assert sniffio.current_async_library_cvar.get() is None
            outcome.append(anyio.run(answer, backend=backend))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=plain_thread)
    thread.start()
    thread.join()
    assert outcome == [backend]
