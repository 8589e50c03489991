"""INTERIM stand-in for channels.testing.ChannelsLiveServerTestCase (deleted when it lands):
hypercorn on asyncio in a subprocess, pointed at the test database."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from django.db import connections
from django.test import TransactionTestCase

SERVER = """
import asyncio, os, sys
os.environ["DJANGO_SETTINGS_MODULE"] = "mysite.settings"
from django.conf import settings
settings.DATABASES["default"]["NAME"] = sys.argv[1]
from hypercorn.config import Config
from mysite.asgi import application
config = Config()
config.bind = [f"localhost:{sys.argv[2]}"]
if sys.argv[3] == "trio":
    import trio
    from hypercorn.trio import serve
    trio.run(serve, application, config)
else:
    from hypercorn.asyncio import serve
    asyncio.run(serve(application, config))
"""


class ChannelsLiveServerTestCase(TransactionTestCase):
    host = "localhost"
    server_backend = "asyncio"
    _process: Any

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        with socket.socket() as probe:
            probe.bind(("localhost", 0))
            cls._port = probe.getsockname()[1]
        cls._process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                SERVER,
                str(connections["default"].settings_dict["NAME"]),
                str(cls._port),
                cls.server_backend,
            ],
            cwd=Path(__file__).resolve().parent.parent,
            env={**os.environ, "PYTHONPATH": "."},
        )
        for _ in range(200):
            try:
                socket.create_connection(("localhost", cls._port), timeout=1).close()
                break
            except OSError:
                if cls._process.poll() is not None:
                    raise RuntimeError("interim server died") from None
                time.sleep(0.05)

    @classmethod
    def tearDownClass(cls) -> None:
        cls._process.terminate()
        cls._process.wait()
        super().tearDownClass()

    @property
    def live_server_url(self) -> str:
        return f"http://localhost:{self._port}"
