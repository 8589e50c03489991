"""Cookies and Django sessions for HTTP and WebSocket connections.

:class:`CookieMiddleware` puts the request's cookies in ``scope["cookies"]``;
:class:`SessionMiddleware` puts a Django session, chosen by the session cookie, in
``scope["session"]`` and saves it when the application changes it.

Each connection gets its own session object, made when the connection starts
(:class:`InstanceSessionWrapper`); two connections that send the same cookie see each
other's changes only through the session store, after one of them is saved.

Where this differs from upstream Channels, on purpose:

- Upstream saves only when an ``http.response.start`` goes out, so a WebSocket consumer
  had to save the session itself. Here a changed session is saved when the application
  sends its next message, whatever its type, and a ``websocket.accept`` carries the session
  cookie the way an ``http.response.start`` does (a browser stores cookies set on the
  handshake response). A change made after that reaches the store but not the browser: a
  WebSocket cannot set cookies once it is open.
- A session left empty (after ``flush()``, as on logout) is not saved, as Django's own
  middleware does; upstream saved it, which made an empty row under a key nobody holds.
- Several ``Cookie`` headers (HTTP/2 sends one per cookie) are read together; upstream
  read only the first.
- ``set_cookie`` checks ``samesite`` even under ``python -O``, before it touches the
  message, and raises a :exc:`ValueError` (which is also the :exc:`AssertionError`
  upstream raised).
"""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass
from importlib import import_module
from typing import Any, ClassVar

from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase, UpdateError
from django.core.exceptions import SuspiciousOperation
from django.http import parse_cookie
from django.http.cookie import SimpleCookie
from django.utils.encoding import force_str
from django.utils.functional import LazyObject
from django.utils.http import http_date

from .db import database_sync_to_async
from .types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "CookieMiddleware",
    "InstanceSessionWrapper",
    "InvalidSameSiteError",
    "SessionMiddleware",
    "SessionMiddlewareStack",
]

_SAMESITE_VALUES = ("strict", "lax", "none")


class InvalidSameSiteError(ValueError, AssertionError):
    """A ``samesite`` that browsers do not know.

    A :exc:`ValueError`; also an :exc:`AssertionError` because upstream checks it with
    ``assert``, and code (Channels' own tests among it) expects that.
    """


class CookieMiddleware:
    """Parses the ``Cookie`` header into ``scope["cookies"]``, a dict like Django's
    ``request.COOKIES``.

    :raises ValueError: for a scope without ``headers`` (neither HTTP nor WebSocket).
    """

    def __init__(self, inner: ASGIApp) -> None:
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        if "headers" not in scope:
            raise ValueError(
                "CookieMiddleware was passed a scope that did not have a headers key "
                "(make sure it is only passed HTTP or WebSocket connections)"
            )
        # Header bytes are latin-1 by HTTP's definition, as Django's WSGI and ASGI
        # handlers read them.
        values = [value.decode("latin1") for name, value in scope["headers"] if name == b"cookie"]
        cookies = parse_cookie("; ".join(values)) if values else {}
        return await self.inner(dict(scope, cookies=cookies), receive, send)

    @classmethod
    def set_cookie(
        cls,
        message: Message,
        key: str,
        value: Any = "",
        max_age: int | None = None,
        expires: str | datetime.datetime | None = None,
        path: str | None = "/",
        domain: str | None = None,
        secure: bool | None = False,
        httponly: bool | None = False,
        samesite: str | None = "lax",
    ) -> None:
        """Add a ``Set-Cookie`` header to ``message`` (an ``http.response.start`` or a
        ``websocket.accept``).

        ``expires`` is a date string as browsers expect it, or a datetime (naive ones are
        taken as UTC), which is turned into ``max_age``. With ``max_age`` and no ``expires``,
        the matching ``expires`` date is written too, for browsers that ignore Max-Age.

        :raises ValueError: if ``samesite`` is not ``"strict"``, ``"lax"`` or ``"none"``
            (in any case) or ``None``; the message is left as it was.
        """
        if samesite is not None and (
            not isinstance(samesite, str) or samesite.lower() not in _SAMESITE_VALUES
        ):
            raise InvalidSameSiteError(
                f"samesite must be 'strict', 'lax', 'none' or None, got {samesite!r}"
            )
        cookies: SimpleCookie = SimpleCookie()
        cookies[key] = force_str(value)
        morsel = cookies[key]
        if isinstance(expires, datetime.datetime):
            if expires.tzinfo is None:
                expires = expires.replace(tzinfo=datetime.UTC)
            # The second added back covers the fraction lost to the subtraction, so the
            # written date matches the one asked for.
            remaining = (
                expires - datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=1)
            )
            max_age = max(0, remaining.days * 86400 + remaining.seconds)
            expires = None
        morsel["expires"] = expires or ""
        if max_age is not None:
            morsel["max-age"] = max_age
            if not expires:
                morsel["expires"] = http_date(time.time() + max_age)
        if path is not None:
            morsel["path"] = path
        if domain is not None:
            morsel["domain"] = domain
        if secure:
            morsel["secure"] = True
        if httponly:
            morsel["httponly"] = True
        if samesite is not None:
            morsel["samesite"] = samesite
        header = (b"Set-Cookie", morsel.output(header="").strip().encode("utf-8"))
        # A new list: the caller's own headers list is not changed behind its back.
        message["headers"] = [*message.get("headers", ()), header]

    @classmethod
    def delete_cookie(
        cls, message: Message, key: str, path: str | None = "/", domain: str | None = None
    ) -> None:
        """Add a ``Set-Cookie`` header to ``message`` that makes the browser drop ``key``."""
        cls.set_cookie(
            message,
            key,
            max_age=0,
            path=path,
            domain=domain,
            expires="Thu, 01-Jan-1970 00:00:00 GMT",
        )


