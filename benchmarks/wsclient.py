"""The load generator of the WebSocket fan-out and idle benchmarks: many raw WebSocket
client connections in one process, driven by one ``selectors`` loop.

No asyncio and no ``websockets``: a frame costs the client a few microseconds (a header
parse and, for the broadcast, one ``json.loads``), so that what is measured is the
server. ``workloads.py`` starts several of these processes side by side, each with a
share of the connections, and talks to each over its stdin and stdout (one JSON object a
line):

1. the process opens its connections, ``concurrency`` handshakes in flight at a time,
   and prints ``{"ready": n, "connect_started": t, "connect_ended": t, "cpu_s": s}``
   (wall-clock times, CPU seconds of the connect phase);
2. ``"mode": "broadcast"``: it then reads until every connection has received
   ``sends`` text frames and prints the latencies (receive time minus the ``t`` the
   sender stamped in each JSON payload), the first ``t``, the last receive time and its
   CPU seconds;
   ``"mode": "idle"``: it waits for a line on stdin; either way it answers pings;
3. it sends each connection a close frame and prints ``{"closed": n}``.

Standard library only. Server frames are unmasked and, for these small messages, never
fragmented (hypercorn's and daphne's are not); a fragment fails the run.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import resource
import selectors
import socket
import sys
import time
from typing import Any

#: Seconds without progress (no handshake completing, no frame arriving) before failing.
STALL_TIMEOUT = 60.0

_CLOSE_FRAME_PAYLOAD = (1000).to_bytes(2, "big")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Connection:
    """One client socket: its handshake state and the bytes read but not yet parsed."""

    __slots__ = ("buffer", "open", "received", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.open = False
        self.received = 0

    def frames(self) -> list[tuple[int, bytes]]:
        """The complete frames in the buffer (opcode, payload), removed from it."""
        found = []
        buffer = self.buffer
        position = 0
        size = len(buffer)
        while size - position >= 2:
            first, second = buffer[position], buffer[position + 1]
            length = second & 0x7F
            head = 2
            if length == 126:
                if size - position < 4:
                    break
                length = int.from_bytes(buffer[position + 2 : position + 4], "big")
                head = 4
            elif length == 127:
                if size - position < 10:
                    break
                length = int.from_bytes(buffer[position + 2 : position + 10], "big")
                head = 10
            if size - position < head + length:
                break
            if not first & 0x80:
                raise RuntimeError("the server fragmented a message; this client cannot")
            start = position + head
            found.append((first & 0x0F, bytes(buffer[start : start + length])))
            position = start + length
        del buffer[:position]
        return found

    def send_frame(self, opcode: int, payload: bytes) -> None:
        """Send one small frame, masked as a client must (``close`` and ``pong`` here)."""
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.setblocking(True)
        try:
            self.sock.sendall(bytes([0x80 | opcode, 0x80 | len(masked)]) + mask + masked)
        finally:
            self.sock.setblocking(False)

    def answer_control(self, opcode: int, payload: bytes) -> bool:
        """Answer a ping with its pong; whether the frame was a ping or a pong."""
        if opcode == 0x9:
            self.send_frame(0xA, payload)
            return True
        return opcode == 0xA

    def close(self) -> None:
        """Send a close frame (masked, as a client must) and close the socket."""
        with contextlib.suppress(OSError):
            self.send_frame(0x8, _CLOSE_FRAME_PAYLOAD)
        self.sock.close()


def handshake_request(host: str, port: int, path: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def open_connections(
    host: str, port: int, path: str, count: int, concurrency: int
) -> list[Connection]:
    """``count`` open WebSocket connections, at most ``concurrency`` handshakes at a time."""
    selector = selectors.DefaultSelector()
    opened: list[Connection] = []
    started = 0
    in_flight = 0
    last_progress = time.monotonic()
    while len(opened) < count:
        while in_flight < concurrency and started < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            sock.connect_ex((host, port))
            selector.register(sock, selectors.EVENT_WRITE, Connection(sock))
            started += 1
            in_flight += 1
        for key, _ in selector.select(1.0):
            connection: Connection = key.data
            sock = connection.sock
            if key.events & selectors.EVENT_WRITE:
                error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if error:
                    raise OSError(error, f"connect failed: {os.strerror(error)}")
                sock.send(handshake_request(host, port, path))  # small: fits the buffer
                selector.modify(sock, selectors.EVENT_READ, connection)
                continue
            data = sock.recv(65536)
            if not data:
                raise RuntimeError("the server closed a connection during its handshake")
            connection.buffer += data
            end = connection.buffer.find(b"\r\n\r\n")
            if end < 0:
                continue
            status = bytes(connection.buffer[: connection.buffer.find(b"\r\n")])
            if b" 101 " not in status + b" ":
                raise RuntimeError(f"handshake refused: {status!r}")
            del connection.buffer[: end + 4]
            connection.open = True
            selector.unregister(sock)
            opened.append(connection)
            in_flight -= 1
            last_progress = time.monotonic()
        if time.monotonic() - last_progress > STALL_TIMEOUT:
            raise RuntimeError(f"no handshake completed for {STALL_TIMEOUT:.0f} s")
    selector.close()
    return opened


def receive_broadcast(connections: list[Connection], sends: int) -> dict[str, Any]:
    """Read until every connection has had ``sends`` text frames."""
    selector = selectors.DefaultSelector()
    for connection in connections:
        selector.register(connection.sock, selectors.EVENT_READ, connection)
    latencies: list[float] = []
    first_sent = float("inf")
    expected = sends * len(connections)
    last_received = 0.0
    last_progress = time.monotonic()
    while len(latencies) < expected:
        events = selector.select(1.0)
        for key, _ in events:
            connection: Connection = key.data
            data = connection.sock.recv(262144)
            if not data:
                raise RuntimeError("the server closed a connection during the broadcast")
            connection.buffer += data
            now = time.time()
            for opcode, payload in connection.frames():
                if connection.answer_control(opcode, payload):
                    continue
                if opcode != 0x1:
                    raise RuntimeError(f"unexpected frame (opcode {opcode}): {payload!r}")
                sent = json.loads(payload)["t"]
                first_sent = min(first_sent, sent)
                latencies.append(now - sent)
                connection.received += 1
                last_received = now
                last_progress = time.monotonic()
        if time.monotonic() - last_progress > STALL_TIMEOUT:
            missing = expected - len(latencies)
            raise RuntimeError(f"{missing} frames did not arrive within {STALL_TIMEOUT:.0f} s")
    selector.close()
    if any(connection.received != sends for connection in connections):
        raise RuntimeError("a connection received more frames than were sent")
    return {"latencies": latencies, "first_sent": first_sent, "last_received": last_received}


def stay_idle(connections: list[Connection]) -> None:
    """Until a line arrives on stdin, answer pings (a server with keepalive drops peers
    that do not) and fail on anything else."""
    selector = selectors.DefaultSelector()
    selector.register(sys.stdin, selectors.EVENT_READ, None)
    for connection in connections:
        selector.register(connection.sock, selectors.EVENT_READ, connection)
    while True:
        for key, _ in selector.select():
            connection = key.data
            if connection is None:
                sys.stdin.readline()
                selector.close()
                return
            data = connection.sock.recv(65536)
            if not data:
                raise RuntimeError("the server closed an idle connection")
            connection.buffer += data
            for opcode, payload in connection.frames():
                if not connection.answer_control(opcode, payload):
                    raise RuntimeError(f"an idle connection got a frame: {opcode} {payload!r}")


def emit(value: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()


def main() -> None:
    spec = json.loads(sys.argv[1])
    cpu = cpu_seconds()
    started = time.time()
    connections = open_connections(
        spec["host"], spec["port"], spec["path"], spec["connections"], spec["concurrency"]
    )
    ended = time.time()
    emit(
        {
            "ready": len(connections),
            "connect_started": started,
            "connect_ended": ended,
            "cpu_s": cpu_seconds() - cpu,
        }
    )
    if spec["mode"] == "broadcast":
        cpu = cpu_seconds()
        result = receive_broadcast(connections, spec["sends"])
        emit({**result, "cpu_s": cpu_seconds() - cpu})
    else:
        stay_idle(connections)
    for connection in connections:
        connection.close()
    emit({"closed": len(connections)})


if __name__ == "__main__":
    main()
