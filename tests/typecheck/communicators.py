"""Tests as projects write them, with the communicators."""

from __future__ import annotations

from typing import Any, assert_type

from channels.testing import (
    ApplicationCommunicator,
    HttpCommunicator,
    WebsocketCommunicator,
)
from channels.testing.http import HttpResponse
from channels.types import Message

from .consumers import ChatConsumer, LongPollConsumer, TaskConsumer


async def websocket_test() -> None:
    communicator = WebsocketCommunicator(
        ChatConsumer.as_asgi(), "/ws/chat/?room=1", headers=[(b"origin", b"https://a.b")]
    )
    connected, subprotocol_or_code = await communicator.connect(timeout=2)
    assert_type(connected, bool)
    assert_type(subprotocol_or_code, str | int | None)
    assert_type(communicator.response_headers, list[tuple[bytes, bytes]] | None)
    await communicator.send_to(text_data="hello")
    await communicator.send_json_to({"message": "hi"})
    assert_type(await communicator.receive_from(), str | bytes)
    assert_type(await communicator.receive_json_from(timeout=3), Any)
    assert_type(await communicator.receive_nothing(), bool)
    await communicator.disconnect(code=4000)
    await communicator.send_to(text_data=b"bytes")  # type: ignore[arg-type]
    WebsocketCommunicator(ChatConsumer, "/ws/")  # type: ignore[arg-type]


async def http_test() -> None:
    communicator = HttpCommunicator(LongPollConsumer.as_asgi(), "GET", "/poll/", body=b"")
    response = await communicator.get_response(timeout=5)
    assert_type(response, HttpResponse)
    assert_type(response["status"], int)
    assert_type(response["headers"], list[tuple[bytes, bytes]])
    assert_type(response["body"], bytes)
    response["trailer"]  # type: ignore[typeddict-item]
    HttpCommunicator(LongPollConsumer.as_asgi(), "POST", "/", body="text")  # type: ignore[arg-type]


async def application_test() -> None:
    async with ApplicationCommunicator(
        TaskConsumer.as_asgi(), {"type": "channel", "channel": "thumbnails"}
    ) as communicator:
        assert_type(communicator, ApplicationCommunicator)
        await communicator.send_input({"type": "thumbnail", "id": 1})
        assert_type(await communicator.receive_output(), Message)
        await communicator.wait(timeout=1)
    assert_type(communicator.future.done(), bool)
    assert_type(communicator.future.exception(), Exception | None)
    assert_type(await communicator.future, Any)
    communicator.stop(exceptions=False)
