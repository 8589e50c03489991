"""Django views served by channels.http on both backends (docs/topics/databases.md)."""

from django.contrib.auth import get_user_model
from django.http import HttpRequest, JsonResponse
from django.urls import path


# [views]
def user_count(request: HttpRequest) -> JsonResponse:
    # A sync view: it runs in the request's worker thread, so the ORM is used directly.
    return JsonResponse({"users": get_user_model().objects.count()})


async def async_user_count(request: HttpRequest) -> JsonResponse:
    # An async view: it runs on the event loop and awaits Django's async ORM.
    return JsonResponse({"users": await get_user_model().objects.acount()})


urlpatterns = [
    path("users/count/", user_count),
    path("users/acount/", async_user_count),
]
# [/views]
