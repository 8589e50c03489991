"""Views and a URLconf for tests/test_http.py: ``ROOT_URLCONF = "tests.httpviews"``."""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import anyio.lowlevel
from django.contrib.auth import alogin, get_user_model
from django.db import connection
from django.http import (
    FileResponse,
    HttpRequest,
    HttpResponse,
    JsonResponse,
    StreamingHttpResponse,
)
from django.urls import path, reverse

from .testapp.models import Note

# What views and iterators saw, for the tests to check; reset by the tests' fixture.
events: list[Any] = []
opened_files: list[Any] = []
meeting = threading.Barrier(2)
gate = threading.Event()


def sync_view(request: HttpRequest) -> HttpResponse:
    events.append(("sync_view", threading.get_ident()))
    Note.objects.create(text="from a sync view")
    return JsonResponse({"notes": Note.objects.count(), "method": request.method})


def rendezvous(request: HttpRequest) -> HttpResponse:
    """Waits (at most a few seconds) for a second request to the same view to arrive."""
    try:
        meeting.wait(timeout=5)
        met = True
    except threading.BrokenBarrierError:
        meeting.reset()
        met = False
    events.append(("rendezvous", request.GET["name"], threading.get_ident()))
    return JsonResponse({"met": met})


def connection_view(request: HttpRequest) -> HttpResponse:
    """Reports the database connection its query used (kept, so ``is`` compares)."""
    Note.objects.count()
    events.append(("connection", threading.get_ident(), connection.connection))
    if "close" in request.GET:
        connection.close()
    return HttpResponse("ok")


async def async_view(request: HttpRequest) -> HttpResponse:
    events.append(("async_view", threading.get_ident()))
    note = await Note.objects.acreate(text=request.GET.get("text", "async"))
    found = await Note.objects.aget(pk=note.pk)
    return JsonResponse({"notes": await Note.objects.acount(), "text": found.text})


def sync_stream(request: HttpRequest) -> StreamingHttpResponse:
    count = int(request.GET.get("count", "3"))

    def parts() -> Iterator[bytes]:
        try:
            for number in range(count):
                events.append(("sync_part", number, threading.get_ident()))
                yield f"part {number}\n".encode()
        finally:
            events.append("sync_stream_closed")

    return StreamingHttpResponse(parts())


async def async_stream(request: HttpRequest) -> StreamingHttpResponse:
    count = int(request.GET.get("count", "3"))
    pause = request.GET.get("pause", "1") == "1"  # pause=0: parts made without waiting

    async def parts() -> AsyncIterator[str]:
        try:
            for number in range(count):
                events.append(("async_part", number))
                yield f"part {number}\n"
                if pause:
                    await anyio.lowlevel.checkpoint()
        finally:
            events.append("async_stream_closed")

    return StreamingHttpResponse(parts())


async def endless_stream(request: HttpRequest) -> StreamingHttpResponse:
    async def parts() -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"tick\n"
                await anyio.sleep(0.01)
        finally:
            events.append("endless_stream_closed")

    return StreamingHttpResponse(parts())


#: Opened by the test to let ``gated_async_stream`` make its second part.
async_gate: list[anyio.Event] = []


async def gated_async_stream(request: HttpRequest) -> StreamingHttpResponse:
    """Two parts from an async generator, the second only once the test sets
    ``async_gate[0]``."""

    async def parts() -> AsyncIterator[bytes]:
        yield b"part 0\n"
        with anyio.fail_after(10):
            await async_gate[0].wait()
        yield b"part 1\n"

    return StreamingHttpResponse(parts())


def gated_stream(request: HttpRequest) -> StreamingHttpResponse:
    """Two parts, the second only once the test opens ``gate``."""

    def parts() -> Iterator[bytes]:
        yield b"part 0\n"
        if not gate.wait(timeout=10):
            raise TimeoutError("the test never opened the gate")
        yield b"part 1\n"

    return StreamingHttpResponse(parts())


def endless_sync_stream(request: HttpRequest) -> StreamingHttpResponse:
    def parts() -> Iterator[bytes]:
        try:
            while True:
                yield b"tick\n"
        finally:
            events.append("endless_sync_stream_closed")

    return StreamingHttpResponse(parts())


def file_view(request: HttpRequest) -> FileResponse:
    handle = open(request.GET["path"], "rb")  # noqa: SIM115 - the response closes it
    opened_files.append(handle)
    return FileResponse(handle)


def upload(request: HttpRequest) -> HttpResponse:
    stream: Any = request._stream  # type: ignore[attr-defined]
    spooled_to_disk = bool(getattr(stream, "_rolled", False))
    files = {
        name: {
            "size": upload.size,
            "class": type(upload).__name__,
            "head": upload.read(8).decode(),
        }
        for name, upload in request.FILES.items()
    }
    return JsonResponse(
        {"files": files, "fields": dict(request.POST.items()), "spooled": spooled_to_disk}
    )


def echo_body(request: HttpRequest) -> HttpResponse:
    stream: Any = request._stream  # type: ignore[attr-defined]
    spooled_to_disk = bool(getattr(stream, "_rolled", False))
    body = request.body
    return JsonResponse({"length": len(body), "spooled": spooled_to_disk})


def where(request: HttpRequest) -> HttpResponse:
    return JsonResponse(
        {
            "path": request.path,
            "path_info": request.path_info,
            "script_name": request.META["SCRIPT_NAME"],
            "reversed": reverse("where"),
        }
    )


def crash(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("the view crashed")


async def login_view(request: HttpRequest) -> HttpResponse:
    before = await request.auser()  # type: ignore[attr-defined]
    user = await get_user_model().objects.aget(username=request.GET["username"])
    await alogin(request, user)
    await request.session.aset("visits", await request.session.aget("visits", 0) + 1)  # type: ignore[attr-defined]
    return JsonResponse({"before": before.is_authenticated, "user": user.get_username()})


async def whoami(request: HttpRequest) -> HttpResponse:
    user = await request.auser()  # type: ignore[attr-defined]
    visits = await request.session.aget("visits")  # type: ignore[attr-defined]
    return JsonResponse({"user": user.get_username(), "visits": visits})


def tagged(request: HttpRequest) -> HttpResponse:
    return HttpResponse(",".join(getattr(request, "tags", [])))


urlpatterns = [
    path("sync/", sync_view),
    path("rendezvous/", rendezvous),
    path("connection/", connection_view),
    path("async/", async_view),
    path("stream/sync/", sync_stream),
    path("stream/async/", async_stream),
    path("stream/endless/", endless_stream),
    path("stream/endless-sync/", endless_sync_stream),
    path("stream/gated/", gated_stream),
    path("stream/gated-async/", gated_async_stream),
    path("file/", file_view),
    path("upload/", upload),
    path("echo/", echo_body),
    path("where/", where, name="where"),
    path("crash/", crash),
    path("login/", login_view),
    path("whoami/", whoami),
    path("tagged/", tagged),
]


# -- middleware, one of each kind --------------------------------------------------------


class SyncTagMiddleware:
    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.tags = [*getattr(request, "tags", []), "sync"]  # type: ignore[attr-defined]
        events.append(("sync_middleware", threading.get_ident()))
        response = self.get_response(request)
        response["X-Sync-Middleware"] = "yes"
        return response


class AsyncTagMiddleware:
    sync_capable = False
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        request.tags = [*getattr(request, "tags", []), "async"]  # type: ignore[attr-defined]
        response: HttpResponse = await self.get_response(request)
        response["X-Async-Middleware"] = json.dumps(True)
        return response
