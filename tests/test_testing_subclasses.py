"""Communicators keep asgiref's surface, so libraries' subclasses of them keep working.

Libraries subclass ``WebsocketCommunicator`` and read what asgiref's communicator exposes:
``input_queue``, ``output_queue``, ``future``, ``wait()``, ``stop()``. The subclass below is
the pattern found in the wild (a ``receive_output`` that does not cancel the application on
timeout), verbatim on asyncio, and with ``anyio.fail_after`` on both backends.
"""

from __future__ import annotations

import asyncio  # the verbatim snippet and asyncio.QueueEmpty are asyncio's
import json
from typing import Any

import anyio
import asgiref.testing
import asgiref.timeout
import pytest

from channels.generic.websocket import AsyncWebsocketConsumer
from channels.testing import (
    ApplicationCancelled,
    ApplicationCommunicator,
    HttpCommunicator,
    WebsocketCommunicator,
)
from channels.testing.application import MessageQueue, QueueEmpty
from channels.types import Message

SCOPE = {"type": "test"}


class Commands(AsyncWebsocketConsumer):
    """Echoes frames; ``crash`` raises, ``quiet`` sends nothing."""

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data == "crash":
            raise KeyError("crashed on purpose")
        if text_data != "quiet":
            await self.send(text_data=f"echo:{text_data}")


class VerbatimCommunicator(WebsocketCommunicator):
    """The pattern from the wild, as written there (asyncio only: asgiref's timeout is)."""

    async def receive_output(self, timeout: float = 1) -> Any:
        if self.future.done():
            self.future.result()
        async with asgiref.timeout.timeout(timeout):
            return await self.output_queue.get()


class AnyioCommunicator(WebsocketCommunicator):
    """The same pattern with anyio's timeout, for either backend; it also overrides
    ``send_input``, ``connect`` and ``disconnect`` through asgiref's attributes."""

    async def receive_output(self, timeout: float = 1) -> Any:
        if self.future.done():
            self.future.result()
        with anyio.fail_after(timeout):
            return await self.output_queue.get()

    async def send_input(self, message: Message) -> None:
        if self.future.done():
            self.future.result()
        await self.input_queue.put(message)

    async def connect(self, timeout: float = 1) -> Any:
        await self.send_input({"type": "websocket.connect"})
        response = await self.receive_output(timeout)
        return response["type"] == "websocket.accept", response.get("subprotocol")

    async def disconnect(self, code: int = 1000, timeout: float = 1) -> None:
        self.input_queue.put_nowait({"type": "websocket.disconnect", "code": code})
        with anyio.fail_after(timeout):
            await self.future


async def exercise(communicator: WebsocketCommunicator) -> None:
    """What such a subclass's users do: time out repeatedly, keep talking, see crashes."""
    assert await communicator.connect() == (True, None)
    await communicator.send_to(text_data="quiet")
    for _ in range(3):  # the application is not cancelled by a timeout
        with pytest.raises(TimeoutError):
            await communicator.receive_output(timeout=0.02)
        assert not communicator.future.done()
    await communicator.send_to(text_data="hello")
    assert await communicator.receive_from() == "echo:hello"

    # Messages can be read straight from the output queue, as the subclass does.
    await communicator.send_to(text_data="a")
    assert (await communicator.output_queue.get())["text"] == "echo:a"
    await communicator.send_to(text_data="b")
    assert await communicator.receive_nothing(timeout=5) is False  # b is waiting
    assert communicator.output_queue.qsize() == 1
    assert not communicator.output_queue.empty()
    assert communicator.output_queue.get_nowait()["text"] == "echo:b"

    # The application's exception comes back through the future.
    await communicator.send_to(text_data="crash")
    with anyio.fail_after(5), pytest.raises(KeyError, match="crashed on purpose"):
        await communicator.future
    assert communicator.future.done()
    with pytest.raises(KeyError, match="crashed on purpose"):
        await communicator.receive_output()
    with pytest.raises(KeyError, match="crashed on purpose"):
        await communicator.send_to(text_data="too late")


# asgiref.timeout.timeout is asyncio's own, so the snippet as libraries write it runs where
# they run it, on asyncio; its anyio form (below) runs on both backends.
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.filterwarnings("ignore:asgiref.timeout.timeout is deprecated:DeprecationWarning")
async def test_the_verbatim_subclass_works_on_asyncio(anyio_backend: str) -> None:
    await exercise(VerbatimCommunicator(Commands.as_asgi(), "/ws/"))


