"""Many streams over one WebSocket: a demultiplexer that runs a consumer per stream.

The client sends and receives JSON frames ``{"stream": name, "payload": {...}}``; a frame
may carry a ``"ref"`` (a string or an integer) that the stream's reply echoes. Each
stream's consumer is an ordinary JSON WebSocket consumer, unchanged, run as its own
application instance: it gets a copy of the connection's scope (with ``scope["stream"]``
set to its name), its own layer channel and groups, ``websocket.connect`` when the socket
opens and ``websocket.disconnect`` when it closes. What it sends is wrapped in the frame
of its stream; ``self.reply(content)`` while it handles a frame sends
``{"stream", "payload", "ref"}`` with that frame's ref.

One stream ending, by a crash or by closing, ends only that stream: the client gets
``{"stream": name, "error": "..."}`` (and ``"code"`` when the consumer closed with one),
and the next frame for that stream starts a fresh instance. Bad frames (not JSON, not an
object, an unknown stream, no payload, a bad ref) are answered with ``{"error": "..."}``
(with ``"stream"`` when the frame named one); the socket stays open.

Every stream runs in a task group owned by the demultiplexer, so none outlives the
connection: when the socket closes, streams get their ``websocket.disconnect`` and
:attr:`~AsyncJsonWebsocketDemultiplexer.stream_close_timeout` seconds to run
``disconnect()``, then are cancelled; when the demultiplexer itself fails, they are
cancelled at once (each still leaves its groups, shielded, as every WebSocket consumer does).

The demultiplexer is asynchronous; its streams may be synchronous
(:class:`~channels.generic.websocket.JsonWebsocketConsumer`) or asynchronous consumers.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
from collections.abc import Mapping
from typing import Any, ClassVar

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ..consumer import AsyncConsumer
from ..exceptions import StopConsumer
from ..types import ASGIApp, Message, Receive, Scope, Send
from ..utils import name_that_thing
from .websocket import REPLY_KEY, AsyncJsonWebsocketConsumer

__all__ = ["AsyncJsonWebsocketDemultiplexer"]

logger: logging.Logger = logging.getLogger("channels.multiplex")

#: The ref of the client frame a stream's consumer is handling. Set in the task that
#: received the frame (the consumer's ASGI listener), so a handler, and any task it
#: starts, sees it; handlers of layer messages run in another task and see none.
_request_ref: contextvars.ContextVar[str | int | None] = contextvars.ContextVar(
    "channels_multiplex_request_ref", default=None
)


class _Stream:
    """One running stream: its consumer's inbox, and how it ended."""

    def __init__(self, name: str, buffer: int) -> None:
        self.name = name
        self.inbox: MemoryObjectSendStream[tuple[Message, str | int | None]]
        self.outbox: MemoryObjectReceiveStream[tuple[Message, str | int | None]]
        self.inbox, self.outbox = anyio.create_memory_object_stream(buffer)
        self.closed_with: int | None = None  # the close code, once the consumer closed
        self.closed = False
        self.disconnected = False  # websocket.disconnect handed to the consumer


