"""What the server process holds, counted from inside it, for ``/soak/stats``.

The figures the probes judge: running consumers, consumer objects still alive after a
garbage collection, tasks on the event loop, threads, group memberships and channels the
layer keeps, and the resident set size. The layer's figures read its internals (this is
the project's own tool, so a rename there breaks the soak loudly rather than silently):

- core Redis layer: memberships are the ``ZCARD`` of every group key in Redis; channels
  are the process-local channels with buffered messages or a waiting receiver;
- pub/sub layer: the local members of each subscribed group, the local channels known;
- in-memory layer: ``layer.groups`` and ``layer.channels``.
"""

from __future__ import annotations

import contextlib
import gc
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sniffio

from channels.layers import get_channel_layer

_alive: weakref.WeakSet[object] = weakref.WeakSet()
_running = 0


@contextlib.contextmanager
def running(consumer: object) -> Iterator[None]:
    """Count ``consumer`` as running while the block runs; keep a weak reference to it."""
    global _running
    _alive.add(consumer)
    _running += 1
    try:
        yield
    finally:
        _running -= 1


async def snapshot(*, collect: bool) -> dict[str, Any]:
    """The figures; ``consumers_alive`` only with ``collect`` (a full garbage collection
    blocks the event loop for tens of milliseconds, so polls leave it out)."""
    if collect:
        gc.collect()
    layer = get_channel_layer()
    return {
        "backend": sniffio.current_async_library(),
        "consumers": _running,
        "consumers_alive": len(_alive) if collect else None,
        "tasks": count_tasks(),
        "threads": threading.active_count(),
        "memberships": await _memberships(layer),
        "channels": _channels(layer),
        "rss_kib": rss_kib(),
    }


def count_tasks() -> int:
    """Every task on the running event loop, this one included."""
    if sniffio.current_async_library() == "trio":
        import trio  # interop: trio has no all_tasks(); walk the task tree

        count, pending = 0, [trio.lowlevel.current_root_task()]
        while pending:
            task = pending.pop()
            if task is None:
                continue
            count += 1
            for nursery in task.child_nurseries:
                pending.extend(nursery.child_tasks)
        return count
    import asyncio  # interop: asyncio's own registry of tasks

    return len(asyncio.all_tasks())


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


async def _memberships(layer: Any) -> int:
    from channels.layers import InMemoryChannelLayer
    from channels.layers.redis import RedisChannelLayer, RedisPubSubChannelLayer

    if isinstance(layer, InMemoryChannelLayer):
        return sum(len(members) for members in layer.groups.values())
    if isinstance(layer, RedisPubSubChannelLayer):
        state = layer._loops.current()
        return 0 if state is None else sum(len(members) for members in state.groups.values())
    if isinstance(layer, RedisChannelLayer):
        total = 0
        for shard in range(layer.ring_size):
            (keys,) = await layer._execute(shard, [("KEYS", layer._group_key("*"))])
            if keys:
                counts = await layer._execute(shard, [("ZCARD", key) for key in keys])
                total += sum(int(count) for count in counts)
        return total
    raise TypeError(f"the soak cannot count the memberships of {layer!r}")


def _channels(layer: Any) -> int:
    from channels.layers import InMemoryChannelLayer
    from channels.layers.redis import RedisChannelLayer, RedisPubSubChannelLayer

    if isinstance(layer, InMemoryChannelLayer):
        return len(layer.channels)
    if isinstance(layer, RedisPubSubChannelLayer):
        subscribed = layer._loops.current()
        return 0 if subscribed is None else len(subscribed.channels)
    if isinstance(layer, RedisChannelLayer):
        state = layer._loops.current()
        if state is None:
            return 0
        names = set(state.mailboxes.buffers)
        for readers in state.readers.values():
            names.update(readers.waiters)
        return len(names)
    raise TypeError(f"the soak cannot count the channels of {layer!r}")
