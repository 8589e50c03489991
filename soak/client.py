"""The harness's clients: the stats side channel, WebSocket echoes, and raw sockets.

``websockets`` plays the well-behaved clients. The badly behaved ones are raw TCP sockets
that complete the WebSocket handshake and then misbehave as only a raw socket can: leave
with a FIN and no close frame, reset the connection (``SO_LINGER`` 0), or freeze: never
read again and so never answer a ping.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import anyio
from websockets.asyncio.client import ClientConnection, connect

__all__ = ["RawWebSocket", "Stats", "echo", "get", "open_echo", "wait_for_stats"]

Stats = dict[str, Any]

#: How long a client waits for any single answer before the probe calls it a failure.
PATIENCE = 30.0


async def get(port: int, target: str) -> tuple[int, bytes]:
    """``GET target`` on a fresh connection: the status and the whole body."""
    with anyio.fail_after(PATIENCE):
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            request = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
            await stream.send(request.encode())
            response = b""
            while True:
                try:
                    response += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    break
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        body = _unchunk(body)
    return status, body


def _unchunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, body = out + body[:size], body[size + 2 :]
    return out


async def stats(port: int, *, collect: bool = False) -> Stats:
    """The server's ``/soak/stats``: what it holds, counted inside its process; with
    ``collect``, after a garbage collection, and with the consumer objects still alive."""
    status, body = await get(port, "/soak/stats?gc=1" if collect else "/soak/stats")
    if status != 200:
        raise RuntimeError(f"/soak/stats answered {status}: {body[:200]!r}")
    result: Stats = json.loads(body)
    return result


async def wait_for_stats(
    port: int, condition: Callable[[Stats], bool], bound: float, *, collect: bool = False
) -> tuple[bool, float, Stats]:
    """Poll ``/soak/stats`` until ``condition`` holds or ``bound`` seconds have passed.

    Returns whether it held within ``bound``, how long that took and the last stats seen.
    """
    started = time.monotonic()
    while True:
        current = await stats(port, collect=collect)
        elapsed = time.monotonic() - started
        if condition(current):
            return elapsed <= bound, elapsed, current
        if elapsed >= bound:
            return False, elapsed, current
        await anyio.sleep(0.05)


def ws_url(port: int) -> str:
    return f"ws://127.0.0.1:{port}/ws/echo/"


async def open_echo(port: int) -> ClientConnection:
    """A well-behaved client, connected (the caller closes it)."""
    return await connect(ws_url(port), open_timeout=PATIENCE, max_size=None, compression=None)


async def echo(ws: ClientConnection, value: object) -> None:
    """One round trip, checked: a wrong answer raises."""
    await ws.send(json.dumps({"echo": value}))
    with anyio.fail_after(PATIENCE):
        reply = json.loads(await ws.recv())
    if reply != {"echo": value}:
        raise RuntimeError(f"echo of {value!r} answered {reply!r}")


class RawWebSocket:
    """A blocking TCP socket that has done the WebSocket handshake and nothing else."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=PATIENCE)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                "GET /ws/echo/ HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise RuntimeError(f"the server closed the handshake: {head!r}")
            head += chunk
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(f"the handshake was refused: {head[:200]!r}")

    def send_text(self, text: str) -> None:
        """One masked text frame, as a client must send it."""
        payload = text.encode()
        mask = os.urandom(4)
        if len(payload) < 126:
            header = struct.pack("!BB", 0x81, 0x80 | len(payload))
        elif len(payload) < 1 << 16:
            header = struct.pack("!BBH", 0x81, 0x80 | 126, len(payload))
        else:
            header = struct.pack("!BBQ", 0x81, 0x80 | 127, len(payload))
        masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def leave_with_fin(self) -> None:
        """Half-close (FIN) without a close frame, then let the socket go."""
        self.sock.shutdown(socket.SHUT_WR)
        self.sock.close()

    def leave_with_rst(self) -> None:
        """Close with ``SO_LINGER`` 0: the kernel resets the connection."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()
