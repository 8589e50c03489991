"""A project's ``asgi.py``: routers, middleware stacks, origin checks, custom middleware."""

from __future__ import annotations

from typing import Any, assert_type

from django.urls import path, re_path

from channels.auth import AuthMiddleware, AuthMiddlewareStack, get_user, login, logout
from channels.http import ASGIHandler, get_asgi_application
from channels.middleware import BaseMiddleware
from channels.routing import (
    ChannelNameRouter,
    ProtocolTypeRouter,
    URLRouter,
    get_default_application,
)
from channels.security.websocket import (
    AllowedHostsOriginValidator,
    OriginValidator,
    WebsocketDenier,
)
from channels.sessions import CookieMiddleware, SessionMiddleware, SessionMiddlewareStack
from channels.staticfiles import StaticFilesWrapper
from channels.types import ASGIApp, Receive, Scope, Send

from .consumers import ChatConsumer, EchoConsumer, LongPollConsumer, TaskConsumer


class TenantMiddleware(BaseMiddleware):
    """Puts the tenant in the scope, as project middleware does."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        scope = dict(scope, tenant=scope["headers"][0][1].decode())
        return await super().__call__(scope, receive, send)


def pure_asgi_middleware(app: ASGIApp) -> ASGIApp:
    """Plain function middleware is an ``ASGIApp`` too."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        await app(scope, receive, send)

    return wrapped


def websocket_urlpatterns() -> list[Any]:
    return [
        path("ws/chat/", ChatConsumer.as_asgi()),
        re_path(r"^ws/echo/(?P<name>\w+)/$", EchoConsumer.as_asgi()),
        path("ws/nested/", URLRouter([path("inner/", ChatConsumer.as_asgi())])),
    ]


def make_application() -> ProtocolTypeRouter:
    django_app = get_asgi_application()
    assert_type(django_app, ASGIHandler)
    return ProtocolTypeRouter(
        {
            "http": URLRouter(
                [
                    path("poll/", LongPollConsumer.as_asgi()),
                    re_path(r"", StaticFilesWrapper(django_app)),
                ]
            ),
            "websocket": AllowedHostsOriginValidator(
                AuthMiddlewareStack(TenantMiddleware(URLRouter(websocket_urlpatterns())))
            ),
            "channel": ChannelNameRouter({"thumbnails": TaskConsumer.as_asgi()}),
        }
    )


def other_stacks(application: ProtocolTypeRouter) -> list[ASGIApp]:
    assert_type(AllowedHostsOriginValidator(application), OriginValidator)
    assert_type(AuthMiddlewareStack(application), ASGIApp)
    assert_type(get_default_application(), ASGIApp)
    # A str is an Iterable[str]: a type checker cannot catch this mistake.
    OriginValidator(application, "https://example.com")
    # Routers take applications, not import paths or bare consumers.
    ProtocolTypeRouter({"websocket": "chat.consumers.ChatConsumer"})  # type: ignore[dict-item]
    URLRouter([ChatConsumer.as_asgi()])  # type: ignore[list-item]
    return [
        OriginValidator(URLRouter(websocket_urlpatterns()), ["https://example.com"]),
        SessionMiddlewareStack(pure_asgi_middleware(EchoConsumer.as_asgi())),
        CookieMiddleware(SessionMiddleware(AuthMiddleware(ChatConsumer.as_asgi()))),
        WebsocketDenier.as_asgi(),
        application,
    ]


async def log_in_and_out(scope: Scope) -> None:
    from django.contrib.auth.base_user import AbstractBaseUser  # needs the app registry

    user = await get_user(scope)
    assert_type(user.is_authenticated, bool)
    await login(scope, None)
    # get_user() may return an AnonymousUser, which cannot be logged in.
    await login(scope, user)  # type: ignore[arg-type]
    if isinstance(user, AbstractBaseUser):
        await login(scope, user, backend="django.contrib.auth.backends.ModelBackend")
    await logout(scope)
