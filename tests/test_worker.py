"""The worker: channels feeding application instances, crashes, bad messages, runworker."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from django.core.management import CommandError, call_command

from channels.concurrency import async_to_sync
from channels.consumer import AsyncConsumer, SyncConsumer
from channels.layers import get_channel_layer
from channels.routing import ChannelNameRouter
from channels.types import Message
from channels.worker import Worker

ROOT = Path(__file__).resolve().parent.parent


class Recorder(AsyncConsumer):
    instances: list[Recorder] = []
    seen: list[tuple[str, Any]] = []
    expected = 0
    done: anyio.Event

    def __init__(self) -> None:
        Recorder.instances.append(self)

    @staticmethod
    async def record(channel: str, n: Any) -> None:
        Recorder.seen.append((channel, n))
        if len(Recorder.seen) == Recorder.expected:
            Recorder.done.set()

    async def job_run(self, message: Message) -> None:
        if message["n"] == "crash":
            raise RuntimeError("job failed")
        if message["n"] == "send":
            await self.send({"type": "http.response.start"})
        await self.record(self.scope["channel"], message["n"])


class SyncJob(SyncConsumer):
    def job_run(self, message: Message) -> None:
        async_to_sync(Recorder.record)(self.scope["channel"], message["n"])


@pytest.fixture(autouse=True)
def _fresh_recorder() -> None:
    Recorder.instances = []
    Recorder.seen = []


def router() -> ChannelNameRouter:
    return ChannelNameRouter({"jobs": Recorder.as_asgi(), "sync-jobs": SyncJob.as_asgi()})


async def run_worker_until_done(
    worker: Worker, *messages: tuple[str, Any], expected: int | None = None
) -> None:
    Recorder.done = anyio.Event()
    Recorder.expected = len(messages) if expected is None else expected
    layer = worker.channel_layer
    for channel, n in messages:
        await layer.send(channel, {"type": "job.run", "n": n})
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(worker.arun)
            await Recorder.done.wait()
            group.cancel_scope.cancel()


async def test_messages_reach_one_instance_per_channel_in_order(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "django.channels.worker")
    layer = get_channel_layer()
    worker = Worker(router(), ["jobs", "sync-jobs"], layer)
    await run_worker_until_done(
        worker, ("jobs", 1), ("sync-jobs", "a"), ("jobs", 2), ("jobs", 3), ("sync-jobs", "last")
    )
    assert [n for channel, n in Recorder.seen if channel == "jobs"] == [1, 2, 3]
    assert [n for channel, n in Recorder.seen if channel == "sync-jobs"] == ["a", "last"]
    assert len(Recorder.instances) == 1
    assert "Listening on channel jobs" in caplog.messages
    assert "Listening on channel sync-jobs" in caplog.messages


async def test_a_crashed_instance_is_logged_and_replaced_without_losing_messages(
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker = Worker(router(), ["jobs"], get_channel_layer())
    await run_worker_until_done(
        worker,
        ("jobs", 1),
        ("jobs", "crash"),
        ("jobs", 2),
        ("jobs", "send"),
        ("jobs", "last"),
        expected=3,
    )
    assert Recorder.seen == [("jobs", 1), ("jobs", 2), ("jobs", "last")]
    assert len(Recorder.instances) == 3
    crashes = [r for r in caplog.records if r.message.startswith("Application instance")]
    assert [r.exc_info[1].args[0] for r in crashes if r.exc_info and r.exc_info[1]] == [
        "job failed",
        "An application running on worker channel 'jobs' cannot send ASGI events (it sent "
        "'http.response.start'); use the channel layer",
    ]


async def test_a_message_without_type_stops_the_worker_with_a_clear_error() -> None:
    layer = get_channel_layer()
    await layer.send("jobs", {"n": 1})
    worker = Worker(router(), ["jobs", "idle"], layer)
    with anyio.fail_after(5), pytest.raises(ValueError, match="message with no type on channel"):
        await worker.arun()


async def test_a_failing_listener_stops_the_worker_instead_of_hanging() -> None:
    class BrokenLayer:
        closed = False

        async def receive(self, channel: str) -> Message:
            if channel == "broken":
                raise ConnectionError("layer went away")
            await anyio.sleep_forever()
            raise AssertionError

        async def close(self) -> None:
            BrokenLayer.closed = True

    worker = Worker(router(), ["fine", "broken"], BrokenLayer())
    with anyio.fail_after(5), pytest.raises(ConnectionError, match="layer went away"):
        await worker.arun()
    assert BrokenLayer.closed


def test_a_worker_needs_a_layer() -> None:
    with pytest.raises(ValueError, match="Channel layer is not valid"):
        Worker(router(), ["jobs"], None)


def test_runworker_refuses_an_unknown_layer() -> None:
    with pytest.raises(CommandError, match="'nope' is not configured"):
        call_command("runworker", "jobs", layer="nope")


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_runworker_serves_until_signalled(backend: str, stop_signal: signal.Signals) -> None:
    seed = [["jobs", {"type": "job.run", "n": n}] for n in range(3)]
    seed.append(["more-jobs", {"type": "job.run", "n": "x"}])
    env = dict(os.environ, WORKER_TEST_SEED=json.dumps(seed), PYTHONPATH=str(ROOT))
    env["DJANGO_SETTINGS_MODULE"] = "tests.workerproject.settings"
    command = [sys.executable, "-m", "django", "runworker", "jobs", "more-jobs"]
    process = subprocess.Popen(
        [*command, "--backend", backend],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline().strip() for _ in range(4)]
        process.send_signal(stop_signal)
        _, stderr = process.communicate(timeout=15)
    finally:
        process.kill()
    assert sorted(lines) == sorted(
        ["done 0 on jobs", "done 1 on jobs", "done 2 on jobs", "done x on more-jobs"]
    )
    assert [line for line in lines if "on jobs" in line] == [
        "done 0 on jobs",
        "done 1 on jobs",
        "done 2 on jobs",
    ]
    assert process.returncode == 0, stderr
    assert f"on {backend}" in stderr
    assert "Listening on channel jobs" in stderr
    assert "Listening on channel more-jobs" in stderr
    assert f"Worker stopping on {stop_signal.name}" in stderr
    assert "Worker stopped" in stderr
    assert "Traceback" not in stderr
