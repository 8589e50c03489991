"""Model observers: the group rule, transactions, databases, m2m, notify, bad input.

Real databases (SQLite and PostgreSQL) and real layers (in-memory and Redis), both
backends. Saves run in a worker thread through ``database_sync_to_async``, as a consumer's
would; "nothing else was sent" is checked by a probe sent later from the same thread,
which the listener must see next.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import pytest
from django.db import transaction
from django.test import override_settings

from channels.concurrency import async_to_sync
from channels.db import database_sync_to_async
from channels.exceptions import InvalidChannelLayerError
from channels.layers import channel_layers
from channels.observers import ModelObserver, registered_observers
from channels.observers._sending import queue_after_commit
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
from .testapp.models import Article, Label, Note

__all__ = ["alias", "layer", "layer_kind", "observer"]  # fixtures, used by name

pytestmark = django_db


class Abandon(Exception):
    """Raised to roll a transaction back."""


def probe(layer: ChannelLayer, group: str, marker: str) -> None:
    """From sync code: a message to ``group`` that follows whatever this thread sent."""
    async_to_sync(layer.group_send)(group, {"type": "probe", "marker": marker})


async def test_created_updated_deleted_follow_the_instance_between_groups(
    layer: ChannelLayer, alias: str, observer: Any
) -> None:
    everyone = await Listener.create(layer, "articles")
    news = await Listener.create(layer, "section-news")
    sport = await Listener.create(layer, "section-sport")

    article = await database_sync_to_async(
        lambda: Article.objects.using(alias).create(section="news", title="first")
    )()
    assert await everyone.receive() == event("created", article, title="first", section="news")
    assert await news.receive() == event("created", article, title="first", section="news")

    def retitle() -> None:
        article.title = "second"
        article.save(using=alias)

    await database_sync_to_async(retitle)()
    assert await everyone.receive() == event("updated", article, title="second", section="news")
    assert await news.receive() == event("updated", article, title="second", section="news")

    def move() -> None:
        article.section = "sport"
        article.save(using=alias)

    await database_sync_to_async(move)()
    # Left news (deleted), stayed in articles (updated), joined sport (created).
    assert await news.receive() == event("deleted", article, title="second", section="sport")
    assert await everyone.receive() == event("updated", article, title="second", section="sport")
    assert await sport.receive() == event("created", article, title="second", section="sport")

    pk = article.pk

    def delete() -> None:
        article.delete()
        probe(layer, "section-news", "after delete")

    await database_sync_to_async(delete)()
    assert await sport.receive() == event("deleted", pk, title="second", section="sport")
    assert await everyone.receive() == event("deleted", pk, title="second", section="sport")
    # news had nothing more to hear.
    assert await news.receive_until("after delete") == []


async def test_an_edit_made_in_memory_is_judged_against_the_stored_row(
    layer: ChannelLayer, observer: Any
) -> None:
    """The old groups come from the row in the database, not the edited instance."""
    news = await Listener.create(layer, "section-news")
    sport = await Listener.create(layer, "section-sport")
    article = await database_sync_to_async(
        lambda: Article.objects.create(section="news", title="a")
    )()
    await news.receive()

    def move_a_fresh_copy() -> None:
        copy = Article.objects.get(pk=article.pk)
        copy.section = "sport"
        copy.save()

    await database_sync_to_async(move_a_fresh_copy)()
    assert (await news.receive())["type"] == "model.deleted"
    assert (await sport.receive())["type"] == "model.created"


async def test_a_rolled_back_transaction_sends_nothing(
    layer: ChannelLayer, alias: str, observer: Any
) -> None:
    news = await Listener.create(layer, "section-news")

    def fail_after_saving() -> None:
        with contextlib.suppress(Abandon), transaction.atomic(using=alias):
            Article.objects.using(alias).create(section="news", title="rolled back")
            raise Abandon("abandon")
        probe(layer, "section-news", "after rollback")

    await database_sync_to_async(fail_after_saving)()
    assert await news.receive_until("after rollback") == []
    assert not await Article.objects.using(alias).aexists()


async def test_messages_wait_for_the_commit(
    layer: ChannelLayer, alias: str, observer: Any
) -> None:
    news = await Listener.create(layer, "section-news")

    def save_in_a_transaction() -> None:
        with transaction.atomic(using=alias):
            Article.objects.using(alias).create(section="news", title="pending")
            probe(layer, "section-news", "inside the transaction")

    await database_sync_to_async(save_in_a_transaction)()
    assert await news.receive_until("inside the transaction") == []
    assert (await news.receive())["data"]["title"] == "pending"


async def test_a_rolled_back_savepoint_drops_only_its_own_changes(
    layer: ChannelLayer, alias: str, observer: Any
) -> None:
    news = await Listener.create(layer, "section-news")

    def nested() -> None:
        with transaction.atomic(using=alias):
            Article.objects.using(alias).create(section="news", title="outer")
            with contextlib.suppress(Abandon), transaction.atomic(using=alias):
                Article.objects.using(alias).create(section="news", title="inner")
                raise Abandon("roll back the savepoint")
            with transaction.atomic(using=alias):
                Article.objects.using(alias).create(section="news", title="inner kept")
        probe(layer, "section-news", "after commit")

    await database_sync_to_async(nested)()
    titles = [m["data"]["title"] for m in await news.receive_until("after commit")]
    assert titles == ["outer", "inner kept"]


async def test_each_database_commits_on_its_own(layer: ChannelLayer, observer: Any) -> None:
    """Two transactions on two databases (SQLite and PostgreSQL, and two SQLites): each
    one's messages go when it commits, and a rollback of one drops only its own."""
    news = await Listener.create(layer, "section-news")

    def interleaved(first: str, second: str) -> None:
        with transaction.atomic(using=first):
            Article.objects.using(first).create(section="news", title=f"{first} kept")
            with transaction.atomic(using=second):
                Article.objects.using(second).create(section="news", title=f"{second} kept")
            probe(layer, "section-news", f"{second} committed")
        with contextlib.suppress(Abandon), transaction.atomic(using=second):
            with transaction.atomic(using=first):
                Article.objects.using(first).create(section="news", title=f"{first} kept too")
            Article.objects.using(second).create(section="news", title=f"{second} dropped")
            raise Abandon("roll back the second database only")
        probe(layer, "section-news", "done")

    for first, second in [("default", "postgres"), ("postgres", "other")]:
        await database_sync_to_async(interleaved)(first, second)
        titles = [m["data"]["title"] for m in await news.receive_until(f"{second} committed")]
        assert titles == [f"{second} kept"]
        titles = [m["data"]["title"] for m in await news.receive_until("done")]
        assert titles == [f"{first} kept", f"{first} kept too"]


