"""``manage.py save_article SECTION TITLE``: a save from a process with no event loop."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from tests.testapp.models import Article


class Command(BaseCommand):
    help = "Create an Article (tests/test_observers_integration.py: saves from a command)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("section")
        parser.add_argument("title")
        parser.add_argument("--database", default="default")

    def handle(self, *args: Any, **options: Any) -> None:
        article = Article.objects.using(options["database"]).create(
            section=options["section"], title=options["title"]
        )
        self.stdout.write(str(article.pk))
