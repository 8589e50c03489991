"""Every code sample of the documentation lives in docs/snippets/ and is exercised here.

The pages include the snippet files with ``literalinclude``, so what a reader copies is
what these tests run, on asyncio and on trio.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import anyio
import pytest
from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session
from django.core import mail
from django.test import override_settings

from channels.concurrency import sync_to_async
from channels.db import database_sync_to_async
from channels.layers import channel_layers, get_channel_layer
from channels.routing import URLRouter
from channels.testing import ApplicationCommunicator, HttpCommunicator, WebsocketCommunicator
from channels.worker import Worker
from docs.snippets import (
    authentication,
    consumers,
    databases,
    durable,
    enqueue,
    layer_settings,
    migrating,
    migrating_before,
    multiplex,
    outside,
    security,
    sessions,
    test_consumers,
)
from tests.harness import stored_session

DOCS = Path(__file__).resolve().parent.parent / "docs"


def route(path: str, consumer: Any) -> Any:
    from django.urls import re_path

    return URLRouter([re_path(path, consumer.as_asgi())])


# -- the pages include only snippet files, and every included file exists ---------------------


def test_pages_have_no_inline_python() -> None:
    """Code in the pages comes from tested files; inline blocks are shell commands only."""
    inline = re.compile(r"^\s*```\s*(\{code-block\}\s*)?(\w+)\s*$", re.MULTILINE)
    for page in DOCS.rglob("*.md"):
        if "_build" in page.parts or page.name == "benchmarks.md":
            continue
        languages = {language for _, language in inline.findall(page.read_text())}
        assert languages <= {"sh", "text", "console"}, f"{page}: inline {languages}"


def test_included_files_and_markers_exist() -> None:
    include = re.compile(r"```\{literalinclude\} (\S+)\n((?::[\w-]+:.*\n)*)")
    found = 0
    for page in DOCS.rglob("*.md"):
        if "_build" in page.parts:
            continue
        for target, options in include.findall(page.read_text()):
            found += 1
            source = (page.parent / target).resolve()
            assert source.is_file(), f"{page}: {target} does not exist"
            text = source.read_text()
            markers = re.findall(r":(?:start-after|end-before|start-at|end-at): (.*)", options)
            for marker in markers:
                assert marker.strip().strip('"') in text, f"{page}: {marker!r} not in {target}"
            for name in re.findall(r":pyobject: (.*)", options):
                last = name.strip().rsplit(".", 1)[-1]
                assert re.search(rf"(def|class) {last}\b", text), f"{page}: no {name} in {target}"
    assert found > 20


def test_channels_comes_first_in_installed_apps() -> None:
    from docs.snippets import project_settings

    apps = project_settings.INSTALLED_APPS
    assert apps.index("channels") < apps.index("django.contrib.staticfiles")


# -- consumers -------------------------------------------------------------------------------


@pytest.mark.parametrize("consumer", [consumers.EchoConsumer, consumers.AsyncEchoConsumer])
async def test_raw_echo_consumers(consumer: Any) -> None:
    communicator = WebsocketCommunicator(consumer.as_asgi(), "/echo/")
    assert await communicator.connect() == (True, None)
    await communicator.send_to(text_data="hi")
    assert await communicator.receive_from() == "hi"
    await communicator.disconnect()


async def test_upper_consumer_text_and_bytes() -> None:
    communicator = WebsocketCommunicator(consumers.UpperConsumer.as_asgi(), "/")
    await communicator.connect()
    await communicator.send_to(text_data="abc")
    assert await communicator.receive_from() == "ABC"
    await communicator.send_to(bytes_data=b"\x00\x01")
    assert await communicator.receive_from() == b"\x00\x01"
    await communicator.disconnect()


async def test_room_consumer_broadcasts_within_its_room() -> None:
    app = route(r"^ws/room/(?P<room>\w+)/$", consumers.RoomConsumer)
    alice = WebsocketCommunicator(app, "/ws/room/lobby/")
    bob = WebsocketCommunicator(app, "/ws/room/lobby/")
    carol = WebsocketCommunicator(app, "/ws/room/other/")
    for client in (alice, bob, carol):
        assert (await client.connect())[0]
    await alice.send_to(text_data="hello")
    assert await alice.receive_from() == "hello"
    assert await bob.receive_from() == "hello"
    assert await carol.receive_nothing()
    for client in (alice, bob, carol):
        await client.disconnect()


async def test_groups_attribute_joins_announcements_and_outside_senders_reach_it() -> None:
    communicator = WebsocketCommunicator(consumers.AnnouncementsConsumer.as_asgi(), "/")
    await communicator.connect()
    await outside.announce_async("from async code")
    assert await communicator.receive_from() == "from async code"
    # The sync form, as called from a sync view: in a worker thread of the running loop.
    await sync_to_async(outside.announce)("from sync code")
    assert await communicator.receive_from() == "from sync code"
    await communicator.disconnect()


async def test_snippet_tests_from_testing_page() -> None:
    await test_consumers.test_upper_consumer()
    await test_consumers.test_counter_consumer()
    await test_consumers.test_http_consumer()
    await test_consumers.test_with_a_communicator_subclass()


def test_testing_page_fixture_lists_both_backends() -> None:
    params = test_consumers.anyio_backend._fixture_function_marker.params  # type: ignore[attr-defined]
    assert list(params) == ["asyncio", "trio"]


async def test_long_poll_consumer_answers_when_notified() -> None:
    communicator = HttpCommunicator(consumers.WaitConsumer.as_asgi(), "GET", "/wait/")
    await communicator.send_input({"type": "http.request", "body": b""})
    start = await communicator.receive_output()
    assert start["status"] == 200
    assert (await communicator.receive_output())["more_body"] is True
    layer = get_channel_layer()
    # handle() joined the group before it started the response.
    await layer.group_send("waiters", {"type": "notify", "text": "done"})
    last = await communicator.receive_output()
    assert last["body"] == b"done"
    assert not last.get("more_body")
    await communicator.wait()
    assert not layer.groups.get("waiters")


# -- channel layer settings ------------------------------------------------------------------


def with_redis(config: dict[str, Any], url: str, prefix: str) -> dict[str, Any]:
    layer = dict(config["default"])
    layer["CONFIG"] = {**layer["CONFIG"], "hosts": [url], "prefix": prefix}
    return {"default": layer}


async def round_trip(settings: dict[str, Any]) -> None:
    with override_settings(CHANNEL_LAYERS=settings):
        layer = get_channel_layer()
        try:
            channel = await layer.new_channel()
            await layer.group_add("docs", channel)
            await layer.group_send("docs", {"type": "hello", "n": 1})
            with anyio.fail_after(5):
                assert await layer.receive(channel) == {"type": "hello", "n": 1}
        finally:
            await layer.close()


async def test_in_memory_settings() -> None:
    await round_trip(layer_settings.IN_MEMORY)
    with override_settings(CHANNEL_LAYERS=layer_settings.IN_MEMORY):
        layer = get_channel_layer()
        assert (layer.expiry, layer.group_expiry, layer.capacity) == (60, 86400, 100)


async def test_redis_settings(redis_url: str, prefix: str) -> None:
    settings = with_redis(layer_settings.REDIS, redis_url, prefix)
    await round_trip(settings)
    with override_settings(CHANNEL_LAYERS=settings):
        layer = get_channel_layer()
        assert layer.get_capacity("http.request") == 200
        assert layer.get_capacity("websocket.send!abc") == 20
        assert layer.get_capacity("other") == 100


async def test_pubsub_settings(redis_url: str, prefix: str) -> None:
    await round_trip(with_redis(layer_settings.PUBSUB, redis_url, prefix))


async def test_cluster_settings(redis_cluster_urls: list[str], prefix: str) -> None:
    settings = with_redis(layer_settings.CLUSTER, redis_cluster_urls[0], prefix)
    settings["default"]["CONFIG"]["hosts"] = redis_cluster_urls
    await round_trip(settings)


def test_test_config_is_used_by_make_test_backend() -> None:
    with override_settings(CHANNEL_LAYERS=layer_settings.WITH_TEST_CONFIG):
        layer = channel_layers.make_test_backend("default")
        assert layer.expiry == 5


# -- sessions and authentication ---------------------------------------------------------------


def cookie(key: str) -> list[tuple[bytes, bytes]]:
    return [(b"cookie", f"sessionid={key}".encode())]


@database_sync_to_async
def session_data(key: str) -> dict[str, Any]:
    return dict(Session.objects.get(pk=key).get_decoded())


@pytest.mark.django_db(transaction=True)
async def test_sessions_snippet_counts_and_saves() -> None:
    key = await stored_session(name="ada")
    communicator = WebsocketCommunicator(sessions.application, "/ws/visits/", cookie(key))
    assert (await communicator.connect())[0]
    await communicator.send_to(text_data="x")
    assert await communicator.receive_from() == "1"
    await communicator.send_to(text_data="x")
    assert await communicator.receive_from() == "2"
    await communicator.disconnect()
    assert (await session_data(key))["messages"] == 2


@database_sync_to_async
def make_user(username: str, password: str) -> Any:
    return get_user_model().objects.create_user(username, password=password)


@database_sync_to_async
def logged_in_session_key() -> str:
    (row,) = [row for row in Session.objects.all() if "_auth_user_id" in row.get_decoded()]
    return str(row.session_key)


@pytest.mark.django_db(transaction=True)
async def test_authentication_snippets() -> None:
    await make_user("ada", "lovelace")
    app = authentication.application

    anonymous = WebsocketCommunicator(app, "/ws/profile/")
    assert (await anonymous.connect())[0] is False

    key = await stored_session()
    login = WebsocketCommunicator(app, "/ws/login/", cookie(key))
    await login.connect()
    await login.send_json_to({"username": "ada", "password": "wrong"})
    assert await login.receive_json_from() == {"error": "invalid credentials"}
    await login.send_json_to({"username": "ada", "password": "lovelace"})
    assert await login.receive_json_from() == {"user": "ada"}
    await login.disconnect()
    # login() gave the session a new key (the cookie sent at accept names the old one).
    new_key = await logged_in_session_key()
    assert new_key != key

    profile = WebsocketCommunicator(app, "/ws/profile/", cookie(new_key))
    assert (await profile.connect())[0]
    assert await profile.receive_json_from() == {"username": "ada"}
    await profile.disconnect()

    logout = WebsocketCommunicator(app, "/ws/login/", cookie(new_key))
    await logout.connect()
    await logout.send_json_to({"action": "logout"})
    assert await logout.receive_json_from() == {"user": None}
    await logout.disconnect()
    again = WebsocketCommunicator(app, "/ws/profile/", cookie(new_key))
    assert (await again.connect())[0] is False


# -- security --------------------------------------------------------------------------------


async def connects(app: Any, origin: str) -> bool:
    communicator = WebsocketCommunicator(app, "/ws/upper/", [(b"origin", origin.encode())])
    accepted, _ = await communicator.connect()
    if accepted:
        await communicator.disconnect()
    return accepted


async def test_allowed_hosts_origin_validator() -> None:
    with override_settings(ALLOWED_HOSTS=["example.com"], DEBUG=False):
        module = importlib.reload(security)
        assert await connects(module.application, "https://example.com")
        assert not await connects(module.application, "https://evil.example.net")


async def test_explicit_origin_validator() -> None:
    app = security.explicit
    assert await connects(app, "https://example.com")
    assert not await connects(app, "http://example.com")  # scheme given: it must match
    assert await connects(app, "https://chat.example.org")
    assert await connects(app, "http://localhost:8000")
    assert not await connects(app, "https://evil.com")


# -- database access -------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "consumer",
    [
        databases.SyncUserCountConsumer,
        databases.UserCountConsumer,
        databases.AsyncOrmUserCountConsumer,
    ],
)
async def test_database_snippets(consumer: Any) -> None:
    await make_user("grace", "hopper")
    communicator = WebsocketCommunicator(consumer.as_asgi(), "/")
    await communicator.connect()
    assert await communicator.receive_from() == "1"
    await communicator.disconnect()


# -- worker ----------------------------------------------------------------------------------


async def test_worker_snippet_sends_the_mail() -> None:
    from docs.snippets import worker

    mail.outbox = []
    layer = get_channel_layer()
    async with anyio.create_task_group() as group:
        group.start_soon(Worker(worker.application, ["email"], layer).arun)
        await enqueue.queue_welcome_email("ada@example.com")
        with anyio.fail_after(10):
            # The mail is sent from the worker's thread: there is no event to wait on.
            while not mail.outbox:  # noqa: ASYNC110
                await anyio.sleep(0.01)
        group.cancel_scope.cancel()
    assert mail.outbox[0].to == ["ada@example.com"]
    assert mail.outbox[0].subject == "Welcome"


# -- migrating -------------------------------------------------------------------------------


async def test_migrated_sync_chat_consumer_on_both_backends() -> None:
    alice = WebsocketCommunicator(migrating.ChatConsumer.as_asgi(), "/")
    bob = WebsocketCommunicator(migrating.ChatConsumer.as_asgi(), "/")
    await alice.connect()
    await bob.connect()
    await alice.send_to(text_data="hi bob")
    assert await bob.receive_from() == "hi bob"
    assert await alice.receive_from() == "hi bob"
    await alice.disconnect()
    await bob.disconnect()


async def test_channels_4_3_sync_consumer_works_unchanged_on_both_backends() -> None:
    """asgiref's async_to_sync reaches the trio loop too, since "channels" is installed."""
    alice = WebsocketCommunicator(migrating_before.ChatConsumer.as_asgi(), "/")
    bob = WebsocketCommunicator(migrating_before.ChatConsumer.as_asgi(), "/")
    await alice.connect()
    await bob.connect()
    await bob.send_to(text_data="hi alice")
    assert await alice.receive_from() == "hi alice"
    assert await bob.receive_from() == "hi alice"
    await alice.disconnect()
    await bob.disconnect()


