"""From a commit in sync code to ``group_send`` on an event loop (see the package docstring).

Everything here runs in the thread that saved the model: the message is built there while
the transaction is open (so a bad ``groups`` or ``serialize`` fails the save, not a later
send), and queued with ``transaction.on_commit`` for the database alias that wrote it.
When Django runs the queued callback (after the outermost ``atomic`` block commits, or at
once in autocommit mode) the thread hands the sends to an event loop through
:func:`channels.concurrency.async_to_sync` and waits for them: the thread waits, never a
loop.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Sequence
from typing import Any

from django.db import transaction

from .._async_to_sync import event_loop_runs_here
from ..concurrency import async_to_sync
from ..exceptions import InvalidChannelLayerError
from ..layers import BaseChannelLayer, get_channel_layer
from ..types import ChannelLayer, Message

__all__ = ["Send", "queue_after_commit", "resolve_layer", "validate_message"]

logger: logging.Logger = logging.getLogger("channels.observers")

Send = tuple[str, Message]
"""One ``group_send``: the group and the message."""


def resolve_layer(alias: str, observer: str) -> ChannelLayer:
    """The layer an observer sends to.

    :raises ~channels.exceptions.InvalidChannelLayerError: if ``alias`` names no layer or
        one without groups (raised while the transaction is still open, so the save fails
        rather than committing a change nobody will hear about).
    """
    layer = get_channel_layer(alias)
    if layer is None or not hasattr(layer, "group_send"):
        raise InvalidChannelLayerError(
            f"{observer} sends to channel layer {alias!r}, which is not configured or has "
            "no groups: set CHANNEL_LAYERS[{alias!r}] to a layer with the 'groups' "
            "extension, or the observer's channel_layer_alias"
        )
    return layer


def validate_message(layer: ChannelLayer, group: str, message: Message, observer: str) -> None:
    """Fail now, inside the transaction, on what would fail after the commit.

    :raises TypeError: if ``group`` is not a valid group name (the layer's message), or
        the message's ``pk`` or ``data`` is not JSON-serialisable (consumers forward them
        as JSON).
    """
    if isinstance(layer, BaseChannelLayer):
        layer.require_valid_group_name(group)
    try:
        json.dumps(message)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{observer}: the {message['type']!r} message for {message['model']} pk="
            f"{message['pk']!r} is not JSON-serialisable ({exc}); make serialize() return "
            "plain dicts, lists, strings, numbers, booleans and None"
        ) from exc


def queue_after_commit(layer: ChannelLayer, sends: Sequence[Send], using: str) -> None:
    """Send ``sends`` once the current transaction on ``using`` commits (at once in
    autocommit mode); never if it, or the savepoint they were queued in, rolls back.

    :raises RuntimeError: on a thread running an event loop, where waiting for the send
        would block the loop (a sync ORM call there needs ``DJANGO_ALLOW_ASYNC_UNSAFE``).
    """
    if not sends:
        return
    if event_loop_runs_here():
        raise RuntimeError(
            "A model observer cannot send from a thread running an event loop: the model was "
            "saved on the loop itself (DJANGO_ALLOW_ASYNC_UNSAFE?). Save through the async "
            "ORM or channels.db.database_sync_to_async, so the commit happens in a thread."
        )
    transaction.on_commit(functools.partial(_deliver, layer, tuple(sends)), using=using)


def _deliver(layer: ChannelLayer, sends: tuple[Send, ...]) -> None:
    """The on-commit callback: the change is committed, so a failed send is logged and
    dropped rather than raised into code that has already succeeded."""
    try:
        async_to_sync(_group_send_all)(layer, sends)
    except Exception:
        groups = sorted({group for group, _ in sends})
        logger.exception(
            "model observer: sending %d committed change message(s) to groups %s failed",
            len(sends),
            groups,
        )


async def _group_send_all(layer: ChannelLayer, sends: tuple[Send, ...]) -> Any:
    # In order, one after another: members of several groups see a change's messages in
    # the order 1.x sent them (deleted, updated, created).
    for group, message in sends:
        await layer.group_send(group, message)
