"""The chat socket, driven in-process through the project's whole ASGI application.

The socket carries two streams, ``chat`` and ``notifications``; frames are
``{"stream", "payload", "ref"?}`` as channels.js sends them.
"""

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from chat.consumers import HISTORY_LENGTH
from chat.models import Message
from mysite.asgi import application

pytestmark = [pytest.mark.anyio, pytest.mark.django_db(transaction=True)]

ORIGIN = (b"origin", b"http://localhost")


class Visitor:
    """One browser tab: a communicator, and the frames it got, by stream."""

    def __init__(self, communicator: WebsocketCommunicator) -> None:
        self.communicator = communicator
        self.refs = 0

    async def next(self, stream: str = "chat") -> Any:
        """The next payload of ``stream`` (frames of other streams are skipped)."""
        while True:
            frame = await self.communicator.receive_json_from()
            if frame.get("stream") == stream:
                return frame.get("payload", frame)

    async def next_error(self) -> Any:
        """The next error frame of the socket itself (stream payloads are skipped)."""
        while True:
            frame = await self.communicator.receive_json_from()
            if "error" in frame:
                return frame

    async def next_of(self, kind: str) -> Any:
        while True:
            payload = await self.next()
            if payload.get("type") == kind:
                return payload

    async def request(self, payload: Any) -> Any:
        self.refs += 1
        await self.communicator.send_json_to(
            {"stream": "chat", "payload": payload, "ref": self.refs}
        )
        while True:
            frame = await self.communicator.receive_json_from()
            if frame.get("ref") == self.refs:
                return frame["payload"]

    async def welcome(self) -> tuple[dict[str, Any], list[Any]]:
        """The frames a connection starts with: recovery status, then (when not
        recovered) the history, then the presence snapshot."""
        recovery = (await self.next())["__recovery__"]
        history = None
        payload = await self.next()
        if payload["type"] == "chat.history":
            history = payload["messages"]
            payload = await self.next()
        assert payload["type"] == "presence.snapshot"
        return recovery, history or []


@asynccontextmanager
async def visiting(room: str, name: str = "ann", query: str = "") -> AsyncIterator[Visitor]:
    path = f"/ws/chat/{room}/?name={name}{query}"
    communicator = WebsocketCommunicator(application, path, headers=[ORIGIN])
    accepted, _ = await communicator.connect()
    assert accepted
    try:
        yield Visitor(communicator)
    finally:
        await communicator.disconnect()


@database_sync_to_async
def stored(room: str) -> list[str]:
    return list(Message.objects.filter(room=room).order_by("id").values_list("text", flat=True))


async def test_a_message_reaches_everyone_in_the_room_and_is_stored() -> None:
    async with visiting("lobby", "ann") as ann, visiting("lobby", "bob") as bob:
        await ann.welcome()
        await bob.welcome()
        reply = await ann.request({"message": "  hello  "})
        assert reply["ok"] is True
        for visitor in (ann, bob):
            message = await visitor.next_of("chat.message")
            assert (message["name"], message["text"], message["id"]) == (
                "ann",
                "hello",
                reply["id"],
            )
            assert message["group"] == "chat_lobby"
            assert set(message["__position__"]) == {"epoch", "offset"}
    assert await stored("lobby") == ["hello"]


async def test_other_rooms_get_a_notification_not_the_message() -> None:
    async with visiting("lobby", "ann") as ann, visiting("kitchen", "cat") as cat:
        await ann.welcome()
        await cat.welcome()
        await ann.request({"message": "lobby only"})
        assert await cat.next("notifications") == {
            "room": "lobby",
            "name": "ann",
            "text": "lobby only",
        }
        # Nothing on cat's chat stream: the next chat payload is its own message.
        await cat.request({"message": "kitchen"})
        assert (await cat.next_of("chat.message"))["text"] == "kitchen"


async def test_a_first_visit_gets_the_latest_messages_from_the_database() -> None:
    await database_sync_to_async(Message.objects.bulk_create)(
        [Message(room="lobby", text=f"old {n}") for n in range(HISTORY_LENGTH + 5)]
        + [Message(room="kitchen", text="elsewhere")]
    )
    async with visiting("lobby") as ann:
        recovery, history = await ann.welcome()
        assert recovery["recovered"] is False
        assert recovery["group"] == "chat_lobby"
        assert [m["text"] for m in history] == [f"old {n}" for n in range(5, HISTORY_LENGTH + 5)]


