"""Authentication from docs/topics/authentication.md."""

from typing import Any

from django.contrib.auth import authenticate
from django.urls import path

from channels.auth import AuthMiddlewareStack, login, logout
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.routing import URLRouter


# [user]
class ProfileConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope["user"]  # resolved by AuthMiddleware before connect() runs
        if not user.is_authenticated:
            await self.close()
            return
        await self.accept()
        await self.send_json({"username": user.username})


# [/user]


# [login]
class LoginConsumer(AsyncJsonWebsocketConsumer):
    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if content.get("action") == "logout":
            await logout(self.scope)
            await self.send_json({"user": None})
            return
        user = await database_sync_to_async(authenticate)(
            username=content["username"], password=content["password"]
        )
        if user is None:
            await self.send_json({"error": "invalid credentials"})
            return
        await login(self.scope, user)
        # The session is saved with the next message this consumer sends.
        await self.send_json({"user": user.username})


# [/login]

# [stack]
application = AuthMiddlewareStack(
    URLRouter(
        [
            path("ws/profile/", ProfileConsumer.as_asgi()),
            path("ws/login/", LoginConsumer.as_asgi()),
        ]
    )
)
# [/stack]
