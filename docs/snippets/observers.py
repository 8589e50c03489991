"""Model observers from docs/topics/observers.md (on the test app's Article model)."""

from typing import Any

from django.apps import AppConfig
from django.core.exceptions import PermissionDenied
from django.db import transaction

from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.observers import AsyncObserverMixin, ModelObserver
from tests.testapp.models import Article


# [observer]
class ArticleObserver(ModelObserver):
    model = Article

    def groups(self, instance: Article) -> list[str]:
        """Which groups care about this instance, as it is now."""
        return [f"section-{instance.section}"]

    def serialize(self, instance: Article, action: str) -> dict[str, Any]:
        """What they receive (action: "created", "updated" or "deleted")."""
        return {"id": instance.pk, "title": instance.title}

    def subscription_groups(self, **filters: Any) -> list[str]:
        """The groups a consumer joins with subscribe(ArticleObserver, section=...)."""
        return [f"section-{filters['section']}"]


# [/observer]

# Registered by the tests that use it, not by importing the docs.
ArticleObserver.unregister()


# [ready]
class NewsConfig(AppConfig):
    name = "news"

    def ready(self) -> None:
        from . import observers  # noqa: F401  # type: ignore[attr-defined]


# [/ready]


def retitle_section(section: str) -> None:
    # [notify]
    with transaction.atomic():
        Article.objects.filter(section=section).update(title="[removed]")
        ArticleObserver.notify(Article.objects.filter(section=section), "updated")
    # [/notify]


# [consumer]
class SectionConsumer(AsyncObserverMixin, AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        section = self.scope["url_route"]["kwargs"]["section"]
        try:
            # Before accepting: once the client is told it is connected, it hears everything.
            await self.subscribe(ArticleObserver, section=section)
        except PermissionDenied:
            await self.close()  # rejects the handshake (HTTP 403)
            return
        await self.accept()


# [/consumer]


class RecoveringConsumer(AsyncObserverMixin, AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        await self.accept()
        section = self.scope["url_route"]["kwargs"]["section"]
        last_position = self.scope["url_route"]["kwargs"].get("after")
        # [after]
        subscription = await self.subscribe(ArticleObserver, section=section, after=last_position)
        if not subscription.recovered:
            await self.send_json({"reload": True})  # history no longer covers the gap
        # [/after]
