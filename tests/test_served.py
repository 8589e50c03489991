"""The issue's "done when": a Django project served by real hypercorn, on asyncio and trio.

tests/servedproject (sync view, async view with the async ORM, a streaming response, an
upload view, a WebSocket chat) runs in a ``hypercorn -k asyncio`` and a
``hypercorn -k trio`` subprocess, one per backend for the whole module, on a socket the
OS gave a free port. Real clients talk to it: ``http.client`` and ``websockets``. The
project's SQLite file lives in a temporary directory; the tests read it directly.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from websockets.sync.client import connect

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Server:
    backend: str
    port: int
    database: Path
    log: Path

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """Status, headers (lower-case names) and body of one request."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            headers = {name.lower(): value for name, value in response.getheaders()}
            return response.status, headers, response.read()
        finally:
            connection.close()

    def notes(self) -> list[str]:
        with sqlite3.connect(self.database) as db:
            return [text for (text,) in db.execute("SELECT text FROM testapp_note ORDER BY id")]


def _environment(database: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.servedproject.settings",
        "SERVEDPROJECT_DB": str(database),
        "PYTHONPATH": str(ROOT),
    }


@pytest.fixture(scope="module", params=["asyncio", "trio"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    backend: str = request.param
    directory = tmp_path_factory.mktemp(f"served-{backend}")
    database = directory / "db.sqlite3"
    env = _environment(database)
    subprocess.run(
        [sys.executable, "-m", "django", "migrate", "--run-syncdb", "--verbosity", "0"],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=120,
    )
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    log = directory / "hypercorn.log"
    with listener, open(log, "wb") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hypercorn",
                "--worker-class",
                backend,
                "--bind",
                f"fd://{listener.fileno()}",
                "tests.servedproject.asgi:application",
            ],
            cwd=ROOT,
            env=env,
            pass_fds=[listener.fileno()],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    served = Server(backend, port, database, log)
    try:
        _wait_until_answering(served, process)
        yield served
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_answering(server: Server, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"hypercorn exited early:\n{server.log.read_text()}")
        try:
            server.request("GET", "/stream/")
        except OSError:
            time.sleep(0.1)
        else:
            return
    raise AssertionError(f"hypercorn did not answer:\n{server.log.read_text()}")


def _multipart(name: str, content: bytes) -> tuple[bytes, str]:
    boundary = "servedboundary"
    body = b"\r\n".join(
        [
            f"--{boundary}".encode(),
            f'Content-Disposition: form-data; name="{name}"; filename="data.bin"'.encode(),
            b"Content-Type: application/octet-stream",
            b"",
            content,
            f"--{boundary}--".encode(),
            b"",
        ]
    )
    return body, f"multipart/form-data; boundary={boundary}"


def test_sync_view_writes_to_the_database(server: Server) -> None:
    before = len(server.notes())
    status, _, body = server.request("GET", f"/sync/?text=sync-{server.backend}")
    assert status == 200
    assert json.loads(body) == {"notes": before + 1}
    assert server.notes()[-1] == f"sync-{server.backend}"


def test_async_view_uses_the_async_orm(server: Server) -> None:
    status, _, body = server.request("GET", f"/async/?text=async-{server.backend}")
    assert status == 200
    answer = json.loads(body)
    assert answer["texts"][-1] == f"async-{server.backend}"
    assert answer["texts"] == server.notes()


def test_orm_call_on_the_event_loop_is_refused(server: Server) -> None:
    status, _, _ = server.request("GET", "/unsafe/")
    assert status == 500
    assert "SynchronousOnlyOperation" in server.log.read_text()


def test_streaming_response_arrives_chunked(server: Server) -> None:
    status, headers, body = server.request("GET", "/stream/")
    assert status == 200
    assert headers.get("transfer-encoding") == "chunked"
    assert body == b"".join(f"line {n}\n".encode() for n in range(5))


def test_head_request_gets_headers_only(server: Server) -> None:
    status, headers, body = server.request("HEAD", "/async/?text=head")
    assert (status, headers["content-type"], body) == (200, "application/json", b"")


def test_client_leaving_stops_an_endless_stream(server: Server) -> None:
    mark = server.database.with_name("closed-1")
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
    connection.request("GET", "/endless/?id=1")
    response = connection.getresponse()
    assert response.status == 200
    assert response.read(10) == b"tick\ntick\n"
    connection.close()
    response.close()
    deadline = time.monotonic() + 20
    while not mark.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert mark.exists(), "the stream's iterator was not closed after the client left"


def test_file_upload_over_the_memory_limit(server: Server) -> None:
    content = os.urandom(200 * 1024)  # past FILE_UPLOAD_ and DATA_UPLOAD_MAX_MEMORY_SIZE
    body, content_type = _multipart("file", content)
    status, _, answer = server.request(
        "POST", "/upload/", body=body, headers={"Content-Type": content_type}
    )
    assert status == 200
    assert json.loads(answer) == {
        "size": len(content),
        "class": "TemporaryUploadedFile",
        "sha256": hashlib.sha256(content).hexdigest(),
    }


def test_oversized_plain_body_is_413_and_one_within_limits_is_echoed(server: Server) -> None:
    status, _, _ = server.request("POST", "/echo/", body=b"x" * (64 * 1024))
    assert status == 413
    status, _, body = server.request("POST", "/echo/", body=b"y" * (20 * 1024))
    assert (status, body) == (200, b"y" * (20 * 1024))


def test_websocket_chat_between_two_clients(server: Server) -> None:
    url = f"ws://127.0.0.1:{server.port}/ws/chat/lobby/"
    with connect(url, open_timeout=20) as alice, connect(url, open_timeout=20) as bob:
        # Both joined the group before their handshakes completed.
        alice.send(json.dumps({"message": f"hello from {server.backend}"}))
        for client in (alice, bob):
            assert json.loads(client.recv(timeout=20)) == {
                "message": f"hello from {server.backend}"
            }
