"""Cookies and sessions: parsing, Set-Cookie bytes, a session per connection, saving."""

from __future__ import annotations

import datetime
import re
import time
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.core.exceptions import SuspiciousOperation
from django.test import override_settings

from channels.concurrency import async_to_sync
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer, JsonWebsocketConsumer
from channels.layers import get_channel_layer
from channels.sessions import CookieMiddleware, SessionMiddleware, SessionMiddlewareStack
from channels.testing import ApplicationCommunicator, HttpCommunicator, WebsocketCommunicator
from channels.types import Message, Receive, Scope, Send
from tests.harness import stored_session

# -- cookies --------------------------------------------------------------------------


async def cookies_seen(headers: list[tuple[bytes, bytes]]) -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "cookies", "cookies": scope["cookies"]})

    scope = {"type": "http", "headers": headers}
    communicator = ApplicationCommunicator(CookieMiddleware(app), scope)
    message = await communicator.receive_output()
    assert "cookies" not in scope  # the middleware added them to a copy
    return message["cookies"]


async def test_cookie_header_is_parsed_into_the_scope() -> None:
    assert await cookies_seen([(b"cookie", b'a=1; b=two words; c="q"')]) == {
        "a": "1",
        "b": "two words",
        "c": "q",
    }
    assert await cookies_seen([(b"host", b"example.com")]) == {}
    # HTTP/2 sends each cookie in its own header; latin-1 bytes decode as Django does.
    assert await cookies_seen(
        [(b"cookie", b"a=1"), (b"accept", b"*/*"), (b"cookie", b"b=caf\xe9")]
    ) == {"a": "1", "b": "caf\xe9"}


async def test_cookie_middleware_needs_headers() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError("not reached")

    communicator = ApplicationCommunicator(CookieMiddleware(app), {"type": "lifespan"})
    with pytest.raises(ValueError, match="did not have a headers key"):
        await communicator.wait()


# Expected bytes were produced by upstream Channels 4.3.2's set_cookie / delete_cookie.
SET_COOKIE_CASES: list[tuple[tuple[Any, ...], dict[str, Any], bytes]] = [
    (("a",), {}, b'a=""; Path=/; SameSite=lax'),
    (("a", "b"), {}, b"a=b; Path=/; SameSite=lax"),
    (
        ("greeting", 'hello world;"x"'),
        {},
        b'greeting="hello world\\073\\"x\\""; Path=/; SameSite=lax',
    ),
    (("n", 42), {}, b"n=42; Path=/; SameSite=lax"),
    (
        ("k", "v"),
        {"secure": True, "httponly": True, "domain": ".example.com", "path": "/chat"},
        b"k=v; Domain=.example.com; HttpOnly; Path=/chat; SameSite=lax; Secure",
    ),
    (("k", "v"), {"samesite": "Strict"}, b"k=v; Path=/; SameSite=Strict"),
    (("k", "v"), {"samesite": "NONE", "secure": True}, b"k=v; Path=/; SameSite=NONE; Secure"),
    (("k", "v"), {"samesite": None}, b"k=v; Path=/"),
    (("k", "v"), {"path": None}, b"k=v; SameSite=lax"),
    (
        ("k", "v"),
        {"expires": "Wed, 21 Oct 2015 07:28:00 GMT"},
        b"k=v; expires=Wed, 21 Oct 2015 07:28:00 GMT; Path=/; SameSite=lax",
    ),
    (
        ("k", "v"),
        {"max_age": 3600, "expires": "Wed, 21 Oct 2015 07:28:00 GMT"},
        b"k=v; expires=Wed, 21 Oct 2015 07:28:00 GMT; Max-Age=3600; Path=/; SameSite=lax",
    ),
    (("k", "\u00e9t\u00e9"), {}, b'k="\\351t\\351"; Path=/; SameSite=lax'),
]

DELETE_COOKIE_CASES: list[tuple[tuple[Any, ...], dict[str, Any], bytes]] = [
    (
        ("sessionid",),
        {},
        b'sessionid=""; expires=Thu, 01-Jan-1970 00:00:00 GMT; Max-Age=0; Path=/; SameSite=lax',
    ),
    (
        ("sessionid",),
        {"path": "/app", "domain": "example.com"},
        b'sessionid=""; Domain=example.com; expires=Thu, 01-Jan-1970 00:00:00 GMT; '
        b"Max-Age=0; Path=/app; SameSite=lax",
    ),
]


