"""Sending to consumers from code that is not a consumer (docs/topics/channel_layers.md)."""

from channels.concurrency import async_to_sync
from channels.layers import get_channel_layer


# [sync]
def announce(text: str) -> None:
    """Call from a sync Django view, a signal receiver, a model's save()..."""
    channel_layer = get_channel_layer()
    async_to_sync(channel_layer.group_send)(
        "announcements", {"type": "announcement", "text": text}
    )


# [/sync]


# [async]
async def announce_async(text: str) -> None:
    """Call from an async view or another consumer."""
    channel_layer = get_channel_layer()
    await channel_layer.group_send("announcements", {"type": "announcement", "text": text})


# [/async]
