"""Handing work to the worker from a consumer or a view (docs/topics/worker.md)."""

from channels.layers import get_channel_layer


# [send]
async def queue_welcome_email(address: str) -> None:
    await get_channel_layer().send(
        "email",
        {"type": "email.send", "to": address, "subject": "Welcome", "body": "Hello!"},
    )


# [/send]
