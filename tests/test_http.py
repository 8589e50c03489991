"""channels.http: Django's request cycle on asyncio and trio, through the communicators."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from django.contrib.auth import get_user_model
from django.core.signals import request_finished, request_started
from django.db import connection

from channels.concurrency import run_sync
from channels.db import database_sync_to_async
from channels.http import ASGIHandler, get_asgi_application
from channels.testing import ApplicationCommunicator, HttpCommunicator

from . import httpviews
from .testapp.models import Note

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _urls(settings: Any) -> None:
    settings.ROOT_URLCONF = "tests.httpviews"
    settings.ALLOWED_HOSTS = ["testserver", "localhost"]
    settings.MIDDLEWARE = []
    httpviews.events.clear()
    httpviews.opened_files.clear()


@pytest.fixture
def signals_seen() -> Any:
    """Request signals as received: (name, sender, thread id)."""
    seen: list[tuple[str, Any, int]] = []

    def started(sender: Any, **kwargs: Any) -> None:
        seen.append(("started", sender, threading.get_ident()))

    def finished(sender: Any, **kwargs: Any) -> None:
        seen.append(("finished", sender, threading.get_ident()))

    request_started.connect(started)
    request_finished.connect(finished)
    yield seen
    request_started.disconnect(started)
    request_finished.disconnect(finished)


async def shared_worker_thread() -> int:
    """The process-wide thread-sensitive worker: what a request must *not* tie up."""
    return await run_sync(threading.get_ident)


async def get(path: str, **kwargs: Any) -> dict[str, Any]:
    """The response, once the handler has finished (closed it) too."""
    return await respond(HttpCommunicator(ASGIHandler(), "GET", path, **kwargs))


async def respond(communicator: HttpCommunicator) -> dict[str, Any]:
    response = await communicator.get_response()
    await communicator.wait()
    return response


def headers_of(response: dict[str, Any]) -> dict[bytes, bytes]:
    return {name.lower(): value for name, value in response["headers"]}


async def upload(body: bytes, content_type: bytes) -> dict[str, Any]:
    """POST ``body`` to the upload view, its length declared."""
    return await HttpCommunicator(
        ASGIHandler(),
        "POST",
        "/upload/",
        body=body,
        headers=[(b"content-type", content_type), (b"content-length", str(len(body)).encode())],
    ).get_response()


def multipart(fields: dict[str, str], files: dict[str, bytes]) -> tuple[bytes, bytes]:
    boundary = "channelsboundary"
    lines: list[bytes] = []
    for name, value in fields.items():
        lines += [
            f"--{boundary}".encode(),
            f'Content-Disposition: form-data; name="{name}"'.encode(),
            b"",
            value.encode(),
        ]
    for name, content in files.items():
        lines += [
            f"--{boundary}".encode(),
            f'Content-Disposition: form-data; name="{name}"; filename="{name}.bin"'.encode(),
            b"Content-Type: application/octet-stream",
            b"",
            content,
        ]
    lines += [f"--{boundary}--".encode(), b""]
    return b"\r\n".join(lines), f"multipart/form-data; boundary={boundary}".encode()


# -- views -------------------------------------------------------------------------------


async def test_sync_view_runs_in_a_thread_of_its_request(signals_seen: Any) -> None:
    response = await get("/sync/")
    assert response["status"] == 200
    assert json.loads(response["body"]) == {"notes": 1, "method": "GET"}
    assert headers_of(response)[b"content-type"] == b"application/json"
    [(name, view_thread)] = httpviews.events
    assert name == "sync_view"
    assert view_thread not in (threading.get_ident(), await shared_worker_thread())
    # Both request signals, from the handler, in the request's thread (where the view's
    # database connection is, for close_old_connections).
    assert signals_seen == [
        ("started", ASGIHandler, view_thread),
        ("finished", ASGIHandler, view_thread),
    ]


async def test_slow_sync_views_do_not_hold_each_other_up() -> None:
    # Each view waits for the other to arrive: one shared thread would run them one after
    # the other, and the first would give up waiting.
    async with anyio.create_task_group() as group:
        results: list[dict[str, Any]] = []

        async def fetch(name: str) -> None:
            results.append(await get(f"/rendezvous/?name={name}"))

        group.start_soon(fetch, "a")
        group.start_soon(fetch, "b")
    assert sorted(json.loads(r["body"])["met"] for r in results) == [True, True]
    threads = {event[2] for event in httpviews.events}
    assert len(threads) == 2


@pytest.mark.parametrize(("max_age", "reused"), [(0, False), (None, True)])
async def test_request_threads_keep_their_connection_as_conn_max_age_says(
    settings: Any, monkeypatch: pytest.MonkeyPatch, max_age: int | None, reused: bool
) -> None:
    for database in settings.DATABASES.values():
        monkeypatch.setitem(database, "CONN_MAX_AGE", max_age)  # a nested dict: restore it
    assert (await get("/connection/"))["status"] == 200
    # The last request closes what it used: the pooled thread outlives this test.
    assert (await get("/connection/?close"))["status"] == 200
    (_, first_thread, first), (_, second_thread, second) = httpviews.events
    # Threads go back to a pool: the second request borrows the one the first returned.
    assert first_thread == second_thread
    assert (first is second) is reused


async def test_async_view_uses_the_async_orm_on_the_loop() -> None:
    response = await get("/async/?text=hello")
    assert response["status"] == 200
    assert json.loads(response["body"]) == {"notes": 1, "text": "hello"}
    assert httpviews.events == [("async_view", threading.get_ident())]
    assert await database_sync_to_async(Note.objects.count)() == 1


async def test_get_asgi_application_builds_a_handler() -> None:
    application = get_asgi_application()
    assert isinstance(application, ASGIHandler)
    response = await respond(HttpCommunicator(application, "GET", "/async/"))
    assert response["status"] == 200


async def test_middleware_of_both_kinds_wraps_the_view(settings: Any) -> None:
    settings.MIDDLEWARE = [
        "tests.httpviews.AsyncTagMiddleware",
        "tests.httpviews.SyncTagMiddleware",
    ]
    response = await get("/tagged/")
    assert response["body"] == b"async,sync"
    headers = headers_of(response)
    assert headers[b"x-sync-middleware"] == b"yes"
    assert headers[b"x-async-middleware"] == b"true"
    [(name, thread)] = httpviews.events
    assert name == "sync_middleware"
    assert thread not in (threading.get_ident(), await shared_worker_thread())


async def test_unknown_path_is_404_and_a_crash_is_500(caplog: Any) -> None:
    assert (await get("/nowhere/"))["status"] == 404
    crashed = await get("/crash/")
    assert crashed["status"] == 500
    assert any("the view crashed" in str(record.exc_info) for record in caplog.records)


async def test_sessions_and_auth_through_django_async_api(settings: Any) -> None:
    settings.MIDDLEWARE = [
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
    ]
    await database_sync_to_async(get_user_model().objects.create_user)("ada", password="x")
    response = await get("/login/?username=ada")
    assert json.loads(response["body"]) == {"before": False, "user": "ada"}
    cookie = next(value for name, value in response["headers"] if name == b"Set-Cookie")
    session = cookie.split(b";")[0].strip()
    again = await get("/whoami/", headers=[(b"cookie", session)])
    assert json.loads(again["body"]) == {"user": "ada", "visits": 1}


# -- streaming ---------------------------------------------------------------------------


async def test_sync_streaming_response_streams_part_by_part() -> None:
    response = await get("/stream/sync/?count=3")
    assert response["body"] == b"part 0\npart 1\npart 2\n"
    worker = httpviews.events[0][2]
    assert worker not in (threading.get_ident(), await shared_worker_thread())
    assert httpviews.events == [
        ("sync_part", 0, worker),
        ("sync_part", 1, worker),
        ("sync_part", 2, worker),
        "sync_stream_closed",
    ]


async def test_sync_streaming_sends_each_part_as_soon_as_it_exists() -> None:
    httpviews.gate.clear()
    communicator = ApplicationCommunicator(
        ASGIHandler(), {"type": "http", "method": "GET", "path": "/stream/gated/"}
    )
    await communicator.send_input({"type": "http.request"})
    assert (await communicator.receive_output())["type"] == "http.response.start"
    # The iterator is now blocked before its second part: the first must not wait for it.
    first = await communicator.receive_output()
    assert (first["body"], first["more_body"]) == (b"part 0\n", True)
    httpviews.gate.set()
    rest = b""
    while (message := await communicator.receive_output())["more_body"]:
        rest += message["body"]
    assert rest + message["body"] == b"part 1\n"
    await communicator.wait()


async def test_many_small_sync_parts_go_out_in_few_messages() -> None:
    communicator = ApplicationCommunicator(
        ASGIHandler(),
        {"type": "http", "method": "GET", "path": "/stream/sync/", "query_string": b"count=500"},
    )
    await communicator.send_input({"type": "http.request"})
    assert (await communicator.receive_output())["type"] == "http.response.start"
    bodies = []
    while (message := await communicator.receive_output())["more_body"]:
        bodies.append(message["body"])
    assert b"".join(bodies) == b"".join(f"part {n}\n".encode() for n in range(500))
    assert len(bodies) < 500  # parts made while the last send was under way travel together
    await communicator.wait()


async def test_many_small_async_parts_go_out_in_few_messages() -> None:
    communicator = ApplicationCommunicator(
        ASGIHandler(),
        {
            "type": "http",
            "method": "GET",
            "path": "/stream/async/",
            "query_string": b"count=500&pause=0",
        },
    )
    await communicator.send_input({"type": "http.request"})
    assert (await communicator.receive_output())["type"] == "http.response.start"
    bodies = []
    while (message := await communicator.receive_output())["more_body"]:
        bodies.append(message["body"])
    assert b"".join(bodies) == b"".join(f"part {n}\n".encode() for n in range(500))
    # The generator makes its parts without waiting, in a task of its own: the parts it
    # made before the handler's next send travel together.
    assert len(bodies) < 100, len(bodies)
    await communicator.wait()
    assert httpviews.events[-1] == "async_stream_closed"


async def test_async_streaming_sends_each_part_as_soon_as_it_exists() -> None:
    httpviews.async_gate[:] = [anyio.Event()]
    communicator = ApplicationCommunicator(
        ASGIHandler(), {"type": "http", "method": "GET", "path": "/stream/gated-async/"}
    )
    await communicator.send_input({"type": "http.request"})
    assert (await communicator.receive_output())["type"] == "http.response.start"
    # The generator now waits before its second part: the first must not wait for it.
    first = await communicator.receive_output()
    assert (first["body"], first["more_body"]) == (b"part 0\n", True)
    httpviews.async_gate[0].set()
    rest = b""
    while (message := await communicator.receive_output())["more_body"]:
        rest += message["body"]
    assert rest + message["body"] == b"part 1\n"
    await communicator.wait()


async def test_async_streaming_response() -> None:
    response = await get("/stream/async/?count=2")
    assert response["body"] == b"part 0\npart 1\n"
    assert httpviews.events == [("async_part", 0), ("async_part", 1), "async_stream_closed"]


async def test_file_response_is_chunked_and_the_file_closed(tmp_path: Path) -> None:
    data = bytes(range(256)) * 1024  # 256 KiB: four 64 KiB chunks
    target = tmp_path / "blob.bin"
    target.write_bytes(data)
    communicator = ApplicationCommunicator(
        ASGIHandler(),
        {
            "type": "http",
            "method": "GET",
            "path": "/file/",
            "query_string": f"path={target}".encode(),
        },
    )
    await communicator.send_input({"type": "http.request"})
    start = await communicator.receive_output()
    assert start["status"] == 200
    assert dict(start["headers"])[b"Content-Length"] == str(len(data)).encode()
    chunks = []
    while True:
        message = await communicator.receive_output()
        if not message.get("more_body", False):
            break
        chunks.append(message["body"])
    assert b"".join(chunks) == data
    assert max(len(chunk) for chunk in chunks) == ASGIHandler.chunk_size
    await communicator.wait()
    assert [handle.closed for handle in httpviews.opened_files] == [True]


@pytest.mark.parametrize(
    ("path", "closed"),
    [
        ("/stream/endless/", "endless_stream_closed"),
        ("/stream/endless-sync/", "endless_sync_stream_closed"),
    ],
    ids=["async-iterator", "sync-iterator"],
)
async def test_disconnect_stops_a_stream_and_finishes_the_request(
    signals_seen: Any, path: str, closed: str
) -> None:
    communicator = ApplicationCommunicator(
        ASGIHandler(), {"type": "http", "method": "GET", "path": path}
    )
    await communicator.send_input({"type": "http.request"})
    assert (await communicator.receive_output())["type"] == "http.response.start"
    first = (await communicator.receive_output())["body"]
    # A sync iterator's parts may come several at once, and a batch longer than a chunk
    # is cut at the chunk's end, mid-part.
    assert first
    assert first == (b"tick\n" * len(first))[: len(first)]
    await communicator.send_input({"type": "http.disconnect"})
    await communicator.wait(timeout=5)
    assert closed in httpviews.events
    assert [name for name, _, _ in signals_seen] == ["started", "finished"]


async def test_disconnect_during_an_async_view_cancels_it(signals_seen: Any) -> None:
    started = anyio.Event()

    async def slow(request: Any) -> Any:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            httpviews.events.append("slow_view_cancelled")

    from django.urls import path

    httpviews.urlpatterns.append(path("slow/", slow))
    try:
        from django.urls import clear_url_caches

        clear_url_caches()
        communicator = ApplicationCommunicator(
            ASGIHandler(), {"type": "http", "method": "GET", "path": "/slow/"}
        )
        await communicator.send_input({"type": "http.request"})
        await started.wait()
        await communicator.send_input({"type": "http.disconnect"})
        await communicator.wait(timeout=5)
    finally:
        httpviews.urlpatterns.pop()
        clear_url_caches()
    assert httpviews.events == ["slow_view_cancelled"]
    assert [name for name, _, _ in signals_seen] == ["started", "finished"]


async def test_disconnect_before_the_body_ends_runs_nothing(signals_seen: Any) -> None:
    communicator = ApplicationCommunicator(
        ASGIHandler(), {"type": "http", "method": "POST", "path": "/sync/"}
    )
    await communicator.send_input({"type": "http.request", "body": b"x", "more_body": True})
    await communicator.send_input({"type": "http.disconnect"})
    await communicator.wait()
    assert httpviews.events == []
    assert signals_seen == []


class DisconnectingServer:
    """An ASGI server that, like hypercorn on trio, delivers ``http.disconnect`` from inside
    a ``send()`` (the one matching ``during``), then goes on with work of its own in that
    call, which has checkpoints. ``sent`` lists the messages whose ``send()`` completed."""

    def __init__(self, during: Any) -> None:
        self.during = during
        self.sent: list[dict[str, Any]] = []
        self._to_app, self._from_server = anyio.create_memory_object_stream[dict[str, Any]](10)

    async def run(self, application: Any, path: str) -> None:
        scope = {"type": "http", "method": "GET", "path": path}
        with self._to_app, self._from_server, anyio.fail_after(5):
            self._to_app.send_nowait({"type": "http.request"})
            await application(scope, self._from_server.receive, self.send)

    async def send(self, message: dict[str, Any]) -> None:
        if self.during(message):
            self.during = lambda message: False
            self._to_app.send_nowait({"type": "http.disconnect"})
            for _ in range(3):  # re-arming a keep-alive timer, writing an access line...
                await anyio.lowlevel.checkpoint()
        self.sent.append(message)


def last_body(message: dict[str, Any]) -> bool:
    return message["type"] == "http.response.body" and not message.get("more_body", False)


def first_body(message: dict[str, Any]) -> bool:
    return message["type"] == "http.response.body"


@pytest.mark.parametrize("path", ["/sync/", "/async/", "/stream/async/"])
async def test_a_disconnect_inside_the_last_send_lets_that_send_finish(
    signals_seen: Any, path: str
) -> None:
    server = DisconnectingServer(during=last_body)
    await server.run(ASGIHandler(), path)
    assert last_body(server.sent[-1])
    assert [name for name, _, _ in signals_seen] == ["started", "finished"]


async def test_a_disconnect_inside_a_send_stops_the_stream_once_that_send_returns(
    signals_seen: Any,
) -> None:
    server = DisconnectingServer(during=first_body)
    await server.run(ASGIHandler(), "/stream/endless/")
    assert [message["type"] for message in server.sent] == [
        "http.response.start",
        "http.response.body",
    ]
    assert httpviews.events == ["endless_stream_closed"]
    assert [name for name, _, _ in signals_seen] == ["started", "finished"]


# -- request bodies ----------------------------------------------------------------------


async def test_body_in_many_messages_spools_to_disk_past_the_memory_limit(settings: Any) -> None:
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 1000
    communicator = ApplicationCommunicator(
        ASGIHandler(), {"type": "http", "method": "POST", "path": "/echo/"}
    )
    for _ in range(3):
        await communicator.send_input(
            {"type": "http.request", "body": b"a" * 600, "more_body": True}
        )
    await communicator.send_input({"type": "http.request", "body": b"a" * 600})
    await communicator.receive_output()
    body = await communicator.receive_output()
    assert json.loads(body["body"]) == {"length": 2400, "spooled": True}

    small = await respond(HttpCommunicator(ASGIHandler(), "POST", "/echo/", body=b"b" * 10))
    assert json.loads(small["body"]) == {"length": 10, "spooled": False}


async def test_large_file_upload_reaches_the_view_as_a_temporary_file(settings: Any) -> None:
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 1000
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2000  # file parts do not count (Django's rule)
    response = await upload(*multipart({"title": "big"}, {"upload": b"0123456789" * 1000}))
    assert response["status"] == 200
    assert json.loads(response["body"]) == {
        "files": {"upload": {"size": 10000, "class": "TemporaryUploadedFile", "head": "01234567"}},
        "fields": {"title": "big"},
        "spooled": True,
    }


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "counted"])
async def test_body_over_data_upload_limit_is_413_without_running_the_view(
    settings: Any, signals_seen: Any, declared: bool
) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    headers = [(b"content-length", b"1500")] if declared else []
    communicator = ApplicationCommunicator(
        ASGIHandler(), {"type": "http", "method": "POST", "path": "/sync/", "headers": headers}
    )
    await communicator.send_input({"type": "http.request", "body": b"x" * 750, "more_body": True})
    await communicator.send_input({"type": "http.request", "body": b"x" * 750})
    start = await communicator.receive_output()
    assert start["status"] == 413
    assert (await communicator.receive_output())["body"] == b"Request body too large"
    await communicator.wait()
    assert httpviews.events == []
    assert [name for name, _, _ in signals_seen] == ["started", "finished"]


async def test_body_at_the_data_upload_limit_is_served(settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = await respond(HttpCommunicator(ASGIHandler(), "POST", "/echo/", body=b"x" * 1000))
    assert json.loads(response["body"])["length"] == 1000


async def test_no_data_upload_limit_means_no_413(settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = None
    response = await respond(HttpCommunicator(ASGIHandler(), "POST", "/echo/", body=b"x" * 5000))
    assert json.loads(response["body"])["length"] == 5000


async def test_oversized_multipart_fields_are_refused_by_django_with_400(settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = await upload(*multipart({"essay": "words " * 500}, {}))
    assert response["status"] == 400


# -- script prefix -----------------------------------------------------------------------


async def test_root_path_is_the_script_prefix() -> None:
    communicator = HttpCommunicator(ASGIHandler(), "GET", "/prefix/where/")
    communicator.scope["root_path"] = "/prefix"
    response = json.loads((await respond(communicator))["body"])
    assert response == {
        "path": "/prefix/where/",
        "path_info": "/where/",
        "script_name": "/prefix",
        "reversed": "/prefix/where/",
    }


async def test_force_script_name_wins_over_root_path(settings: Any) -> None:
    settings.FORCE_SCRIPT_NAME = "/forced"
    communicator = HttpCommunicator(ASGIHandler(), "GET", "/forced/where/")
    communicator.scope["root_path"] = "/ignored"
    response = json.loads((await respond(communicator))["body"])
    assert response["script_name"] == "/forced"
    assert response["path_info"] == "/where/"
    assert response["reversed"] == "/forced/where/"


# -- bad input ---------------------------------------------------------------------------


async def test_a_websocket_scope_is_refused_with_directions() -> None:
    with pytest.raises(
        ValueError, match=r"'http' connections only, not 'websocket'.*ProtocolTypeRouter"
    ):
        await ASGIHandler()({"type": "websocket", "path": "/"}, _never, _discard)


async def test_a_scope_without_method_is_refused() -> None:
    with pytest.raises(ValueError, match="needs a str 'method', got None"):
        await ASGIHandler()({"type": "http", "path": "/"}, _never, _discard)


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ({"type": "websocket.receive", "text": "hi"}, "got 'websocket.receive'"),
        ({"type": "http.request", "body": "text"}, "must be bytes, got 'text'"),
    ],
    ids=["wrong-type", "str-body"],
)
async def test_bad_request_messages_are_refused(message: dict[str, Any], error: str) -> None:
    communicator = ApplicationCommunicator(
        ASGIHandler(), {"type": "http", "method": "GET", "path": "/sync/"}
    )
    await communicator.send_input(message)
    with pytest.raises(ValueError, match=error):
        await communicator.wait()


async def test_a_message_after_the_body_other_than_disconnect_is_refused() -> None:
    communicator = ApplicationCommunicator(
        ASGIHandler(), {"type": "http", "method": "GET", "path": "/stream/endless/"}
    )
    await communicator.send_input({"type": "http.request"})
    await communicator.receive_output()
    await communicator.send_input({"type": "http.request", "body": b"more"})
    with pytest.raises(ValueError, match=r"Expected 'http\.disconnect' after the request body"):
        await communicator.wait()
    assert "endless_stream_closed" in httpviews.events


async def _never() -> dict[str, Any]:
    raise AssertionError("the handler should not receive")


async def _discard(message: dict[str, Any]) -> None:
    raise AssertionError("the handler should not send")


def test_sync_tests_can_still_use_the_orm() -> None:
    # The guard only looks at threads running an event loop.
    assert connection.vendor == "sqlite"
    Note.objects.create(text="plain")
    assert Note.objects.count() == 1
