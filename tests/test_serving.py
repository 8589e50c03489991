"""channels.serving: hypercorn processes on asyncio and trio, stopped by real signals.

The served project is tests/serverproject: its lifespan hook and its echo consumer print
lines that show when they ran.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import socket
import sys
import urllib.request
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest
from websockets.exceptions import ConnectionClosedOK
from websockets.sync.client import connect

from channels.routing import ProtocolTypeRouter
from channels.serving import GracefulShutdown, serve, serve_async
from channels.types import Message, Receive, Scope, Send

from .server_process import ServerProcess

BACKENDS = ["asyncio", "trio"]
APP = "tests.serverproject.asgi:application"


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read().decode()  # type: ignore[no-any-return]


def ws_url(http_url: str) -> str:
    return "ws" + http_url.removeprefix("http")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_stop_signal_closes_websockets_with_1001_and_exits_0(
    backend: str, signum: signal.Signals
) -> None:
    args = ["-m", "channels.serving", APP, "--bind", "127.0.0.1:0", "--backend", backend]
    with ServerProcess(args) as server:
        url = server.wait_for_line("Listening on").split()[-1]
        assert get(f"{url}/hello/") == f"hello from {backend}"
        with connect(f"{ws_url(url)}/ws/echo/", open_timeout=30) as ws:
            ws.send("hi")
            assert ws.recv(timeout=30) == "echo: hi"
            server.send_signal(signum)
            with pytest.raises(ConnectionClosedOK):
                ws.recv(timeout=30)
            assert ws.close_code == 1001
        assert server.wait() == 0
    lines = server.lines
    # The consumer heard the close (with the code the client got) before the lifespan
    # shutdown ran; the lifespan hook ran once at each end; hypercorn logged no error.
    assert lines.index("echo consumer disconnected with code 1001") < lines.index(
        "lifespan: shutdown"
    )
    assert lines.count("lifespan: startup") == lines.count("lifespan: shutdown") == 1
    assert not [line for line in lines if "Traceback" in line or "ERROR" in line], lines
    # The closed connection ended at once: nothing was left for the graceful timeout to
    # abort (hypercorn's ping loop, sleeping, would have kept it open).
    assert not [line for line in lines if "Aborting" in line], lines


@pytest.mark.parametrize("backend", BACKENDS)
def test_plain_hypercorn_runs_the_lifespan_hook_without_errors(backend: str) -> None:
    """``hypercorn -k BACKEND`` with ProtocolTypeRouter: lifespan is answered, the hook
    runs at both ends, and a stop signal ends the process with status 0."""
    port = free_port()
    args = ["-m", "hypercorn", "-k", backend, "-b", f"127.0.0.1:{port}", APP]
    with ServerProcess(args) as server:
        server.wait_for_line("Running on")
        assert get(f"http://127.0.0.1:{port}/hello/") == f"hello from {backend}"
        server.send_signal(signal.SIGTERM)
        assert server.wait() == 0
    assert "lifespan: shutdown" in server.lines
    assert not [line for line in server.lines if "error" in line.lower()], server.lines


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_serve_async_stops_on_its_trigger_and_closes_websockets() -> None:
    """In-process, on the test's own backend: the trigger starts the same graceful stop."""
    from tests.serverproject.asgi import application

    ready: list[str] = []
    listening, stop = anyio.Event(), anyio.Event()
    records: list[logging.LogRecord] = []
    logger = logging.getLogger("tests.serving.access")
    handler = _ListHandler(records)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)

    def client(url: str) -> tuple[str, int | None]:
        body = get(f"{url}/hello/")
        with connect(f"{ws_url(url)}/ws/echo/?x=1", open_timeout=30) as ws:
            ws.send("ping")
            assert ws.recv(timeout=30) == "echo: ping"
            anyio.from_thread.run_sync(stop.set)
            with pytest.raises(ConnectionClosedOK):
                ws.recv(timeout=30)
            return body, ws.close_code

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(
                functools.partial(
                    serve_async,
                    application,
                    bind=["127.0.0.1:0"],
                    handle_signals=False,
                    shutdown_trigger=stop.wait,
                    access_log=logger,
                    on_ready=lambda addresses: (ready.extend(addresses), listening.set()),
                )
            )
            await listening.wait()
            body, code = await anyio.to_thread.run_sync(client, ready[0])
    finally:
        logger.removeHandler(handler)
    assert body.startswith("hello from ")
    assert code == 1001
    messages = [record.getMessage() for record in records]
    assert messages[0].startswith("HTTP GET /hello/ 200 [")
    assert messages[1].startswith("WebSocket HANDSHAKING /ws/echo/?x=1 [127.0.0.1:")
    assert messages[2].startswith("WebSocket CONNECT /ws/echo/?x=1 [127.0.0.1:")
    assert messages[3].startswith("WebSocket DISCONNECT /ws/echo/?x=1 [127.0.0.1:")
    assert len(messages) == 4