@dataclass(frozen=True)
class _Saved:
    """What the session cookie needs, read in the thread that saved the session."""

    session_key: str
    expire_at_browser_close: bool
    expiry_age: int


def _save(session: SessionBase) -> _Saved | None:
    """Save ``session`` unless it is empty; runs in the database thread, since reading an
    unloaded session queries the store too."""
    if session.is_empty():
        return None
    try:
        session.save()
    except UpdateError:
        raise SuspiciousOperation(
            "The request's session was deleted before the request completed. The user may "
            "have logged out in a concurrent request, for example."
        ) from None
    assert session.session_key is not None
    return _Saved(
        session.session_key, session.get_expire_at_browser_close(), session.get_expiry_age()
    )


class InstanceSessionWrapper:
    """The session of one connection: puts it in a copy of the scope and wraps ``send``
    to save it.

    Made afresh for every connection, so no state is shared between connections. When
    the scope already holds a session (session middleware further out), that one is used
    and saving is left to its owner.
    """

    #: Messages that save the session even unchanged, with SESSION_SAVE_EVERY_REQUEST.
    save_message_types: ClassVar[list[str]] = ["http.response.start", "websocket.accept"]

    #: Messages that can carry the session cookie to the client.
    cookie_response_message_types: ClassVar[list[str]] = [
        "http.response.start",
        "websocket.accept",
    ]

    def __init__(self, scope: Scope, send: Send) -> None:
        self.cookie_name: str = settings.SESSION_COOKIE_NAME
        self.session_store: type[SessionBase] = import_module(settings.SESSION_ENGINE).SessionStore
        self.scope: dict[str, Any] = dict(scope)
        self.activated: bool
        if "session" in self.scope:
            self.activated = False
        else:
            if "cookies" not in self.scope:
                raise ValueError(
                    "No cookies in scope - SessionMiddleware needs to run inside of "
                    "CookieMiddleware."
                )
            self.scope["session"] = LazyObject()
            self.activated = True
        self.real_send = send
        # Set once a 500 response starts: like Django, keep nothing a failed request did.
        self._failed = False

    async def resolve_session(self) -> None:
        """Bind the session named by the cookie; its data loads when first read."""
        session_key = self.scope["cookies"].get(self.cookie_name)
        self.scope["session"]._wrapped = self.session_store(session_key)

    async def send(self, message: Message) -> None:
        """Save the session first if it changed, then pass ``message`` on.

        Saving first means a client that sees the message can already use the session.
        """
        if self.activated:
            await self._save_for(message)
        await self.real_send(message)

    async def _save_for(self, message: Message) -> None:
        message_type = message.get("type")
        if message_type == "http.response.start" and message.get("status", 200) == 500:
            self._failed = True
        session = self.scope["session"]
        if self._failed or not (
            session.modified
            or (message_type in self.save_message_types and settings.SESSION_SAVE_EVERY_REQUEST)
        ):
            return
        saved = await self.save_session()
        # Saved now: a later change saves again at the send after it.
        session.modified = False
        if message_type not in self.cookie_response_message_types:
            return
        if saved is None:
            if self.cookie_name in self.scope["cookies"]:
                CookieMiddleware.delete_cookie(
                    message,
                    self.cookie_name,
                    path=settings.SESSION_COOKIE_PATH,
                    domain=settings.SESSION_COOKIE_DOMAIN,
                )
            return
        if saved.expire_at_browser_close:
            max_age = None
            expires = None
        else:
            max_age = saved.expiry_age
            expires = http_date(time.time() + max_age)
        CookieMiddleware.set_cookie(
            message,
            self.cookie_name,
            saved.session_key,
            max_age=max_age,
            expires=expires,
            domain=settings.SESSION_COOKIE_DOMAIN,
            path=settings.SESSION_COOKIE_PATH,
            secure=settings.SESSION_COOKIE_SECURE or None,
            httponly=settings.SESSION_COOKIE_HTTPONLY or None,
            samesite=settings.SESSION_COOKIE_SAMESITE or None,
        )

    async def save_session(self) -> _Saved | None:
        """Save the session through the database bridge (on asyncio and trio alike).

        Returns ``None`` without saving when the session is empty.

        :raises ~django.core.exceptions.SuspiciousOperation: if the session was deleted
            from the store meanwhile (a logout on another connection, say).
        """
        return await database_sync_to_async(_save)(self.scope["session"])


class SessionMiddleware:
    """Gives each connection a Django session in ``scope["session"]``.

    Needs ``scope["cookies"]``: put :class:`CookieMiddleware` outside it, or use
    :func:`SessionMiddlewareStack`.
    """

    def __init__(self, inner: ASGIApp) -> None:
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        wrapper = InstanceSessionWrapper(scope, send)
        await wrapper.resolve_session()
        return await self.inner(wrapper.scope, receive, wrapper.send)


def SessionMiddlewareStack(inner: ASGIApp) -> ASGIApp:
    """``CookieMiddleware(SessionMiddleware(inner))``."""
    return CookieMiddleware(SessionMiddleware(inner))
