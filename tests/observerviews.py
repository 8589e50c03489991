"""A URLconf for tests/test_observers_integration.py: sync and async views that save."""

from __future__ import annotations

from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.urls import path

from .testapp.models import Article


def create_sync(request: HttpRequest, section: str) -> HttpResponse:
    with transaction.atomic():
        article = Article.objects.create(section=section, title="from the sync view")
    return HttpResponse(str(article.pk))


async def create_async(request: HttpRequest, section: str) -> HttpResponse:
    article = await Article.objects.acreate(section=section, title="from the async view")
    return HttpResponse(str(article.pk))


urlpatterns = [
    path("sync/<str:section>/", create_sync),
    path("async/<str:section>/", create_async),
]
