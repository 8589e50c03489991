"""Messages go out through chat.observers.MessageObserver: one saved in the Django admin
reaches every open page of its room, and no other room."""

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode

import pytest
from channels.db import database_sync_to_async
from channels.testing import HttpCommunicator, WebsocketCommunicator
from django.contrib.auth.models import User
from django.test import Client

from chat.models import Message
from mysite.asgi import application

pytestmark = [pytest.mark.anyio, pytest.mark.django_db(transaction=True)]

HOST = (b"host", b"localhost")


@asynccontextmanager
async def room_page(room: str) -> AsyncIterator[Any]:
    """What a room page's script does: open the room's WebSocket."""
    communicator = WebsocketCommunicator(
        application, f"/ws/chat/{room}/", headers=[(b"origin", b"http://localhost"), HOST]
    )
    accepted, _ = await communicator.connect()
    assert accepted
    try:
        yield communicator
    finally:
        await communicator.disconnect()


@database_sync_to_async
def admin_session() -> str:
    admin = User.objects.create_superuser("admin", "admin@example.com", "secret")
    client = Client()
    client.force_login(admin)
    return client.cookies["sessionid"].value


async def test_a_message_saved_in_the_admin_reaches_every_open_page_of_its_room() -> None:
    session = await admin_session()
    csrf = secrets.token_hex(16)  # a 32-character CSRF secret, as Django's cookie holds
    async with room_page("lobby") as alice, room_page("lobby") as bob, room_page("attic") as eve:
        form = {"room": "lobby", "text": "from the admin", "csrfmiddlewaretoken": csrf}
        response = await HttpCommunicator(
            application,
            "POST",
            "/admin/chat/message/add/",
            body=urlencode(form).encode(),
            headers=[
                HOST,
                (b"cookie", f"sessionid={session}; csrftoken={csrf}".encode()),
                (b"content-type", b"application/x-www-form-urlencoded"),
            ],
        ).get_response(timeout=10)
        assert response["status"] == 302, response["body"][:500]
        assert await alice.receive_json_from(timeout=5) == {"message": "from the admin"}
        assert await bob.receive_json_from(timeout=5) == {"message": "from the admin"}
        assert await eve.receive_nothing()
    assert await Message.objects.filter(room="lobby").acount() == 1


async def test_a_visitors_message_is_delivered_once_through_the_observer() -> None:
    async with room_page("lobby") as alice, room_page("lobby") as bob:
        await alice.send_json_to({"message": "hi"})
        assert await alice.receive_json_from(timeout=5) == {"message": "hi"}
        assert await bob.receive_json_from(timeout=5) == {"message": "hi"}
        assert await alice.receive_nothing()
