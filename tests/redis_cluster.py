"""A real Redis Cluster on loopback for the cluster layer tests.

``CHANNELS_TEST_REDIS_CLUSTER`` (comma-separated startup URLs) names a cluster to use for
the tests that only talk to it; otherwise, and always for the tests that fail over, kill
or reshard, six ``redis-server`` processes are started here on free ports (three masters,
three replicas), each in a temporary directory, persisting nothing, and joined with
``redis-cli --cluster create``. Commands to the nodes go through a small blocking client.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from coredis.parser import NotEnoughData, Parser

from channels.layers.redis.connection import pack
from channels.layers.redis.slots import key_slot

__all__ = ["Cluster", "Node", "external_cluster_urls"]

#: Milliseconds without an answer before a master is considered failed (Redis: 15000).
NODE_TIMEOUT_MS = 1000


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def command(port: int, *args: Any, timeout: float = 5) -> Any:
    """Run one command on the node at ``port`` and return its reply (errors returned)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(pack([args]))
        parser = Parser()
        while True:
            parsed = parser.parse(decode=False)
            if not isinstance(parsed, NotEnoughData):
                return parsed[1]
            data = sock.recv(65536)
            if not data:
                raise ConnectionError(f"node {port} closed the connection")
            parser.feed(data)


def info(port: int, section: str) -> dict[str, str]:
    text = command(port, "INFO", section) if section else command(port, "CLUSTER", "INFO")
    return dict(
        line.split(":", 1) for line in text.decode().splitlines() if ":" in line and line[0] != "#"
    )


