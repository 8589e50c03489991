"""Views of each kind the issue names: sync, async with the async ORM, streaming, upload."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import path

from ..testapp.models import Note


def hello(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b"hello", content_type="text/plain")


def sync_note(request: HttpRequest) -> HttpResponse:
    Note.objects.create(text=request.GET.get("text", "sync"))
    return JsonResponse({"notes": Note.objects.count()})


async def async_note(request: HttpRequest) -> HttpResponse:
    await Note.objects.acreate(text=request.GET.get("text", "async"))
    texts = [note.text async for note in Note.objects.order_by("pk")]
    return JsonResponse({"notes": await Note.objects.acount(), "texts": texts})


async def stream(request: HttpRequest) -> StreamingHttpResponse:
    async def lines() -> AsyncIterator[str]:
        for number in range(5):
            yield f"line {number}\n"
            await anyio.sleep(0.01)

    return StreamingHttpResponse(lines(), content_type="text/plain")


def sync_stream(request: HttpRequest) -> StreamingHttpResponse:
    return StreamingHttpResponse(iter([b"sync ", b"parts\n"]), content_type="text/plain")


async def endless(request: HttpRequest) -> StreamingHttpResponse:
    """Streams until the client leaves; then leaves a mark next to the database file."""
    mark = Path(os.environ["SERVEDPROJECT_DB"]).with_name(f"closed-{request.GET['id']}")

    async def ticks() -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"tick\n"
                await anyio.sleep(0.01)
        finally:
            mark.write_text("closed")

    return StreamingHttpResponse(ticks(), content_type="text/plain")


def upload(request: HttpRequest) -> HttpResponse:
    uploaded = request.FILES["file"]
    digest = hashlib.sha256(b"".join(uploaded.chunks())).hexdigest()
    return JsonResponse(
        {"size": uploaded.size, "class": type(uploaded).__name__, "sha256": digest}
    )


def echo(request: HttpRequest) -> HttpResponse:
    return HttpResponse(request.body, content_type="application/octet-stream")


async def unsafe(request: HttpRequest) -> HttpResponse:
    # A blocking ORM call on the event loop: Django's guard must refuse it (500).
    return JsonResponse({"notes": Note.objects.count()})


urlpatterns = [
    path("hello/", hello),
    path("sync/", sync_note),
    path("async/", async_note),
    path("stream/", stream),
    path("stream/sync/", sync_stream),
    path("endless/", endless),
    path("upload/", upload),
    path("echo/", echo),
    path("unsafe/", unsafe),
]
