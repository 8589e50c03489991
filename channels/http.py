"""Django's request cycle as an ASGI application that runs on asyncio and trio.

Put it in the ``"http"`` slot of the project's router::

    application = ProtocolTypeRouter({
        "http": get_asgi_application(),
        "websocket": AuthMiddlewareStack(URLRouter(websocket_urlpatterns)),
    })

It serves the project's URLconf through Django's own handler machinery (middleware loaded
in async mode, so sync and async middleware and views mix as under Django's handler). Each
request gets a thread of its own for its thread-sensitive work
(:func:`~channels.concurrency.thread_sensitive_context`): sync views, sync middleware,
every ``request_started``/``request_finished`` receiver and the queries of Django's async
ORM run there, so one slow sync view does not hold up the others; async views run on the
event loop. The thread comes from a pool and goes back, with its database connection, when
the request ends (Django's handler starts a new thread per request, which makes
``CONN_MAX_AGE`` useless). Closing stale database
connections happens where Django does it, in those signals' receivers, on that thread.

What differs from ``django.core.handlers.asgi.ASGIHandler``, besides running on trio:

Request body size
    A body that is *not* ``multipart/form-data`` and is larger than
    ``DATA_UPLOAD_MAX_MEMORY_SIZE`` (when that is not ``None``) is answered
    ``413 Payload Too Large`` without running the view, as soon as its ``Content-Length``
    or the bytes received show it; the rest is not read. Multipart bodies are read whole
    (spooled to disk past ``FILE_UPLOAD_MAX_MEMORY_SIZE``), because in Django file parts do
    not count towards that limit: a large upload reaches the view as a
    ``TemporaryUploadedFile``. Their non-file fields are still checked by Django's parser
    when the view reads ``request.POST``, which answers 400 as Django does. Django's handler
    reads any body whole and leaves the check to whoever touches ``request.body``.
Sync streaming
    A ``StreamingHttpResponse`` over a sync iterator (``FileResponse`` included) is
    streamed: the iterator runs in the request's thread, at most 256 KiB ahead of the
    client, and the parts made since the last send go out in one message. Django's handler
    reads such an iterator to its end, in memory, before sending anything.
Async streaming
    An async iterator is advanced in a task of its own, at most 256 KiB ahead of the
    client, and the parts it made while the last send was under way go out in one
    message, so a generator that makes many small parts costs a few sends, not one each;
    a part that is slow to come is still sent as soon as it exists. Django's handler
    sends each part on its own.
Client disconnect
    The response and a listener for ``http.disconnect`` run in one task group; whichever
    finishes first cancels the other. A disconnect therefore stops a running async view or
    a stream at its next checkpoint, and the stream's iterator is closed; one that comes
    while the server's ``send()`` runs takes effect when it returns, since that call may
    still be doing the server's own work (hypercorn on trio arms the keep-alive timer
    there). The response is
    closed in every case (which sends ``request_finished``); if there was none yet,
    ``request_finished`` is sent directly. A sync view cannot be interrupted: it runs to
    the end, and the response it returns after the client left is dropped unsent and
    unclosed (Django's handler does the same), so its resources wait for the garbage
    collector.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import AsyncGenerator, Iterable
from contextlib import aclosing
from dataclasses import dataclass
from typing import IO, Any, cast

import anyio
import django
from django.conf import settings
from django.core import signals
from django.core.handlers import base
from django.core.handlers.asgi import ASGIRequest, get_script_prefix
from django.http import FileResponse, HttpResponse, HttpResponseBadRequest
from django.http.response import HttpResponseBase
from django.urls import set_script_prefix
from django.utils.log import log_response

from . import _django_compat as django_compat
from ._django_trio import install as install_trio_support
from ._iterate import iterate_ahead
from .concurrency import iterate_in_thread, run_sync, thread_sensitive_context
from .types import Message, Receive, Scope, Send
from .utils import unwrap_exception_groups

__all__ = ["ASGIHandler", "get_asgi_application"]

logger: logging.Logger = logging.getLogger("django.request")

_END = object()


def get_asgi_application() -> ASGIHandler:
    """Set Django up and return the handler: the ``"http"`` application of a project.

    Like ``django.core.asgi.get_asgi_application``; the handler also works under trio.
    """
    django.setup(set_prefix=False)
    return ASGIHandler()


@dataclass(eq=False)
class _Body:
    file: IO[bytes]
    too_large: bool = False


@dataclass(eq=False)
class _Exchange:
    """One request's state, kept where the clean-up after a cancellation can see it."""

    body: _Body
    response: HttpResponseBase | None = None