# -- routing ---------------------------------------------------------------------------------


async def test_routing_patterns_capture_the_room() -> None:
    from docs.snippets import routing

    app = URLRouter(routing.websocket_urlpatterns)
    communicator = WebsocketCommunicator(app, "/ws/room/lobby/")
    await communicator.connect()
    assert get_channel_layer().groups.get("room_lobby")  # RoomConsumer read the kwarg
    await communicator.disconnect()
    upper = WebsocketCommunicator(app, "/ws/upper/")
    await upper.connect()
    await upper.send_to(text_data="x")
    assert await upper.receive_from() == "X"
    await upper.disconnect()


async def test_nested_router_serves_api_time() -> None:
    from docs.snippets import routing

    response = await HttpCommunicator(routing.http_router, "GET", "/api/time/").get_response()
    assert response["status"] == 200
    with pytest.raises(ValueError, match="No route found"):
        await HttpCommunicator(routing.http_router, "GET", "/time/").get_response()


async def test_query_string_middleware() -> None:
    from docs.snippets import routing

    seen: list[Any] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["query"])

    outer_scope = {"type": "http", "query_string": b"a=1&a=2&b=x"}
    await routing.QueryStringMiddleware(inner)(outer_scope, None, None)  # type: ignore[arg-type]
    assert seen == [{"a": ["1", "2"], "b": ["x"]}]
    assert "query" not in outer_scope


