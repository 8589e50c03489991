"""A background task fed by runworker, from docs/topics/worker.md."""

from typing import Any

from django.core.mail import send_mail

from channels.consumer import SyncConsumer
from channels.routing import ChannelNameRouter, ProtocolTypeRouter


# [consumer]
class EmailConsumer(SyncConsumer):
    def email_send(self, message: dict[str, Any]) -> None:
        send_mail(message["subject"], message["body"], "noreply@example.com", [message["to"]])


# [/consumer]

# [routing]
application = ProtocolTypeRouter(
    {
        # "http": ..., "websocket": ... as usual
        "channel": ChannelNameRouter({"email": EmailConsumer.as_asgi()}),
    }
)
# [/routing]