class _Sender:
    """The server's ``send``, for a response that a client disconnect cancels.

    A disconnect must stop the view or the stream, but never cancel a ``send()`` that is
    under way: a server's ``send()`` is not cancellation-safe. hypercorn on trio delivers
    ``http.disconnect`` from inside the last body part's ``send()`` (the response ending
    closes the stream), and goes on, in that call, to arm the connection's keep-alive
    timer and let the connection read the next request. Cancelled there, it does neither
    (the idle connection stays open for ever), and an access log around ``send()`` misses
    the request. So a disconnect that comes during a send cancels ``scope`` once that send
    has returned; any other cancels it at once. Once the connection is gone, a server's
    ``send()`` returns (or raises) promptly; one held up by a client that stopped reading
    is held up as it would be without the disconnect, until the server drops the socket.
    """

    def __init__(self, send: Send, scope: anyio.CancelScope) -> None:
        self._send = send
        self._scope = scope
        self._sending = False
        self._client_left = False

    async def __call__(self, message: Message) -> None:
        self._sending = True
        try:
            await self._send(message)
        finally:
            self._sending = False
        if self._client_left:
            self._scope.cancel()

    def client_left(self) -> None:
        self._client_left = True
        if not self._sending:
            self._scope.cancel()


class ASGIHandler(base.BaseHandler):
    """Serves ``http`` connections with the project's Django URLconf and middleware.

    Construct it after Django is set up (:func:`get_asgi_application` does both).

    :raises ValueError: (when called) for a scope that is not a valid ``http`` scope, or
        an ASGI message that has no place in an HTTP request.
    """

    request_class = ASGIRequest
    #: Largest body part sent in one ASGI message; also FileResponse's read size.
    chunk_size = 2**16

    def __init__(self) -> None:
        install_trio_support()
        super().__init__()
        self.load_middleware(is_async=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        _check_scope(scope)
        body = await self._read_body(scope, receive)
        if body is None:
            return  # the client left before the request was complete
        exchange = _Exchange(body)
        with thread_sensitive_context():
            try:
                await self._handle(exchange, scope, receive, send)
            finally:
                with anyio.CancelScope(shield=True):
                    await self._finish(exchange)

    async def _handle(
        self, exchange: _Exchange, scope: Scope, receive: Receive, send: Send
    ) -> None:
        set_script_prefix(get_script_prefix(scope))
        await run_sync(signals.request_started.send, sender=self.__class__, scope=scope)
        if exchange.body.too_large:
            exchange.response = HttpResponse(
                "Request body too large", status=413, content_type="text/plain"
            )
            log_response("Payload Too Large: %s", scope["path"], response=exchange.response)
            await self.send_response(exchange.response, send)
            return
        request, error_response = self.create_request(scope, exchange.body.file)
        if request is None:
            assert error_response is not None
            exchange.response = error_response
            await self.send_response(error_response, send)
            return

        async def respond() -> None:
            exchange.response = await self.run_get_response(request)
            await self.send_response(exchange.response, sender)
            group.cancel_scope.cancel()

        async def listen() -> None:
            await self.wait_for_disconnect(receive)
            sender.client_left()

        with unwrap_exception_groups():
            async with anyio.create_task_group() as group:
                sender = _Sender(send, group.cancel_scope)
                group.start_soon(listen)
                group.start_soon(respond)

    async def _finish(self, exchange: _Exchange) -> None:
        """Close the response (sending ``request_finished``) and the request body."""
        response = exchange.response
        try:
            if response is None:
                await run_sync(signals.request_finished.send, sender=self.__class__)
            else:
                response._handler_class = self.__class__  # type: ignore[attr-defined]
                await run_sync(response.close)
        finally:
            exchange.body.file.close()

    async def _read_body(self, scope: Scope, receive: Receive) -> _Body | None:
        """Read the request body into a temporary file, or ``None`` if the client left.

        The file stays in memory up to ``FILE_UPLOAD_MAX_MEMORY_SIZE`` bytes and moves to
        ``FILE_UPLOAD_TEMP_DIR`` past that. See the module docstring for the size limit.
        """
        limit = _body_limit(scope)
        body_file = cast(
            IO[bytes],
            tempfile.SpooledTemporaryFile(  # noqa: SIM115 - closed in _finish()
                max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE,
                mode="w+b",
                dir=settings.FILE_UPLOAD_TEMP_DIR,
            ),
        )
        try:
            too_large = await self._fill(body_file, limit, scope, receive)
        except BaseException:
            body_file.close()
            raise
        if too_large is None:
            body_file.close()
            return None
        body_file.seek(0)
        return _Body(body_file, too_large)

    async def _fill(
        self, body_file: IO[bytes], limit: int | None, scope: Scope, receive: Receive
    ) -> bool | None:
        """Whether the body is over ``limit``; ``None`` if the client left first."""
        declared = _content_length(scope)
        if limit is not None and declared is not None and declared > limit:
            return True
        size = 0
        while True:
            message = await receive()
            kind = message.get("type")
            if kind == "http.disconnect":
                return None
            if kind != "http.request":
                raise ValueError(
                    "Expected an 'http.request' or 'http.disconnect' message while reading "
                    f"the request body, got {kind!r}"
                )
            chunk = message.get("body", b"")
            if not isinstance(chunk, bytes | bytearray | memoryview):
                raise ValueError(
                    f"The 'body' of an 'http.request' message must be bytes, got {chunk!r:.80}"
                )
            size += len(chunk)
            if limit is not None and size > limit:
                return True
            body_file.write(chunk)
            if not message.get("more_body", False):
                return False

    def create_request(
        self, scope: Scope, body_file: IO[bytes]
    ) -> tuple[ASGIRequest, None] | tuple[None, HttpResponseBase]:
        """The request object, or ``(None, response)`` if the request is malformed."""
        try:
            return self.request_class(scope, body_file), None
        except UnicodeDecodeError:
            logger.warning("Bad Request (UnicodeDecodeError)", exc_info=True)
            return None, HttpResponseBadRequest()

    async def run_get_response(self, request: ASGIRequest) -> HttpResponseBase:
        response = await self.get_response_async(request)
        response._handler_class = self.__class__  # type: ignore[attr-defined]
        if isinstance(response, FileResponse):
            response.block_size = self.chunk_size
        return response

    async def wait_for_disconnect(self, receive: Receive) -> None:
        """Return when the client disconnects; nothing else may arrive after the body."""
        message = await receive()
        if message.get("type") != "http.disconnect":
            raise ValueError(
                f"Expected 'http.disconnect' after the request body, got {message.get('type')!r}"
            )

    async def send_response(self, response: HttpResponseBase, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": _response_headers(response),
            }
        )
        if not response.streaming:
            content: bytes = response.content  # type: ignore[attr-defined]
            for chunk, last in _chunks(content, self.chunk_size):
                await send({"type": "http.response.body", "body": chunk, "more_body": not last})
            return
        async with aclosing(_stream(response)) as parts:
            async for part in parts:
                for chunk, _ in _chunks(part, self.chunk_size):
                    if chunk:
                        message = {"type": "http.response.body", "body": chunk, "more_body": True}
                        await send(message)
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _stream(response: HttpResponseBase) -> AsyncGenerator[bytes]:
    """The parts of a streaming response; its iterator is closed however this ends.

    A sync iterator is run in the request's thread (it may query the database), up to
    256 KiB ahead of the client; the parts it made since the last send go out together,
    so many small parts (CSV rows, say) cost a few large sends, while a part that is slow
    to come is sent as soon as it exists. ``response.close()`` closes it there afterwards.
    An async iterator is advanced here and closed here.
    """
    streaming: Any = response
    if not streaming.is_async:
        ahead = 4 * ASGIHandler.chunk_size
        async with iterate_in_thread(
            streaming.streaming_content, limit=ahead, weight=_part_weight
        ) as batches:
            async for batch in batches:
                yield b"".join(batch)
        return
    # Django's own async wrapper would close only itself, not the iterator it wraps.
    source = django_compat.streaming_source(streaming)
    try:
        # Advanced in a task of its own: the parts it makes while the last send is under
        # way (or all of them, for a generator that never waits) go out as one message.
        # On trio each send to hypercorn costs tens of microseconds; 50 small parts sent
        # one by one made this view 0.48x Django's handler on asyncio.
        async with iterate_ahead(
            source, limit=4 * ASGIHandler.chunk_size, weight=_any_weight
        ) as batches:
            async for batch in batches:
                yield b"".join([streaming.make_bytes(part) for part in batch])
    finally:
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            with anyio.CancelScope(shield=True):
                await aclose()