@pytest.mark.parametrize(("args", "kwargs", "expected"), SET_COOKIE_CASES)
def test_set_cookie_writes_the_same_bytes_as_channels(
    args: tuple[Any, ...], kwargs: dict[str, Any], expected: bytes
) -> None:
    message: Message = {"type": "http.response.start", "status": 200}
    CookieMiddleware.set_cookie(message, *args, **kwargs)
    assert message == {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"Set-Cookie", expected)],
    }


@pytest.mark.parametrize(("args", "kwargs", "expected"), DELETE_COOKIE_CASES)
def test_delete_cookie_writes_the_same_bytes_as_channels(
    args: tuple[Any, ...], kwargs: dict[str, Any], expected: bytes
) -> None:
    message: Message = {"type": "websocket.accept"}
    CookieMiddleware.delete_cookie(message, *args, **kwargs)
    assert message["headers"] == [(b"Set-Cookie", expected)]


def test_set_cookie_appends_without_changing_the_callers_list() -> None:
    headers = [(b"content-type", b"text/plain")]
    message: Message = {"type": "http.response.start", "headers": headers}
    CookieMiddleware.set_cookie(message, "a", "1")
    CookieMiddleware.set_cookie(message, "b", "2")
    assert message["headers"] == [
        (b"content-type", b"text/plain"),
        (b"Set-Cookie", b"a=1; Path=/; SameSite=lax"),
        (b"Set-Cookie", b"b=2; Path=/; SameSite=lax"),
    ]
    assert headers == [(b"content-type", b"text/plain")]


@pytest.mark.parametrize("samesite", ["", "lax ", "strictly", "None?", False, 1])
def test_invalid_samesite_is_a_clear_error_and_leaves_the_message_alone(samesite: Any) -> None:
    message: Message = {"type": "http.response.start", "headers": [(b"x", b"y")]}
    with pytest.raises(ValueError, match="samesite must be 'strict', 'lax', 'none' or None"):
        CookieMiddleware.set_cookie(message, "k", "v", samesite=samesite)
    with pytest.raises(AssertionError):  # what upstream raised
        CookieMiddleware.set_cookie(message, "k", "v", samesite=samesite)
    assert message == {"type": "http.response.start", "headers": [(b"x", b"y")]}


def cookie_attributes(message: Message) -> dict[str, str]:
    [(name, value)] = message["headers"]
    assert name == b"Set-Cookie"
    parts = value.decode().split("; ")
    return dict(part.split("=", 1) if "=" in part else (part, "") for part in parts[1:])


def test_max_age_comes_with_the_matching_expiry_date() -> None:
    message: Message = {"type": "http.response.start"}
    before = int(time.time())
    CookieMiddleware.set_cookie(message, "k", "v", max_age=600)
    after = int(time.time())
    attributes = cookie_attributes(message)
    assert attributes["Max-Age"] == "600"
    assert re.fullmatch(r"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT", attributes["expires"])
    expires = parsedate_to_datetime(attributes["expires"]).timestamp()
    assert before + 600 <= expires <= after + 600


@pytest.mark.parametrize(
    "zone", [None, datetime.UTC, datetime.timezone(datetime.timedelta(hours=-5))]
)
def test_expiry_datetime_becomes_max_age(zone: datetime.tzinfo | None) -> None:
    now = datetime.datetime.now(datetime.UTC)
    later = (now + datetime.timedelta(hours=1)).astimezone(zone or datetime.UTC)
    if zone is None:
        later = later.replace(tzinfo=None)  # naive datetimes are read as UTC
    message: Message = {"type": "http.response.start"}
    CookieMiddleware.set_cookie(message, "k", "v", expires=later)
    # Within the second the call took, the age left is an hour.
    assert cookie_attributes(message)["Max-Age"] in {"3599", "3600"}

    past: Message = {"type": "http.response.start"}
    CookieMiddleware.set_cookie(past, "k", "v", expires=now - datetime.timedelta(days=2))
    assert cookie_attributes(past)["Max-Age"] == "0"


# -- sessions -------------------------------------------------------------------------

uses_db = pytest.mark.django_db(transaction=True)