@dataclass(eq=False)
class Node:
    port: int
    bus_port: int
    directory: str
    process: subprocess.Popen[bytes] | None = None
    id: str = field(default="")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self, binary: str) -> None:
        self.process = subprocess.Popen(
            [
                binary,
                "--port", str(self.port),
                "--cluster-port", str(self.bus_port),
                "--bind", "127.0.0.1",
                "--cluster-enabled", "yes",
                "--cluster-config-file", os.path.join(self.directory, "nodes.conf"),
                "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                "--save", "",
                "--appendonly", "no",
                "--dir", self.directory,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if command(self.port, "PING", timeout=0.5) == b"PONG":
                    self.id = command(self.port, "CLUSTER", "MYID").decode()
                    return
            except OSError:
                pass
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def kill(self) -> None:
        """SIGKILL: the node vanishes mid-traffic, as a crashed machine would."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.process = None

    def role(self) -> str:
        return info(self.port, "replication")["role"]


class Cluster:
    """Six nodes of our own: three masters with a replica each."""

    def __init__(self, size: int = 6) -> None:
        binary = shutil.which("redis-server")
        cli = shutil.which("redis-cli")
        if binary is None or cli is None:
            raise RuntimeError(
                "The Redis Cluster tests need redis-server and redis-cli (apt-get install "
                "redis-server), or CHANNELS_TEST_REDIS_CLUSTER=redis://host:port,... naming "
                "a running cluster"
            )
        self.binary = binary
        self.root = tempfile.mkdtemp(prefix="channels-redis-cluster-")
        self.nodes: list[Node] = []
        try:
            for n in range(size):
                directory = os.path.join(self.root, str(n))
                os.mkdir(directory)
                node = Node(_free_port(), _free_port(), directory)
                self.nodes.append(node)
                node.start(binary)
            subprocess.run(
                [
                    cli,
                    "--cluster", "create",
                    *(f"127.0.0.1:{node.port}" for node in self.nodes),
                    "--cluster-replicas", "1",
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=60,
            )  # fmt: skip
            self.wait_ok()
            for node in self.nodes:
                self.wait_synced(node)
        except BaseException:
            self.close()
            raise

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def alive(self) -> list[Node]:
        return [node for node in self.nodes if node.process is not None]

    def wait_ok(self, timeout: float = 30) -> None:
        """Until every live node says the cluster is ok and agrees on who serves what."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                states = [info(node.port, "") for node in self.alive()]
                maps = {self._slot_owners(node.port) for node in self.alive()}
                if (
                    all(
                        s["cluster_state"] == "ok" and s["cluster_slots_ok"] == "16384"
                        for s in states
                    )
                    and len(maps) == 1
                ):
                    return
            except (OSError, KeyError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not become ok")
            time.sleep(0.05)

    def _slot_owners(self, port: int) -> tuple[tuple[int, int, int], ...]:
        reply = command(port, "CLUSTER", "SLOTS")
        return tuple(sorted((int(e[0]), int(e[1]), int(e[2][1])) for e in reply))

    def node(self, port: int) -> Node:
        return next(node for node in self.nodes if node.port == port)

    def master_of(self, name: str) -> Node:
        """The node serving ``name``'s slot now."""
        slot = key_slot(name)
        for start, end, port in self._slot_owners(self.alive()[0].port):
            if start <= slot <= end:
                return self.node(port)
        raise LookupError(f"no node serves slot {slot}")

    def replica_of(self, master: Node) -> Node:
        for node in self.alive():
            if node is not master and info(node.port, "replication").get("master_port") == str(
                master.port
            ):
                return node
        raise LookupError(f"master {master.port} has no live replica")

    def masters(self) -> list[Node]:
        return [node for node in self.alive() if node.role() == "master"]

    def failover(self, replica: Node) -> None:
        """``CLUSTER FAILOVER`` on ``replica``: the graceful switch an operator starts.

        Only a replica in sync can take over this way, and the demoted master is left in
        sync with it, so another failover can follow."""
        self.wait_synced(replica)
        old_master = self.node(int(info(replica.port, "replication")["master_port"]))
        # Redis gives a manual failover 5 s to complete and then drops it without a word
        # (a loaded machine can miss that): ask again, as an operator would.
        for _ in range(3):
            assert command(replica.port, "CLUSTER", "FAILOVER") == b"OK"
            deadline = time.monotonic() + 7
            while replica.role() != "master" and time.monotonic() < deadline:
                time.sleep(0.02)
            if replica.role() == "master":
                break
        else:
            raise RuntimeError(f"replica {replica.port} was not promoted")
        self.wait_ok()
        self.wait_synced(old_master)

    def revive(self, node: Node) -> None:
        """Start a killed node again; it rejoins as a replica of whoever took over, and
        is back once it has synced (a replica that has not could not be promoted)."""
        node.start(self.binary)
        self.wait_ok()
        self.wait_synced(node)

    def wait_synced(self, node: Node) -> None:
        """Until ``node``, if a replica, has synced with its master (only then could it be
        promoted)."""
        deadline = time.monotonic() + 20
        while True:
            replication = info(node.port, "replication")
            if replication["role"] == "master" or replication.get("master_link_status") == "up":
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"replica {node.port} did not sync with its master")
            time.sleep(0.02)

    def wait_promoted(self, replica: Node, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while replica.role() != "master":
            if time.monotonic() > deadline:
                raise RuntimeError(f"replica {replica.port} was not promoted")
            time.sleep(0.02)

    def migrate_slot(self, slot: int, target: Node) -> None:
        """Move ``slot`` to ``target`` with the steps ``redis-cli --cluster reshard`` takes:
        IMPORTING on the target, MIGRATING on the source, move its keys, then assign it."""
        source = next(
            self.node(port)
            for start, end, port in self._slot_owners(target.port)
            if start <= slot <= end
        )
        assert source is not target
        assert command(target.port, "CLUSTER", "SETSLOT", slot, "IMPORTING", source.id) == b"OK"
        assert command(source.port, "CLUSTER", "SETSLOT", slot, "MIGRATING", target.id) == b"OK"
        while keys := command(source.port, "CLUSTER", "GETKEYSINSLOT", slot, 100):
            command(source.port, "MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
        for node in (target, source, *self.masters()):
            command(node.port, "CLUSTER", "SETSLOT", slot, "NODE", target.id)
        self.wait_ok()

    def close(self) -> None:
        for node in self.nodes:
            node.kill()
        shutil.rmtree(self.root, ignore_errors=True)


def external_cluster_urls() -> list[str] | None:
    """The startup URLs in ``CHANNELS_TEST_REDIS_CLUSTER``, if it is set."""
    value = os.environ.get("CHANNELS_TEST_REDIS_CLUSTER", "").strip()
    return [url.strip() for url in value.split(",") if url.strip()] or None


def _serve() -> None:
    """``python -m tests.redis_cluster``: start a cluster, print its startup URLs as one JSON
    line, and stop it when standard input closes. The benchmark harness runs this with the
    benchmark environment's Python, since its own Python need not have this package's
    dependencies."""
    import json
    import sys

    try:
        cluster = Cluster()
    except RuntimeError as exc:
        print(json.dumps({"error": str(exc)}), flush=True)
        return
    try:
        print(json.dumps({"urls": cluster.urls}), flush=True)
        sys.stdin.read()
    finally:
        cluster.close()


if __name__ == "__main__":
    _serve()