def _any_weight(part: Any) -> int:
    """A part's weight before ``make_bytes``: its length if it has one (str, bytes)."""
    try:
        return max(len(part), 1)
    except TypeError:
        return 1


def _part_weight(part: bytes) -> int:
    return max(len(part), 1)  # empty parts count too, or an endless stream of them never waits


def _check_scope(scope: Scope) -> None:
    if scope.get("type") != "http":
        raise ValueError(
            f"channels.http.ASGIHandler serves 'http' connections only, not "
            f"{scope.get('type')!r}: route other types with channels.routing.ProtocolTypeRouter"
        )
    for key in ("method", "path"):
        if not isinstance(scope.get(key), str):
            raise ValueError(f"An 'http' scope needs a str {key!r}, got {scope.get(key)!r}")


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return cast(bytes, value)
    return None


def _content_length(scope: Scope) -> int | None:
    value = _header(scope, b"content-length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None  # the bytes received are counted instead


def _body_limit(scope: Scope) -> int | None:
    limit = cast(int | None, settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
    content_type = _header(scope, b"content-type") or b""
    if limit is None or content_type.lower().startswith(b"multipart/form-data"):
        return None
    return limit


def _response_headers(response: HttpResponseBase) -> list[tuple[bytes, bytes]]:
    # Header case is kept: some clients that ignore the RFC expect e.g. Content-Type.
    headers = [
        (_as_bytes(name, "ascii"), _as_bytes(value, "latin1")) for name, value in response.items()
    ]
    for cookie in response.cookies.values():
        headers.append((b"Set-Cookie", cookie.output(header="").encode("ascii").strip()))
    return headers


def _as_bytes(value: str | bytes, encoding: str) -> bytes:
    return value.encode(encoding) if isinstance(value, str) else bytes(value)


def _chunks(data: bytes, size: int) -> Iterable[tuple[bytes, bool]]:
    """``data`` in pieces of at most ``size`` bytes, each with whether it is the last."""
    if not data:
        yield data, True
        return
    for start in range(0, len(data), size):
        yield data[start : start + size], start + size >= len(data)
