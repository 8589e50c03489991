"""Routers: ProtocolTypeRouter (with lifespan), URLRouter, ChannelNameRouter."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings
from django.urls import Resolver404, include, path, re_path

from channels.layers import InMemoryChannelLayer, channel_layers, get_channel_layer
from channels.routing import (
    ChannelNameRouter,
    ProtocolTypeRouter,
    URLRouter,
    get_default_application,
)
from channels.types import Message, Receive, Scope, Send

from .harness import feed_and_run


class RecordingApp:
    """An ASGI app that records the scopes it is called with and returns a value."""

    def __init__(self, result: Any = None) -> None:
        self.result = result
        self.scopes: list[Scope] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        self.scopes.append(scope)
        return self.result

    @property
    def scope(self) -> Scope:
        assert len(self.scopes) == 1, self.scopes
        return self.scopes[0]


async def no_receive() -> Message:
    raise AssertionError("receive() should not be called")


async def no_send(message: Message) -> None:
    raise AssertionError("send() should not be called")


async def call(app: Any, scope: Scope) -> Any:
    """Call ``app`` with a scope, for apps that neither receive nor send."""
    with anyio.fail_after(5):
        return await app(scope, no_receive, no_send)


def http(path: str, **extra: Any) -> Scope:
    return {"type": "http", "path": path, **extra}


# An application for get_default_application() to find.
application = ProtocolTypeRouter({"http": RecordingApp("default app")})


# -- ProtocolTypeRouter ---------------------------------------------------------------


async def test_protocol_type_router_dispatches_by_type() -> None:
    http_app = RecordingApp("from http")
    ws_app = RecordingApp("from websocket")
    router = ProtocolTypeRouter({"http": http_app, "websocket": ws_app})

    http_scope = http("/")
    assert await call(router, http_scope) == "from http"
    assert http_app.scope is http_scope  # the scope is passed on as it is
    assert ws_app.scopes == []

    ws_scope = {"type": "websocket", "path": "/ws/"}
    assert await call(router, ws_scope) == "from websocket"
    assert ws_app.scope is ws_scope
    assert len(http_app.scopes) == 1


async def test_protocol_type_router_passes_receive_and_send() -> None:
    async def echo(scope: Scope, receive: Receive, send: Send) -> str:
        message = await receive()
        await send({"type": "echo", "got": message["type"]})
        return "echoed"

    router = ProtocolTypeRouter({"websocket": echo})
    to_app, app_receive = anyio.create_memory_object_stream[Message](1)
    app_send, from_app = anyio.create_memory_object_stream[Message](1)
    results: list[Any] = []

    async def run() -> None:
        results.append(await router({"type": "websocket"}, app_receive.receive, app_send.send))

    with anyio.fail_after(5):
        async with to_app, app_receive, app_send, from_app, anyio.create_task_group() as tg:
            tg.start_soon(run)
            await to_app.send({"type": "websocket.connect"})
            assert await from_app.receive() == {"type": "echo", "got": "websocket.connect"}
    assert results == ["echoed"]


async def test_protocol_type_router_unknown_type() -> None:
    router = ProtocolTypeRouter({"http": RecordingApp()})
    with pytest.raises(ValueError, match="'websocket'") as info:
        await call(router, {"type": "websocket"})
    assert "No application configured for scope type" in str(info.value)
    with pytest.raises(ValueError, match="'channel'"):
        await call(ProtocolTypeRouter({}), {"type": "channel", "channel": "x"})


class ClosingLayer(InMemoryChannelLayer):
    """A layer that records when it is closed, for the lifespan shutdown tests."""

    closed: list[str]

    def __init__(self, name: str = "", fail: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.name = name
        self.fail = fail
        self.closed = []

    async def close(self) -> None:
        self.closed.append(self.name)
        if self.fail:
            raise RuntimeError(f"cannot close {self.name}")


async def run_lifespan(app: Any, *events: str) -> tuple[list[Message], list[Any]]:
    """Send lifespan ``events`` to ``app`` one by one; collect replies and the result.

    After each event, waits for the reply before sending the next one, as servers do.
    """
    to_app, app_receive = anyio.create_memory_object_stream[Message](10)
    app_send, from_app = anyio.create_memory_object_stream[Message](10)
    replies: list[Message] = []
    results: list[Any] = []
    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}}

    async def run() -> None:
        results.append(await app(scope, app_receive.receive, app_send.send))

    with anyio.fail_after(5):
        async with to_app, app_receive, app_send, from_app, anyio.create_task_group() as tg:
            tg.start_soon(run)
            for event in events:
                await to_app.send({"type": event})
                replies.append(await from_app.receive())
    return replies, results


async def test_lifespan_handled_without_an_app() -> None:
    config = {
        "default": {"BACKEND": "tests.test_routing.ClosingLayer", "CONFIG": {"name": "one"}},
        "second": {"BACKEND": "tests.test_routing.ClosingLayer", "CONFIG": {"name": "two"}},
    }
    with override_settings(CHANNEL_LAYERS=config):
        first = get_channel_layer()
        second = get_channel_layer("second")
        assert isinstance(first, ClosingLayer)
        assert isinstance(second, ClosingLayer)
        router = ProtocolTypeRouter({"http": RecordingApp()})

        # A layer put in place with channel_layers.set() is closed too.
        probe = ClosingLayer(name="probe")
        assert channel_layers.set("probe", probe) is None

        to_app, app_receive = anyio.create_memory_object_stream[Message](10)
        app_send, from_app = anyio.create_memory_object_stream[Message](10)
        results: list[Any] = []
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}}

        async def run() -> None:
            results.append(await router(scope, app_receive.receive, app_send.send))

        with anyio.fail_after(5):
            async with to_app, app_receive, app_send, from_app, anyio.create_task_group() as tg:
                tg.start_soon(run)
                await to_app.send({"type": "lifespan.startup"})
                assert await from_app.receive() == {"type": "lifespan.startup.complete"}
                # Startup closes nothing.
                assert first.closed == second.closed == probe.closed == []

                await to_app.send({"type": "lifespan.shutdown"})
                assert await from_app.receive() == {"type": "lifespan.shutdown.complete"}
                # Every layer was closed, once, before shutdown was acknowledged.
                assert first.closed == ["one"]
                assert second.closed == ["two"]
                assert probe.closed == ["probe"]
        # The lifespan app returned after shutdown, and sent nothing more.
        assert results == [None]


async def test_lifespan_shutdown_failure_is_reported() -> None:
    config = {"default": {"BACKEND": "tests.test_routing.ClosingLayer", "CONFIG": {"fail": True}}}
    with override_settings(CHANNEL_LAYERS=config):
        get_channel_layer()
        replies, results = await run_lifespan(
            ProtocolTypeRouter({}), "lifespan.startup", "lifespan.shutdown"
        )
    assert replies[0] == {"type": "lifespan.startup.complete"}
    assert replies[1]["type"] == "lifespan.shutdown.failed"
    assert "cannot close" in replies[1]["message"]
    assert results == [None]


async def test_lifespan_shutdown_with_no_layer_built() -> None:
    replies, results = await run_lifespan(
        ProtocolTypeRouter({}), "lifespan.startup", "lifespan.shutdown"
    )
    assert replies == [
        {"type": "lifespan.startup.complete"},
        {"type": "lifespan.shutdown.complete"},
    ]
    assert results == [None]


async def test_explicit_lifespan_app_is_used() -> None:
    calls: list[Scope] = []

    async def lifespan_app(scope: Scope, receive: Receive, send: Send) -> str:
        calls.append(scope)
        while True:
            message = await receive()
            await send({"type": message["type"] + ".custom"})
            if message["type"] == "lifespan.shutdown":
                return "custom lifespan"

    with override_settings(
        CHANNEL_LAYERS={"default": {"BACKEND": "tests.test_routing.ClosingLayer"}}
    ):
        layer = get_channel_layer()
        router = ProtocolTypeRouter({"http": RecordingApp(), "lifespan": lifespan_app})
        replies, results = await run_lifespan(router, "lifespan.startup", "lifespan.shutdown")
        assert layer.closed == []  # the built-in handling did not run
    assert replies == [
        {"type": "lifespan.startup.custom"},
        {"type": "lifespan.shutdown.custom"},
    ]
    assert results == ["custom lifespan"]
    assert len(calls) == 1
    assert calls[0]["type"] == "lifespan"


async def test_lifespan_hook_runs_around_the_server_and_before_layers_close() -> None:
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        events.append("enter")
        async with anyio.create_task_group() as group:
            # A task that lives as long as the server: the hook may own a task group.
            group.start_soon(anyio.sleep_forever)
            yield
            group.cancel_scope.cancel()
        events.append(f"exit, layer closed: {bool(layer.closed)}")

    with override_settings(
        CHANNEL_LAYERS={"default": {"BACKEND": "tests.test_routing.ClosingLayer"}}
    ):
        layer = get_channel_layer()
        router = ProtocolTypeRouter({"http": RecordingApp()}, lifespan=lifespan)
        replies, results = await run_lifespan(router, "lifespan.startup", "lifespan.shutdown")
    assert replies == [
        {"type": "lifespan.startup.complete"},
        {"type": "lifespan.shutdown.complete"},
    ]
    assert events == ["enter", "exit, layer closed: False"]
    assert layer.closed == [""]
    assert results == [None]


async def test_lifespan_hook_failing_at_startup_is_reported() -> None:
    @contextlib.asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        raise RuntimeError("no database")
        yield

    replies, results = await run_lifespan(
        ProtocolTypeRouter({}, lifespan=lifespan), "lifespan.startup"
    )
    assert replies == [{"type": "lifespan.startup.failed", "message": "RuntimeError: no database"}]
    assert results == [None]


async def test_lifespan_hook_failing_at_shutdown_still_closes_layers() -> None:
    @contextlib.asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        yield
        raise RuntimeError("flush failed")

    with override_settings(
        CHANNEL_LAYERS={"default": {"BACKEND": "tests.test_routing.ClosingLayer"}}
    ):
        layer = get_channel_layer()
        replies, _ = await run_lifespan(
            ProtocolTypeRouter({}, lifespan=lifespan), "lifespan.startup", "lifespan.shutdown"
        )
    assert replies[0] == {"type": "lifespan.startup.complete"}
    assert replies[1] == {
        "type": "lifespan.shutdown.failed",
        "message": "RuntimeError: flush failed",
    }
    assert layer.closed == [""]


async def test_lifespan_hook_task_crashing_is_reported_at_shutdown() -> None:
    go, crashed = anyio.Event(), anyio.Event()

    async def crash() -> None:
        await go.wait()
        crashed.set()
        raise RuntimeError("background job died")

    @contextlib.asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        async with anyio.create_task_group() as group:
            group.start_soon(crash)
            yield

    to_app, app_receive = anyio.create_memory_object_stream[Message](10)
    app_send, from_app = anyio.create_memory_object_stream[Message](10)
    router = ProtocolTypeRouter({}, lifespan=lifespan)
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}}
    async with to_app, app_receive, app_send, from_app, anyio.create_task_group() as tg:
        tg.start_soon(router, scope, app_receive.receive, app_send.send)
        await to_app.send({"type": "lifespan.startup"})
        assert await from_app.receive() == {"type": "lifespan.startup.complete"}
        go.set()
        await crashed.wait()
        # The crash is held until the server asks for shutdown, which still happens.
        await to_app.send({"type": "lifespan.shutdown"})
        reply = await from_app.receive()
    assert reply["type"] == "lifespan.shutdown.failed"
    assert "background job died" in reply["message"]


async def test_lifespan_hook_crashing_before_startup_completes_fails_startup() -> None:
    @contextlib.asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        async with anyio.create_task_group() as group:
            group.start_soon(_crash_now)
            await anyio.sleep_forever()  # the crash cancels this
            yield

    replies, _ = await run_lifespan(ProtocolTypeRouter({}, lifespan=lifespan), "lifespan.startup")
    assert replies == [
        {"type": "lifespan.startup.failed", "message": "RuntimeError: background job died"}
    ]


async def _crash_now() -> None:
    raise RuntimeError("background job died")


def test_lifespan_hook_and_lifespan_application_are_exclusive() -> None:
    with pytest.raises(ValueError, match="only one"):
        ProtocolTypeRouter({"lifespan": RecordingApp()}, lifespan=contextlib.nullcontext)  # type: ignore[arg-type]


def test_lifespan_hook_must_be_callable() -> None:
    with pytest.raises(TypeError, match="callable returning an async context manager"):
        ProtocolTypeRouter({}, lifespan=contextlib.nullcontext())  # type: ignore[arg-type]


async def test_lifespan_messages_out_of_order_are_refused() -> None:
    with pytest.raises(ValueError, match=r"Expected a 'lifespan\.startup' message"):
        await feed_and_run(
            ProtocolTypeRouter({}), {"type": "lifespan"}, {"type": "lifespan.shutdown"}
        )


# -- URLRouter ------------------------------------------------------------------------


async def test_url_router_path_and_re_path() -> None:
    home = RecordingApp("home")
    room = RecordingApp("room")
    numbered = RecordingApp("numbered")
    positional = RecordingApp("positional")
    router = URLRouter(
        [
            path("", home),
            path("chat/<str:room_name>/", room),
            path("item/<int:item_id>/<slug:slug>/", numbered),
            re_path(r"^archive/(\d{4})/(\d{2})/$", positional),
        ]
    )

    assert await call(router, http("/")) == "home"
    assert home.scope["url_route"] == {"args": (), "kwargs": {}}

    assert await call(router, http("/chat/lobby/")) == "room"
    assert room.scope["url_route"] == {"args": (), "kwargs": {"room_name": "lobby"}}
    assert room.scope["path"] == "/chat/lobby/"
    assert room.scope["path_remaining"] == ""

    assert await call(router, http("/item/42/some-thing/")) == "numbered"
    kwargs = numbered.scope["url_route"]["kwargs"]
    assert kwargs == {"item_id": 42, "slug": "some-thing"}
    assert type(kwargs["item_id"]) is int  # the converter ran

    assert await call(router, http("/archive/2024/05/")) == "positional"
    assert positional.scope["url_route"] == {"args": ("2024", "05"), "kwargs": {}}

    # Endpoints match the whole path; converters reject what they do not accept.
    for unmatched in ("/chat/lobby/extra/", "/item/abc/slug/", "/archive/24/05/", "/nope/"):
        with pytest.raises(ValueError, match="No route found for path"):
            await call(router, http(unmatched))


async def test_url_router_re_path_named_groups() -> None:
    app = RecordingApp()
    router = URLRouter([re_path(r"^user/(?P<user_id>\d+)/(?P<tab>[a-z]+)/$", app)])
    await call(router, http("/user/7/posts/"))
    assert app.scope["url_route"] == {"args": (), "kwargs": {"user_id": "7", "tab": "posts"}}


async def test_url_router_first_matching_route_wins() -> None:
    first = RecordingApp("first")
    second = RecordingApp("second")
    router = URLRouter([path("a/<str:x>/", first), path("a/b/", second), path("c/", second)])
    assert await call(router, http("/a/b/")) == "first"
    assert await call(router, http("/c/")) == "second"


async def test_url_router_default_kwargs() -> None:
    app = RecordingApp()
    router = URLRouter(
        [
            path("plain/", app, {"flag": True, "mode": "plain"}),
            re_path(r"^room/(?P<room>\w+)/$", app, kwargs={"room": "default", "extra": 1}),
            path("both/<int:n>/", app, kwargs={"kind": "x"}),
        ]
    )
    await call(router, http("/plain/"))
    await call(router, http("/room/lobby/"))
    await call(router, http("/both/3/"))
    assert [scope["url_route"] for scope in app.scopes] == [
        {"args": (), "kwargs": {"flag": True, "mode": "plain"}},
        # As in Django, a route's default kwargs override captured ones.
        {"args": (), "kwargs": {"room": "default", "extra": 1}},
        {"args": (), "kwargs": {"n": 3, "kind": "x"}},
    ]


async def test_nested_url_routers() -> None:
    leaf = RecordingApp("leaf")
    positional = RecordingApp("positional")
    inner_router = URLRouter(
        [
            path("users/<str:user>/", leaf),
            path("settings/", leaf, {"section": "settings"}),
        ]
    )
    router = URLRouter(
        [
            path("rooms/<int:room>/", inner_router),
            re_path(r"^by-year/(\d{4})/", URLRouter([re_path(r"^(\d{2})/$", positional)])),
            path("deep/", URLRouter([path("er/", URLRouter([path("est/", leaf)]))])),
        ]
    )

    assert await call(router, http("/rooms/5/users/bob/")) == "leaf"
    scope = leaf.scopes[-1]
    assert scope["url_route"] == {"args": (), "kwargs": {"room": 5, "user": "bob"}}
    assert scope["path"] == "/rooms/5/users/bob/"
    assert scope["path_remaining"] == ""

    assert await call(router, http("/rooms/6/settings/")) == "leaf"
    assert leaf.scopes[-1]["url_route"]["kwargs"] == {"room": 6, "section": "settings"}

    # Positional captures of outer and inner routers are concatenated.
    assert await call(router, http("/by-year/2024/07/")) == "positional"
    assert positional.scope["url_route"] == {"args": ("2024", "07"), "kwargs": {}}

    assert await call(router, http("/deep/er/est/")) == "leaf"
    assert leaf.scopes[-1]["url_route"] == {"args": (), "kwargs": {}}

    # What the inner router sees: the rest of the path, and the outer captures.
    seen: list[Scope] = []

    async def spy(scope: Scope, receive: Receive, send: Send) -> Any:
        seen.append(dict(scope))
        return await inner_router(scope, receive, send)

    spy._path_routing = True  # type: ignore[attr-defined]
    spied = URLRouter([path("rooms/<int:room>/", spy)])
    assert await call(spied, http("/rooms/9/users/amy/")) == "leaf"
    assert seen[0]["path_remaining"] == "users/amy/"
    assert seen[0]["url_route"] == {"args": (), "kwargs": {"room": 9}}


async def test_nested_url_router_without_match() -> None:
    inner = RecordingApp("inner")
    fallback = RecordingApp("fallback")
    router = URLRouter(
        [
            path("api/", URLRouter([path("v1/", inner)])),
            path("api/v2/", fallback),
        ]
    )
    assert await call(router, http("/api/v1/")) == "inner"
    # The nested router matched the prefix but found nothing: the next route is tried.
    assert await call(router, http("/api/v2/")) == "fallback"
    # Nothing anywhere: the outermost router reports it as a ValueError.
    with pytest.raises(ValueError, match="No route found for path 'api/v3/'"):
        await call(router, http("/api/v3/"))
    with pytest.raises(ValueError, match="No route found"):
        await call(URLRouter([path("a/", URLRouter([path("b/", inner)]))]), http("/a/c/"))


async def test_resolver404_from_an_endpoint_app_is_not_swallowed() -> None:
    async def broken(scope: Scope, receive: Receive, send: Send) -> None:
        raise Resolver404("raised by the application itself")

    later = RecordingApp("later")
    router = URLRouter([path("x/", broken), path("<str:anything>/", later)])
    with pytest.raises(Resolver404, match="raised by the application itself"):
        await call(router, http("/x/"))
    assert later.scopes == []


async def test_url_router_root_path() -> None:
    app = RecordingApp("chat")
    router = URLRouter([path("chat/<str:room>/", app)])
    assert await call(router, http("/prefix/chat/lobby/", root_path="/prefix")) == "chat"
    assert app.scope["url_route"]["kwargs"] == {"room": "lobby"}
    assert app.scope["root_path"] == "/prefix"
    assert app.scope["path"] == "/prefix/chat/lobby/"

    # A path outside root_path does not route.
    with pytest.raises(ValueError, match="No route found"):
        await call(router, http("/other/chat/lobby/", root_path="/prefix"))
    # An empty root_path strips nothing.
    assert await call(router, http("/chat/x/", root_path="")) == "chat"

    # Only the outermost router strips root_path.
    inner = RecordingApp("inner")
    nested = URLRouter([path("api/", URLRouter([path("api/", inner)]))])
    assert await call(nested, http("/api/api/api/", root_path="/api")) == "inner"
    assert inner.scope["path_remaining"] == ""


async def test_url_router_missing_path() -> None:
    router = URLRouter([path("", RecordingApp())])
    with pytest.raises(ValueError, match="No 'path' key"):
        await call(router, {"type": "http"})


async def test_url_router_does_not_mutate_caller_scope() -> None:
    app = RecordingApp()
    router = URLRouter([path("rooms/<int:room>/", URLRouter([path("<str:user>/", app)]))])
    scope = http("/rooms/1/ann/", headers=[(b"host", b"example.com")], state={"k": "v"})
    snapshot = copy.deepcopy(scope)
    await call(router, scope)
    assert scope == snapshot
    assert "url_route" not in scope
    assert "path_remaining" not in scope
    # The inner application got its own scope, with everything the caller's had.
    assert app.scope is not scope
    assert app.scope["headers"] == [(b"host", b"example.com")]
    assert app.scope["state"] == {"k": "v"}
    assert app.scope["url_route"]["kwargs"] == {"room": 1, "user": "ann"}


async def test_url_router_passes_receive_send_and_result() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> dict[str, Any]:
        message = await receive()
        await send({"type": "reply", "to": message["type"]})
        return {"route": scope["url_route"]}

    router = ProtocolTypeRouter(
        {"websocket": URLRouter([path("ws/", URLRouter([path("<str:name>/", app)]))])}
    )
    to_app, app_receive = anyio.create_memory_object_stream[Message](1)
    app_send, from_app = anyio.create_memory_object_stream[Message](1)
    results: list[Any] = []

    async def run() -> None:
        scope = {"type": "websocket", "path": "/ws/joe/"}
        results.append(await router(scope, app_receive.receive, app_send.send))

    with anyio.fail_after(5):
        async with to_app, app_receive, app_send, from_app, anyio.create_task_group() as tg:
            tg.start_soon(run)
            await to_app.send({"type": "websocket.connect"})
            assert await from_app.receive() == {"type": "reply", "to": "websocket.connect"}
    assert results == [{"route": {"args": (), "kwargs": {"name": "joe"}}}]


def test_url_router_rejects_include() -> None:
    with pytest.raises(ImproperlyConfigured, match="include\\(\\) is not supported"):
        URLRouter([path("api/", include([path("x/", RecordingApp())]))])
    with pytest.raises(ImproperlyConfigured, match="Use nested"):
        URLRouter([path("ok/", RecordingApp()), re_path(r"^api/", include([]))])


# -- ChannelNameRouter ----------------------------------------------------------------


async def test_channel_name_router() -> None:
    thumbnails = RecordingApp("thumbs")
    emails = RecordingApp("emails")
    router = ChannelNameRouter({"thumbnails": thumbnails, "emails": emails})

    scope = {"type": "channel", "channel": "thumbnails"}
    assert await call(router, scope) == "thumbs"
    assert thumbnails.scope is scope
    assert emails.scopes == []
    assert await call(router, {"type": "channel", "channel": "emails"}) == "emails"

    with pytest.raises(ValueError, match="without a 'channel' key"):
        await call(router, {"type": "channel"})
    with pytest.raises(ValueError, match="'unknown'") as info:
        await call(router, {"type": "channel", "channel": "unknown"})
    assert "No application configured for channel name" in str(info.value)

    # Inside a ProtocolTypeRouter, as in a project's asgi.py.
    outer = ProtocolTypeRouter({"channel": router})
    assert await call(outer, {"type": "channel", "channel": "emails"}) == "emails"


# -- get_default_application ----------------------------------------------------------


def test_get_default_application() -> None:
    with override_settings(ASGI_APPLICATION="tests.test_routing.application"):
        assert get_default_application() is application


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (None, "Cannot find ASGI_APPLICATION setting."),
        ("nodots", "Cannot find ASGI_APPLICATION setting."),
        ("no_such_module_xyz.application", "Cannot import ASGI_APPLICATION module"),
        ("tests.test_routing.missing", "Cannot find 'missing' in ASGI_APPLICATION module"),
    ],
)
def test_get_default_application_errors(setting: str | None, message: str) -> None:
    if setting is None:
        from django.conf import settings

        with override_settings():
            del settings.ASGI_APPLICATION
            with pytest.raises(ImproperlyConfigured, match=message):
                get_default_application()
        return
    with (
        override_settings(ASGI_APPLICATION=setting),
        pytest.raises(ImproperlyConfigured) as info,
    ):
        get_default_application()
    assert str(info.value).startswith(message)