class _ListHandler(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__()
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def refusing_app(scope: Scope, receive: Receive, send: Send) -> Any:
    raise AssertionError("never called")


def test_an_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="backend must be 'asyncio' or 'trio', got 'curio'"):
        serve(refusing_app, backend="curio")  # type: ignore[arg-type]


@pytest.mark.parametrize("bind", [[], "127.0.0.1:0"], ids=["empty", "a string"])
async def test_bind_must_be_a_list_of_addresses(bind: Any) -> None:
    with pytest.raises(ValueError, match="bind must be a non-empty list of addresses"):
        await serve_async(refusing_app, bind=bind)


@pytest.mark.parametrize("bind", ["localhost", ":8000", "127.0.0.1:http"])
async def test_a_bind_address_without_host_and_port_is_refused(bind: str) -> None:
    with pytest.raises(ValueError, match="bind address must be host:port"):
        await serve_async(refusing_app, bind=["127.0.0.1:0", bind])


async def test_a_negative_graceful_timeout_is_refused() -> None:
    with pytest.raises(ValueError, match="graceful_timeout must be >= 0"):
        await serve_async(refusing_app, bind=["127.0.0.1:0"], graceful_timeout=-1)


async def test_an_address_in_use_raises_oserror() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match="in use"):
            await serve_async(ProtocolTypeRouter({}), bind=[f"127.0.0.1:{port}"])


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ("tests.serverproject.asgi", "must be given as module:attribute"),
        ("tests.no_such_module:application", "cannot load"),
        ("tests.serverproject.asgi:missing", "cannot load"),
    ],
)
def test_the_command_line_names_a_bad_application(argument: str, message: str) -> None:
    with ServerProcess(["-m", "channels.serving", argument]) as server:
        assert server.wait() == 2
    assert message in server.output


class Sockets:
    """A server's side of one WebSocket, in memory: what the app sent, what it received."""

    def __init__(self) -> None:
        self.to_app, self.app_inbox = anyio.create_memory_object_stream[Message](10)
        self.app_outbox, self.from_app = anyio.create_memory_object_stream[Message](10)

    async def receive(self) -> Message:
        return await self.app_inbox.receive()

    def __enter__(self) -> Sockets:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for stream in (self.to_app, self.app_inbox, self.app_outbox, self.from_app):
            stream.close()

    async def send(self, message: Message) -> None:
        await self.app_outbox.send(message)


async def test_a_socket_accepted_after_shutdown_began_is_closed_at_once() -> None:
    may_accept = anyio.Event()
    seen: list[Message] = []

    async def slow_acceptor(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(await receive())  # websocket.connect
        await may_accept.wait()
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] != "websocket.disconnect":
            seen.append(message)
        seen.append(message)
        await send({"type": "websocket.send", "text": "too late"})  # dropped, no error

    graceful = GracefulShutdown(slow_acceptor)
    with Sockets() as sockets:
        async with anyio.create_task_group() as group:
            group.start_soon(graceful, {"type": "websocket"}, sockets.receive, sockets.send)
            await sockets.to_app.send({"type": "websocket.connect"})
            graceful.begin()
            may_accept.set()
            assert await sockets.from_app.receive() == {"type": "websocket.accept"}
            assert await sockets.from_app.receive() == {"type": "websocket.close", "code": 1001}
            # The client answers the close; the server reports it as hypercorn does.
            await sockets.to_app.send({"type": "websocket.disconnect", "code": 1000})
        with pytest.raises(anyio.WouldBlock):
            sockets.from_app.receive_nowait()
    assert seen == [
        {"type": "websocket.connect"},
        {"type": "websocket.disconnect", "code": 1001},
    ]


