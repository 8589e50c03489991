"""Redis layers shared by several OS processes: ours, and channels_redis's (upstream).

Upstream Channels imports as ``channels`` too, so it runs in a virtual environment of its
own (``CHANNELS_UPSTREAM_VENV``, by default ``~/.cache/channels-anyio/upstream-venv``),
built here on first use with pip. If it cannot be built the tests fail, saying why.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from channels.layers.redis import RedisChannelLayer, RedisPubSubChannelLayer
from tests.redis_server import db_url

UPSTREAM = ["channels==4.3.2", "channels_redis==4.3.0", "cryptography"]
DRIVER = Path(__file__).with_name("layer_driver.py")
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def upstream_python() -> str:
    """The Python of a virtual environment with upstream Channels and channels_redis."""
    default = Path.home() / ".cache" / "channels-anyio" / "upstream-venv"
    venv = Path(os.environ.get("CHANNELS_UPSTREAM_VENV", default))
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import channels_redis.core, cryptography"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return str(python)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", *UPSTREAM],
            check=True,
            capture_output=True,
            timeout=600,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        output = getattr(exc, "stderr", b"") or b""
        pytest.fail(
            f"Cannot build the upstream virtual environment at {venv} "
            f"(pip install {' '.join(UPSTREAM)}): {exc}\n{output.decode(errors='replace')}"
        )
    return str(python)


class Driver:
    """A layer in another process, called one command at a time."""

    def __init__(self, process: Process) -> None:
        self.process = process
        assert process.stdout is not None
        self.stdout = BufferedByteReceiveStream(process.stdout)

    async def call(self, *command: Any) -> Any:
        assert self.process.stdin is not None
        await self.process.stdin.send(json.dumps(command).encode() + b"\n")
        with anyio.fail_after(15):
            line = await self.stdout.receive_until(b"\n", 1 << 20)
        reply = json.loads(line)
        if "error" in reply:
            raise AssertionError(f"{command[0]} failed in the other process: {reply['error']}")
        return reply["ok"]


StartDriver = Callable[..., Any]


@asynccontextmanager
async def driver(
    python: str, which: str, kind: str, config: dict[str, Any]
) -> AsyncIterator[Driver]:
    env = {**os.environ, "PYTHONPATH": str(REPO) if which == "ours" else ""}
    command = [python, str(DRIVER), which, kind, json.dumps(config)]
    async with await anyio.open_process(command, env=env, cwd="/", stderr=None) as process:
        try:
            yield Driver(process)
        finally:
            assert process.stdin is not None
            await process.stdin.aclose()
            with anyio.fail_after(10):
                await process.wait()


async def test_group_fan_out_across_two_of_our_processes(redis_url: str, prefix: str) -> None:
    config = {"hosts": [redis_url], "prefix": prefix}
    layer = RedisChannelLayer(**config)
    try:
        async with driver(sys.executable, "ours", "core", config) as other:
            theirs = await other.call("new_channel")
            await other.call("group_add", "room", theirs)
            mine = await layer.new_channel()
            await layer.group_add("room", mine)
            await layer.group_send("room", {"type": "from.here"})
            assert await other.call("receive", theirs) == {"type": "from.here"}
            assert await layer.receive(mine) == {"type": "from.here"}
            await other.call("group_send", "room", {"type": "from.there"})
            assert await layer.receive(mine) == {"type": "from.there"}
            assert await other.call("receive", theirs) == {"type": "from.there"}
    finally:
        await layer.flush()
        await layer.close()


@pytest.mark.parametrize("shards", [1, 2], ids=["one-host", "two-hosts"])
@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
async def test_mixed_fleet_with_channels_redis(
    upstream_python: str, redis_url: str, prefix: str, shards: int, encrypted: bool
) -> None:
    """Upstream and our processes on one Redis reach each other's consumers."""
    config: dict[str, Any] = {
        "hosts": [db_url(redis_url, 4 + n) for n in range(shards)],
        "prefix": prefix,
    }
    if encrypted:
        config["symmetric_encryption_keys"] = ["shared-secret"]
    layer = RedisChannelLayer(**config)
    try:
        async with driver(upstream_python, "upstream", "core", config) as upstream:
            theirs = await upstream.call("new_channel")
            await upstream.call("group_add", "room", theirs)
            # Upstream's receive on a normal channel watches one shard, picked in turn, so
            # with several hosts it can miss messages even from upstream senders.
            normal = shards == 1
            if normal:
                await upstream.call("group_add", "room", "upstream-worker")
            mine = await layer.new_channel()
            await layer.group_add("room", mine)

            await layer.group_send("room", {"type": "from.ours", "n": 1})
            assert await upstream.call("receive", theirs) == {"type": "from.ours", "n": 1}
            if normal:
                assert await upstream.call("receive", "upstream-worker") == {
                    "type": "from.ours",
                    "n": 1,
                }
            assert await layer.receive(mine) == {"type": "from.ours", "n": 1}

            await upstream.call("group_send", "room", {"type": "from.upstream"})
            assert await layer.receive(mine) == {"type": "from.upstream"}
            assert await upstream.call("receive", theirs) == {"type": "from.upstream"}
            if normal:
                assert await upstream.call("receive", "upstream-worker") == {
                    "type": "from.upstream"
                }

            # Direct sends both ways; upstream hashes the full name (its bug B1) and we
            # still receive, and ours lands where upstream's receiver reads.
            for n in range(4):
                await upstream.call("send", mine, {"type": "direct", "n": n})
                await layer.send(theirs, {"type": "direct", "n": n})
            assert [await layer.receive(mine) for _ in range(4)] == [
                {"type": "direct", "n": n} for n in range(4)
            ]
            assert [await upstream.call("receive", theirs) for _ in range(4)] == [
                {"type": "direct", "n": n} for n in range(4)
            ]
            if normal:
                await upstream.call("send", "jobs", {"type": "job", "by": "upstream"})
                await layer.send("jobs", {"type": "job", "by": "ours"})
                got = [await layer.receive("jobs"), await upstream.call("receive", "jobs")]
                assert sorted(message["by"] for message in got) == ["ours", "upstream"]
            else:  # we watch every shard, so we get both wherever they were put
                await upstream.call("send", "jobs", {"type": "job", "by": "upstream"})
                await layer.send("jobs", {"type": "job", "by": "ours"})
                got = [await layer.receive("jobs"), await layer.receive("jobs")]
                assert sorted(message["by"] for message in got) == ["ours", "upstream"]
    finally:
        await layer.flush()
        await layer.close()


async def test_mixed_fleet_pubsub(upstream_python: str, redis_url: str, prefix: str) -> None:
    config = {"hosts": [redis_url], "prefix": prefix}
    layer = RedisPubSubChannelLayer(**config)
    try:
        async with driver(upstream_python, "upstream", "pubsub", config) as upstream:
            theirs = await upstream.call("new_channel")
            await upstream.call("group_add", "room", theirs)
            mine = await layer.new_channel()
            await layer.group_add("room", mine)
            await layer.group_send("room", {"type": "from.ours"})
            assert await upstream.call("receive", theirs) == {"type": "from.ours"}
            assert await layer.receive(mine) == {"type": "from.ours"}
            await upstream.call("group_send", "room", {"type": "from.upstream"})
            assert await layer.receive(mine) == {"type": "from.upstream"}
            await upstream.call("send", mine, {"type": "direct"})
            await layer.send(theirs, {"type": "direct.back"})
            assert await layer.receive(mine) == {"type": "direct"}
            got = [await upstream.call("receive", theirs), await upstream.call("receive", theirs)]
            assert got == [{"type": "from.upstream"}, {"type": "direct.back"}]
    finally:
        await layer.close()