# -- deploying -------------------------------------------------------------------------------


async def test_proxy_fix_takes_client_and_scheme_from_the_proxy() -> None:
    from docs.snippets import proxy

    headers = [(b"x-forwarded-for", b"203.0.113.7"), (b"x-forwarded-proto", b"wss")]
    communicator = WebsocketCommunicator(proxy.application, "/", headers)
    communicator.scope.update(client=("10.0.0.2", 5000), scheme="ws")
    await communicator.connect()
    assert await communicator.receive_json_from() == {"client": "203.0.113.7", "scheme": "wss"}
    await communicator.disconnect()


# -- troubleshooting -------------------------------------------------------------------------


async def test_portable_countdown_consumer() -> None:
    from docs.snippets import portable

    communicator = WebsocketCommunicator(portable.CountdownConsumer.as_asgi(), "/")
    await communicator.connect()
    await communicator.send_to(text_data="3")
    assert [await communicator.receive_from() for _ in range(4)] == ["1", "2", "3", "done"]
    await communicator.disconnect()


# -- the project's asgi.py -------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@override_settings(ROOT_URLCONF="docs.snippets.views")
@pytest.mark.parametrize("path", ["/users/count/", "/users/acount/"])
async def test_asgi_snippet_serves_sync_and_async_views(path: str) -> None:
    from channels.http import ASGIHandler
    from docs.snippets import asgi

    assert isinstance(asgi.application.application_mapping["http"], ASGIHandler)
    await make_user("ada", "lovelace")
    response = await HttpCommunicator(asgi.application, "GET", path).get_response()
    assert response["status"] == 200
    assert response["body"] == b'{"users": 1}'


