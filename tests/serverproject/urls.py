"""Django views of the served project: the database through sync and async views."""

from django.http import HttpRequest, HttpResponse
from django.urls import path

from tests.testapp.models import Note


def hello(request: HttpRequest) -> HttpResponse:
    return HttpResponse("django says hello")


def notes(request: HttpRequest) -> HttpResponse:
    texts = Note.objects.order_by("pk").values_list("text", flat=True)
    return HttpResponse(f"sync view: {', '.join(texts)}")


async def async_notes(request: HttpRequest) -> HttpResponse:
    texts = [note.text async for note in Note.objects.order_by("pk")]
    return HttpResponse(f"async view: {await Note.objects.acount()} {', '.join(texts)}")


urlpatterns = [
    path("django/hello/", hello),
    path("django/notes/", notes),
    path("django/async-notes/", async_notes),
]
