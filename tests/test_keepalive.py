"""Keep-alive connections after a response, on real servers and both backends.

A client that makes one request and then leaves its connection open must not cost the
server a socket for ever: the server closes the idle connection after its keep-alive
timeout, and logs the request. Each case here serves tests/servedproject (a Django sync
view, Django streaming views, an ``AsyncHttpConsumer``) in a subprocess:

- ``hypercorn -k asyncio|trio --keep-alive 1 --access-logfile -``;
- ``python -m channels.serving -k asyncio|trio`` (hypercorn's default timeout, 5 s);
- ``manage.py runserver --backend asyncio|trio``, whose access lines are Channels'.

On trio, a cancellation of ours used to land inside hypercorn's ``send()`` of the last
body part, before it armed the connection's idle timer: the connection stayed open and
the access line around that ``send()`` was skipped.
"""

from __future__ import annotations

import http.client
import os
import re
import resource
import selectors
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest

from .server_process import PATIENCE, ROOT, ServerProcess

SETTINGS = "tests.servedproject.settings"
#: One path per kind of HTTP application the project has: a sync view, an async and a
#: sync stream, a consumer.
PATHS = ("/hello/", "/stream/", "/stream/sync/", "/consumer/")
#: The same less the async stream, which takes its time (50 ms).
QUICK_PATHS = ("/hello/", "/stream/sync/", "/consumer/")
#: Descriptors a server may open lazily after its first requests (a thread, a database).
SLACK = 10


@dataclass
class Served:
    launcher: str
    backend: str
    process: ServerProcess
    port: int

    def request(self, path: str) -> socket.socket:
        """The connection after one complete request, left open by the client."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=PATIENCE)
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        assert response.status == 200, (path, response.status)
        assert response.getheader("connection") is None  # the server keeps it alive
        assert connection.sock is not None
        return connection.sock

    def open_descriptors(self) -> int:
        """File descriptors held by the server and its worker processes."""
        return sum(len(os.listdir(f"/proc/{pid}/fd")) for pid in _process_tree(self.process))


def _process_tree(process: ServerProcess) -> list[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue  # it ended meanwhile
            parents[int(entry)] = int(stat.rpartition(")")[2].split()[1])
    tree = [process.process.pid]
    for pid in tree:
        tree.extend(child for child, parent in parents.items() if parent == pid)
    return tree


def _command(launcher: str, backend: str) -> list[str]:
    if launcher == "hypercorn":
        return [
            *("-m", "hypercorn", "--worker-class", backend, "--keep-alive", "1"),
            *("--access-logfile", "-", "--bind", "127.0.0.1:0"),
            "tests.servedproject.asgi:application",
        ]
    if launcher == "serving":
        return [
            *("-m", "channels.serving", "--backend", backend, "--bind", "127.0.0.1:0"),
            *("--access-log", "-", "tests.servedproject.asgi:application"),
        ]
    return ["-m", "django", "runserver", "127.0.0.1:0", "--noreload", "--backend", backend]


#: The line each launcher prints with its address.
BANNERS = {
    "hypercorn": "Running on http://",
    "serving": "Listening on http://",
    "runserver": "Starting ASGI development server",
}


@pytest.fixture(
    scope="module",
    params=[
        (launcher, backend)
        for launcher in ("hypercorn", "serving", "runserver")
        for backend in ("asyncio", "trio")
    ],
    ids=lambda param: "-".join(param),
)
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    launcher, backend = request.param
    database = tmp_path_factory.mktemp(f"keepalive-{launcher}-{backend}") / "db.sqlite3"
    env = {"SERVEDPROJECT_DB": str(database)}
    subprocess.run(
        [sys.executable, "-m", "django", "migrate", "--run-syncdb", "--verbosity", "0"],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": SETTINGS, "PYTHONPATH": str(ROOT), **env},
        check=True,
        timeout=120,
    )
    with ServerProcess(_command(launcher, backend), settings=SETTINGS, env=env) as process:
        banner = process.wait_for_line(BANNERS[launcher])
        match = re.search(r"http://127\.0\.0\.1:(\d+)", banner)
        assert match is not None, banner
        served = Served(launcher, backend, process, int(match[1]))
        for path in PATHS:  # warm up: what a server opens once is not per client
            served.request(path).close()
        _wait_for_access_lines(served, PATHS)
        yield served


def _access_line(launcher: str, path: str) -> str:
    if launcher == "hypercorn":
        return f'"GET {path} 1.1" 200 '
    # runserver and python -m channels.serving --access-log write runserver's lines.
    return f"HTTP GET {path} 200 ["


def _wait_for_access_lines(served: Served, paths: Sequence[str]) -> None:
    """One access line per request, in order (requests were made one after the other)."""
    for path in paths:
        served.process.wait_for_line(_access_line(served.launcher, path))


def _still_open(sockets: list[socket.socket], patience: float) -> list[socket.socket]:
    """Waits until the server has closed each socket (``recv`` returns ``b""``), at most
    ``patience`` seconds; closes those it closed and returns the others."""
    with selectors.DefaultSelector() as selector:
        for sock in sockets:
            selector.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + patience
        while selector.get_map() and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=0.2):
                ready = key.fileobj
                assert isinstance(ready, socket.socket)
                assert ready.recv(1) == b"", "the server sent bytes nobody asked for"
                selector.unregister(ready)
                ready.close()
        return [cast(socket.socket, key.fileobj) for key in selector.get_map().values()]


def test_idle_connections_are_closed_by_the_server_and_each_request_is_logged(
    served: Served,
) -> None:
    paths = [path for path in PATHS for _ in range(10)]
    sockets = [served.request(path) for path in paths]
    _wait_for_access_lines(served, paths)
    left_open = _still_open(sockets, PATIENCE)
    for sock in left_open:
        sock.close()
    assert not left_open, f"{len(left_open)} of {len(sockets)} idle connections left open"


# runserver serves through channels.serving, which is measured here.
@pytest.mark.parametrize(
    "served",
    [
        (launcher, backend)
        for launcher in ("hypercorn", "serving")
        for backend in ("asyncio", "trio")
    ],
    ids=lambda param: "-".join(param),
    indirect=True,
)
@pytest.mark.timeout(180)
def test_a_thousand_one_request_clients_cost_no_socket_each(served: Served) -> None:
    connections = 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2 * connections:
        if hard != resource.RLIM_INFINITY and hard < 2 * connections:
            pytest.fail(f"needs {2 * connections} open files, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (2 * connections, hard))
    try:
        before = served.open_descriptors()
        sockets: list[socket.socket] = []
        for number in range(connections):
            sockets.append(served.request(QUICK_PATHS[number % len(QUICK_PATHS)]))
            if number % 100 == 99:  # let go of those the server has closed by now
                sockets = _still_open(sockets, 0)
        left_open = _still_open(sockets, PATIENCE)
        after = served.open_descriptors()
        for sock in left_open:
            sock.close()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert (len(left_open), after <= before + SLACK) == (0, True), (
        f"{len(left_open)} of {connections} idle connections left open; "
        f"server descriptors: {before} before, {after} after"
    )