@database_sync_to_async
def session_data(key: str) -> dict[str, Any] | None:
    """What the store holds under ``key`` (``None`` if nothing)."""
    row = Session.objects.filter(pk=key).first()
    return None if row is None else dict(row.get_decoded())


@database_sync_to_async
def session_expiry(key: str) -> datetime.datetime:
    return Session.objects.get(pk=key).expire_date


@database_sync_to_async
def session_count() -> int:
    return Session.objects.count()


def session_cookie(key: str) -> list[tuple[bytes, bytes]]:
    return [(b"cookie", f"sessionid={key}".encode())]


def set_cookie_values(headers: list[tuple[bytes, bytes]] | None) -> list[str]:
    return [value.decode() for name, value in headers or [] if name == b"Set-Cookie"]


opened_sessions: list[Any] = []


class SessionConsumer(JsonWebsocketConsumer):
    """``{"set": {...}}`` updates the session; unless ``"quiet"``, it answers with the
    session's key and data. Sessions set ``"on_connect"`` in ``connect()``."""

    def connect(self) -> None:
        opened_sessions.append(self.scope["session"])
        if "on_connect" in self.scope["query_string"].decode():
            self.scope["session"]["on_connect"] = True
        self.accept()

    def receive_json(self, content: Any, **kwargs: Any) -> None:
        session = self.scope["session"]
        if "set" in content:
            session.update(content["set"])
        if content.get("quiet"):
            async_to_sync(self.channel_layer.send)("handled", {"type": "handled"})
        else:
            self.send_json({"key": session.session_key, "data": dict(session.items())})


class AsyncSessionConsumer(AsyncJsonWebsocketConsumer):
    """:class:`SessionConsumer` on the event loop. It only works with new sessions (or
    ones already loaded): loading one is a query, which async code may not make."""

    async def connect(self) -> None:
        opened_sessions.append(self.scope["session"])
        if "on_connect" in self.scope["query_string"].decode():
            self.scope["session"]["on_connect"] = True
        await self.accept()

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        session = self.scope["session"]
        if "set" in content:
            session.update(content["set"])
        if not content.get("quiet"):
            await self.send_json({"key": session.session_key, "data": dict(session.items())})


@pytest.fixture(autouse=True)
def forget_opened_sessions() -> None:
    opened_sessions.clear()


@uses_db
async def test_each_connection_gets_its_own_session() -> None:
    key = await stored_session(colour="blue")
    app = SessionMiddlewareStack(SessionConsumer.as_asgi())
    first = WebsocketCommunicator(app, "/", headers=session_cookie(key))
    second = WebsocketCommunicator(app, "/", headers=session_cookie(key))
    assert (await first.connect())[0]
    assert (await second.connect())[0]
    assert len(opened_sessions) == 2
    assert opened_sessions[0]._wrapped is not opened_sessions[1]._wrapped

    await first.send_json_to({"set": {"colour": "red"}, "quiet": True})
    # The consumer says on the channel layer, not through the session's send, when done.
    assert await get_channel_layer().receive("handled") == {"type": "handled"}
    await second.send_json_to({})
    assert await second.receive_json_from() == {"key": key, "data": {"colour": "blue"}}
    assert await session_data(key) == {"colour": "blue"}  # not saved: nothing sent yet

    await first.send_json_to({})  # the first send after the change saves it
    assert await first.receive_json_from() == {"key": key, "data": {"colour": "red"}}
    assert await session_data(key) == {"colour": "red"}

    third = WebsocketCommunicator(app, "/", headers=session_cookie(key))
    assert (await third.connect())[0]
    await third.send_json_to({})
    assert await third.receive_json_from() == {"key": key, "data": {"colour": "red"}}
    for communicator in (first, second, third):
        await communicator.disconnect()


