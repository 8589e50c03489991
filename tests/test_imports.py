"""What importing Channels loads, in a fresh interpreter.

Every module a process imports stays in its memory for good, so what a project imports
but may never call is loaded on first use: the thread bridges behind
``channels.concurrency`` and Django's database-backend machinery. These tests pin that
(each in a new process: this one has imported everything already) and that the names
are still where they were.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

_PRELUDE = """
import json, sys
from django.conf import settings
settings.configure(INSTALLED_APPS=[], CHANNEL_LAYERS={
    "default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}})
import django
django.setup()
"""


def _loaded_after(code: str, watched: list[str]) -> list[str]:
    """Which of ``watched`` are in ``sys.modules`` after running ``code`` in a new process."""
    script = f"{_PRELUDE}\n{code}\nprint(json.dumps([m for m in {watched!r} if m in sys.modules]))"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    loaded: list[str] = json.loads(result.stdout.splitlines()[-1])
    return loaded


@pytest.mark.parametrize(
    "module", ["channels.concurrency", "channels.db", "channels.layers", "channels.routing"]
)
def test_import_does_not_load_the_thread_bridges_or_database_backends(module: str) -> None:
    watched = [
        "channels._async_to_sync",
        "channels._iterate",
        "channels._threads",
        "anyio.from_thread",
        "django.db.backends.base.base",
        "trio",
    ]
    assert _loaded_after(f"import {module}", watched) == []


def test_consumer_modules_do_not_load_iteration_or_database_backends() -> None:
    code = "import channels.generic.websocket, channels.auth, channels.sessions"
    watched = ["channels._iterate", "django.db.backends.base.base", "trio"]
    assert _loaded_after(code, watched) == []


def test_lazily_loaded_names_import_from_where_they_always_did() -> None:
    code = """
from channels.concurrency import (
    async_to_sync, iterate_in_thread, run_sync, serves_trio_loop, thread_sensitive_context,
)
import channels._async_to_sync, channels._iterate, channels._threads
import channels.concurrency as concurrency
assert async_to_sync is channels._async_to_sync.async_to_sync
assert serves_trio_loop is channels._async_to_sync.serves_trio_loop
assert iterate_in_thread is channels._iterate.iterate_in_thread
assert run_sync is channels._threads.run_sync
assert thread_sensitive_context is channels._threads.thread_sensitive_context
assert set(concurrency.__all__) <= set(dir(concurrency))
try:
    concurrency.no_such_name
except AttributeError as exc:
    assert "no_such_name" in str(exc)
else:
    raise AssertionError("an unknown name was found")
"""
    assert _loaded_after(code, []) == []


def test_sync_to_async_loads_the_thread_machinery_when_called() -> None:
    code = """
import anyio
from channels.db import database_sync_to_async
assert "channels._threads" not in sys.modules
assert anyio.run(database_sync_to_async(lambda: 42)) == 42
"""
    assert _loaded_after(code, ["channels._threads"]) == ["channels._threads"]
