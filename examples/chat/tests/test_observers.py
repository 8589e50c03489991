"""Messages go out through chat.observers.MessageObserver: one saved in the Django admin
reaches every open page of its room, and no other room."""

import secrets
from urllib.parse import urlencode

import pytest
from channels.db import database_sync_to_async
from channels.testing import HttpCommunicator
from django.contrib.auth.models import User
from django.test import Client
from test_consumers import visiting

from chat.models import Message
from mysite.asgi import application

pytestmark = [pytest.mark.anyio, pytest.mark.django_db(transaction=True)]

HOST = (b"host", b"localhost")


@database_sync_to_async
def admin_session() -> str:
    admin = User.objects.create_superuser("admin", "admin@example.com", "secret")
    client = Client()
    client.force_login(admin)
    return client.cookies["sessionid"].value


async def test_a_message_saved_in_the_admin_reaches_every_open_page_of_its_room() -> None:
    session = await admin_session()
    csrf = secrets.token_hex(16)  # a 32-character CSRF secret, as Django's cookie holds
    async with (
        visiting("lobby", "alice") as alice,
        visiting("lobby", "bob") as bob,
        visiting("attic", "eve") as eve,
    ):
        for visitor in (alice, bob, eve):
            await visitor.welcome()
        await eve.next_of("presence.join")  # its own
        form = {
            "room": "lobby",
            "name": "admin",
            "text": "from the admin",
            "csrfmiddlewaretoken": csrf,
        }
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
        for visitor in (alice, bob):
            message = await visitor.next_of("chat.message")
            assert (message["text"], message["group"]) == ("from the admin", "chat_lobby")
        assert await eve.communicator.receive_nothing()
    assert await Message.objects.filter(room="lobby").acount() == 1


async def test_a_visitors_message_is_delivered_once_through_the_observer() -> None:
    async with visiting("lobby", "alice") as alice, visiting("lobby", "bob") as bob:
        await alice.welcome()
        await bob.welcome()
        assert (await alice.request({"message": "hi"}))["ok"] is True
        for visitor in (alice, bob):
            assert (await visitor.next_of("chat.message"))["text"] == "hi"
        assert await alice.communicator.receive_nothing()
