"""Authentication: the user in the scope, login and logout, and the errors without sessions."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.contrib.auth import get_user_model, user_logged_in, user_logged_out
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.test import Client, override_settings

from channels.auth import AuthMiddleware, AuthMiddlewareStack, get_user, login, logout
from channels.concurrency import async_to_sync
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer, JsonWebsocketConsumer
from channels.testing import ApplicationCommunicator, HttpCommunicator, WebsocketCommunicator
from channels.types import Receive, Scope, Send
from tests.harness import stored_session

pytestmark = pytest.mark.django_db(transaction=True)

User = get_user_model()


@database_sync_to_async
def make_user(username: str) -> Any:
    return User.objects.create_user(username, password="secret")


@database_sync_to_async
def logged_in_session(user: Any) -> str:
    """The key of a session logged in by Django itself (its test client's force_login)."""
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


@database_sync_to_async
def session_data(key: str) -> dict[str, Any] | None:
    row = Session.objects.filter(pk=key).first()
    return None if row is None else dict(row.get_decoded())


def cookie(key: str) -> list[tuple[bytes, bytes]]:
    return [(b"cookie", f"sessionid={key}".encode())]


@contextmanager
def recording(signal: Any) -> Iterator[list[dict[str, Any]]]:
    calls: list[dict[str, Any]] = []

    def receiver(**kwargs: Any) -> None:
        calls.append(kwargs)

    signal.connect(receiver, weak=False)
    try:
        yield calls
    finally:
        signal.disconnect(receiver)


async def whoami(scope: Scope, receive: Receive, send: Send) -> None:
    user = scope["user"]  # read synchronously, first thing: it must be resolved already
    name = user.username if user.is_authenticated else "anonymous"
    await send({"type": "whoami", "name": name})


async def user_named_by(key: str | None) -> str:
    scope = {"type": "websocket", "path": "/", "headers": cookie(key) if key else []}
    communicator = ApplicationCommunicator(AuthMiddlewareStack(whoami), scope)
    message = await communicator.receive_output()
    await communicator.wait()
    return message["name"]  # type: ignore[no-any-return]


async def test_user_is_resolved_before_the_application_runs() -> None:
    alice = await make_user("alice")
    assert await user_named_by(await logged_in_session(alice)) == "alice"
    assert await user_named_by(None) == "anonymous"
    assert await user_named_by("no-such-session-key") == "anonymous"


async def test_session_with_a_stale_password_hash_is_flushed() -> None:
    alice = await make_user("alice")
    key = await logged_in_session(alice)

    @database_sync_to_async
    def change_password() -> None:
        alice.set_password("changed")
        alice.save()

    await change_password()
    assert await user_named_by(key) == "anonymous"
    assert await session_data(key) is None


class LoginConsumer(AsyncJsonWebsocketConsumer):
    """``{"login": name}`` or ``{"logout": true}``; answers with the user and session key."""

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if "login" in content:
            user = await database_sync_to_async(User.objects.get)(username=content["login"])
            await login(self.scope, user)
        else:
            await logout(self.scope)
        await self.send_json(
            {"user": str(self.scope["user"]), "key": self.scope["session"].session_key}
        )


class SyncLoginConsumer(JsonWebsocketConsumer):
    """:class:`LoginConsumer` as a sync consumer writes it, through ``async_to_sync``."""

    def receive_json(self, content: Any, **kwargs: Any) -> None:
        if "login" in content:
            user = User.objects.get(username=content["login"])
            async_to_sync(login)(self.scope, user)
        else:
            async_to_sync(logout)(self.scope)
        self.send_json({"user": str(self.scope["user"]), "key": self.scope["session"].session_key})


@pytest.mark.parametrize("consumer", [LoginConsumer, SyncLoginConsumer])
async def test_login_rotates_the_session_key_and_sends_the_signal(consumer: Any) -> None:
    alice = await make_user("alice")
    anonymous_key = await stored_session(cart=[1, 2])
    communicator = WebsocketCommunicator(
        AuthMiddlewareStack(consumer.as_asgi()), "/", headers=cookie(anonymous_key)
    )
    assert await communicator.connect() == (True, None)
    with recording(user_logged_in) as logins:
        await communicator.send_json_to({"login": "alice"})
        reply = await communicator.receive_json_from()
    assert reply["user"] == "alice"
    new_key = reply["key"]
    assert new_key != anonymous_key
    assert await session_data(anonymous_key) is None  # the old key is worthless
    # Saved with the reply; what the anonymous session held is kept.
    assert await session_data(new_key) == {
        "cart": [1, 2],
        "_auth_user_id": str(alice.pk),
        "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
        "_auth_user_hash": alice.get_session_auth_hash(),
    }
    assert len(logins) == 1
    assert logins[0]["sender"] is User
    assert logins[0]["user"] == alice
    assert logins[0]["request"] is None
    await communicator.disconnect()
    assert await user_named_by(new_key) == "alice"


@pytest.mark.parametrize("consumer", [LoginConsumer, SyncLoginConsumer])
async def test_logout_sends_the_signal_and_leaves_an_anonymous_user(consumer: Any) -> None:
    alice = await make_user("alice")
    key = await logged_in_session(alice)
    communicator = WebsocketCommunicator(
        AuthMiddlewareStack(consumer.as_asgi()), "/", headers=cookie(key)
    )
    assert await communicator.connect() == (True, None)
    with recording(user_logged_out) as logouts:
        await communicator.send_json_to({"logout": True})
        assert await communicator.receive_json_from() == {"user": "AnonymousUser", "key": None}
    assert [(call["sender"], call["user"], call["request"]) for call in logouts] == [
        (User, alice, None)
    ]
    assert await session_data(key) is None
    await communicator.disconnect()


async def test_logout_over_http_deletes_the_cookie_and_stores_nothing() -> None:
    async def logout_view(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await logout(scope)
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": str(scope["user"]).encode()})

    key = await logged_in_session(await make_user("alice"))
    app = AuthMiddlewareStack(logout_view)
    with recording(user_logged_out) as logouts:
        response = await HttpCommunicator(
            app, "POST", "/logout", headers=cookie(key)
        ).get_response()
    assert response["body"] == b"AnonymousUser"
    assert response["headers"] == [
        (
            b"Set-Cookie",
            b'sessionid=""; expires=Thu, 01-Jan-1970 00:00:00 GMT; Max-Age=0; Path=/; '
            b"SameSite=lax",
        )
    ]
    assert len(logouts) == 1
    assert await database_sync_to_async(Session.objects.count)() == 0

    # Nobody logged in: no signal, and still a clear outcome.
    with recording(user_logged_out) as logouts:
        response = await HttpCommunicator(app, "POST", "/logout").get_response()
    assert response["body"] == b"AnonymousUser"
    assert logouts == []


async def test_auth_without_sessions_is_a_clear_error() -> None:
    communicator = ApplicationCommunicator(
        AuthMiddleware(whoami), {"type": "websocket", "path": "/", "headers": []}
    )
    with pytest.raises(ValueError, match="AuthMiddleware cannot find session in scope"):
        await communicator.wait()

    alice = await make_user("alice")
    with pytest.raises(
        ValueError, match=r"Cannot find session in scope.*get_user\(\) needs the session"
    ):
        await get_user({"type": "websocket"})
    with pytest.raises(
        ValueError, match=r"Cannot find session in scope.*login\(\) needs the session"
    ):
        await login({"type": "websocket"}, alice)
    with pytest.raises(
        ValueError, match=r"Cannot find session in scope.*logout\(\) needs the session"
    ):
        await logout({"type": "websocket"})


async def test_user_read_before_it_is_resolved_is_a_clear_error() -> None:
    scope: dict[str, Any] = {"type": "websocket", "session": SessionStore()}
    AuthMiddleware(whoami).populate_scope(scope)
    with pytest.raises(ValueError, match="Accessing scope user before it is ready"):
        _ = scope["user"].username


async def test_bad_login_arguments_are_clear_errors_and_keep_the_session() -> None:
    alice = await make_user("alice")
    key = await stored_session(cart=[1])
    session = SessionStore(key)
    scope: dict[str, Any] = {"type": "websocket", "session": session}
    with pytest.raises(ValueError, match="User must be passed"):
        await login(scope, None)
    with (
        override_settings(
            AUTHENTICATION_BACKENDS=[
                "django.contrib.auth.backends.ModelBackend",
                "django.contrib.auth.backends.AllowAllUsersModelBackend",
            ]
        ),
        pytest.raises(ValueError, match="multiple authentication backends"),
    ):
        await login(scope, alice)
    with pytest.raises(TypeError, match="dotted import path"):
        await login(scope, alice, backend=object())  # type: ignore[arg-type]
    assert session.session_key == key
    assert not session.modified
    assert await session_data(key) == {"cart": [1]}
