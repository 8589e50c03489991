"""``manage.py runworker CHANNEL [CHANNEL ...]``: run the project's application for
messages on the given channels, on asyncio or trio."""

from __future__ import annotations

import logging
from typing import Any

from django.core.management import BaseCommand, CommandError, CommandParser

from channels import DEFAULT_CHANNEL_LAYER
from channels.layers import get_channel_layer
from channels.routing import get_default_application
from channels.worker import Worker

logger: logging.Logger = logging.getLogger("django.channels.worker")


class Command(BaseCommand):
    help = "Runs the ASGI_APPLICATION for messages arriving on the given channels."
    leave_locale_alone = True
    worker_class = Worker

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--layer",
            dest="layer",
            default=DEFAULT_CHANNEL_LAYER,
            help="Channel layer alias to use, if not the default.",
        )
        parser.add_argument(
            "--backend",
            choices=["asyncio", "trio"],
            default="asyncio",
            help="Event loop to run on (default: asyncio).",
        )
        parser.add_argument("channels", nargs="+", help="Channels to listen on.")

    def handle(self, *args: Any, **options: Any) -> None:
        self.verbosity: int = options.get("verbosity", 1)
        channel_layer = get_channel_layer(options["layer"])
        if channel_layer is None:
            raise CommandError(
                f"Channel layer {options['layer']!r} is not configured: add it to "
                "CHANNEL_LAYERS in your settings."
            )
        logger.info(
            "Running worker for channels %s on %s", options["channels"], options["backend"]
        )
        worker = self.worker_class(
            application=get_default_application(),
            channels=options["channels"],
            channel_layer=channel_layer,
        )
        worker.run(backend=options["backend"])
        logger.info("Worker stopped")
