"""Routers: ASGI applications that pick an inner application for each connection.

Every router is itself an ASGI application, so they nest, and each returns what the inner
application returned.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import Any, cast

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.urls.exceptions import Resolver404
from django.urls.resolvers import RegexPattern, RoutePattern, URLPattern, URLResolver

from .layers import channel_layers
from .types import ASGIApp, Receive, Scope, Send

__all__ = [
    "ChannelNameRouter",
    "ProtocolTypeRouter",
    "URLRouter",
    "get_default_application",
]

logger: logging.Logger = logging.getLogger("channels.routing")


def get_default_application() -> ASGIApp:
    """The application named by the ``ASGI_APPLICATION`` setting.

    :raises ~django.core.exceptions.ImproperlyConfigured: if the setting is missing, or
        its module or attribute cannot be imported.
    """
    try:
        setting: Any = settings.ASGI_APPLICATION  # a project may not define it
        path, name = setting.rsplit(".", 1)
    except (ValueError, AttributeError):
        raise ImproperlyConfigured("Cannot find ASGI_APPLICATION setting.") from None
    try:
        module = importlib.import_module(path)
    except ImportError as exc:
        raise ImproperlyConfigured(f"Cannot import ASGI_APPLICATION module {path!r}") from exc
    try:
        value = getattr(module, name)
    except AttributeError:
        raise ImproperlyConfigured(
            f"Cannot find {name!r} in ASGI_APPLICATION module {path}"
        ) from None
    return value  # type: ignore[no-any-return]


class ProtocolTypeRouter:
    """Routes on ``scope["type"]``: ``http``, ``websocket``, ``channel``, ...

    A ``lifespan`` scope with no application of its own is answered here, so servers
    such as hypercorn log no lifespan error. ``lifespan``, if given, is called with no
    arguments at ``lifespan.startup`` and must return an async context manager: it is
    entered before startup is acknowledged and exited at ``lifespan.shutdown``, in the
    same task, so it may hold a task group whose tasks run for the life of the server.
    After it exits, every channel layer is closed, then shutdown is acknowledged. An
    exception on entry is answered with ``lifespan.startup.failed`` (the server then
    refuses to start); one on exit, or from closing a layer, with
    ``lifespan.shutdown.failed``.

    :raises ValueError: for a scope type with no application, or if ``lifespan`` is given
        along with a ``"lifespan"`` application in the mapping.
    """

    def __init__(
        self,
        application_mapping: Mapping[str, ASGIApp],
        *,
        lifespan: Callable[[], AbstractAsyncContextManager[object]] | None = None,
    ) -> None:
        if lifespan is not None and "lifespan" in application_mapping:
            raise ValueError(
                "ProtocolTypeRouter got both a 'lifespan' application and a lifespan= "
                "hook; give only one of them."
            )
        if lifespan is not None and not callable(lifespan):
            raise TypeError(
                "lifespan= must be a callable returning an async context manager, "
                f"got {lifespan!r}"
            )
        self.application_mapping = application_mapping
        self.lifespan = lifespan

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        application = self.application_mapping.get(scope["type"])
        if application is not None:
            return await application(scope, receive, send)
        if scope["type"] == "lifespan":
            return await _serve_lifespan(receive, send, self.lifespan)
        raise ValueError(f"No application configured for scope type {scope['type']!r}")


async def _serve_lifespan(
    receive: Receive,
    send: Send,
    hook: Callable[[], AbstractAsyncContextManager[object]] | None,
) -> None:
    await _expect(receive, "lifespan.startup")
    started = shutdown_received = False
    failure: Exception | None = None
    try:
        async with hook() if hook is not None else nullcontext():
            await send({"type": "lifespan.startup.complete"})
            started = True
            await _expect(receive, "lifespan.shutdown")
            shutdown_received = True
    except Exception as exc:
        if not started:
            logger.exception("Lifespan startup hook failed")
            await send({"type": "lifespan.startup.failed", "message": _describe(exc)})
            return
        # Raised on exit, or by a task the hook started while the server ran: either
        # way the layers still get closed, and the server hears of it at shutdown.
        logger.exception("Lifespan shutdown hook failed")
        failure = exc
    if not shutdown_received:
        await _expect(receive, "lifespan.shutdown")
    try:
        await channel_layers.close_all()
    except Exception as exc:
        logger.exception("Closing channel layers at shutdown failed")
        failure = failure or exc
    if failure is not None:
        await send({"type": "lifespan.shutdown.failed", "message": _describe(failure)})
    else:
        await send({"type": "lifespan.shutdown.complete"})


async def _expect(receive: Receive, message_type: str) -> None:
    message = await receive()
    if message["type"] != message_type:
        raise ValueError(f"Expected a {message_type!r} message, got {message['type']!r}")


def _describe(exc: BaseException) -> str:
    """One line naming the error; a task group's errors are named one by one, since the
    group's own message says nothing about what went wrong."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(inner) for inner in exc.exceptions)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class URLRouter:
    """Routes on the connection's path with Django's ``path()`` and ``re_path()``.

    Captured arguments land in ``scope["url_route"]`` (``args`` and ``kwargs``, merged
    with the route's default kwargs and with those of outer routers). Routers nest: an
    inner router sees the rest of the path in ``scope["path_remaining"]``. The outermost
    router strips ``scope["root_path"]`` first.

    :raises ~django.core.exceptions.ImproperlyConfigured: for an ``include()`` route; nest
        ``URLRouter`` instances instead.
    """

    #: Marks this application as doing its own routing on the rest of the path, so
    #: an outer router's ``path()`` pattern for it is not anchored at the end.
    _path_routing = True

    def __init__(self, routes: Sequence[URLPattern | URLResolver]) -> None:
        self.routes = routes
        for route in routes:
            if isinstance(route, URLResolver) and not getattr(route, "callback", None):
                raise ImproperlyConfigured(
                    f"{route}: include() is not supported in URLRouter. Use nested"
                    " URLRouter instances instead."
                )
            if getattr(route.callback, "_path_routing", False) is True:
                route.pattern = _prefix_pattern(route.pattern)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        outermost = "path_remaining" not in scope
        path = scope.get("path_remaining", scope.get("path"))
        if path is None:
            raise ValueError("No 'path' key in connection scope, cannot route URLs")
        if outermost:
            root_path = scope.get("root_path", "")
            if root_path and not path.startswith(root_path):
                raise ValueError(f"No route found for path {path!r}.")
            path = path[len(root_path) :]
        path = path.lstrip("/")

        for route in cast(Sequence[URLPattern], self.routes):
            try:
                match = route.pattern.match(path)
            except Resolver404:
                continue
            if not match:
                continue
            remaining, args, kwargs = match
            outer = scope.get("url_route", {})
            url_route = {
                "args": tuple(outer.get("args", ())) + tuple(args),
                "kwargs": {**outer.get("kwargs", {}), **kwargs, **route.default_args},
            }
            inner_scope = dict(scope, path_remaining=remaining, url_route=url_route)
            try:
                return await route.callback(inner_scope, receive, send)
            except _NoRoute:
                continue  # a nested router found nothing: try the next route

        if outermost:
            raise ValueError(f"No route found for path {path!r}.")
        raise _NoRoute(f"No route found for path {path!r}.")


class _NoRoute(Resolver404):
    """A nested router matched nothing; only routers catch it, to try their next route."""


def _prefix_pattern(pattern: Any) -> Any:
    """The same pattern, matching only a prefix of the path (not anchored at the end)."""
    if not isinstance(pattern, RegexPattern | RoutePattern):
        raise ValueError(f"Unsupported pattern type: {type(pattern)}")
    # str() of either pattern is the route or regex it was written with.
    return type(pattern)(str(pattern), pattern.name, is_endpoint=False)


class ChannelNameRouter:
    """Routes ``channel`` scopes (from ``runworker``) on ``scope["channel"]``.

    :raises ValueError: for a scope with no ``channel`` key, or a channel with no
        application.
    """

    def __init__(self, application_mapping: Mapping[str, ASGIApp]) -> None:
        self.application_mapping = application_mapping

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        if "channel" not in scope:
            raise ValueError(
                "ChannelNameRouter got a scope without a 'channel' key. "
                "Did you make sure it's only being used for 'channel' type messages?"
            )
        application = self.application_mapping.get(scope["channel"])
        if application is None:
            raise ValueError(f"No application configured for channel name {scope['channel']!r}")
        return await application(scope, receive, send)
