"""``manage.py runserver [addrport] [--backend asyncio|trio] [--noreload]``: the project's
``ASGI_APPLICATION`` on hypercorn, for development.

It replaces Django's ``runserver`` when ``"channels"`` comes before
``django.contrib.staticfiles`` in ``INSTALLED_APPS`` (Django takes a command from the
first app that has it). It extends staticfiles' command when that app is installed, so
``--nostatic`` and ``--insecure`` keep working, and Django's otherwise, so address
parsing, ``--ipv6``, ``--skip-checks`` and the autoreloader are Django's own.

Requests and WebSocket events are logged to the ``django.channels.server`` logger (as
with daphne's ``runserver``), which Django's default logging prints when ``DEBUG`` is on.

SIGINT and SIGTERM stop the server gracefully (open WebSockets get a 1001 close frame)
with ``--noreload``, and within about six seconds even if a client stopped reading (what
is left after the 5 s graceful timeout is aborted). ``--ping-interval`` and
``--ping-timeout`` (daphne's names and defaults, 20 and 30 seconds) ping open WebSockets
and drop those whose peer stopped answering. Under the autoreloader, stopping is
Django's: the reloading parent process ends the server process it watches.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
import threading
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.apps import apps
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, CommandParser
from django.core.management.commands.runserver import Command as DjangoRunserver
from django.db import connections
from django.utils import autoreload

from channels.routing import get_default_application
from channels.serving import add_keepalive_arguments, serve
from channels.types import ASGIApp

if TYPE_CHECKING:
    BaseRunserver = DjangoRunserver
elif apps.is_installed("django.contrib.staticfiles"):
    # Its --nostatic and --insecure options; its WSGI handler is never used here.
    from django.contrib.staticfiles.management.commands.runserver import (
        Command as BaseRunserver,
    )
else:
    BaseRunserver = DjangoRunserver

logger: logging.Logger = logging.getLogger("django.channels.server")

_BIND_ERRORS = {
    errno.EACCES: "You don't have permission to access that port.",
    errno.EADDRINUSE: "That port is already in use.",
    errno.EADDRNOTAVAIL: "That IP address can't be assigned to.",
}


class Command(BaseRunserver):
    help = (
        "Starts a development server for the project's ASGI_APPLICATION on hypercorn "
        "(HTTP and WebSocket), on asyncio or trio."
    )

    # Set by Django's handle() from the addrport argument.
    addr: str
    port: str
    _raw_ipv6: bool

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--backend",
            choices=["asyncio", "trio"],
            default="asyncio",
            help="Event loop to serve on (default: asyncio).",
        )
        add_keepalive_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        if not getattr(settings, "ASGI_APPLICATION", None):
            raise CommandError(
                "You have not set ASGI_APPLICATION, which is needed to run the server. "
                "Set it to the dotted path of your application, e.g. "
                "'myproject.asgi.application'."
            )
        if os.environ.get(autoreload.DJANGO_AUTORELOAD_ENV) != "true":
            # Fail here, with a clear message, rather than in the reloaded process, where
            # an import error leaves the reloader waiting for a file to change.
            self.load_application()
        super().handle(*args, **options)

    def load_application(self) -> ASGIApp:
        """The ``ASGI_APPLICATION``, or a :class:`CommandError` saying why it cannot load."""
        try:
            return get_default_application()
        except ImproperlyConfigured as exc:
            cause = f" ({exc.__cause__!r})" if exc.__cause__ is not None else ""
            raise CommandError(f"{exc}{cause}") from exc

    def get_application(self, options: dict[str, Any]) -> ASGIApp:
        """The application, behind the static files server when DEBUG (or ``--insecure``)
        and ``django.contrib.staticfiles`` is installed, unless ``--nostatic``."""
        application = self.load_application()
        if (
            apps.is_installed("django.contrib.staticfiles")
            and options.get("use_static_handler", True)
            and (settings.DEBUG or options.get("insecure_serving", False))
        ):
            from channels.staticfiles import StaticFilesWrapper

            return StaticFilesWrapper(application)
        return application

    def inner_run(self, *args: Any, **options: Any) -> None:
        autoreload.raise_last_exception()
        if not options["skip_checks"]:
            self.stdout.write("Performing system checks...\n\n")
            self.check(display_num_errors=True)
        self.check_migrations()
        for connection in connections.all(initialized_only=True):
            connection.close()

        application = self.get_application(options)
        host = f"[{self.addr}]" if self._raw_ipv6 else self.addr
        if host == "0":
            host = "0.0.0.0"
        backend = options["backend"]
        in_main_thread = threading.current_thread() is threading.main_thread()
        try:
            serve(
                application,
                bind=[f"{host}:{self.port}"],
                backend=backend,
                # Signal handlers can only be set in the main thread, which the
                # autoreloader keeps for itself.
                handle_signals=in_main_thread,
                root_path=getattr(settings, "FORCE_SCRIPT_NAME", None) or "",
                access_log=logger,
                ping_interval=options["ping_interval"],
                ping_timeout=options["ping_timeout"],
                on_ready=lambda addresses: self.announce(addresses[0], backend),
            )
        except OSError as exc:
            self.stderr.write(f"Error: {_BIND_ERRORS.get(exc.errno or 0, exc)}")
            # sys.exit would only end this thread under the autoreloader.
            os._exit(1)
        shutdown_message = options.get("shutdown_message", "")
        if shutdown_message:
            self.stdout.write(shutdown_message)

    def announce(self, url: str, backend: str) -> None:
        quit_command = "CTRL-BREAK" if sys.platform == "win32" else "CONTROL-C"
        now = datetime.now().strftime("%B %d, %Y - %X")
        self.stdout.write(
            f"{now}\n"
            f"Django version {self.get_version()}, using settings "
            f"{settings.SETTINGS_MODULE!r}\n"
            f"Starting ASGI development server (hypercorn on {backend}) at {url}/\n"
            f"Quit the server with {quit_command}."
        )
        self.stdout.flush()