async def test_a_socket_the_application_closed_itself_is_not_closed_again() -> None:
    async def closer(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 4000})
        assert await receive() == {"type": "websocket.disconnect", "code": 4000}

    graceful = GracefulShutdown(closer)
    with Sockets() as sockets:
        async with anyio.create_task_group() as group:
            group.start_soon(graceful, {"type": "websocket"}, sockets.receive, sockets.send)
            await sockets.to_app.send({"type": "websocket.connect"})
            assert await sockets.from_app.receive() == {"type": "websocket.accept"}
            assert await sockets.from_app.receive() == {"type": "websocket.close", "code": 4000}
            graceful.begin()
            await sockets.to_app.send({"type": "websocket.disconnect", "code": 4000})
        with pytest.raises(anyio.WouldBlock):
            sockets.from_app.receive_nowait()


async def test_http_passes_through_the_graceful_wrapper_untouched() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> str:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        return "done"

    graceful = GracefulShutdown(app)
    graceful.begin()
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    assert await graceful({"type": "http"}, refusing_receive, send) == "done"
    assert sent == [{"type": "http.response.start", "status": 204, "headers": []}]


async def refusing_receive() -> Message:
    raise AssertionError("not expected to receive")


async def test_without_hypercorn_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "hypercorn.config", None)  # as if not installed
    with pytest.raises(ImportError, match=r"needs hypercorn, a dependency of channels-anyio"):
        await serve_async(refusing_app, bind=["127.0.0.1:0"])


async def test_a_failing_lifespan_startup_ends_serve_with_that_error() -> None:
    from hypercorn.utils import LifespanFailureError

    @contextlib.asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        raise RuntimeError("no database")
        yield

    application = ProtocolTypeRouter({}, lifespan=lifespan)
    # Warnings are errors here: a socket left open would fail the test too.
    with pytest.raises(LifespanFailureError, match="no database"):
        await serve_async(application, bind=["127.0.0.1:0"], handle_signals=False)


@pytest.mark.parametrize("name", ["ping_interval", "ping_timeout"])
@pytest.mark.parametrize("value", [0, -1.5])
async def test_a_ping_setting_must_be_positive(name: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"{name} must be a number of seconds > 0 or None"):
        await serve_async(refusing_app, bind=["127.0.0.1:0"], **{name: value})


@pytest.mark.parametrize("target", ["", 3])
async def test_a_bad_access_log_is_refused(target: Any) -> None:
    with pytest.raises(ValueError, match="access_log must be a logger, '-'"):
        await serve_async(refusing_app, bind=["127.0.0.1:0"], access_log=target)


# -- writes: on trio, what the socket takes at once is written without trio's send_all -----

BIG = 8 * 2**20  # more than a loopback socket's send buffer: written in several goes
SMALL_FRAMES = 300


