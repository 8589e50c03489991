"""Database access from docs/topics/databases.md."""

from django.contrib.auth import get_user_model

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer, WebsocketConsumer


# [sync-consumer]
class SyncUserCountConsumer(WebsocketConsumer):
    def connect(self) -> None:
        self.accept()
        # Sync handlers run in the database thread: the ORM can be used directly.
        self.send(text_data=str(get_user_model().objects.count()))


# [/sync-consumer]


# [async-consumer]
@database_sync_to_async
def count_users() -> int:
    return get_user_model().objects.count()


class UserCountConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        await self.accept()
        await self.send(text_data=str(await count_users()))


# [/async-consumer]


# [async-orm]
class AsyncOrmUserCountConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        await self.accept()
        await self.send(text_data=str(await get_user_model().objects.acount()))


# [/async-orm]
