"""Drives one channel layer in its own process, for the multi-process Redis tests.

Run as ``python layer_driver.py <ours|upstream> <core|pubsub|cluster> '<json config>'``. Reads one
JSON command per line on stdin (``["send", channel, message]``, ``["receive", channel]``,
``["new_channel"]``, ``["group_add", group, channel]``, ``["group_send", group, message]``)
and answers each with one JSON line: ``{"ok": result}`` or ``{"error": "..."}``.

With ``upstream`` it runs under a virtual environment holding Django Channels 4.3 and
channels_redis 4.3, on asyncio; with ``ours`` it runs this package, on trio.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def make_layer(which: str, kind: str, config: dict[str, Any]) -> Any:
    if which == "upstream":
        if kind == "core":
            from channels_redis.core import RedisChannelLayer
        else:
            from channels_redis.pubsub import RedisPubSubChannelLayer as RedisChannelLayer
    else:
        from channels.layers.redis import (
            RedisChannelLayer,
            RedisClusterChannelLayer,
            RedisPubSubChannelLayer,
        )

        if kind == "pubsub":
            RedisChannelLayer = RedisPubSubChannelLayer
        elif kind == "cluster":
            RedisChannelLayer = RedisClusterChannelLayer
    return RedisChannelLayer(**config)


async def serve(layer: Any, read_line: Any) -> None:
    while True:
        line = await read_line()
        if not line:
            return
        name, *args = json.loads(line)
        try:
            result = await getattr(layer, name)(*args)
            reply = {"ok": result}
        except Exception as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(reply), flush=True)


def main() -> None:
    which, kind, config = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    layer = make_layer(which, kind, config)
    if which == "upstream":
        import asyncio

        async def run() -> None:
            loop = asyncio.get_running_loop()
            await serve(layer, lambda: loop.run_in_executor(None, sys.stdin.readline))

        asyncio.run(run())
    else:
        import anyio
        import anyio.to_thread

        async def run_ours() -> None:
            try:
                await serve(layer, lambda: anyio.to_thread.run_sync(sys.stdin.readline))
            finally:
                await layer.close()

        anyio.run(run_ours, backend="trio")


if __name__ == "__main__":
    main()