async def test_a_reconnection_gets_what_was_sent_meanwhile_once_in_order() -> None:
    async with visiting("lobby", "ann") as ann:
        await ann.welcome()
        await ann.request({"message": "before"})
        position = (await ann.next_of("chat.message"))["__position__"]
    async with visiting("lobby", "bob") as bob:
        await bob.welcome()
        for text in ("while", "you", "were away"):
            await bob.request({"message": text})
        positions = quote(json.dumps({"chat_lobby": position}))
        async with visiting("lobby", "ann", f"&positions={positions}") as ann:
            recovery, history = await ann.welcome()
            assert recovery["recovered"] is True
            assert history == []  # no reload: the replay follows
            replayed = [(await ann.next_of("chat.message"))["text"] for _ in range(3)]
            assert replayed == ["while", "you", "were away"]
            await bob.request({"message": "live"})
            assert (await ann.next_of("chat.message"))["text"] == "live"


async def test_a_mangled_position_is_a_fresh_start() -> None:
    async with visiting("lobby", "ann", "&positions=%7Bnope") as ann:
        recovery, _ = await ann.welcome()
        assert recovery["recovered"] is False


async def test_presence_lists_who_is_in_the_room() -> None:
    async with visiting("lobby", "ann") as ann:
        await ann.welcome()
        async with visiting("lobby", "bob") as bob:
            await bob.welcome()
            # ann's own join came first (she is told about herself too)
            assert (await ann.next_of("presence.join"))["info"] == {"name": "ann"}
            joined = await ann.next_of("presence.join")
            assert joined["info"] == {"name": "bob"}
        left = await ann.next_of("presence.leave")
        assert left["channel"] == joined["channel"]
    async with visiting("lobby", "ann") as ann:
        # Her welcome ends with her snapshot, sent once she is present: only then does
        # bob arrive (connecting both at once, bob's snapshot could come before her join).
        await ann.welcome()
        async with visiting("lobby", "bob") as bob:
            await bob.communicator.receive_json_from()  # bob's recovery status
            while (snapshot := await bob.next())["type"] != "presence.snapshot":
                pass
            names = sorted(info["name"] for info in snapshot["members"].values())
            assert names == ["ann", "bob"]


BAD_PAYLOADS = {
    "not an object": (["hello"], 'Send a payload like {"message": "hello"}.'),
    "no message key": ({"text": "hello"}, 'Send a payload like {"message": "hello"}.'),
    "message not a string": ({"message": 5}, 'Send a payload like {"message": "hello"}.'),
    "empty": ({"message": ""}, "Empty messages are not sent."),
    "only spaces": ({"message": " \n\t "}, "Empty messages are not sent."),
    "too long": ({"message": "x" * 1001}, "Messages are limited to 1000 characters."),
}


@pytest.mark.parametrize(("payload", "error"), BAD_PAYLOADS.values(), ids=BAD_PAYLOADS.keys())
async def test_a_bad_message_is_answered_to_its_sender_only(payload: Any, error: str) -> None:
    async with visiting("lobby", "ann") as ann, visiting("lobby", "bob") as bob:
        await ann.welcome()
        await bob.welcome()
        assert await ann.request(payload) == {"error": error}
        # The connection stays usable, and bob saw nothing but the good message.
        await ann.request({"message": "still here"})
        assert (await bob.next_of("chat.message"))["text"] == "still here"
    assert await stored("lobby") == ["still here"]


async def test_a_frame_the_socket_cannot_route_is_answered_with_an_error() -> None:
    async with visiting("lobby") as ann:
        await ann.welcome()
        await ann.communicator.send_to(text_data="hello")
        assert await ann.next_error() == {"error": "The frame is not valid JSON."}
        await ann.communicator.send_json_to({"stream": "nope", "payload": {}})
        error = await ann.next_error()
        assert error["stream"] == "nope"
        assert "Unknown stream" in error["error"]
    assert await stored("lobby") == []


async def test_the_longest_message_allowed_is_sent() -> None:
    async with visiting("lobby") as ann:
        await ann.welcome()
        assert (await ann.request({"message": "x" * 1000}))["ok"] is True


async def test_a_page_from_another_site_cannot_connect() -> None:
    communicator = WebsocketCommunicator(
        application, "/ws/chat/lobby/", headers=[(b"origin", b"http://evil.example")]
    )
    assert await communicator.connect() == (False, 1000)
    await communicator.disconnect()