async def test_many_to_many_changes_move_the_instance_between_groups(
    layer: ChannelLayer, alias: str, observer: Any
) -> None:
    def setup() -> tuple[Article, Label, Label]:
        db = Article.objects.using(alias)
        return (
            db.create(section="news", title="a"),
            Label.objects.using(alias).create(name="x"),
            Label.objects.using(alias).create(name="y"),
        )

    article, x, y = await database_sync_to_async(setup)()
    news = await Listener.create(layer, "section-news")
    label_x = await Listener.create(layer, f"label-{x.pk}")
    label_y = await Listener.create(layer, f"label-{y.pk}")
    a = article.pk

    await database_sync_to_async(lambda: article.labels.add(x))()
    assert await label_x.receive() == event("created", a, title="a", section="news")
    assert await news.receive() == event("updated", a, title="a", section="news")

    # The other side of the relation: the label's instance changed, the article's groups did.
    await database_sync_to_async(lambda: y.articles.add(article))()
    assert (await label_y.receive())["type"] == "model.created"
    assert (await label_x.receive())["type"] == "model.updated"
    assert (await news.receive())["type"] == "model.updated"

    await database_sync_to_async(lambda: article.labels.remove(x))()
    assert (await label_x.receive())["type"] == "model.deleted"
    assert (await label_y.receive())["type"] == "model.updated"
    assert (await news.receive())["type"] == "model.updated"

    # A reverse clear gives no pk set: the related articles are looked up before it.
    def clear() -> None:
        y.articles.clear()
        probe(layer, f"label-{x.pk}", "cleared")

    await database_sync_to_async(clear)()
    assert (await label_y.receive())["type"] == "model.deleted"
    assert (await news.receive())["type"] == "model.updated"
    assert await label_x.receive_until("cleared") == []