async def test_asgi_snippet_routes_websockets_behind_the_origin_check() -> None:
    from docs.snippets import asgi

    # ALLOWED_HOSTS is empty in the test settings: every origin is refused.
    headers = [(b"origin", b"http://localhost")]
    communicator = WebsocketCommunicator(asgi.application, "/ws/upper/", headers)
    assert await communicator.connect() == (False, 1000)


async def test_asgi_snippet_routes_the_email_channel() -> None:
    from docs.snippets import asgi

    mail.outbox = []
    layer = get_channel_layer()
    async with anyio.create_task_group() as group:
        group.start_soon(Worker(asgi.application, ["email"], layer).arun)
        await enqueue.queue_welcome_email("grace@example.com")
        with anyio.fail_after(10):
            while not mail.outbox:  # noqa: ASYNC110 - sent from the worker's thread
                await anyio.sleep(0.01)
        group.cancel_scope.cancel()
    assert mail.outbox[0].to == ["grace@example.com"]


async def test_lifespan_snippet_ticks_while_the_server_runs() -> None:
    from docs.snippets import lifespan

    server = ApplicationCommunicator(lifespan.application, {"type": "lifespan"})
    await server.send_input({"type": "lifespan.startup"})
    assert await server.receive_output() == {"type": "lifespan.startup.complete"}
    client = WebsocketCommunicator(lifespan.application, "/clock/")
    assert (await client.connect())[0]
    tick = await client.receive_json_from(timeout=5)
    assert isinstance(tick["time"], float)
    await client.disconnect()
    await server.send_input({"type": "lifespan.shutdown"})
    assert await server.receive_output() == {"type": "lifespan.shutdown.complete"}
    await server.wait()


