"""Real Redis servers for the Redis layer tests.

``CHANNELS_TEST_REDIS_URL`` names a server to use; otherwise a private ``redis-server`` is
started on a free port, in a temporary directory, persisting nothing. Tests that restart
the server always get a private one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from urllib.parse import urlsplit, urlunsplit

__all__ = ["RedisServer", "db_url"]


def db_url(url: str, db: int) -> str:
    """``url`` with its database number replaced by ``db``."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", "", ""))


class RedisServer:
    """A ``redis-server`` of our own, which tests may stop and restart on its port."""

    def __init__(self) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            raise RuntimeError(
                "The Redis layer tests need a Redis server: install redis-server (apt-get "
                "install redis-server) or set CHANNELS_TEST_REDIS_URL=redis://host:port/0"
            )
        self.directory = tempfile.mkdtemp(prefix="channels-redis-test-")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.socket_path = os.path.join(self.directory, "redis.sock")
        self.unix_url = f"unix://{self.socket_path}?db=0"
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        assert self.binary is not None
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.directory,
                "--databases",
                "16",
                "--unixsocket",
                self.socket_path,
                "--unixsocketperm",
                "700",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def restart(self, *, persist: bool) -> None:
        """Stop the server as an operator would, and start it again on the same port.

        With ``persist`` it is told ``SHUTDOWN SAVE``: it writes its data to a snapshot in
        its directory, which the new process loads, so keys survive. Without, it is told
        ``SHUTDOWN NOSAVE`` and any earlier snapshot is removed: it comes back empty, as a
        server without persistence does.
        """
        assert self.process is not None
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(b"SHUTDOWN SAVE\r\n" if persist else b"SHUTDOWN NOSAVE\r\n")
            with contextlib.suppress(OSError):
                sock.recv(64)  # the server closes the connection as it exits
        self.process.wait(timeout=10)
        self.process = None
        if not persist:
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(self.directory, "dump.rdb"))
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


def shared_url() -> tuple[str, RedisServer | None]:
    """The server most tests use, and the private server to stop afterwards, if any."""
    url = os.environ.get("CHANNELS_TEST_REDIS_URL")
    if url:
        return url, None
    server = RedisServer()
    return server.url, server