async def frames_app(scope: Scope, receive: Receive, send: Send) -> None:
    """On connect: one big binary frame, then numbered text frames, then a close."""
    if scope["type"] == "lifespan":
        while True:
            kind = (await receive())["type"]
            await send({"type": f"{kind}.complete"})
            if kind == "lifespan.shutdown":
                return
    assert scope["type"] == "websocket"
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "bytes": bytes(range(256)) * (BIG // 256)})
    for n in range(SMALL_FRAMES):
        await send({"type": "websocket.send", "text": f"frame {n}"})
    await send({"type": "websocket.close", "code": 1000})
    while (await receive())["type"] != "websocket.disconnect":
        pass


async def test_writes_arrive_whole_and_in_order_and_skip_trio_send_all_when_they_can(
    anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The client waits before reading, so the big frame fills the socket's buffer and
    # the frames after it must wait their turn behind its rest.
    import trio

    calls = [0]
    original = trio.SocketStream.send_all

    async def counting_send_all(self: Any, data: Any) -> None:
        calls[0] += 1
        await original(self, data)

    monkeypatch.setattr(trio.SocketStream, "send_all", counting_send_all)
    ready: list[str] = []
    listening, stop = anyio.Event(), anyio.Event()

    def client(url: str) -> tuple[bytes, list[str], int | None]:
        with connect(ws_url(url), open_timeout=30, max_size=None) as ws:
            import time

            time.sleep(0.5)
            big = ws.recv(timeout=30)
            texts = [ws.recv(timeout=30) for _ in range(SMALL_FRAMES)]
            with pytest.raises(ConnectionClosedOK):
                ws.recv(timeout=30)
            assert isinstance(big, bytes)
            assert all(isinstance(text, str) for text in texts)
            return big, texts, ws.close_code  # type: ignore[return-value]

    async with anyio.create_task_group() as group:
        group.start_soon(
            functools.partial(
                serve_async,
                frames_app,
                bind=["127.0.0.1:0"],
                handle_signals=False,
                shutdown_trigger=stop.wait,
                on_ready=lambda addresses: (ready.extend(addresses), listening.set()),
            )
        )
        await listening.wait()
        big, texts, code = await anyio.to_thread.run_sync(client, ready[0])
        stop.set()
    assert big == bytes(range(256)) * (BIG // 256)
    assert texts == [f"frame {n}" for n in range(SMALL_FRAMES)]
    assert code == 1000
    if anyio_backend == "trio":
        # The handshake, the accept and most frames went straight to the socket: trio's
        # send_all only carried what the socket could not take at once.
        assert calls[0] < SMALL_FRAMES // 2, calls


async def test_every_send_is_a_cancellation_point_and_every_16th_lets_others_run(
    anyio_backend: str,
) -> None:
    import anyio.lowlevel

    from channels import _server

    left, right = socket.socketpair()
    with left, right:
        connection = _server._Connection(left, 0.0, _server._Watch(None, None), anyio.current_time)
        sent: list[Message] = []

        async def server_send(message: Message) -> None:
            sent.append(message)  # as hypercorn's, awaiting nothing

        # ``yielded`` gets len(sent) each time the sending task went back to the event
        # loop and came back. On trio an instrument sees the task's steps. asyncio runs
        # ready tasks in order, so there a task made ready after every send runs exactly
        # when the sender yields (trio orders each batch at random: no such witness).
        yielded: list[int] = []
        ready = [anyio.Event()]

        async def witness(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            task_status.started()
            while True:
                await ready[0].wait()
                ready[0] = anyio.Event()
                yielded.append(len(sent))

        async def sends() -> None:
            for n in range(4 * _server.SCHEDULE_EVERY):
                await _server._send(
                    connection, server_send, {"type": "websocket.send", "text": str(n)}
                )
                ready[0].set()

        if anyio_backend == "trio":
            import trio

            sender = trio.lowlevel.current_task()

            class Steps(trio.abc.Instrument):
                def before_task_step(self, task: trio.lowlevel.Task) -> None:
                    if task is sender:
                        yielded.append(len(sent))

            steps = Steps()
            trio.lowlevel.add_instrument(steps)
            try:
                await sends()
                seen = yielded[:]
            finally:
                trio.lowlevel.remove_instrument(steps)
        else:
            async with anyio.create_task_group() as group:
                await group.start(witness)
                await sends()
                seen = yielded[:]
                group.cancel_scope.cancel()
        # Each 16th send yielded, before it handed its message over; no other send did.
        every = _server.SCHEDULE_EVERY
        assert seen == [every - 1, 2 * every - 1, 3 * every - 1, 4 * every - 1]
        assert len(sent) == 4 * _server.SCHEDULE_EVERY

        with anyio.CancelScope() as scope:
            scope.cancel()
            await _server._send(connection, server_send, {"type": "websocket.send", "text": "x"})
        assert scope.cancelled_caught  # cancelled before the message was handed over
        assert len(sent) == 4 * _server.SCHEDULE_EVERY


async def _echo_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] == "http":
        headers = [(b"content-length", b"2")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    while True:
        message = await receive()
        if message["type"] == "websocket.connect":
            await send({"type": "websocket.accept"})
        elif message["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": message.get("text")})
        else:
            return


async def test_a_websocket_is_pinged_once_silent_for_the_interval_and_never_while_it_talks() -> (
    None
):
    """daphne's rule: a peer that keeps talking needs no ping (hypercorn's own loop
    pinged at the accept and every interval, whatever the traffic); one silent for the
    interval gets one."""
    import time

    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, Ping, Request, TextMessage

    interval = 2.0
    ready: list[str] = []
    listening, stop = anyio.Event(), anyio.Event()

    def client(url: str) -> tuple[int, float, float]:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        ws = WSConnection(ConnectionType.CLIENT)
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(ws.send(Request(host=host, target="/")))
            pings_while_talking, echoes = 0, 0

            def read() -> list[Any]:
                ws.receive_data(sock.recv(65536))
                return list(ws.events())

            while not any(isinstance(event, AcceptConnection) for event in read()):
                pass
            talked_from = time.monotonic()
            while time.monotonic() - talked_from < 2.25 * interval:
                sock.sendall(ws.send(TextMessage(data="hi")))
                answered = False
                while not answered:
                    for event in read():
                        pings_while_talking += isinstance(event, Ping)
                        answered = answered or isinstance(event, TextMessage)
                echoes += 1
                time.sleep(interval / 40)
            silent_from = time.monotonic()
            while not any(isinstance(event, Ping) for event in read()):
                pass
            return pings_while_talking, echoes, time.monotonic() - silent_from

    async with anyio.create_task_group() as group:
        group.start_soon(
            functools.partial(
                serve_async,
                _echo_app,
                bind=["127.0.0.1:0"],
                handle_signals=False,
                shutdown_trigger=stop.wait,
                ping_interval=interval,
                ping_timeout=None,
                graceful_timeout=0,
                on_ready=lambda addresses: (ready.extend(addresses), listening.set()),
            )
        )
        await listening.wait()
        pings, echoes, silent_for = await anyio.to_thread.run_sync(client, ready[0])
        stop.set()
    assert echoes > 20
    assert pings == 0
    assert silent_for >= interval * 0.9  # the ping came once the silence was long enough


def _idle_keep_alive_client(url: str, stop: Callable[[], object] | None) -> bytes:
    """One HTTP/1.1 request on a keep-alive connection, then silence: what the server
    sends until it closes the connection (``stop`` is called once the answer is in)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        received = b""
        while not received.endswith(b"ok"):
            received += sock.recv(65536)
        if stop is not None:
            stop()
        while chunk := sock.recv(65536):
            received += chunk
        return received


@pytest.mark.parametrize("stopping", [False, True], ids=["timeout", "stop"])
async def test_an_idle_keep_alive_connection_is_closed_after_its_timeout_or_at_a_stop(
    stopping: bool, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from hypercorn.config import Config

    # hypercorn's keep-alive timeout (5 s by default), shorter for the test, or, for the
    # stop, longer than the graceful timeout: the stop must not wait for it.
    monkeypatch.setattr(Config, "keep_alive_timeout", 60.0 if stopping else 0.3)
    ready: list[str] = []
    listening, stop = anyio.Event(), anyio.Event()
    async with anyio.create_task_group() as group:
        group.start_soon(
            functools.partial(
                serve_async,
                _echo_app,
                bind=["127.0.0.1:0"],
                handle_signals=False,
                shutdown_trigger=stop.wait,
                graceful_timeout=20,
                on_ready=lambda addresses: (ready.extend(addresses), listening.set()),
            )
        )
        await listening.wait()
        trigger = functools.partial(anyio.from_thread.run_sync, stop.set) if stopping else None
        received = await anyio.to_thread.run_sync(_idle_keep_alive_client, ready[0], trigger)
        stop.set()
    assert received.startswith(b"HTTP/1.1 200")
    assert received.endswith(b"ok")
    assert "Aborting" not in caplog.text  # closed as idle, not aborted after 20 s
