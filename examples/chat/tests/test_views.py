"""The room list and the room page, through Django's test client."""

import pytest
from django.test import Client

from chat.models import Message

pytestmark = pytest.mark.django_db


def test_the_site_root_leads_to_the_room_list(client: Client) -> None:
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/chat/"


def test_index_lists_rooms_with_messages_most_recent_first(client: Client) -> None:
    Message.objects.create(room="kitchen", text="tea?")
    Message.objects.create(room="lobby", text="hi")
    Message.objects.create(room="lobby", text="hello")
    response = client.get("/chat/")
    assert response.status_code == 200
    assert [room["room"] for room in response.context["rooms"]] == ["lobby", "kitchen"]
    assert b'<a href="/chat/lobby/">lobby</a>' in response.content
    assert b"(2 messages)" in response.content
    assert b"(1 message)" in response.content


def test_index_without_rooms_shows_only_the_form(client: Client) -> None:
    response = client.get("/chat/")
    assert response.status_code == 200
    assert b'id="room-name-input"' in response.content
    assert b"room-list" not in response.content


def test_index_form_goes_to_the_room(client: Client) -> None:
    response = client.get("/chat/", {"room_name": " lobby-2_b "})
    assert response.status_code == 302
    assert response["Location"] == "/chat/lobby-2_b/"


@pytest.mark.parametrize("name", ["", "two words", "café", "a/b", "x" * 51])
def test_index_form_rejects_a_bad_room_name(client: Client, name: str) -> None:
    response = client.get("/chat/", {"room_name": name})
    assert response.status_code == 400
    assert b"Room names are 1 to 50 letters, digits" in response.content


def test_room_page_opens_the_room_socket(client: Client) -> None:
    response = client.get("/chat/lobby/")
    assert response.status_code == 200
    assert b'<script id="room-name" type="application/json">"lobby"</script>' in response.content
    assert b"/ws/chat/${roomName}/" in response.content


@pytest.mark.parametrize("path", ["/chat/two%20words/", "/chat/caf%C3%A9/", f"/chat/{'x' * 51}/"])
def test_room_page_for_a_bad_room_name_is_not_found(client: Client, path: str) -> None:
    assert client.get(path).status_code == 404