async def test_a_rolled_back_many_to_many_change_sends_nothing(
    layer: ChannelLayer, observer: Any
) -> None:
    article = await Article.objects.acreate(section="news", title="a")
    x = await Label.objects.acreate(name="x")
    label_x = await Listener.create(layer, f"label-{x.pk}")

    def add_then_roll_back() -> None:
        with contextlib.suppress(Abandon), transaction.atomic():
            article.labels.add(x)
            raise Abandon("abandon")
        probe(layer, f"label-{x.pk}", "rolled back")

    await database_sync_to_async(add_then_roll_back)()
    assert await label_x.receive_until("rolled back") == []


async def test_notify_announces_changes_no_signal_reported(
    layer: ChannelLayer, alias: str, observer: Any
) -> None:
    news = await Listener.create(layer, "section-news")

    def bulk() -> list[int]:
        db = Article.objects.using(alias)
        created = db.bulk_create([Article(section="news", title=t) for t in "ab"])
        probe(layer, "section-news", "bulk_create is silent")
        ArticleObserver.notify(db.filter(pk__in=[a.pk for a in created]), "created")
        with transaction.atomic(using=alias):
            db.filter(section="news").update(title="renamed")
            ArticleObserver.notify(db.filter(section="news").order_by("pk"), "updated")
            probe(layer, "section-news", "update not yet committed")
        return [a.pk for a in db.order_by("pk")]

    pks = await database_sync_to_async(bulk)()
    assert await news.receive_until("bulk_create is silent") == []
    assert await news.receive_until("update not yet committed") == [
        event("created", pk, title=t, section="news") for pk, t in zip(pks, "ab", strict=True)
    ]
    assert [await news.receive() for _ in pks] == [
        event("updated", pk, title="renamed", section="news") for pk in pks
    ]


async def test_notify_refuses_bad_input(observer: Any) -> None:
    note = await Note.objects.acreate(text="not an article")
    with pytest.raises(ValueError, match="action must be one of"):
        ArticleObserver.notify([], "changed")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"observes testapp\.Article, got Note"):
        await database_sync_to_async(ArticleObserver.notify)(note, "updated")  # type: ignore[arg-type]


async def test_unregister_stops_the_messages_and_redefining_replaces(
    layer: ChannelLayer, observer: Any
) -> None:
    news = await Listener.create(layer, "section-news")
    ArticleObserver.unregister()

    def save() -> None:
        Article.objects.create(section="news", title="unobserved")
        probe(layer, "section-news", "saved")

    await database_sync_to_async(save)()
    assert await news.receive_until("saved") == []
    with pytest.raises(LookupError, match="ArticleObserver is not registered"):
        ArticleObserver.registered()

    # A class defined again under the same module and name (a reload) replaces the first.
    for _ in range(2):

        class Twice(ModelObserver):
            model = "testapp.Article"  # a lazy reference works too

            def groups(self, instance: Any) -> list[str]:
                return ["section-news"]

    try:
        await database_sync_to_async(save)()
        assert [m["type"] for m in await news.receive_until("saved")] == ["model.created"]
        assert sum(type(o).__name__ == "Twice" for o in registered_observers()) == 1
    finally:
        Twice.unregister()


