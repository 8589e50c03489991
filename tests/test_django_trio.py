"""Django's async API on both backends (channels._django_trio, installed by the app)."""

from __future__ import annotations

import contextvars
import threading
from typing import Any

import anyio
import asgiref.sync
import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.core.exceptions import SynchronousOnlyOperation
from django.dispatch import Signal

from channels import _django_trio
from channels.concurrency import run_sync, sync_to_async

from .testapp.models import Note

pytestmark = pytest.mark.django_db(transaction=True)


async def worker_thread() -> int:
    return await run_sync(threading.get_ident)


# -- the SynchronousOnlyOperation guard --------------------------------------------------


async def test_orm_on_the_event_loop_thread_raises() -> None:
    with pytest.raises(SynchronousOnlyOperation):
        Note.objects.count()


async def test_the_guard_honours_django_allow_async_unsafe(monkeypatch: Any) -> None:
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    assert Note.objects.count() == 0


async def test_orm_in_a_worker_thread_is_allowed() -> None:
    assert await sync_to_async(Note.objects.count)() == 0
    assert await sync_to_async(Note.objects.count, thread_sensitive=False)() == 0


def test_orm_outside_any_event_loop_is_allowed() -> None:
    assert Note.objects.count() == 0


# -- asgiref's sync_to_async and Django's async ORM --------------------------------------

marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="unset")


async def test_asgiref_sync_to_async_keeps_thread_sensitivity_and_context() -> None:
    marker.set("from the task")

    def report() -> tuple[int, str]:
        marker.set("from the thread")
        return threading.get_ident(), "seen " + marker.get()

    sensitive = await asgiref.sync.sync_to_async(report)()
    assert sensitive == (await worker_thread(), "seen from the thread")
    assert marker.get() == "from the thread"  # context changes come back, as asgiref does

    insensitive_thread, _ = await asgiref.sync.sync_to_async(report, thread_sensitive=False)()
    assert insensitive_thread not in (threading.get_ident(), await worker_thread())


async def test_django_async_orm_methods() -> None:
    note = await Note.objects.acreate(text="one")
    assert await Note.objects.acount() == 1
    assert (await Note.objects.aget(pk=note.pk)).text == "one"
    note.text = "two"
    await note.asave()
    assert [n.text async for n in Note.objects.all()] == ["two"]
    await note.adelete()
    assert not await Note.objects.aexists()


async def test_django_async_session_methods() -> None:
    session = SessionStore()
    await session.aset("colour", "blue")
    await session.asave()
    again = SessionStore(session_key=session.session_key)
    assert await again.aget("colour") == "blue"


# -- signals -----------------------------------------------------------------------------


def sync_receiver(sender: Any, **kwargs: Any) -> str:
    return f"sync {kwargs['value']} in {threading.get_ident()}"


async def async_receiver(sender: Any, **kwargs: Any) -> str:
    await anyio.lowlevel.checkpoint()
    return f"async {kwargs['value']}"


async def failing_receiver(sender: Any, **kwargs: Any) -> str:
    raise LookupError("receiver failed")


@pytest.fixture
def signal() -> Signal:
    signal = Signal()
    signal.connect(sync_receiver, weak=False)
    signal.connect(async_receiver, weak=False)
    return signal


async def test_asend_runs_sync_receivers_in_the_worker_and_async_ones_here(signal: Signal) -> None:
    responses = await signal.asend(sender=None, value=1)
    assert responses == [
        (sync_receiver, f"sync 1 in {await worker_thread()}"),
        (async_receiver, "async 1"),
    ]


async def test_asend_robust_returns_receiver_errors(signal: Signal, caplog: Any) -> None:
    signal.connect(failing_receiver, weak=False)
    responses = await signal.asend_robust(sender=None, value=2)
    assert [receiver for receiver, _ in responses] == [
        sync_receiver,
        async_receiver,
        failing_receiver,
    ]
    assert isinstance(responses[2][1], LookupError)
    assert "receiver failed" in caplog.text


async def test_asend_raises_a_receiver_error_as_itself(signal: Signal) -> None:
    signal.connect(failing_receiver, weak=False)
    with pytest.raises(LookupError, match="receiver failed"):
        await signal.asend(sender=None, value=3)


async def test_sync_send_from_a_worker_thread_reaches_async_receivers(signal: Signal) -> None:
    def send() -> list[tuple[Any, Any]]:
        return signal.send(sender=None, value=4)

    responses = await run_sync(send)
    assert responses == [
        (sync_receiver, f"sync 4 in {await worker_thread()}"),
        (async_receiver, "async 4"),
    ]
    signal.connect(failing_receiver, weak=False)

    def send_robust() -> list[tuple[Any, Any]]:
        return signal.send_robust(sender=None, value=5)

    robust = await run_sync(send_robust)
    assert isinstance(robust[2][1], LookupError)


# -- installation ------------------------------------------------------------------------


def test_install_is_idempotent() -> None:
    patched = (asgiref.sync.SyncToAsync.__call__, Signal.asend, Signal.send)
    _django_trio.install()
    _django_trio.install()
    assert (asgiref.sync.SyncToAsync.__call__, Signal.asend, Signal.send) == patched


async def test_trio_runs_here_names_only_the_trio_loop_thread(anyio_backend: str) -> None:
    assert _django_trio.trio_runs_here() is (anyio_backend == "trio")
    assert not await run_sync(_django_trio.trio_runs_here)
