"""Model observers end to end: consumers, the permission hook, and every place a save
commits from (a sync consumer, an async consumer through the async ORM, a sync view
and an async view served by channels.http, a management command with no event loop)."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import PermissionDenied
from django.core.management import call_command
from django.test import override_settings

from channels.concurrency import async_to_sync
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer, JsonWebsocketConsumer
from channels.http import ASGIHandler
from channels.layers import channel_layers
from channels.observers import AsyncObserverMixin, ObserverMixin
from channels.testing import HttpCommunicator, WebsocketCommunicator
from channels.types import ChannelLayer

from .observer_fixtures import (
    ArticleObserver,
    Listener,
    alias,
    django_db,
    event,
    layer,
    layer_kind,
    observer,
)
from .testapp.models import Article

__all__ = ["alias", "layer", "layer_kind", "observer"]  # fixtures, used by name

pytestmark = django_db


class SectionObserver(ArticleObserver):
    """Subscribers by section; banned users may not subscribe, nobody sees secrets."""

    model = Article

    def subscription_groups(self, **filters: Any) -> list[str]:
        return [f"section-{filters['section']}"]

    def has_permission(self, user: Any, action: str, instance: Any) -> bool:
        if getattr(user, "banned", False):
            return False
        if action == "subscribe":
            return instance is None or instance.section != "closed"
        return not instance.title.startswith("secret")


SectionObserver.unregister()


@pytest.fixture
def section_observer() -> Any:
    SectionObserver.register()
    yield SectionObserver
    SectionObserver.unregister()


class SectionConsumer(AsyncObserverMixin, AsyncJsonWebsocketConsumer):
    """Follows the section in its URL; creates articles on request, through the async ORM."""

    async def connect(self) -> None:
        await self.accept()
        section = self.scope["url_route"]["kwargs"]["section"]
        after = self.scope["url_route"]["kwargs"].get("after")
        try:
            subscription = await self.subscribe(SectionObserver, section=section, after=after)
        except PermissionDenied:
            await self.close(4003)
            return
        position = subscription.histories[f"section-{section}"].position
        await self.send_json(
            {
                "subscribed": subscription.groups,
                "recovered": subscription.recovered,
                "position": None if position is None else position.as_dict(),
            }
        )

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        await Article.objects.acreate(section=content["section"], title=content["title"])


class SyncArticleConsumer(ObserverMixin, JsonWebsocketConsumer):
    """The sync flavour: subscribes to one article, saves in its handler's thread."""

    def connect(self) -> None:
        self.accept()
        article = Article.objects.get(pk=self.scope["url_route"]["kwargs"]["pk"])
        self.subscribe(SectionObserver, article)

    def receive_json(self, content: Any, **kwargs: Any) -> None:
        article = Article.objects.get(pk=content["pk"])
        article.title = content["title"]
        article.save()


class BannedUser(AnonymousUser):
    banned = True


def connect(consumer: Any, user: Any = None, **kwargs: Any) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(consumer.as_asgi(), "/ws/")
    communicator.scope["url_route"] = {"kwargs": kwargs}
    communicator.scope["user"] = user or AnonymousUser()
    return communicator


async def test_a_consumer_receives_changes_and_the_permission_hook_filters_them(
    layer: ChannelLayer, section_observer: Any
) -> None:
    communicator = connect(SectionConsumer, section="news")
    await communicator.connect()
    hello = await communicator.receive_json_from()
    assert hello["subscribed"] == ["section-news"]

    # Saved by another connection's consumer, through the async ORM in its handler.
    writer = connect(SectionConsumer, section="sport")
    await writer.connect()
    await writer.receive_json_from()
    await writer.send_json_to({"section": "news", "title": "secret plans"})
    await writer.send_json_to({"section": "news", "title": "public"})
    first = await communicator.receive_json_from(timeout=5)
    article = await Article.objects.aget(title="public")
    assert first == event("created", article, title="public", section="news")

    await database_sync_to_async(lambda: Article.objects.filter(pk=article.pk).delete())()
    assert await communicator.receive_json_from(timeout=5) == event(
        "deleted", article, title="public", section="news"
    )
    await communicator.disconnect()
    await writer.disconnect()