async def test_message_types_can_be_renamed(layer: ChannelLayer) -> None:
    class Renamed(ModelObserver):
        model = Article
        message_types = {
            "created": "article.new",
            "updated": "article.changed",
            "deleted": "article.gone",
        }

        def groups(self, instance: Any) -> list[str]:
            return ["renamed"]

    try:
        listener = await Listener.create(layer, "renamed")
        article = await database_sync_to_async(
            lambda: Article.objects.create(section="s", title="t")
        )()
        await database_sync_to_async(article.delete)()
        first, second = await listener.receive(), await listener.receive()
        assert (first["type"], second["type"]) == ("article.new", "article.gone")
        # The default serialize(): every field, as Django's JSON serializer writes it.
        assert first["data"] == {"section": "s", "title": "t", "labels": []}
    finally:
        Renamed.unregister()


def test_malformed_observer_classes_are_refused_when_defined() -> None:
    with pytest.raises(TypeError, match=r"model must be a model class or 'app_label.ModelName'"):

        class NotAModel(ModelObserver):
            model = dict  # type: ignore[assignment]

            def groups(self, instance: Any) -> list[str]:
                return []

    with pytest.raises(TypeError, match="must map exactly"):

        class MissingType(ModelObserver):
            model = Article
            message_types = {"created": "a", "updated": "b"}  # type: ignore[dict-item]

            def groups(self, instance: Any) -> list[str]:
                return []

    with pytest.raises(TypeError, match="three different non-empty strings"):

        class SameTypes(ModelObserver):
            model = Article
            message_types = {"created": "a", "updated": "a", "deleted": "a"}

            def groups(self, instance: Any) -> list[str]:
                return []

    with pytest.raises(TypeError, match="abstract"):

        class NoGroups(ModelObserver):  # type: ignore[misc]
            model = Article

    assert not [o for o in registered_observers() if isinstance(o, ModelObserver)]


@pytest.mark.parametrize("fault", ["group name", "data"])
async def test_bad_groups_or_data_fail_the_save_and_lose_nothing(
    layer: ChannelLayer, fault: str
) -> None:
    class Faulty(ModelObserver):
        model = Article

        def groups(self, instance: Any) -> list[str]:
            return ["bad group name!"] if fault == "group name" else ["fine"]

        def serialize(self, instance: Any, action: str) -> Any:
            return {"when": object()}

    match = "Group name must be" if fault == "group name" else "not JSON-serialisable"

    def save() -> None:
        with transaction.atomic():
            Article.objects.create(section="s", title="t")

    try:
        with pytest.raises(TypeError, match=match):
            await database_sync_to_async(save)()
        assert not await Article.objects.aexists()
    finally:
        Faulty.unregister()


async def test_a_missing_layer_fails_the_save(observer: Any) -> None:
    def save() -> None:
        with transaction.atomic():
            Article.objects.create(section="s", title="t")

    with override_settings(CHANNEL_LAYERS={}):
        channel_layers.backends = {}
        with pytest.raises(InvalidChannelLayerError, match="ArticleObserver sends to channel"):
            await database_sync_to_async(save)()
    assert not await Article.objects.aexists()


async def test_sending_from_an_event_loop_thread_is_refused(layer: ChannelLayer) -> None:
    with pytest.raises(RuntimeError, match="cannot send from a thread running an event loop"):
        queue_after_commit(layer, [("g", {"type": "x"})], "default")


async def test_a_send_that_fails_after_the_commit_is_logged(
    observer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The row is committed whatever the layer does; the failure is reported, not raised."""
    config = {"default": {"BACKEND": f"{__name__}.BrokenLayer"}}
    with override_settings(CHANNEL_LAYERS=config):
        channel_layers.backends = {}
        with caplog.at_level(logging.ERROR, logger="channels.observers"):
            await database_sync_to_async(
                lambda: Article.objects.create(section="news", title="t")
            )()
    assert await Article.objects.acount() == 1
    assert "groups ['articles', 'section-news'] failed" in caplog.text
    assert "layer is down" in caplog.text


from channels.layers import InMemoryChannelLayer  # noqa: E402


class BrokenLayer(InMemoryChannelLayer):
    async def group_send(self, group: str, message: Any) -> None:
        raise ConnectionError("layer is down")
