"""A stop that always ends, and WebSocket keepalive: real servers, real stuck clients.

The served application is tests/serverproject/reliability.py; it leaves marker files in
a directory the test gives it, showing which of ``disconnect()`` and the lifespan
shutdown ran even in a process that has ended.
"""

from __future__ import annotations

import base64
import os
import re
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.client import connect

from .server_process import ServerProcess
from .test_runserver import url_in
from .test_serving import BACKENDS, get, ws_url

APP = "tests.serverproject.reliability:application"
GRACEFUL_TIMEOUT = 3.0
# The promise: a stop ends within the graceful timeout plus this.
STOP_MARGIN = 2.0


class StuckClient:
    """A WebSocket client that never reads: its receive buffer, made small, fills up and
    the server's sends block. It answers no ping either, as a frozen peer would."""

    def __init__(self, url: str, path: str) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect((host, int(port)))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = self.sock.recv(1)  # byte by byte: nothing past the headers is read
            assert chunk, f"connection closed during the handshake: {response!r}"
            response += chunk
        assert response.startswith(b"HTTP/1.1 101"), response

    def send_text(self, text: str) -> None:
        payload = text.encode()
        assert len(payload) < 126
        mask = os.urandom(4)
        masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
        self.sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)

    def send_huge_text(self, size: int) -> None:
        """One text frame of ``size`` bytes (mask key zero: the payload goes as it is)."""
        self.sock.sendall(struct.pack("!BBQ", 0x81, 0x80 | 127, size) + bytes(4) + b"x" * size)

    def send_close(self, code: int) -> None:
        self.sock.sendall(bytes([0x88, 0x82]) + bytes(4) + struct.pack("!H", code))

    def read_until_close_frame(self) -> int:
        """Read frames until the server's close frame; its code (nothing read past it)."""
        self.sock.settimeout(20)
        while True:
            first, second = self._read(2)
            length = second & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", self._read(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", self._read(8))
            payload = self._read(length)
            if first & 0x0F == 0x8:
                code: int = struct.unpack("!H", payload[:2])[0]
                return code

    def _read(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            assert chunk, "the connection ended before the server's close frame"
            data += chunk
        return data

    def wait_for_end(self) -> None:
        """Read until the server ends the connection (a FIN or a reset); fails after
        20 s (without the close deadline, a connection whose closing handshake went
        wrong stays until the pings find it, or forever without pings)."""
        self.sock.settimeout(20)
        try:
            while self.sock.recv(65536):
                pass
        except ConnectionResetError:
            pass
        except TimeoutError:
            raise AssertionError(
                "the server kept the connection open after its close frame"
            ) from None

    def leave_with_rst(self) -> None:
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def wait_until_dropped(self) -> None:
        """Read (at last) until the server ends the connection; fails after 30 s."""
        self.sock.settimeout(30)
        try:
            while self.sock.recv(65536):
                pass
        except ConnectionResetError:
            pass

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def markers(tmp_path: Path) -> Path:
    return tmp_path


def marker_env(markers: Path) -> dict[str, str]:
    return {"CHANNELS_TEST_MARKERS": str(markers)}


def made(markers: Path) -> set[str]:
    return {path.name for path in markers.iterdir()}


def wait_for_exit(server: ServerProcess, within: float) -> int:
    try:
        return server.process.wait(timeout=within)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"the server was still running {within:g}s after SIGTERM; output: {server.output}"
        ) from None


@pytest.fixture
def stuck_clients() -> Iterator[list[StuckClient]]:
    clients: list[StuckClient] = []
    yield clients
    for client in clients:
        client.close()


def flood_and_stop(
    server: ServerProcess, url: str, stuck_clients: list[StuckClient], timeout: float
) -> float:
    """Fill a stuck client's buffers, SIGTERM the server; the seconds it took to exit."""
    client = StuckClient(url, "/ws/flood/")
    stuck_clients.append(client)
    client.send_text("flood")
    server.wait_for_line("marker: flooding")
    time.sleep(0.5)  # let the server's send block on the full buffers
    started = time.monotonic()
    server.send_signal(signal.SIGTERM)
    assert wait_for_exit(server, timeout + STOP_MARGIN) == 0
    return time.monotonic() - started


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_stop_ends_despite_a_client_that_stopped_reading(
    backend: str, markers: Path, stuck_clients: list[StuckClient]
) -> None:
    args = [
        *("-m", "channels.serving", APP, "--bind", "127.0.0.1:0", "--backend", backend),
        *("--graceful-timeout", str(GRACEFUL_TIMEOUT)),
    ]
    with ServerProcess(args, env=marker_env(markers)) as server:
        url = server.wait_for_line("Listening on").split()[-1]
        flood_and_stop(server, url, stuck_clients, GRACEFUL_TIMEOUT)
        server.wait()
    # The consumer's sends stopped blocking, it heard the disconnect and ran disconnect();
    # then the lifespan shutdown ran.
    assert {"flood-sent", "disconnect-1006", "lifespan-shutdown"} <= made(markers), server.output
    assert "Aborting 1 connection(s) still open after the 3s graceful timeout." in server.output
    assert "Traceback" not in server.output


