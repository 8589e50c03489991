"""A Channels 4.3 style project, end to end through the communicators, on both backends.

Routing with auth and session stacks behind origin validation, an async and a sync chat
consumer sharing groups, an HTTP consumer, and a worker writing to the database.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from django.contrib.auth import get_user_model
from django.test import Client, override_settings

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import HttpCommunicator, WebsocketCommunicator
from channels.worker import Worker

from .sampleproject.routing import build_application
from .testapp.models import Note

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = (b"origin", b"http://testserver")


@pytest.fixture(scope="module")
def application() -> Any:
    """Built as the project's asgi.py builds it, reading ALLOWED_HOSTS then."""
    with override_settings(ALLOWED_HOSTS=["testserver"]):
        return build_application()


@pytest.fixture
def alice_cookie(transactional_db: None) -> tuple[bytes, bytes]:
    get_user_model().objects.create_user("alice", password="wonderland")
    client = Client()
    assert client.login(username="alice", password="wonderland")
    return (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())


async def notes() -> list[str]:
    return await database_sync_to_async(
        lambda: list(Note.objects.order_by("pk").values_list("text", flat=True))
    )()


async def wait_for_notes(count: int) -> list[str]:
    for _ in range(500):
        found = await notes()
        if len(found) >= count:
            return found
        await anyio.sleep(0.01)
    raise AssertionError(f"expected {count} notes, found {await notes()}")


async def test_chat_across_consumers_with_auth_sessions_and_a_worker(
    application: Any, alice_cookie: tuple[bytes, bytes]
) -> None:
    layer = get_channel_layer()
    async with anyio.create_task_group() as group:
        group.start_soon(Worker(application, ["audit"], layer).arun)

        alice = WebsocketCommunicator(
            application, "/ws/chat/members/", headers=[ORIGIN, alice_cookie]
        )
        assert await alice.connect() == (True, None)
        stranger = WebsocketCommunicator(application, "/ws/chat/members/", headers=[ORIGIN])
        assert await stranger.connect() == (False, 4003)
        sync_member = WebsocketCommunicator(
            application, "/ws/sync-chat/members/", headers=[ORIGIN]
        )
        assert await sync_member.connect() == (True, None)

        await alice.send_json_to({"text": "hi"})
        for member in (alice, sync_member):
            assert await member.receive_json_from() == {"author": "alice", "text": "hi"}
        await sync_member.send_json_to({"text": "yo"})
        for member in (alice, sync_member):
            assert await member.receive_json_from() == {"author": "sync", "text": "yo"}

        assert sorted(await wait_for_notes(2)) == ["alice: hi", "sync: yo"]

        # The session was saved after the send that followed its change.
        again = WebsocketCommunicator(
            application, "/ws/chat/lobby/", headers=[ORIGIN, alice_cookie]
        )
        await again.connect()
        await again.send_json_to({"command": "count"})
        assert await again.receive_json_from() == {"messages_in_session": 1}

        response = await HttpCommunicator(
            application, "GET", "/notes/", headers=[alice_cookie]
        ).get_response()
        assert response["status"] == 200
        assert b'"user": "alice"' in response["body"]

        for member in (alice, sync_member, again):
            await member.disconnect()
        assert not layer.groups
        group.cancel_scope.cancel()


async def test_logging_in_and_out_from_a_consumer(
    application: Any, alice_cookie: tuple[bytes, bytes]
) -> None:
    guest = WebsocketCommunicator(application, "/ws/chat/lobby/", headers=[ORIGIN])
    assert await guest.connect() == (True, None)
    await guest.send_json_to({"text": "before"})
    assert (await guest.receive_json_from())["author"] == "anonymous"

    await guest.send_json_to({"command": "login", "username": "alice"})
    assert await guest.receive_json_from() == {"logged_in": "alice"}
    await guest.send_json_to({"text": "during"})
    assert (await guest.receive_json_from())["author"] == "alice"

    await guest.send_json_to({"command": "logout"})
    assert await guest.receive_json_from() == {"logged_out": True}
    await guest.send_json_to({"text": "after"})
    assert (await guest.receive_json_from())["author"] == "anonymous"
    await guest.disconnect()


@pytest.mark.parametrize(
    "headers",
    [[(b"origin", b"http://evil.example")], [], [(b"origin", b"not a url")]],
    ids=["foreign", "missing", "malformed"],
)
async def test_sockets_from_other_origins_are_refused(
    application: Any, headers: list[tuple[bytes, bytes]]
) -> None:
    communicator = WebsocketCommunicator(application, "/ws/chat/lobby/", headers=headers)
    accepted, _ = await communicator.connect()
    assert not accepted
