"""Django authentication for connections: ``scope["user"]``, login and logout.

The user lives in the session, as in Django's request cycle, so these need
:class:`~channels.sessions.SessionMiddleware` (and the cookie middleware outside it):
:func:`AuthMiddlewareStack` puts all three together.

:func:`get_user`, :func:`login` and :func:`logout` query the database, so, as upstream,
they are awaitables that run in the database thread (:func:`channels.db.database_sync_to_async`).
``login`` and ``logout`` send ``user_logged_in`` / ``user_logged_out`` with
``request=None``: there is no ``HttpRequest``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib.auth import (
    BACKEND_SESSION_KEY,
    HASH_SESSION_KEY,
    SESSION_KEY,
    get_user_model,
    load_backend,
    user_logged_in,
    user_logged_out,
)
from django.utils.crypto import constant_time_compare
from django.utils.functional import LazyObject, empty

from .db import database_sync_to_async
from .middleware import BaseMiddleware
from .sessions import CookieMiddleware, SessionMiddleware
from .types import ASGIApp, Receive, Scope, Send

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser
    from django.contrib.auth.models import AnonymousUser

    _LazyUser = LazyObject[Any]  # generic only in django-stubs
else:
    _LazyUser = LazyObject

__all__ = ["AuthMiddleware", "AuthMiddlewareStack", "get_user", "login", "logout"]


def _session_of(scope: Scope, what: str) -> Any:
    if "session" not in scope:
        # Upstream's wording first: tests match on it.
        raise ValueError(
            "Cannot find session in scope. You should wrap your consumer in "
            f"SessionMiddleware. ({what}() needs the session; AuthMiddlewareStack includes "
            "SessionMiddleware.)"
        )
    return scope["session"]


def _user_id_in(session: Any) -> Any:
    # Sessions keep the primary key as a string; compare it as the model's own type.
    return get_user_model()._meta.pk.to_python(session[SESSION_KEY])


@database_sync_to_async
def get_user(scope: Scope) -> AbstractBaseUser | AnonymousUser:
    """The user the scope's session is logged in as, or an ``AnonymousUser``.

    A session whose password hash no longer matches the user's (the password changed, or
    the user logged out elsewhere with session invalidation) is flushed, as Django does.
    A hash made with one of ``SECRET_KEY_FALLBACKS`` is accepted and renewed with the
    current key, also as Django does (upstream Channels flushed those sessions).

    :raises ValueError: if the scope has no session.
    """
    from django.contrib.auth.models import AnonymousUser

    session = _session_of(scope, "get_user")
    user: Any = None
    try:
        user_id = _user_id_in(session)
        backend_path = session[BACKEND_SESSION_KEY]
    except KeyError:
        pass
    else:
        if backend_path in settings.AUTHENTICATION_BACKENDS:
            user = load_backend(backend_path).get_user(user_id)
            if user is not None and hasattr(user, "get_session_auth_hash"):
                user = _verified(session, user)
    return user or AnonymousUser()


def _verified(session: Any, user: Any) -> Any:
    """``user`` if the session's auth hash is valid for them, else ``None`` (flushing the
    session)."""
    session_hash = session.get(HASH_SESSION_KEY)
    if not session_hash:
        session.flush()
        return None
    current_hash = user.get_session_auth_hash()
    if constant_time_compare(session_hash, current_hash):
        return user
    fallback_hashes = getattr(user, "get_session_auth_fallback_hash", lambda: ())()
    if any(constant_time_compare(session_hash, old) for old in fallback_hashes):
        session.cycle_key()
        session[HASH_SESSION_KEY] = current_hash
        return user
    session.flush()
    return None


@database_sync_to_async
def login(scope: Scope, user: AbstractBaseUser | None, backend: str | None = None) -> None:
    """Log ``user`` in on this connection's session and set ``scope["user"]``.

    The session gets a new key (or, when it belonged to another user, is emptied first),
    so a key known before login is useless after it. Data stored while anonymous is kept.
    The session is saved, and its cookie sent, with the consumer's next message (see
    :mod:`channels.sessions`); over an open WebSocket the cookie cannot reach the browser.

    ``user=None`` logs in ``scope["user"]``. ``backend`` is the dotted path of the
    authentication backend; it may be left out when the user came from ``authenticate()``
    or only one backend is configured.

    :raises ValueError: if the scope has no session, there is no user, or the backend is
        ambiguous.
    :raises TypeError: if ``backend`` is not a dotted path string.
    """
    session = _session_of(scope, "login")
    if user is None:
        user = scope.get("user", None)
    if user is None:
        raise ValueError("User must be passed as an argument or must be present in the scope.")
    # Before the session changes: a bad backend must not cost the user their session.
    backend = _backend_for(user, backend)
    session_auth_hash = ""
    if hasattr(user, "get_session_auth_hash"):
        session_auth_hash = user.get_session_auth_hash()
    if SESSION_KEY in session:
        if _user_id_in(session) != user.pk or (
            session_auth_hash
            and not constant_time_compare(session.get(HASH_SESSION_KEY, ""), session_auth_hash)
        ):
            # Another user's session: start from an empty one rather than inherit it.
            session.flush()
    else:
        session.cycle_key()
    session[SESSION_KEY] = user._meta.pk.value_to_string(user)
    session[BACKEND_SESSION_KEY] = backend
    session[HASH_SESSION_KEY] = session_auth_hash
    scope["user"] = user
    user_logged_in.send(sender=user.__class__, request=None, user=user)


def _backend_for(user: Any, backend: str | None) -> str:
    chosen = backend or getattr(user, "backend", None)
    if chosen is None:
        if len(settings.AUTHENTICATION_BACKENDS) != 1:
            raise ValueError(
                "You have multiple authentication backends configured and therefore must "
                "provide the `backend` argument or set the `backend` attribute on the user."
            )
        chosen = settings.AUTHENTICATION_BACKENDS[0]
    if not isinstance(chosen, str):
        raise TypeError(f"backend must be a dotted import path string (got {chosen!r}).")
    return chosen


@database_sync_to_async
def logout(scope: Scope) -> None:
    """Log the connection's user out: send ``user_logged_out``, empty the session, and
    make ``scope["user"]`` an ``AnonymousUser`` (if the scope has a user).

    The signal goes out first, so receivers can still see who logged out; it is not sent
    when nobody was logged in.

    :raises ValueError: if the scope has no session.
    """
    from django.contrib.auth.models import AnonymousUser

    session = _session_of(scope, "logout")
    user = scope.get("user", None)
    if hasattr(user, "is_authenticated") and not user.is_authenticated:
        user = None
    if user is not None:
        user_logged_out.send(sender=user.__class__, request=None, user=user)
    session.flush()
    if "user" in scope:
        scope["user"] = AnonymousUser()


class UserLazyObject(_LazyUser):
    """``scope["user"]`` until it is resolved: reading it early says so."""

    def _setup(self) -> None:
        raise ValueError("Accessing scope user before it is ready.")


class AuthMiddleware(BaseMiddleware):
    """Puts the session's user in ``scope["user"]``, resolved before the inner application
    starts, so the application can read it synchronously at once.

    Subclasses may override :meth:`populate_scope` (make the placeholder) and
    :meth:`resolve_scope` (fill it), as upstream allows.
    """

    def populate_scope(self, scope: Scope) -> None:
        """:raises ValueError: if the scope has no session."""
        if "session" not in scope:
            raise ValueError(
                "AuthMiddleware cannot find session in scope. SessionMiddleware must be above it."
            )
        if "user" not in scope:
            scope["user"] = UserLazyObject()

    async def resolve_scope(self, scope: Scope) -> None:
        user = scope["user"]
        # A user put there by someone else (another AuthMiddleware further out, a test)
        # is left alone.
        if isinstance(user, UserLazyObject) and user._wrapped is empty:
            user._wrapped = await get_user(scope)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        scope = dict(scope)
        self.populate_scope(scope)
        await self.resolve_scope(scope)
        return await super().__call__(scope, receive, send)


def AuthMiddlewareStack(inner: ASGIApp) -> ASGIApp:
    """``CookieMiddleware(SessionMiddleware(AuthMiddleware(inner)))``."""
    return CookieMiddleware(SessionMiddleware(AuthMiddleware(inner)))