class AsyncJsonWebsocketDemultiplexer(AsyncJsonWebsocketConsumer):
    """A JSON WebSocket consumer that routes ``{"stream", "payload"}`` frames to a
    consumer per stream.

    ``consumer_classes`` maps stream names to consumer classes (or to ASGI applications,
    such as what ``as_asgi()`` returns)::

        class Multiplexer(AsyncJsonWebsocketDemultiplexer):
            consumer_classes = {"chat": ChatConsumer, "notifications": NotificationConsumer}

    The demultiplexer accepts the socket itself in :meth:`connect` (override it to refuse
    a client before any stream starts), then starts every stream. A stream's
    ``accept()`` is absorbed; its ``close(code)`` ends that stream only.
    """

    #: Stream name -> consumer class or ASGI application.
    consumer_classes: ClassVar[Mapping[str, Any]] = {}
    #: Frames queued for one stream before reading the socket waits for that stream
    #: (backpressure: a stream that stops handling frames eventually stalls the socket).
    stream_buffer: ClassVar[int] = 64
    #: Seconds the streams get to run ``disconnect()`` once the socket has closed.
    stream_close_timeout: ClassVar[float] = 5.0

    _applications: dict[str, ASGIApp]
    _streams: dict[str, _Stream]
    _stream_group: anyio.abc.TaskGroup
    _send_lock: anyio.Lock
    _socket_open: bool

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._streams = {}
        self._send_lock = anyio.Lock()
        self._socket_open = False
        self._applications = {name: _as_application(name, app) for name, app in self._classes()}
        async with anyio.create_task_group() as self._stream_group:
            await super().__call__(scope, receive, send)
            # The socket has closed (streams were sent websocket.disconnect) or the
            # demultiplexer stopped: streams still running get a bounded time to end,
            # then the group's deadline cancels them. An error above cancels them at once.
            self._socket_open = False
            for stream in list(self._streams.values()):
                self._disconnect(stream, 1006)
            self._stream_group.cancel_scope.deadline = (
                anyio.current_time() + self.stream_close_timeout
            )

    def _classes(self) -> list[tuple[str, Any]]:
        if not isinstance(self.consumer_classes, Mapping) or not self.consumer_classes:
            raise TypeError(
                f"{name_that_thing(self)}.consumer_classes must be a non-empty dict of "
                "stream name -> consumer class"
            )
        for name in self.consumer_classes:
            if not isinstance(name, str) or not name:
                raise TypeError(f"Stream names must be non-empty strings, got {name!r}")
        return list(self.consumer_classes.items())

    async def websocket_connect(self, message: Message) -> None:
        await super().websocket_connect(message)
        if self._socket_open:
            for name in self._applications:
                self._start(name)

    async def accept(self, subprotocol: str | None = None, headers: Any = None) -> None:
        await super().accept(subprotocol, headers)
        self._socket_open = True

    async def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        self._socket_open = False
        await super().close(code, reason)

    async def websocket_disconnect(self, message: Message) -> None:
        self._socket_open = False
        for stream in list(self._streams.values()):
            self._disconnect(stream, message.get("code", 1005))
        await super().websocket_disconnect(message)

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any
    ) -> None:
        if text_data is None:
            await self.send_error("Binary frames are not accepted: send JSON text frames.")
            return
        try:
            content = await self.decode_json(text_data)
        except ValueError:
            await self.send_error("The frame is not valid JSON.")
            return
        await self.receive_json(content, **kwargs)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """Route a client frame to its stream (starting the stream if it has ended)."""
        if not isinstance(content, dict):
            await self.send_error(
                'Frames must be JSON objects like {"stream": "name", "payload": {...}}.'
            )
            return
        name = content.get("stream")
        if not isinstance(name, str):
            await self.send_error('The frame has no "stream" (a string naming the stream).')
            return
        if name not in self._applications:
            known = ", ".join(sorted(self._applications))
            await self.send_error(f"Unknown stream {name!r}; this socket has: {known}.", name)
            return
        if "payload" not in content:
            await self.send_error('The frame has no "payload".', name)
            return
        ref = content.get("ref")
        if ref is not None and (type(ref) not in (str, int)):
            await self.send_error('"ref" must be a string or an integer.', name)
            return
        message = {"type": "websocket.receive", "text": await self.encode_json(content["payload"])}
        stream = self._streams.get(name)
        if stream is None or stream.disconnected:
            stream = self._start(name)  # ended, or ending: this frame starts it afresh
        try:
            await stream.inbox.send((message, ref))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            # It ended while the frame waited for room in its inbox.
            await self._start(name).inbox.send((message, ref))

    async def send_error(self, error: str, stream: str | None = None) -> None:
        """Send ``{"error": error}`` (with ``"stream"``) to the client, if it is still there."""
        frame: dict[str, Any] = {"error": error}
        if stream is not None:
            frame = {"stream": stream, **frame}
        await self._send_frame(frame)

    async def _send_frame(self, frame: dict[str, Any]) -> None:
        if not self._socket_open:
            return
        text = await self.encode_json(frame)
        async with self._send_lock:
            await self.base_send({"type": "websocket.send", "text": text})

    def _start(self, name: str) -> _Stream:
        stream = _Stream(name, max(1, self.stream_buffer))
        self._streams[name] = stream
        scope = {**self.scope, "stream": name}
        stream.inbox.send_nowait(({"type": "websocket.connect"}, None))
        self._stream_group.start_soon(
            self._run, stream, self._applications[name], scope, name=f"stream {name!r}"
        )
        return stream

    def _disconnect(self, stream: _Stream, code: int) -> None:
        if stream.disconnected:
            return
        stream.disconnected = True
        message: Message = {"type": "websocket.disconnect", "code": code}
        # The consumer must see it even when its inbox is full: it is the last message.
        try:
            stream.inbox.send_nowait((message, None))
        except anyio.WouldBlock:
            self._stream_group.start_soon(_send_last, stream, message)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass  # it has ended already

    async def _run(self, stream: _Stream, application: ASGIApp, scope: Scope) -> None:
        async def receive() -> Message:
            message, ref = await stream.outbox.receive()
            _request_ref.set(ref)
            return message

        async def send(message: Message) -> None:
            await self._from_stream(stream, message)

        error: str | None = None
        try:
            await application(scope, receive, send)
        except StopConsumer:
            pass
        except Exception as exc:
            logger.exception("Stream %r of %s crashed", stream.name, name_that_thing(self))
            error = (
                f"The {stream.name!r} stream's consumer crashed ({type(exc).__name__}); "
                "the next frame to it starts it again."
            )
        finally:
            if self._streams.get(stream.name) is stream:
                del self._streams[stream.name]
            stream.inbox.close()
            stream.outbox.close()
        if stream.disconnected and stream.closed_with is None and not stream.closed:
            return  # ended because the socket closed: nobody to tell
        if error is None:
            if stream.closed:
                code = f" (code {stream.closed_with})" if stream.closed_with else ""
                error = f"The {stream.name!r} stream was closed by the server{code}."
            else:
                error = f"The {stream.name!r} stream's consumer ended."
            error += " The next frame to it starts it again."
        frame: dict[str, Any] = {"stream": stream.name, "error": error}
        if stream.closed_with:
            frame["code"] = stream.closed_with
        await self._send_frame(frame)

    async def _from_stream(self, stream: _Stream, message: Message) -> None:
        """What a stream's consumer sends: frames are wrapped, accept and close absorbed."""
        kind = message.get("type")
        if stream.closed:
            return  # after its close, as a server would, drop what it still sends
        if kind == "websocket.accept":
            return
        if kind == "websocket.send":
            text = message.get("text")
            if text is None:
                raise ValueError(
                    f"Stream {stream.name!r} sent a binary frame; a multiplexed socket "
                    "carries JSON only"
                )
            try:
                payload = json.loads(text)
            except ValueError:
                raise ValueError(
                    f"Stream {stream.name!r} sent text that is not JSON; use send_json()"
                ) from None
            frame: dict[str, Any] = {"stream": stream.name, "payload": payload}
            if message.get(REPLY_KEY):
                ref = _request_ref.get()
                if ref is not None:
                    frame["ref"] = ref
            await self._send_frame(frame)
            return
        if kind in ("websocket.close", "websocket.http.response.start"):
            stream.closed = True
            code = message.get("code")
            stream.closed_with = code if isinstance(code, int) else None
            self._disconnect(stream, stream.closed_with or 1000)
            return
        raise ValueError(f"Stream {stream.name!r} sent an unexpected message type {kind!r}")


async def _send_last(stream: _Stream, message: Message) -> None:
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
        await stream.inbox.send((message, None))


def _as_application(name: str, target: Any) -> ASGIApp:
    if isinstance(target, type):
        if not issubclass(target, AsyncConsumer):
            raise TypeError(
                f"consumer_classes[{name!r}] must be a consumer class or an ASGI application, "
                f"got {name_that_thing(target)}"
            )
        return target.as_asgi()
    if not callable(target):
        raise TypeError(
            f"consumer_classes[{name!r}] must be a consumer class or an ASGI application, "
            f"got {target!r}"
        )
    return target  # type: ignore[no-any-return]
