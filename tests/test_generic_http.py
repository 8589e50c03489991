"""The HTTP consumer: body assembly, responses, long polling through the layer, disconnects."""

from __future__ import annotations

import json

import anyio
import pytest

from channels.generic.http import AsyncHttpConsumer
from channels.layers import get_channel_layer
from channels.testing import ApplicationCommunicator, HttpCommunicator
from channels.types import Message

HTTP_SCOPE = {"type": "http", "method": "POST", "path": "/", "headers": []}


class Echo(AsyncHttpConsumer):
    disconnects: list[str] = []

    async def handle(self, body: bytes) -> None:
        if body == b"fail":
            raise LookupError("handle failed")
        if body == b"silent":
            return
        await self.send_response(
            200,
            json.dumps({"body": body.decode(), "method": self.scope["method"]}).encode(),
            headers={b"content-type": b"application/json"},
        )

    async def disconnect(self) -> None:
        self.disconnects.append("disconnect")


@pytest.fixture(autouse=True)
def _reset_log() -> None:
    Echo.disconnects = []
    LongPoll.events = []


async def test_the_body_is_assembled_from_chunks_and_the_consumer_ends() -> None:
    communicator = ApplicationCommunicator(Echo.as_asgi(), HTTP_SCOPE)
    for part in (b"he", b"", b"llo"):
        await communicator.send_input({"type": "http.request", "body": part, "more_body": True})
    await communicator.send_input({"type": "http.request", "body": b"!"})
    start = await communicator.receive_output()
    assert start == {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"application/json")],
    }
    body = await communicator.receive_output()
    assert json.loads(body["body"]) == {"body": "hello!", "method": "POST"}
    assert body["more_body"] is False
    await communicator.wait()
    assert Echo.disconnects == ["disconnect"]


async def test_http_communicator_round_trip() -> None:
    response = await HttpCommunicator(Echo.as_asgi(), "PUT", "/x", body=b"data").get_response()
    assert response["status"] == 200
    assert json.loads(response["body"]) == {"body": "data", "method": "PUT"}


async def test_a_handle_error_reaches_the_server_after_disconnect_runs() -> None:
    communicator = HttpCommunicator(Echo.as_asgi(), "POST", "/", body=b"fail")
    with pytest.raises(LookupError, match="handle failed"):
        await communicator.get_response()
    assert Echo.disconnects == ["disconnect"]


async def test_a_handle_that_sends_nothing_ends_the_consumer() -> None:
    communicator = HttpCommunicator(Echo.as_asgi(), "POST", "/", body=b"silent")
    with pytest.raises(TimeoutError, match="ended without sending"):
        await communicator.get_response()
    assert communicator.future.done()
    assert Echo.disconnects == ["disconnect"]


class LongPoll(AsyncHttpConsumer):
    """The long-polling pattern from Channels' docs: respond when a layer message comes."""

    events: list[str] = []

    async def handle(self, body: bytes) -> None:
        await self.channel_layer.group_add("waiters", self.channel_name)
        await self.send_headers(headers=[(b"content-type", b"text/plain")])
        await self.send_body(b"waiting...", more_body=True)

    async def news_ready(self, message: Message) -> None:
        self.events.append("news")
        await self.send_body(message["text"].encode())

    async def disconnect(self) -> None:
        self.events.append("disconnect")
        await self.channel_layer.group_discard("waiters", self.channel_name)


async def test_long_poll_finishes_the_response_from_a_layer_message() -> None:
    communicator = HttpCommunicator(LongPoll.as_asgi(), "GET", "/poll")
    await communicator.send_input({"type": "http.request", "body": b""})
    assert (await communicator.receive_output())["type"] == "http.response.start"
    assert (await communicator.receive_output())["body"] == b"waiting..."
    assert await communicator.receive_nothing(timeout=0.02)
    assert not communicator.future.done()

    await get_channel_layer().group_send("waiters", {"type": "news.ready", "text": "news!"})
    last = await communicator.receive_output()
    assert (last["body"], last["more_body"]) == (b"news!", False)
    await communicator.wait()
    assert LongPoll.events == ["news", "disconnect"]
    assert "waiters" not in get_channel_layer().groups


async def test_long_poll_ends_when_the_client_goes_away() -> None:
    communicator = HttpCommunicator(LongPoll.as_asgi(), "GET", "/poll")
    await communicator.send_input({"type": "http.request", "body": b""})
    await communicator.receive_output()
    await communicator.receive_output()
    await communicator.send_input({"type": "http.disconnect"})
    await communicator.wait()
    assert LongPoll.events == ["disconnect"]
    assert "waiters" not in get_channel_layer().groups


async def test_send_body_takes_only_bytes() -> None:
    class Wrong(AsyncHttpConsumer):
        async def handle(self, body: bytes) -> None:
            await self.send_headers()
            await self.send_body("text")  # type: ignore[arg-type]

    communicator = HttpCommunicator(Wrong.as_asgi(), "GET", "/")
    with pytest.raises(TypeError, match="Response body must be bytes, got str"):
        await communicator.get_response()


async def test_handle_must_be_provided() -> None:
    communicator = HttpCommunicator(AsyncHttpConsumer.as_asgi(), "GET", "/")
    with pytest.raises(NotImplementedError, match="must provide a handle"):
        await communicator.get_response()


async def test_headers_as_list_and_streamed_body() -> None:
    class Streamer(AsyncHttpConsumer):
        async def handle(self, body: bytes) -> None:
            await self.send_headers(status=206, headers=[(b"a", b"1"), (b"a", b"2")])
            for part in (b"one ", b"two ", b"three"):
                await self.send_body(part, more_body=True)
                await anyio.lowlevel.checkpoint()
            await self.send_body(b"")

    response = await HttpCommunicator(Streamer.as_asgi(), "GET", "/").get_response()
    assert response == {
        "status": 206,
        "headers": [(b"a", b"1"), (b"a", b"2")],
        "body": b"one two three",
    }
