"""``ChannelsLiveServerTestCase``: a ``TransactionTestCase`` with the project's ASGI
application served by hypercorn in a subprocess, on asyncio or trio.

The server is a separate Python process (``python -m channels.testing._live_server``),
started once per test class. It loads the same settings module (``DJANGO_SETTINGS_MODULE``)
and is pointed at the test databases, so rows a test commits are what the server sees.
Because the process starts fresh rather than being forked, settings changed in the test
process (``override_settings``) do not reach the server; the server's ``ALLOWED_HOSTS``
gets ``host`` added and its ``DEBUG`` follows the test process's, as with Django's
``LiveServerTestCase``.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, ClassVar, Literal

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from django.db.backends.base.creation import TEST_DATABASE_PREFIX
from django.test.testcases import TransactionTestCase
from django.test.utils import modify_settings

from channels.routing import get_default_application
from channels.types import ASGIApp

__all__ = [
    "TEST_DATABASE_PREFIX",
    "ChannelsLiveServerTestCase",
    "make_application",
    "set_database_connection",
]

#: The environment variable through which the test process tells the server process the
#: name of each test database (a JSON object, alias to name).
DATABASES_ENV = "CHANNELS_LIVE_SERVER_DATABASES"
#: The line the server process prints, followed by its URL, once it accepts connections.
READY = "CHANNELS_LIVE_SERVER_READY"
#: Seconds to wait for the server to start, or to stop after SIGTERM, before giving up.
PATIENCE = 60.0


def make_application(*, static_wrapper: Callable[[ASGIApp], ASGIApp] | None) -> ASGIApp:
    """The ``ASGI_APPLICATION``, wrapped in ``static_wrapper`` if one is given."""
    application = get_default_application()
    if static_wrapper is not None:
        application = static_wrapper(application)
    return application


def set_database_connection() -> None:
    """Point this process's database settings at the test databases.

    Called in the server process before any connection is opened. Names come from the
    test process when it started this one (so a ``--parallel`` suffix or ``--keepdb``
    name is honoured); otherwise, as in Channels, the default database's ``TEST NAME``,
    or ``TEST_DATABASE_PREFIX`` + its ``NAME``.
    """
    names = json.loads(os.environ.get(DATABASES_ENV) or "{}")
    if names:
        for alias, name in names.items():
            if alias in settings.DATABASES:
                settings.DATABASES[alias]["NAME"] = name
        return
    default: dict[str, Any] = settings.DATABASES["default"]
    test_name = default.get("TEST", {}).get("NAME")
    default["NAME"] = test_name or TEST_DATABASE_PREFIX + str(default["NAME"])


class ChannelsLiveServerTestCase(TransactionTestCase):
    """A ``TransactionTestCase`` with a live server for real HTTP and WebSocket clients
    (a browser through Selenium, ``websockets``, ``httpx``...).

    One hypercorn process per test class serves ``ASGI_APPLICATION`` on
    ``server_backend`` (``"asyncio"`` or ``"trio"``) at :attr:`live_server_url` and
    :attr:`live_server_ws_url`, with static files through ``static_wrapper`` when
    ``serve_static``. In ``tearDownClass`` it gets SIGTERM, so open WebSockets receive a
    close frame; it ends within about six seconds even if a client stopped reading (what
    is left after 5 s is aborted), and is killed only if it still does not stop.

    :raises ~django.core.exceptions.ImproperlyConfigured: in ``setUpClass``, if a database
        is an in-memory SQLite database, which another process cannot open.
    """

    host: ClassVar[str] = "localhost"
    serve_static: ClassVar[bool] = True
    server_backend: ClassVar[Literal["asyncio", "trio"]] = "asyncio"
    #: A class or callable wrapping the application to serve static files, or its dotted
    #: path; it must be importable in the server process.
    static_wrapper: ClassVar[Any] = "channels.staticfiles.StaticFilesWrapper"
    #: Seconds between the server's WebSocket pings, and how long one may go unanswered
    #: before the connection is dropped (daphne's ``--ping-interval``/``--ping-timeout``).
    ping_interval: ClassVar[float] = 20.0
    ping_timeout: ClassVar[float] = 30.0

    _server: ClassVar[_ServerProcess]
    _port: ClassVar[int]
    _live_server_modified_settings: ClassVar[modify_settings]

    @property
    def live_server_url(self) -> str:
        return f"http://{self.host}:{self._port}"

    @property
    def live_server_ws_url(self) -> str:
        return f"ws://{self.host}:{self._port}"

    @classmethod
    def setUpClass(cls) -> None:
        for connection in connections.all():
            if connection.vendor == "sqlite" and connection.is_in_memory_db():  # type: ignore[attr-defined]
                raise ImproperlyConfigured(
                    "ChannelsLiveServerTestCase can not be used with in memory databases: "
                    f"database {connection.alias!r} is in memory, and the live server runs "
                    "in another process. Give it a file, e.g. DATABASES[...]['TEST']"
                    "['NAME'] = 'test_db.sqlite3'."
                )
        if cls.server_backend not in ("asyncio", "trio"):
            raise ImproperlyConfigured(
                f"server_backend must be 'asyncio' or 'trio', got {cls.server_backend!r}"
            )
        super().setUpClass()
        cls._live_server_modified_settings = modify_settings(ALLOWED_HOSTS={"append": cls.host})
        cls._live_server_modified_settings.enable()
        try:
            cls._server = _ServerProcess(cls._server_arguments())
            cls._port = cls._server.wait_until_ready()
        except BaseException:
            cls._live_server_modified_settings.disable()
            super().tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        try:
            cls._server.stop()
        finally:
            cls._live_server_modified_settings.disable()
            super().tearDownClass()

    @classmethod
    def stop_live_server(cls, *, kill: bool = False) -> None:
        """Stop the live server in the middle of a test: gracefully (SIGTERM: WebSockets
        get a 1001 close frame), or with ``kill`` as a crash would (SIGKILL: connections
        just drop). :meth:`start_live_server` brings it back on the same port, so a test
        can check how clients reconnect.
        """
        if kill:
            cls._server.kill()
        else:
            cls._server.stop()

    @classmethod
    def start_live_server(cls) -> None:
        """Start the live server again after :meth:`stop_live_server`, on the same port;
        returns once it accepts connections.

        :raises RuntimeError: if it does not start (the port was taken meanwhile, say).
        """
        if cls._server.process.poll() is None:
            raise RuntimeError("The live server is running: stop_live_server() first.")
        cls._server = _ServerProcess([*cls._server_arguments(), "--port", str(cls._port)])
        cls._server.wait_until_ready()

    @classmethod
    def _server_arguments(cls) -> list[str]:
        arguments = ["--host", cls.host, "--backend", cls.server_backend]
        arguments += ["--ping-interval", str(cls.ping_interval)]
        arguments += ["--ping-timeout", str(cls.ping_timeout)]
        if cls.serve_static and cls.static_wrapper is not None:
            wrapper = cls.static_wrapper
            if not isinstance(wrapper, str):
                wrapper = f"{wrapper.__module__}.{wrapper.__qualname__}"
            arguments += ["--static-wrapper", wrapper]
        if settings.DEBUG:
            arguments.append("--debug")
        return arguments


class _ServerProcess:
    """The live server's process; it shares this process's stdout and stderr.

    It reports readiness on a pipe of its own, read with a timeout, so nothing here needs
    a thread to keep its output flowing.
    """

    def __init__(self, arguments: list[str]) -> None:
        names = {
            connection.alias: connection.settings_dict["NAME"] for connection in connections.all()
        }
        environment = {**os.environ, DATABASES_ENV: json.dumps(names, default=str)}
        environment.setdefault("DJANGO_SETTINGS_MODULE", str(settings.SETTINGS_MODULE))
        # The server imports the project as this process does.
        environment["PYTHONPATH"] = os.pathsep.join(filter(None, sys.path))
        self._ready, ready_writer = os.pipe()
        try:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "channels.testing._live_server",
                    *arguments,
                    "--ready-fd",
                    str(ready_writer),
                ],
                env=environment,
                pass_fds=(ready_writer,),
            )
        except BaseException:
            os.close(self._ready)
            raise
        finally:
            os.close(ready_writer)  # the child holds the only copy: EOF when it exits

    def wait_until_ready(self) -> int:
        """The port, once the server accepts connections.

        :raises RuntimeError: if the server exits or stays silent first.
        """
        received = b""
        deadline = time.monotonic() + PATIENCE
        try:
            while not received.endswith(b"\n"):
                remaining = deadline - time.monotonic()
                readable, _, _ = select.select([self._ready], [], [], max(remaining, 0))
                if not readable:
                    self.kill()
                    raise RuntimeError(f"The live server did not start within {PATIENCE:.0f}s.")
                chunk = os.read(self._ready, 256)
                if not chunk:
                    code = self.process.wait()
                    raise RuntimeError(
                        f"The live server exited with status {code} before it was ready "
                        "(its output is above)."
                    )
                received += chunk
        finally:
            os.close(self._ready)
        line = received.decode()
        if not line.startswith(READY):
            self.kill()
            raise RuntimeError(f"The live server reported {line!r} instead of its address.")
        return int(line.split()[1].rsplit(":", 1)[1])

    def stop(self) -> None:
        """SIGTERM, for a graceful stop; SIGKILL if it does not end in time."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=PATIENCE)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        self.process.wait()