@uses_db
@pytest.mark.parametrize("consumer", [SessionConsumer, AsyncSessionConsumer])
async def test_changed_session_is_saved_with_the_next_message(consumer: Any) -> None:
    app = SessionMiddlewareStack(consumer.as_asgi())
    communicator = WebsocketCommunicator(app, "/?on_connect")
    assert await communicator.connect() == (True, None)
    # The new session was saved before the accept went out, which carries its cookie.
    [cookie] = set_cookie_values(communicator.response_headers)
    key = re.fullmatch(
        r"sessionid=(\w+); expires=[^;]+; HttpOnly; Max-Age=1209600; Path=/; "
        r"SameSite=Lax",
        cookie,
    )
    assert key is not None, cookie
    key = key[1]
    assert await session_data(key) == {"on_connect": True}

    await communicator.send_json_to({"set": {"n": 1}})
    assert await communicator.receive_json_from() == {
        "key": key,
        "data": {"on_connect": True, "n": 1},
    }
    assert await session_data(key) == {"on_connect": True, "n": 1}

    # Unchanged since that save: the next message does not save again (which would move
    # the expiry date on).
    saved_at = await session_expiry(key)
    await communicator.send_json_to({})
    await communicator.receive_json_from()
    assert await session_expiry(key) == saved_at
    await communicator.disconnect()


@uses_db
async def test_unchanged_session_sets_no_cookie_and_saves_nothing() -> None:
    app = SessionMiddlewareStack(SessionConsumer.as_asgi())
    communicator = WebsocketCommunicator(app, "/")
    assert await communicator.connect() == (True, None)
    assert set_cookie_values(communicator.response_headers) == []
    await communicator.send_json_to({})
    assert await communicator.receive_json_from() == {"key": None, "data": {}}
    assert await session_count() == 0
    await communicator.disconnect()


async def http_session_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Stores the query string in the session, then answers with the status it names."""
    await receive()
    scope["session"]["query"] = scope["query_string"].decode()
    status = int(scope["query_string"])
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@uses_db
async def test_http_response_saves_the_session_and_sets_its_cookie() -> None:
    app = SessionMiddlewareStack(http_session_app)
    response = await HttpCommunicator(app, "GET", "/?201").get_response()
    assert response["status"] == 201
    [cookie] = set_cookie_values(response["headers"])
    key = cookie.split(";")[0].removeprefix("sessionid=")
    assert await session_data(key) == {"query": "201"}


@uses_db
async def test_a_failed_response_keeps_nothing() -> None:
    app = SessionMiddlewareStack(http_session_app)
    response = await HttpCommunicator(app, "GET", "/?500").get_response()
    assert response["status"] == 500
    assert set_cookie_values(response["headers"]) == []
    assert await session_count() == 0


@uses_db
async def test_nested_session_middleware_leaves_saving_to_the_outer_one() -> None:
    app = SessionMiddlewareStack(SessionMiddleware(http_session_app))
    response = await HttpCommunicator(app, "GET", "/?200").get_response()
    assert len(set_cookie_values(response["headers"])) == 1
    assert await session_count() == 1


async def test_session_middleware_needs_cookie_middleware() -> None:
    communicator = WebsocketCommunicator(SessionMiddleware(SessionConsumer.as_asgi()), "/")
    with pytest.raises(
        ValueError, match="SessionMiddleware needs to run inside of CookieMiddleware"
    ):
        await communicator.connect()


@uses_db
async def test_session_deleted_elsewhere_before_saving_is_suspicious() -> None:
    key = await stored_session(colour="blue")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await database_sync_to_async(lambda: scope["session"].update({"colour": "red"}))()
        await database_sync_to_async(SessionStore(key).delete)()  # a logout elsewhere
        await send({"type": "http.response.start", "status": 200})

    communicator = HttpCommunicator(
        SessionMiddlewareStack(app), "GET", "/", headers=session_cookie(key)
    )
    with pytest.raises(SuspiciousOperation, match="session was deleted"):
        await communicator.get_response()
    assert await session_count() == 0


@uses_db
async def test_save_every_request_refreshes_an_unchanged_session() -> None:
    key = await stored_session(colour="blue")
    saved_at = await session_expiry(key)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body"})

    app_with_sessions = SessionMiddlewareStack(app)
    with override_settings(SESSION_SAVE_EVERY_REQUEST=True):
        response = await HttpCommunicator(
            app_with_sessions, "GET", "/", headers=session_cookie(key)
        ).get_response()
    [cookie] = set_cookie_values(response["headers"])
    assert cookie.startswith(f"sessionid={key}; ")
    assert await session_expiry(key) > saved_at
    assert await session_data(key) == {"colour": "blue"}

    response = await HttpCommunicator(
        app_with_sessions, "GET", "/", headers=session_cookie(key)
    ).get_response()
    assert set_cookie_values(response["headers"]) == []