@pytest.mark.parametrize("backend", BACKENDS)
def test_runserver_noreload_stop_ends_despite_a_client_that_stopped_reading(
    backend: str, markers: Path, stuck_clients: list[StuckClient]
) -> None:
    args = ["-m", "django", "runserver", "127.0.0.1:0", "--noreload", "--backend", backend]
    env = marker_env(markers)
    settings = "tests.serverproject.reliability_settings"
    with ServerProcess(args, settings=settings, env=env) as server:
        url = url_in(server.wait_for_line("Starting ASGI development server"))
        flood_and_stop(server, url, stuck_clients, 5.0)  # runserver's graceful timeout
        server.wait()
    assert {"flood-sent", "disconnect-1006", "lifespan-shutdown"} <= made(markers), server.output
    assert "Traceback" not in server.output


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_peer_that_stops_answering_pings_is_dropped_and_leaves_its_groups(
    backend: str, markers: Path, stuck_clients: list[StuckClient]
) -> None:
    args = [
        *("-m", "channels.serving", APP, "--bind", "127.0.0.1:0", "--backend", backend),
        *("--ping-interval", "0.3", "--ping-timeout", "0.7"),
    ]
    with ServerProcess(args, env=marker_env(markers)) as server:
        url = server.wait_for_line("Listening on").split()[-1]
        # The healthy client answers pings (websockets does) but sends none of its own,
        # so only its pongs keep it alive.
        with connect(f"{ws_url(url)}/ws/watched/", open_timeout=30, ping_interval=None) as ws:
            frozen = StuckClient(url, "/ws/watched/")
            stuck_clients.append(frozen)
            server.wait_for_line("marker: disconnect-1006")
            assert get(f"{url}/groups/") == "1"  # the frozen peer's channel left the group
            time.sleep(3)  # several more timeouts pass: the idle healthy client stays
            ws.send("still here?")
            assert ws.recv(timeout=30) == "echo: still here?"
        server.send_signal(signal.SIGTERM)
        assert server.wait() == 0
    assert "Traceback" not in server.output


@pytest.mark.parametrize("backend", BACKENDS)
def test_runserver_takes_the_keepalive_options(
    backend: str, markers: Path, stuck_clients: list[StuckClient]
) -> None:
    args = [*("-m", "django", "runserver", "127.0.0.1:0", "--noreload", "--backend", backend)]
    args += ["--ping-interval", "0.3", "--ping-timeout", "0.7"]
    settings = "tests.serverproject.reliability_settings"
    with ServerProcess(args, settings=settings, env=marker_env(markers)) as server:
        url = url_in(server.wait_for_line("Starting ASGI development server"))
        frozen = StuckClient(url, "/ws/watched/")
        stuck_clients.append(frozen)
        server.wait_for_line("marker: disconnect-1006")
        frozen.wait_until_dropped()
        assert get(f"{url}/groups/") == "0"
        server.send_signal(signal.SIGTERM)
        assert server.wait() == 0


