"""Redis Cluster hash slots: which slot a name is in, and which master serves each slot.

A cluster splits names (keys and shard channels alike) into 16384 slots by CRC-16 of the
name, or of its *hash tag*, the part between the first ``{`` and the next ``}`` when that
part is not empty. Each slot is served by one master. :class:`SlotMap` is this process's
picture of who serves what, learned with ``CLUSTER SLOTS`` and corrected by ``MOVED``
replies. It is plain data shared by every event loop; updating it is done by whichever
task noticed it was wrong.
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["SLOTS", "Address", "SlotMap", "key_slot"]

SLOTS = 16384

Address = tuple[str, int]


def _crc16_table() -> list[int]:
    # CRC-16/XMODEM (polynomial 0x1021, initial value 0), the one Redis Cluster uses.
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return table


_TABLE = _crc16_table()


def crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFF00) ^ _TABLE[((crc >> 8) & 0xFF) ^ byte]
    return crc


def key_slot(name: str | bytes) -> int:
    """The slot of a key or shard channel ``name``, hash tag rule included."""
    if isinstance(name, str):
        name = name.encode("utf-8")
    start = name.find(b"{")
    if start != -1:
        end = name.find(b"}", start + 1)
        if end > start + 1:
            name = name[start + 1 : end]
    return crc16(name) % SLOTS


class SlotMap:
    """The master serving each slot, as far as this process knows.

    ``stale`` says something suggested the picture is out of date (a ``MOVED``, a node
    that went away, a subscription the server dropped): the next task that needs a node
    reloads it. ``version`` changes with every change, so a reader can tell whether the
    subscriptions it placed are still where the map says.
    """

    def __init__(self) -> None:
        self.nodes: list[Address | None] = [None] * SLOTS
        self.stale: bool = True
        self.version: int = 0
        self.loaded_at: float = 0.0

    def node(self, slot: int) -> Address | None:
        return self.nodes[slot]

    def masters(self) -> list[Address]:
        """Every master the map names, in slot order."""
        return list(dict.fromkeys(node for node in self.nodes if node is not None))

    def moved(self, slot: int, address: Address) -> None:
        """A server said ``slot`` lives at ``address`` now: probably not the only change."""
        if self.nodes[slot] != address:
            self.nodes[slot] = address
            self.version += 1
        self.stale = True

    def load(self, reply: Any, asked: Address) -> None:
        """Replace the map with a ``CLUSTER SLOTS`` reply got from ``asked``.

        :raises ValueError: if the reply is not one (the server is not in cluster mode).
        """
        if not isinstance(reply, list):
            raise ValueError(f"not a CLUSTER SLOTS reply: {reply!r}")
        nodes: list[Address | None] = [None] * SLOTS
        for entry in reply:
            start, end, master = int(entry[0]), int(entry[1]), entry[2]
            host = master[0].decode("utf-8") if master[0] else asked[0]
            if host == "?":  # a node that does not know its own endpoint
                host = asked[0]
            address = (host, int(master[1]))
            for slot in range(start, end + 1):
                nodes[slot] = address
        if nodes != self.nodes:
            self.nodes = nodes
            self.version += 1
        self.stale = False
        self.loaded_at = time.monotonic()