async def test_durable_groups_chat_consumer_recovers_and_shows_presence() -> None:
    from django.urls import re_path

    route = re_path(r"^ws/chat/(?P<room>\w+)/$", durable.ChatConsumer.as_asgi())
    application = URLRouter([route])
    with override_settings(CHANNEL_LAYERS=durable.CHANNEL_LAYERS):
        first = WebsocketCommunicator(application, "/ws/chat/lobby/")
        assert (await first.connect())[0]
        joined = await first.receive_json_from()
        assert joined["recovered"] is False
        assert [info["name"] for info in joined["present"].values()] == ["guest"]
        # Its own join reaches the room too (after connect() returned).
        assert (await first.receive_json_from())["type"] == "presence.join"
        await first.send_json_to({"text": "hello"})
        message = await first.receive_json_from()
        assert message["text"] == "hello"
        await first.disconnect()

        layer = get_channel_layer()
        await layer.group_send("chat_lobby", {"type": "chat.message", "text": "while away"})
        assert await durable.last_messages("lobby") == ["hello", "while away"]

        position = message["position"]
        query = f"epoch={position['epoch']}&offset={position['offset']}"
        second = WebsocketCommunicator(application, f"/ws/chat/lobby/?{query}")
        watcher = WebsocketCommunicator(application, "/ws/chat/lobby/")
        assert (await second.connect())[0]
        assert (await second.receive_json_from())["recovered"] is True
        # What was missed, in order: the first client leaving, then the message; then
        # (live) its own join.
        assert (await second.receive_json_from())["type"] == "presence.leave"
        assert (await second.receive_json_from())["text"] == "while away"
        assert (await second.receive_json_from())["type"] == "presence.join"
        assert (await watcher.connect())[0]
        assert (await watcher.receive_json_from())["type"] == "joined"
        event = await second.receive_json_from()
        assert event["type"] == "presence.join"
        assert event["info"] == {"name": "guest"}
        await watcher.disconnect()
        assert (await second.receive_json_from())["type"] == "presence.leave"
        await second.disconnect()


