"""What our adapter modules rely on inside asgiref and Django is still there.

``channels/_asgiref_compat.py`` and ``channels/_django_compat.py`` are the only places
that touch those libraries' internals, and ``pyproject.toml`` caps both at the versions
these checks passed on. When an upgrade moves something, the failure names the adapter
and what it needs, so whoever raises a cap knows where to look.
"""

from __future__ import annotations

import contextvars
import inspect
import threading
from concurrent.futures import Executor
from importlib.metadata import version
from typing import Any

import asgiref.sync
import django.utils.asyncio
import pytest
from django.db.utils import ConnectionHandler
from django.dispatch import Signal, dispatcher

ASGIREF = "channels/_asgiref_compat.py relies on asgiref.sync"
DJANGO = "channels/_django_compat.py relies on Django's"


def parameters(func: Any) -> list[str]:
    return list(inspect.signature(func).parameters)


# -- asgiref -----------------------------------------------------------------------------


def test_asgiref_restore_context_adopts_a_context() -> None:
    restore = getattr(asgiref.sync, "_restore_context", None)
    assert callable(restore), f"{ASGIREF}._restore_context(context)"
    assert parameters(restore) == ["context"], f"{ASGIREF}._restore_context(context)"
    variable: contextvars.ContextVar[str] = contextvars.ContextVar("probe")
    context = contextvars.copy_context()
    context.run(variable.set, "adopted")

    def adopt_then_read() -> str:
        restore(context)
        return variable.get("missing")

    assert contextvars.copy_context().run(adopt_then_read) == "adopted", (
        f"{ASGIREF}._restore_context(context) setting the context's values here"
    )


def test_asgiref_async_to_sync_reads_the_loop_from_sync_to_async_threadlocal() -> None:
    local = getattr(asgiref.sync.SyncToAsync, "threadlocal", None)
    assert isinstance(local, threading.local), f"{ASGIREF}.SyncToAsync.threadlocal"
    source = inspect.getsource(asgiref.sync.AsyncToSync.__call__)
    for name in ("main_event_loop", "main_event_loop_pid", "task_context"):
        assert f'"{name}"' in source, (
            f"{ASGIREF}.AsyncToSync.__call__ reading SyncToAsync.threadlocal.{name}"
        )


def test_asgiref_thread_sensitive_worker_and_request_threads() -> None:
    sync_to_async = asgiref.sync.SyncToAsync
    executor = getattr(sync_to_async, "single_thread_executor", None)
    assert isinstance(executor, Executor), f"{ASGIREF}.SyncToAsync.single_thread_executor"
    variable = getattr(sync_to_async, "thread_sensitive_context", None)
    assert isinstance(variable, contextvars.ContextVar), (
        f"{ASGIREF}.SyncToAsync.thread_sensitive_context (a ContextVar)"
    )
    executors = getattr(sync_to_async, "context_to_thread_executor", None)
    assert hasattr(executors, "pop"), f"{ASGIREF}.SyncToAsync.context_to_thread_executor"
    source = inspect.getsource(sync_to_async.__call__)
    for name in ("context_to_thread_executor", "thread_sensitive_context"):
        assert name in source, f"{ASGIREF}.SyncToAsync.__call__ choosing a thread by {name}"
    try:
        asgiref.sync.ThreadSensitiveContext()
    except TypeError as exc:  # pragma: no cover - only on an incompatible asgiref
        raise AssertionError(f"{ASGIREF}.ThreadSensitiveContext() without arguments") from exc


def test_asgiref_records_the_waiting_sync_thread_in_executors_current() -> None:
    executors = getattr(asgiref.sync.AsyncToSync, "executors", None)
    assert executors is not None, f"{ASGIREF}.AsyncToSync.executors"
    call = inspect.getsource(asgiref.sync.AsyncToSync.__call__)
    assert "self.executors.current" in call, f"{ASGIREF}.AsyncToSync.executors.current"
    sync_call = inspect.getsource(asgiref.sync.SyncToAsync.__call__)
    assert "AsyncToSync.executors" in sync_call, (
        f"{ASGIREF}.SyncToAsync.__call__ sending calls to AsyncToSync.executors.current"
    )