@pytest.mark.parametrize(
    "option", ["--ping-interval", "--ping-timeout"], ids=["interval", "timeout"]
)
@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_the_command_line_refuses_a_bad_ping_setting(option: str, value: str) -> None:
    with ServerProcess(["-m", "channels.serving", APP, option, value]) as server:
        assert server.wait() == 2
    assert f"{option}: must be a number of seconds > 0, got {value!r}" in server.output


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_access_log_goes_to_stdout_or_a_file(backend: str, tmp_path: Path) -> None:
    log_file = tmp_path / "access.log"
    for target in ("-", str(log_file)):
        args = [*("-m", "channels.serving", APP, "--bind", "127.0.0.1:0", "--backend", backend)]
        with ServerProcess([*args, "--access-log", target]) as server:
            url = server.wait_for_line("Listening on").split()[-1]
            assert get(f"{url}/groups/?x=1") == "0"
            with connect(f"{ws_url(url)}/ws/watched/", open_timeout=30) as ws:
                ws.send("hi")
                assert ws.recv(timeout=30) == "echo: hi"
            if target == "-":
                server.wait_for_line("WebSocket DISCONNECT /ws/watched/ [127.0.0.1:")
            server.send_signal(signal.SIGTERM)
            assert server.wait() == 0
        lines = server.lines if target == "-" else log_file.read_text().splitlines()
        logged = [line for line in lines if line.startswith("[")]
        # Django's runserver format: [date] then daphne's line.
        assert len(logged) == 4, lines
        assert re.fullmatch(
            r"\[\d\d/\w{3}/\d{4} \d\d:\d\d:\d\d\] HTTP GET /groups/\?x=1 200 "
            r"\[\d+\.\d\d, 127\.0\.0\.1:\d+\]",
            logged[0],
        ), logged[0]
        for line, event in zip(logged[1:], ["HANDSHAKING", "CONNECT", "DISCONNECT"], strict=True):
            assert f"] WebSocket {event} /ws/watched/ [127.0.0.1:" in line
    assert not [line for line in server.lines if line.startswith("[")]  # all in the file