# -- model observers -------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_observer_snippets_subscribe_notify_and_recover() -> None:
    from channels.db import database_sync_to_async
    from docs.snippets import observers
    from tests.testapp.models import Article

    observers.ArticleObserver.register()
    try:
        communicator = WebsocketCommunicator(observers.SectionConsumer.as_asgi(), "/")
        communicator.scope["url_route"] = {"kwargs": {"section": "news"}}
        await communicator.connect()
        article = await Article.objects.acreate(section="news", title="hello")
        assert await communicator.receive_json_from(timeout=5) == {
            "type": "model.created",
            "model": "testapp.article",
            "pk": article.pk,
            "data": {"id": article.pk, "title": "hello"},
        }
        await database_sync_to_async(observers.retitle_section)("news")
        updated = await communicator.receive_json_from(timeout=5)
        assert (updated["type"], updated["data"]["title"]) == ("model.updated", "[removed]")
        await communicator.disconnect()

        # No history kept for these groups: a position cannot be recovered.
        recovering = WebsocketCommunicator(observers.RecoveringConsumer.as_asgi(), "/")
        after = {"epoch": "0123456789abcdef", "offset": 1}
        recovering.scope["url_route"] = {"kwargs": {"section": "news", "after": after}}
        await recovering.connect()
        assert await recovering.receive_json_from(timeout=5) == {"reload": True}
        await recovering.disconnect()
    finally:
        observers.ArticleObserver.unregister()


async def test_the_multiplexer_and_recovery_snippet() -> None:
    import json
    from urllib.parse import quote

    with override_settings(CHANNEL_LAYERS=multiplex.CHANNEL_LAYERS):
        first = WebsocketCommunicator(multiplex.Multiplexer.as_asgi(), "/ws/")
        assert (await first.connect())[0]
        status = await first.receive_json_from()
        assert status["payload"]["__recovery__"]["recovered"] is False
        assert (await first.receive_json_from())["payload"] == {"type": "reload"}
        await first.send_json_to({"stream": "chat", "payload": {"text": "hi"}, "ref": 1})
        frames = [await first.receive_json_from() for _ in range(2)]
        assert {"stream": "chat", "payload": {"ok": True}, "ref": 1} in frames
        message = next(f["payload"] for f in frames if "ref" not in f)
        assert message["group"] == "chat_lobby"
        await first.disconnect()

        layer = get_channel_layer()
        await layer.group_send("chat_lobby", {"type": "chat.message", "text": "while away"})
        await layer.group_send("notifications", {"type": "notify", "text": "news"})
        positions = quote(json.dumps({"chat_lobby": message["__position__"]}))
        second = WebsocketCommunicator(
            multiplex.Multiplexer.as_asgi(), f"/ws/?positions={positions}"
        )
        assert (await second.connect())[0]
        status = await second.receive_json_from()
        assert status["payload"]["__recovery__"]["recovered"] is True
        replayed = await second.receive_json_from()
        assert (replayed["stream"], replayed["payload"]["text"]) == ("chat", "while away")
        await layer.group_send("notifications", {"type": "notify", "text": "live"})
        assert await second.receive_json_from() == {
            "stream": "notifications",
            "payload": {"text": "live"},
        }
        await second.disconnect()
