"""The exceptions Channels users catch and raise.

The tree::

    Exception
     +-- StopConsumer             raised by a handler to end its consumer cleanly
     +-- AcceptConnection         raised from connect() to accept the connection
     +-- DenyConnection           raised from connect() to refuse the connection
     +-- ChannelFull              a channel is at capacity; the message was not sent
     +-- MessageTooLarge          a message is too big for the channel layer
     +-- RequestAborted           the client went away while its request body was read
     |    +-- RequestTimeout      ... because reading the body took too long
     +-- AsyncBridgeError         asgiref's async_to_sync used where it cannot work
     +-- ValueError
          +-- InvalidChannelLayerError   CHANNEL_LAYERS is configured wrongly

Names, bases and meanings are those of Django Channels 4.3, so code that catches them keeps
working; ``AsyncBridgeError`` is ours (see :mod:`channels.concurrency`).
"""

from __future__ import annotations

__all__ = [
    "AcceptConnection",
    "AsyncBridgeError",
    "ChannelFull",
    "DenyConnection",
    "InvalidChannelLayerError",
    "MessageTooLarge",
    "RequestAborted",
    "RequestTimeout",
    "StopConsumer",
]


class RequestAborted(Exception):
    """The client disconnected while its request body was still being read."""


class RequestTimeout(RequestAborted):
    """The request body did not arrive in time."""


class InvalidChannelLayerError(ValueError):
    """A channel layer is missing, misconfigured, or lacks a needed extension."""


class AcceptConnection(Exception):
    """Raise from a ``connect`` handler to accept the connection."""


class DenyConnection(Exception):
    """Raise from a ``connect`` handler to refuse the connection."""


class ChannelFull(Exception):
    """The channel is at capacity, so the message was not sent.

    Nothing was enqueued: the sender still owns the message and may retry it later.
    """


class MessageTooLarge(Exception):
    """The message is too large for the channel layer to carry."""


class StopConsumer(Exception):
    """Raise from a handler to end the consumer; its listeners are cancelled with it."""


class AsyncBridgeError(Exception):
    """``asgiref.sync.async_to_sync`` was called where it cannot reach the event loop.

    asgiref's bridge only knows asyncio. Inside a sync handler running under trio, use
    :func:`channels.concurrency.async_to_sync`, which works on both backends.

    Deliberately not a :class:`RuntimeError`: asgiref treats a ``RuntimeError`` from the
    loop as "no loop here" and would quietly run the coroutine on a private asyncio loop,
    where it would corrupt state owned by the trio loop.
    """