async def test_the_anyio_subclass_works_on_both_backends() -> None:
    await exercise(AnyioCommunicator(Commands.as_asgi(), "/ws/"))
    # Its disconnect (through input_queue and future) ends the application.
    communicator = AnyioCommunicator(Commands.as_asgi(), "/ws/")
    assert await communicator.connect() == (True, None)
    await communicator.disconnect()
    assert communicator.future.done()
    assert communicator.future.result() is None


async def test_communicators_are_asgirefs() -> None:
    communicators = [
        ApplicationCommunicator(Commands.as_asgi(), SCOPE),
        WebsocketCommunicator(Commands.as_asgi(), "/"),
        HttpCommunicator(Commands.as_asgi(), "GET", "/"),
    ]
    for communicator in communicators:
        assert isinstance(communicator, asgiref.testing.ApplicationCommunicator)
        assert communicator.scope["type"] in {"test", "websocket", "http"}
        assert callable(communicator.application)


def test_none_of_asgirefs_methods_is_inherited() -> None:
    """asgiref's methods run on asyncio only; every one must be overridden here. If an
    asgiref upgrade adds one, this names it."""
    ours = ApplicationCommunicator.__dict__
    base = asgiref.testing.ApplicationCommunicator.__dict__
    skip = {"__dict__", "__weakref__", "__module__", "__doc__", "__qualname__"}
    missing = sorted(name for name in base if name not in skip and name not in ours)
    assert missing == [], f"asgiref's ApplicationCommunicator gained {missing}: override them"


async def test_the_queues_are_the_applications_receive_and_send() -> None:
    communicator = ApplicationCommunicator(Commands.as_asgi(), {"type": "websocket"})
    inputs, outputs = communicator.input_queue, communicator.output_queue
    assert isinstance(inputs, MessageQueue)
    assert (inputs.qsize(), inputs.empty(), inputs.full()) == (0, True, False)
    inputs.put_nowait({"type": "websocket.connect"})  # queued before the app starts
    assert inputs.qsize() == 1
    assert communicator.output_queue is outputs
    assert (await communicator.receive_output())["type"] == "websocket.accept"
    assert inputs.empty()
    await inputs.put({"type": "websocket.receive", "text": "x"})
    assert json.dumps((await outputs.get())["text"]) == '"echo:x"'

    # get_nowait on an empty queue raises what asyncio code and anyio code each catch.
    for catch in (asyncio.QueueEmpty, anyio.WouldBlock, QueueEmpty):
        with pytest.raises(catch):
            outputs.get_nowait()
    # A cancelled get takes nothing.
    with anyio.move_on_after(0.01):
        await outputs.get()
    outputs.put_nowait({"type": "kept"})
    assert outputs.get_nowait() == {"type": "kept"}


async def test_stop_has_asgirefs_meaning() -> None:
    # Running: stop() cancels it.
    communicator = ApplicationCommunicator(Commands.as_asgi(), {"type": "websocket"})
    communicator.stop()  # not started: nothing to do
    assert await communicator.receive_nothing(timeout=0.01)
    communicator.stop()
    with anyio.fail_after(5):
        with pytest.raises(ApplicationCancelled):
            await communicator.future
    # Ended by cancellation: stop() raises that, unless told not to.
    with pytest.raises(asyncio.CancelledError):
        communicator.stop()
    communicator.stop(exceptions=False)

    # Ended by a crash: stop() raises the crash.
    crashed = WebsocketCommunicator(Commands.as_asgi(), "/")
    assert await crashed.connect() == (True, None)
    await crashed.send_to(text_data="crash")
    with pytest.raises(KeyError):
        await crashed.wait()
    with pytest.raises(KeyError, match="crashed on purpose"):
        crashed.stop()
    crashed.stop(exceptions=False)

    # Ended normally: nothing to raise.
    finished = WebsocketCommunicator(Commands.as_asgi(), "/")
    assert await finished.connect() == (True, None)
    await finished.disconnect()
    finished.stop()


async def test_the_future_is_one_object_and_shaped_like_a_task() -> None:
    communicator = ApplicationCommunicator(Commands.as_asgi(), {"type": "websocket"})
    future = communicator.future
    assert communicator.future is future
    assert not future.done()
    assert not future.cancelled()
    assert future.cancel() is True
    with anyio.fail_after(5), pytest.raises(asyncio.CancelledError):
        await future
    assert future.cancelled()
    with pytest.raises(ApplicationCancelled):
        future.exception()
