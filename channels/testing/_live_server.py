"""The server process of :class:`~channels.testing.ChannelsLiveServerTestCase`.

``python -m channels.testing._live_server --host H [--port P] --backend B
[--static-wrapper PATH] [--debug] [--ping-interval S] [--ping-timeout S] --ready-fd N``:
sets Django up from ``DJANGO_SETTINGS_MODULE``, points it at the test databases, serves
``ASGI_APPLICATION`` on port ``P`` of ``H`` (a free one by default; a given one lets a
test restart the server where its clients reconnect) and writes
``CHANNELS_LIVE_SERVER_READY <url>`` to ``--ready-fd`` once it accepts connections.
SIGTERM stops it gracefully.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import django
from django.conf import settings
from django.utils.module_loading import import_string

from channels.serving import add_keepalive_arguments


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m channels.testing._live_server")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--backend", choices=["asyncio", "trio"], required=True)
    parser.add_argument("--static-wrapper")
    parser.add_argument("--debug", action="store_true")
    parser.add_argument("--ready-fd", type=int, required=True)
    add_keepalive_arguments(parser)
    options = parser.parse_args(argv)

    django.setup(set_prefix=False)
    # Before anything opens a connection: connections read the settings when first used.
    from .live import READY, make_application, set_database_connection

    set_database_connection()
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, options.host]
    settings.DEBUG = options.debug

    from channels.serving import serve

    application = make_application(static_wrapper=_load_wrapper(options.static_wrapper))
    serve(
        application,
        bind=[f"{options.host}:{options.port}"],
        backend=options.backend,
        ping_interval=options.ping_interval,
        ping_timeout=options.ping_timeout,
        on_ready=lambda addresses: _report_ready(options.ready_fd, f"{READY} {addresses[0]}\n"),
    )


def _report_ready(fd: int, line: str) -> None:
    with open(fd, "w") as pipe:
        pipe.write(line)


def _load_wrapper(path: str | None) -> Any:
    return None if path is None else import_string(path)


if __name__ == "__main__":
    main()
