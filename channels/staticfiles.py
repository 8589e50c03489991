"""Serving ``STATIC_URL`` from ``django.contrib.staticfiles`` in front of an application.

Django's ``ASGIStaticFilesHandler`` is asyncio-only; this wrapper serves the same files
through :class:`channels.http.ASGIHandler`, so it works on asyncio and trio. It is meant
for development (``runserver``) and live-server tests, as Django's is: files are found with
the staticfiles finders on every request.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import ParseResult, urlparse

from django.contrib.staticfiles.handlers import StaticFilesHandlerMixin

from . import _django_compat as django_compat
from .http import ASGIHandler
from .types import ASGIApp, Receive, Scope, Send

__all__ = ["StaticFilesWrapper"]


class _StaticFilesHandler(StaticFilesHandlerMixin, ASGIHandler):
    """Our handler with Django's static file lookup in place of the URLconf."""

    def __init__(self) -> None:
        self.base_url: ParseResult = urlparse(self.get_base_url())
        super().__init__()

    def load_middleware(self, is_async: bool = False) -> None:
        # The project's middleware belongs to the wrapped application, not to static files.
        pass


class StaticFilesWrapper:
    """Answers ``http`` requests under ``STATIC_URL`` with static files; passes every
    other connection to ``application``.

    A ``STATIC_URL`` that names another host serves nothing here.

    :raises ~django.core.exceptions.ImproperlyConfigured: if ``STATIC_URL`` is not set.
    """

    def __init__(self, application: ASGIApp) -> None:
        self.application = application
        self.handler: _StaticFilesHandler = _StaticFilesHandler()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        if scope["type"] == "http" and self._is_static(scope):
            return await self.handler(scope, receive, send)
        return await self.application(scope, receive, send)

    def _is_static(self, scope: Scope) -> bool:
        path = scope.get("path")
        if not isinstance(path, str):
            return False  # the application reports the malformed scope
        return django_compat.static_handler_serves(self.handler, path)
