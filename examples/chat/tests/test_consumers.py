"""The chat consumer, driven in-process through the project's whole ASGI application."""

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from chat.consumers import HISTORY_LENGTH
from chat.models import Message
from mysite.asgi import application

pytestmark = [pytest.mark.anyio, pytest.mark.django_db(transaction=True)]

ORIGIN = (b"origin", b"http://localhost")


@asynccontextmanager
async def connected(room: str, origin: tuple[bytes, bytes] = ORIGIN) -> AsyncIterator[Any]:
    communicator = WebsocketCommunicator(application, f"/ws/chat/{room}/", headers=[origin])
    accepted, _ = await communicator.connect()
    assert accepted
    try:
        yield communicator
    finally:
        await communicator.disconnect()


@database_sync_to_async
def stored(room: str) -> list[str]:
    return list(Message.objects.filter(room=room).order_by("id").values_list("text", flat=True))


async def test_a_message_reaches_everyone_in_the_room_and_is_stored() -> None:
    async with connected("lobby") as alice, connected("lobby") as bob:
        await alice.send_json_to({"message": "  hello  "})
        assert await alice.receive_json_from() == {"message": "hello"}
        assert await bob.receive_json_from() == {"message": "hello"}
    assert await stored("lobby") == ["hello"]


async def test_other_rooms_hear_nothing() -> None:
    async with connected("lobby") as alice, connected("kitchen") as carol:
        await alice.send_json_to({"message": "lobby only"})
        assert await alice.receive_json_from() == {"message": "lobby only"}
        assert await carol.receive_nothing()


async def test_joining_replays_the_latest_messages_in_order() -> None:
    await database_sync_to_async(Message.objects.bulk_create)(
        [Message(room="lobby", text=f"old {n}") for n in range(HISTORY_LENGTH + 5)]
        + [Message(room="kitchen", text="elsewhere")]
    )
    async with connected("lobby") as alice:
        replayed = [(await alice.receive_json_from())["message"] for _ in range(HISTORY_LENGTH)]
        assert replayed == [f"old {n}" for n in range(5, HISTORY_LENGTH + 5)]
        assert await alice.receive_nothing()
        # After the replay, new messages arrive once each.
        await alice.send_json_to({"message": "new"})
        assert await alice.receive_json_from() == {"message": "new"}
        assert await alice.receive_nothing()


BAD_FRAMES = {
    "not JSON": ("hello", 'Send JSON text like {"message": "hello"}.'),
    "JSON but not an object": ('["hello"]', 'Send JSON text like {"message": "hello"}.'),
    "no message key": ('{"text": "hello"}', 'Send JSON text like {"message": "hello"}.'),
    "message not a string": ('{"message": 5}', 'Send JSON text like {"message": "hello"}.'),
    "empty": ('{"message": ""}', "Empty messages are not sent."),
    "only spaces": ('{"message": " \\n\\t "}', "Empty messages are not sent."),
    "too long": (json.dumps({"message": "x" * 1001}), "Messages are limited to 1000 characters."),
}


@pytest.mark.parametrize(("frame", "error"), BAD_FRAMES.values(), ids=BAD_FRAMES.keys())
async def test_a_bad_frame_is_answered_to_its_sender_only(frame: str, error: str) -> None:
    async with connected("lobby") as alice, connected("lobby") as bob:
        await alice.send_to(text_data=frame)
        assert await alice.receive_json_from() == {"error": error}
        assert await bob.receive_nothing()
        # The connection stays usable.
        await alice.send_json_to({"message": "still here"})
        assert await bob.receive_json_from() == {"message": "still here"}
    assert await stored("lobby") == ["still here"]


async def test_a_binary_frame_is_answered_with_an_error() -> None:
    async with connected("lobby") as alice:
        await alice.send_to(bytes_data=b'{"message": "hello"}')
        assert await alice.receive_json_from() == {
            "error": 'Send JSON text like {"message": "hello"}.'
        }
    assert await stored("lobby") == []


async def test_the_longest_message_allowed_is_sent() -> None:
    async with connected("lobby") as alice:
        await alice.send_json_to({"message": "x" * 1000})
        assert await alice.receive_json_from() == {"message": "x" * 1000}


async def test_a_page_from_another_site_cannot_connect() -> None:
    communicator = WebsocketCommunicator(
        application, "/ws/chat/lobby/", headers=[(b"origin", b"http://evil.example")]
    )
    assert await communicator.connect() == (False, 1000)
    await communicator.disconnect()
