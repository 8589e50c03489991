"""The Redis layer from scripts and task queues: sync code through ``async_to_sync``.

Each script runs in a process of its own, with Django settings as a project writes them,
and calls the layer the way channels_redis's README tells Celery tasks to.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from channels.layers.redis import RedisChannelLayer

REPO = Path(__file__).resolve().parent.parent

_SETUP = """
import json, sys
import django
from django.conf import settings

url, prefix, bridge = sys.argv[1], sys.argv[2], sys.argv[3]
settings.configure(
    CHANNEL_LAYERS={
        "default": {
            "BACKEND": "channels.layers.redis.RedisChannelLayer",
            "CONFIG": {"hosts": [url], "prefix": prefix, **json.loads(sys.argv[4])},
        }
    }
)
django.setup()

if bridge == "asgiref":
    from asgiref.sync import async_to_sync
else:
    import functools
    from channels.concurrency import async_to_sync as bridge_to
    async_to_sync = functools.partial(bridge_to, backend=bridge)

from channels.layers import get_channel_layer
"""

_TASKS = """
# What a Celery task does, once per task: send, then close the pools.
layer = get_channel_layer()
for n in range(int(sys.argv[5])):
    async_to_sync(layer.group_send)("jobs", {"type": "job.done", "by": sys.argv[6], "n": n})
    async_to_sync(layer.close_pools)()
print("sent")
"""

_CUSTOM_FORMAT = """
from channels.layers.redis.serializers import BaseMessageSerializer, registry

class Rot13JSON(BaseMessageSerializer):
    def as_bytes(self, message, *args, **kwargs):
        return json.dumps(message).encode().translate(ROT)

    def from_bytes(self, message, *args, **kwargs):
        return json.loads(message.translate(ROT))

letters = bytes(range(97, 123))
ROT = bytes.maketrans(letters, letters[13:] + letters[:13])
registry.register_serializer("rot13-json", Rot13JSON)
layer = get_channel_layer()
if sys.argv[5] == "send":
    async_to_sync(layer.send)("mailbox", {"type": "note", "text": "secret"})
else:
    print(json.dumps(async_to_sync(layer.receive)("mailbox")))
async_to_sync(layer.close_pools)()
"""


# Development mode turns on asyncio's debug mode, which reports every callback that ran
# longer than 0.1 s: on a loaded machine that says how busy the machine was, not what the
# script did, so those lines are left out of what the tests compare.
_SLOW_CALLBACK = re.compile(r"^Executing <.*> took \d+\.\d+ seconds\n", re.MULTILINE)


def run_script(code: str, *args: Any) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a new Python process; warnings are errors there."""
    process = subprocess.run(
        [sys.executable, "-W", "error", "-c", textwrap.dedent(code), *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONDEVMODE": "1"},
        cwd="/",
        timeout=60,
    )
    process.stderr = _SLOW_CALLBACK.sub("", process.stderr)
    return process


async def start_script(code: str, *args: Any) -> subprocess.CompletedProcess[str]:
    return await anyio.to_thread.run_sync(lambda: run_script(code, *args))


@pytest.mark.parametrize("bridge", ["asgiref", "asyncio", "trio"])
async def test_tasks_send_then_close_pools_repeatedly_from_two_processes(
    redis_url: str, prefix: str, bridge: str
) -> None:
    layer = RedisChannelLayer(hosts=[redis_url], prefix=prefix)
    channel = await layer.new_channel()
    await layer.group_add("jobs", channel)
    done: list[subprocess.CompletedProcess[str]] = []

    async def task_worker(name: str) -> None:
        done.append(await start_script(_SETUP + _TASKS, redis_url, prefix, bridge, "{}", 5, name))

    try:
        async with anyio.create_task_group() as workers:
            workers.start_soon(task_worker, "one")
            workers.start_soon(task_worker, "two")
        for process in done:
            assert (process.returncode, process.stdout, process.stderr) == (0, "sent\n", "")
        got = [await layer.receive(channel) for _ in range(10)]
        for name in ("one", "two"):  # each worker's messages, in its order
            assert [m["n"] for m in got if m["by"] == name] == list(range(5))
    finally:
        await layer.flush()
        await layer.close()


@pytest.mark.parametrize("bridge", ["asgiref", "trio"])
def test_custom_serializer_registered_in_two_processes(
    redis_url: str, prefix: str, bridge: str
) -> None:
    config = json.dumps({"serializer_format": "rot13-json"})
    sender = run_script(_SETUP + _CUSTOM_FORMAT, redis_url, prefix, bridge, config, "send")
    assert (sender.returncode, sender.stderr) == (0, "")
    receiver = run_script(_SETUP + _CUSTOM_FORMAT, redis_url, prefix, bridge, config, "receive")
    assert (receiver.returncode, receiver.stderr) == (0, "")
    assert json.loads(receiver.stdout) == {"type": "note", "text": "secret"}


async def test_close_pools_in_a_sync_function_of_this_process(redis_url: str, prefix: str) -> None:
    """A sync helper (called in a thread, as Django views and tasks do) that sends and then
    closes the pools, many times; the layer keeps working for everyone."""
    from channels.concurrency import async_to_sync

    layer = RedisChannelLayer(hosts=[redis_url], prefix=prefix)

    def notify(n: int) -> None:
        async_to_sync(layer.send)("updates", {"type": "update", "n": n})
        async_to_sync(layer.close_pools)()

    try:
        for n in range(5):
            await anyio.to_thread.run_sync(notify, n)
        assert [(await layer.receive("updates"))["n"] for _ in range(5)] == list(range(5))
        await layer.close_pools()
        await layer.send("updates", {"type": "after.close"})
        assert await layer.receive("updates") == {"type": "after.close"}
    finally:
        await layer.flush()
        await layer.close()