def test_an_access_log_that_cannot_be_opened_is_reported(tmp_path: Path) -> None:
    target = str(tmp_path / "missing-directory" / "access.log")
    args = ["-m", "channels.serving", APP, "--bind", "127.0.0.1:0", "--access-log", target]
    with ServerProcess(args) as server:
        assert server.wait() == 1
    assert "No such file or directory" in server.output
    assert "Traceback" not in server.output


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_live_server_stops_despite_a_client_that_stopped_reading(
    backend: str,
    markers: Path,
    stuck_clients: list[StuckClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The live-server test case's process, as its tearDownClass stops it."""
    from channels.testing.live import _ServerProcess

    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "tests.serverproject.reliability_settings")
    monkeypatch.setenv("CHANNELS_TEST_MARKERS", str(markers))
    server = _ServerProcess(["--host", "127.0.0.1", "--backend", backend])
    try:
        port = server.wait_until_ready()
        client = StuckClient(f"http://127.0.0.1:{port}", "/ws/flood/")
        stuck_clients.append(client)
        client.send_text("flood")
        deadline = time.monotonic() + 20
        while "flooding" not in made(markers):
            assert time.monotonic() < deadline, "the consumer never started flooding"
            time.sleep(0.05)
        time.sleep(0.5)  # let the server's send block on the full buffers
        server.process.terminate()
        assert server.process.wait(timeout=5.0 + STOP_MARGIN) == 0  # its graceful timeout: 5 s
    finally:
        server.kill()
    assert {"flood-sent", "disconnect-1006", "lifespan-shutdown"} <= made(markers)


@pytest.mark.parametrize("chunk", [1, 3, 7, 1 << 20])
def test_the_frame_watch_finds_the_close_frame_however_the_writes_split(chunk: int) -> None:
    """Frames as wsproto (hypercorn's WebSocket library) writes them, in every header
    form: short, 16-bit and 64-bit lengths, control frames, and payloads that look like
    close frames."""
    from wsproto.connection import Connection, ConnectionType
    from wsproto.events import CloseConnection, Ping, TextMessage

    from channels._server import _FrameWatch

    server = Connection(ConnectionType.SERVER)
    before_close = b"".join(
        server.send(event)
        for event in [
            TextMessage(data="\x88\x02" * 10),
            Ping(payload=b"\x88"),
            TextMessage(data="x" * 200),
            TextMessage(data="\x88" * 70_000),
        ]
    )
    written = before_close + server.send(CloseConnection(code=1009))
    watch = _FrameWatch()
    found_at = None
    for start in range(0, len(written), chunk):
        if watch.feed(written[start : start + chunk]):
            found_at = start
            break
    # Found in the write holding the close frame's first byte, not before.
    assert found_at == len(before_close) // chunk * chunk


def test_the_frame_watch_finds_the_close_frame_in_whole_frame_writes() -> None:
    """One frame per write, as hypercorn writes them: the watch's quick path, in every
    header form, then a frame split in two after them."""
    from wsproto.connection import Connection, ConnectionType
    from wsproto.events import CloseConnection, Ping, TextMessage

    from channels._server import _FrameWatch

    server = Connection(ConnectionType.SERVER)
    frames = [
        server.send(event)
        for event in [
            TextMessage(data="\x88\x02" * 10),
            Ping(payload=b"\x88"),
            TextMessage(data="x" * 200),
            TextMessage(data="\x88" * 70_000),
        ]
    ]
    split = server.send(TextMessage(data="y" * 300))
    watch = _FrameWatch()
    assert not any(watch.feed(frame) for frame in frames)
    assert not watch.feed(split[:3])
    assert not watch.feed(split[3:])  # the rest of a frame that began in the last write
    assert not watch.feed(frames[0] + frames[1])  # two frames in one write
    assert watch.feed(server.send(CloseConnection(code=1000)))


# Pings as good as off: the first goes out at the accept, the next in 1000 s.
NO_PINGS = ("--ping-interval", "1000")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("answer", [True, False], ids=["peer-answers", "peer-silent"])
def test_a_message_over_the_size_limit_ends_its_connection_after_the_close(
    backend: str, answer: bool, markers: Path, stuck_clients: list[StuckClient]
) -> None:
    """hypercorn answers a 17 MiB message (its limit is 16 MiB) with 1009 and then
    reads no further frames of that batch, so a peer's answering close can go unseen:
    the close deadline ends the connection anyway, and the consumer hears of it."""
    args = [*("-m", "channels.serving", APP, "--bind", "127.0.0.1:0", "--backend", backend)]
    with ServerProcess([*args, *NO_PINGS], env=marker_env(markers)) as server:
        url = server.wait_for_line("Listening on").split()[-1]
        client = StuckClient(url, "/ws/watched/")
        stuck_clients.append(client)
        client.send_huge_text(17 << 20)
        assert client.read_until_close_frame() == 1009
        if answer:
            client.send_close(1009)
        client.wait_for_end()
        server.wait_for_line("marker: disconnect-1006")
        assert get(f"{url}/groups/") == "0"
        server.send_signal(signal.SIGTERM)
        assert server.wait() == 0
    assert "Traceback" not in server.output


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_consumers_close_that_the_peer_never_answers_ends_the_connection(
    backend: str, markers: Path, stuck_clients: list[StuckClient]
) -> None:
    args = [*("-m", "channels.serving", APP, "--bind", "127.0.0.1:0", "--backend", backend)]
    with ServerProcess([*args, *NO_PINGS], env=marker_env(markers)) as server:
        url = server.wait_for_line("Listening on").split()[-1]
        client = StuckClient(url, "/ws/watched/")
        stuck_clients.append(client)
        client.send_text("close")
        assert client.read_until_close_frame() == 4000
        client.wait_for_end()  # never having answered
        server.wait_for_line("marker: disconnect-1000")
        assert get(f"{url}/groups/") == "0"
        server.send_signal(signal.SIGTERM)
        assert server.wait() == 0
    assert "Traceback" not in server.output


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("leave", ["reset", "close"])
def test_a_stop_ends_a_consumer_sending_in_a_loop_to_a_gone_client(
    backend: str, leave: str, markers: Path, stuck_clients: list[StuckClient]
) -> None:
    """The consumer's loop has no checkpoint of its own; its sends, dropped once the
    client is gone, must checkpoint, or the event loop never runs the stop."""
    args = [*("-m", "channels.serving", APP, "--bind", "127.0.0.1:0", "--backend", backend)]
    args += ["--graceful-timeout", "1"]
    with ServerProcess(args, env=marker_env(markers)) as server:
        url = server.wait_for_line("Listening on").split()[-1]
        client = StuckClient(url, "/ws/spin/")
        stuck_clients.append(client)
        client.send_text("spin")
        server.wait_for_line("marker: spinning")
        if leave == "reset":
            client.leave_with_rst()
        else:
            client.send_close(1000)
            client.wait_for_end()
        time.sleep(0.5)  # the server has seen the client go; the sends are dropped now
        server.send_signal(signal.SIGTERM)
        assert wait_for_exit(server, 20) == 0
        server.wait()
    assert "lifespan-shutdown" in made(markers), server.output
    assert "Aborting 1 connection(s) still open after the 1s graceful timeout." in server.output
    assert "Traceback" not in server.output