async def test_a_refused_subscription_closes_the_connection(
    layer: ChannelLayer, section_observer: Any
) -> None:
    article = await Article.objects.acreate(section="closed", title="t")

    communicator = connect(SyncArticleConsumer, pk=article.pk)
    connected, _ = await communicator.connect()
    assert connected
    # The sync consumer lets PermissionDenied end it (the server closes the socket).
    with pytest.raises(PermissionDenied, match="subscribing to pk="):
        await communicator.receive_output(timeout=5)

    refused = connect(SectionConsumer, user=BannedUser(), section="news")
    await refused.connect()
    assert await refused.receive_output(timeout=5) == {"type": "websocket.close", "code": 4003}


async def test_a_sync_consumer_saves_in_its_thread_and_hears_the_change(
    layer: ChannelLayer, section_observer: Any
) -> None:
    article = await Article.objects.acreate(section="news", title="before")
    communicator = connect(SyncArticleConsumer, pk=article.pk)
    await communicator.connect()
    await communicator.send_json_to({"pk": article.pk, "title": "after"})
    assert await communicator.receive_json_from(timeout=5) == event(
        "updated", article, title="after", section="news"
    )
    await communicator.disconnect()


async def test_subscribing_after_a_position_replays_missed_changes(
    section_observer: Any,
) -> None:
    """With history kept for the observed groups, a reconnecting client recovers what it
    missed: the observer's group_send is all it takes."""
    config = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {"group_history": {"section-*": {"size": 10, "ttl": 60}}},
        }
    }
    with override_settings(CHANNEL_LAYERS=config):
        channel_layers.backends = {}
        first = connect(SectionConsumer, section="news")
        await first.connect()
        position = (await first.receive_json_from())["position"]
        await first.disconnect()

        for title in ["missed 1", "missed 2"]:
            await Article.objects.acreate(section="news", title=title)

        again = connect(SectionConsumer, section="news", after=position)
        await again.connect()
        hello = await again.receive_json_from()
        assert hello["recovered"] is True
        replayed = [await again.receive_json_from(timeout=5) for _ in range(2)]
        assert [m["data"]["title"] for m in replayed] == ["missed 1", "missed 2"]
        assert [m["__position__"]["offset"] for m in replayed] == [
            position["offset"] + 1,
            position["offset"] + 2,
        ]
        await again.disconnect()


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_view_served_by_channels_http_sends_after_its_commit(
    layer: ChannelLayer, observer: Any, settings: Any, kind: str
) -> None:
    settings.ROOT_URLCONF = "tests.observerviews"
    settings.ALLOWED_HOSTS = ["testserver"]
    settings.MIDDLEWARE = []
    news = await Listener.create(layer, "section-news")
    response = await HttpCommunicator(ASGIHandler(), "GET", f"/{kind}/news/").get_response(
        timeout=10
    )
    assert response["status"] == 200
    pk = int(response["body"])
    assert await news.receive() == event(
        "created", pk, title=f"from the {kind} view", section="news"
    )


@pytest.fixture
def sync_layer(layer_kind: str, request: pytest.FixtureRequest) -> Any:
    """The ``layer`` fixture from a sync test (it needs no event loop)."""
    return request.getfixturevalue("layer")


def test_a_management_command_sends_with_no_event_loop_running(
    sync_layer: ChannelLayer, alias: str, observer: Any
) -> None:
    """No loop anywhere: the commit's sends run on a short-lived one in a helper thread."""

    async def listen() -> str:
        return (await Listener.create(sync_layer, "section-news")).channel

    channel = async_to_sync(listen)()
    call_command("save_article", "news", "from a command", database=alias)

    async def receive() -> Any:
        message = await Listener(sync_layer, channel).receive()
        if hasattr(sync_layer, "close"):
            await sync_layer.close()
        return message

    message = async_to_sync(receive)()
    pk = Article.objects.using(alias).get().pk
    assert message == event("created", pk, title="from a command", section="news")
