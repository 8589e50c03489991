"""What the model observer tests share: layers, databases, an observer, a listener.

Imported by tests/test_observers*.py (``from .observer_fixtures import *``-style names).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from django.test import override_settings

from channels.layers import channel_layers, get_channel_layer
from channels.observers import ModelObserver
from channels.types import ChannelLayer, Message

from .testapp.models import Article

# Every database an observer test may touch; pytest-django creates them once per session.
DATABASES = ["default", "other", "postgres"]

django_db = pytest.mark.django_db(transaction=True, databases=DATABASES)


@pytest.fixture(params=["memory", "redis"])
def layer_kind(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def layer(layer_kind: str, request: pytest.FixtureRequest) -> Iterator[ChannelLayer]:
    """The default layer: in-memory, or Redis (the shared server, a prefix of the test's)."""
    if layer_kind == "memory":
        config: dict[str, Any] = {"BACKEND": "channels.layers.InMemoryChannelLayer"}
    else:
        redis_url = request.getfixturevalue("redis_url")
        prefix = request.getfixturevalue("prefix")
        config = {
            "BACKEND": "channels.layers.redis.RedisChannelLayer",
            "CONFIG": {"hosts": [redis_url], "prefix": prefix},
        }
    with override_settings(CHANNEL_LAYERS={"default": config}):
        channel_layers.backends = {}
        found = get_channel_layer()
        assert found is not None
        yield found
        channel_layers.backends = {}


@pytest.fixture(params=["default", "postgres"])
def alias(request: pytest.FixtureRequest) -> str:
    """The database an observed save goes to: SQLite or PostgreSQL."""
    return request.param  # type: ignore[no-any-return]


class ArticleObserver(ModelObserver):
    """Sections and labels are groups; every article is also in ``articles``."""

    model = Article

    def groups(self, instance: Article) -> list[str]:
        groups = ["articles", f"section-{instance.section}"]
        if instance.pk is not None:
            groups += [f"label-{pk}" for pk in instance.labels.values_list("pk", flat=True)]
        return groups

    def serialize(self, instance: Article, action: str) -> dict[str, Any]:
        return {"title": instance.title, "section": instance.section}


# Registered while an observer test runs, not while the rest of the suite saves Articles.
ArticleObserver.unregister()


@pytest.fixture
def observer() -> Iterator[type[ArticleObserver]]:
    ArticleObserver.register()
    yield ArticleObserver
    ArticleObserver.unregister()


class Listener:
    """A channel in some groups, read with a deadline."""

    def __init__(self, layer: ChannelLayer, channel: str) -> None:
        self.layer = layer
        self.channel = channel

    @classmethod
    async def create(cls, layer: ChannelLayer, *groups: str) -> Listener:
        listener = cls(layer, await layer.new_channel())
        for group in groups:
            await layer.group_add(group, listener.channel)
        return listener

    async def receive(self) -> Message:
        with anyio.fail_after(5):
            message = await self.layer.receive(self.channel)
        message.pop("__position__", None)
        return message

    async def receive_until(self, marker: str) -> list[Message]:
        """Everything up to a ``probe`` message with ``marker`` (the probe not included):
        what arrived before a send known to come later, so "nothing else" is checked
        without waiting for a timeout."""
        seen: list[Message] = []
        while True:
            message = await self.receive()
            if message == {"type": "probe", "marker": marker}:
                return seen
            seen.append(message)


def event(action: str, article: Article | int, **data: Any) -> Message:
    pk = article if isinstance(article, int) else article.pk
    return {"type": f"model.{action}", "model": "testapp.article", "pk": pk, "data": data}
