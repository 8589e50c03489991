from django.http import HttpRequest, HttpResponse
from django.urls import path

from tests.testapp.models import Note


def notes(request: HttpRequest) -> HttpResponse:
    return HttpResponse(", ".join(Note.objects.order_by("pk").values_list("text", flat=True)))


urlpatterns = [path("django/notes/", notes)]
