"""The cost of an observed save against an unobserved one (docs/topics/observers.md).

Saves ``Article`` rows of the test app in one thread, on SQLite and, if reachable,
PostgreSQL: unobserved, then observed with one group and the in-memory layer, from a
thread linked to a running loop (a sync view or consumer) and from a thread with no loop
(a management command). Run: ``.venv/bin/python benchmarks/observer_cost.py [N]``.
"""

from __future__ import annotations

import concurrent.futures
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import anyio
import django

django.setup()

from django.db import connections  # noqa: E402
from django.test.utils import setup_databases, teardown_databases  # noqa: E402

from channels.concurrency import run_sync  # noqa: E402
from channels.observers import ModelObserver  # noqa: E402
from tests.testapp.models import Article  # noqa: E402


class Observer(ModelObserver):
    model = Article

    def groups(self, instance: Any) -> list[str]:
        return [f"section-{instance.section}"]

    def serialize(self, instance: Any, action: str) -> dict[str, Any]:
        return {"title": instance.title}


Observer.unregister()


def saves(alias: str, n: int) -> tuple[float, float]:
    """Seconds per create and per update."""
    db = Article.objects.using(alias)
    start = time.perf_counter()
    rows = [db.create(section="news", title=str(i)) for i in range(n)]
    created = time.perf_counter() - start
    start = time.perf_counter()
    for row in rows:
        row.title = "x"
        row.save(using=alias)
    return created / n, (time.perf_counter() - start) / n


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    aliases = ["default"]
    try:
        connections["postgres"].ensure_connection()
        aliases.append("postgres")
    except Exception as exc:
        print(f"PostgreSQL not reachable ({exc}); SQLite only")
    state = setup_databases(verbosity=0, interactive=False, aliases=aliases)
    try:
        print(f"{'database':10} {'case':34} {'create µs':>10} {'update µs':>10}")
        for alias in aliases:
            rows: list[tuple[str, tuple[float, float]]] = []
            rows.append(("unobserved", saves(alias, n)))
            Observer.register()
            try:
                rows.append(("observed, no loop (command)", saves(alias, n)))

                async def in_linked_thread(alias: str = alias) -> tuple[float, float]:
                    try:
                        return await run_sync(saves, alias, n)
                    finally:
                        await run_sync(connections.close_all)

                for backend in ["asyncio", "trio"]:
                    # A fresh thread: the no-loop case's async_to_sync left sniffio's
                    # context variable saying "asyncio" in this one.
                    with concurrent.futures.ThreadPoolExecutor(1) as pool:
                        result = pool.submit(anyio.run, in_linked_thread, backend=backend)
                        rows.append((f"observed, thread of a {backend} loop", result.result()))
            finally:
                Observer.unregister()
            for case, (create, update) in rows:
                print(f"{alias:10} {case:34} {create * 1e6:10.0f} {update * 1e6:10.0f}")
            connections[alias].close()
    finally:
        teardown_databases(state, verbosity=0)


if __name__ == "__main__":
    main()