def test_asgiref_bridge_objects_keep_their_attributes() -> None:
    def sync() -> None:
        pass

    async def coroutine() -> None:
        pass

    to_async = asgiref.sync.SyncToAsync(sync, thread_sensitive=False)
    for name in ("func", "context", "_thread_sensitive"):
        assert hasattr(to_async, name), f"{ASGIREF}.SyncToAsync instances' .{name}"
    assert to_async._thread_sensitive is False, f"{ASGIREF}.SyncToAsync()._thread_sensitive"
    to_sync = asgiref.sync.AsyncToSync(coroutine)
    for name in ("awaitable", "force_new_loop"):
        assert hasattr(to_sync, name), f"{ASGIREF}.AsyncToSync instances' .{name}"


# -- Django ------------------------------------------------------------------------------


def test_django_async_unsafe_looks_up_get_running_loop_at_each_call() -> None:
    module = django.utils.asyncio
    assert "get_running_loop" in vars(module), (
        f"{DJANGO} django.utils.asyncio.get_running_loop (a module global)"
    )
    source = inspect.getsource(module.async_unsafe)
    assert "get_running_loop()" in source, (
        f"{DJANGO} async_unsafe calling get_running_loop() from its module at each call"
    )


def test_django_signal_internals() -> None:
    assert hasattr(dispatcher, "NO_RECEIVERS"), f"{DJANGO} django.dispatch.dispatcher.NO_RECEIVERS"
    signal = Signal()
    assert isinstance(signal.receivers, list), f"{DJANGO} Signal.receivers"
    assert hasattr(signal, "sender_receivers_cache"), f"{DJANGO} Signal.sender_receivers_cache"
    assert parameters(signal._live_receivers) == ["sender"], f"{DJANGO} Signal._live_receivers"

    def receiver(**kwargs: Any) -> None:
        pass

    signal.connect(receiver, weak=False)
    live = signal._live_receivers(None)
    assert isinstance(live, tuple), f"{DJANGO} Signal._live_receivers(sender): a tuple"
    assert len(live) == 2, f"{DJANGO} Signal._live_receivers(sender): (sync, async) receivers"
    assert live[0] == [receiver], f"{DJANGO} Signal._live_receivers(sender)[0]: sync receivers"
    log_failure = getattr(signal, "_log_robust_failure", None)
    assert callable(log_failure), f"{DJANGO} Signal._log_robust_failure(receiver, err)"
    assert parameters(log_failure) == ["receiver", "err"], (
        f"{DJANGO} Signal._log_robust_failure(receiver, err)"
    )


def test_django_connections_all_initialized_only() -> None:
    assert "initialized_only" in parameters(ConnectionHandler.all), (
        f"{DJANGO} ConnectionHandler.all(initialized_only=True)"
    )


def test_django_streaming_and_static_internals() -> None:
    from django.contrib.staticfiles.handlers import StaticFilesHandlerMixin
    from django.http import StreamingHttpResponse

    response = StreamingHttpResponse(iter([b"a"]))
    assert hasattr(response, "_iterator"), f"{DJANGO} StreamingHttpResponse._iterator"
    should_handle = getattr(StaticFilesHandlerMixin, "_should_handle", None)
    assert callable(should_handle), f"{DJANGO} StaticFilesHandlerMixin._should_handle(path)"
    assert parameters(should_handle) == ["self", "path"], (
        f"{DJANGO} StaticFilesHandlerMixin._should_handle(path)"
    )


# -- the caps ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("distribution", "adapter"),
    [("asgiref", "channels/_asgiref_compat.py"), ("django", "channels/_django_compat.py")],
)
def test_installed_versions_are_within_the_caps_these_checks_passed_on(
    distribution: str, adapter: str
) -> None:
    """The caps in pyproject.toml are the tested ranges: installing outside them (with
    ``--no-deps``, say) is not something these checks vouch for."""
    import tomllib
    from pathlib import Path

    from packaging.requirements import Requirement

    project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    requirements = [Requirement(r) for r in project["project"]["dependencies"]]
    (requirement,) = [r for r in requirements if r.name.lower() == distribution]
    assert requirement.specifier.contains(version(distribution)), (
        f"{adapter} was checked against {distribution}{requirement.specifier}; "
        f"{version(distribution)} is installed: run tests/test_dependency_adapters.py "
        "and move the cap in pyproject.toml"
    )
