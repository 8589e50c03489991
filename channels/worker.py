"""Background workers: applications fed from named channels instead of connections.

``python manage.py runworker thumbnails email`` listens on those channels of the channel
layer and hands each message to the project's application with the scope
``{"type": "channel", "channel": name}``, where a ``ChannelNameRouter`` picks the consumer.

Each channel has one application instance at a time, fed in arrival order. If it crashes,
the error is logged and a new instance takes the channel's next message (messages the
listener had already taken for the channel go to the new instance, not lost). If the layer
fails, or sends a message without a ``type``, the worker stops with that error rather than
carrying on deaf.
"""

from __future__ import annotations

import logging
import math
import signal
from collections.abc import Iterable

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .types import ASGIApp, ChannelLayer, Message
from .utils import unwrap_exception_groups

__all__ = ["Worker"]

logger: logging.Logger = logging.getLogger("django.channels.worker")


class _ChannelFeed:
    """The messages taken from one channel, and the application instance consuming them."""

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.scope = {"type": "channel", "channel": channel}
        self.sender: MemoryObjectSendStream[Message]
        self.receiver: MemoryObjectReceiveStream[Message]
        self.sender, self.receiver = anyio.create_memory_object_stream[Message](math.inf)
        self.running = False


class Worker:
    """Runs ``application`` for messages arriving on ``channels`` of ``channel_layer``.

    ``max_applications`` is accepted for compatibility; a worker runs one instance per
    channel, so it never has more instances than channels.
    """

    def __init__(
        self,
        application: ASGIApp,
        channels: Iterable[str],
        channel_layer: ChannelLayer | None,
        max_applications: int = 1000,
    ) -> None:
        if channel_layer is None:
            raise ValueError("Channel layer is not valid")
        self.application = application
        self.channels: list[str] = list(channels)
        self.channel_layer: ChannelLayer = channel_layer
        self.max_applications = max_applications

    def run(self, backend: str = "asyncio") -> None:
        """Serve until SIGINT or SIGTERM (then stop cleanly), or until a listener fails."""
        anyio.run(self._run_until_signalled, backend=backend)

    async def _run_until_signalled(self) -> None:
        with unwrap_exception_groups():
            async with anyio.create_task_group() as group:
                group.start_soon(self._stop_on_signal, group)
                await self.arun()
                group.cancel_scope.cancel()

    async def _stop_on_signal(self, group: TaskGroup) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                logger.info("Worker stopping on %s", signal.Signals(signum).name)
                group.cancel_scope.cancel()
                return

    async def arun(self) -> None:
        """Listen on every channel until cancelled, or until a listener fails."""
        try:
            with unwrap_exception_groups():
                async with anyio.create_task_group() as group:
                    for channel in self.channels:
                        logger.info("Listening on channel %s", channel)
                        group.start_soon(self._listen, channel, group)
        finally:
            close = getattr(self.channel_layer, "close", None)
            if close is not None:
                with anyio.CancelScope(shield=True):
                    await close()

    async def _listen(self, channel: str, group: TaskGroup) -> None:
        feed = _ChannelFeed(channel)
        with feed.sender, feed.receiver:
            while True:
                message = await self.channel_layer.receive(channel)
                if not isinstance(message, dict) or not message.get("type"):
                    raise ValueError(
                        f"Worker received a message with no type on channel {channel!r}: "
                        f"{message!r}"
                    )
                feed.sender.send_nowait(message)
                if not feed.running:
                    feed.running = True
                    group.start_soon(self._run_instance, feed, group)

    async def _run_instance(self, feed: _ChannelFeed, group: TaskGroup) -> None:
        async def send(message: Message) -> None:
            raise RuntimeError(
                f"An application running on worker channel {feed.channel!r} cannot send "
                f"ASGI events (it sent {message.get('type')!r}); use the channel layer"
            )

        received = 0

        async def receive() -> Message:
            nonlocal received
            message = await feed.receiver.receive()
            received += 1
            return message

        try:
            await self.application(feed.scope, receive, send)
        except Exception:
            logger.exception("Application instance for channel %s crashed", feed.channel)
        finally:
            feed.running = False
        # Messages already taken for this channel go to a new instance, unless this one
        # failed before taking any (a new one would likely fail the same way, at once):
        # then the next message to arrive starts it.
        if received and feed.receiver.statistics().current_buffer_used:
            feed.running = True
            group.start_soon(self._run_instance, feed, group)
