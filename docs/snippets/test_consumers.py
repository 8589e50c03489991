"""A test module as a project would write it (docs/topics/testing.md)."""

# [conftest]
import pytest


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run every test marked ``anyio`` on both backends."""
    return str(request.param)


# [/conftest]

# [websocket]
from channels.testing import HttpCommunicator, WebsocketCommunicator  # noqa: E402

from .consumers import CounterConsumer, TimeConsumer, UpperConsumer  # noqa: E402


@pytest.mark.anyio
async def test_upper_consumer() -> None:
    communicator = WebsocketCommunicator(UpperConsumer.as_asgi(), "/ws/upper/")
    connected, subprotocol = await communicator.connect()
    assert connected
    assert subprotocol is None
    await communicator.send_to(text_data="hello")
    assert await communicator.receive_from() == "HELLO"
    await communicator.disconnect()


# [/websocket]


# [json]
@pytest.mark.anyio
async def test_counter_consumer() -> None:
    async with WebsocketCommunicator(CounterConsumer.as_asgi(), "/ws/counter/") as communicator:
        await communicator.connect()
        await communicator.send_json_to({"add": 2})
        assert await communicator.receive_json_from() == {"count": 2}
        await communicator.send_json_to({"add": 3})
        assert await communicator.receive_json_from() == {"count": 5}
        assert await communicator.receive_nothing()


# [/json]


# [http]
@pytest.mark.anyio
async def test_http_consumer() -> None:
    communicator = HttpCommunicator(TimeConsumer.as_asgi(), "GET", "/time/")
    response = await communicator.get_response()
    assert response["status"] == 200
    assert response["body"] == b'{"ok": true}'
    assert (b"Content-Type", b"application/json") in response["headers"]


# [/http]


# [subclass]
import anyio  # noqa: E402

from channels.types import Message  # noqa: E402


class Communicator(WebsocketCommunicator):
    """Reads the output queue itself, so a timeout does not cancel the application."""

    async def receive_output(self, timeout: float = 1) -> Message:
        if self.future.done():
            self.future.result()  # raises the application's exception
        with anyio.fail_after(timeout):
            return await self.output_queue.get()


@pytest.mark.anyio
async def test_with_a_communicator_subclass() -> None:
    communicator = Communicator(UpperConsumer.as_asgi(), "/ws/upper/")
    assert await communicator.connect() == (True, None)
    with pytest.raises(TimeoutError):
        await communicator.receive_from(timeout=0.05)  # the application keeps running
    await communicator.send_to(text_data="still there")
    assert await communicator.receive_from() == "STILL THERE"
    await communicator.disconnect()


# [/subclass]
