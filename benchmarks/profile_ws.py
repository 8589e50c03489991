"""Profile the server side of the WebSocket broadcast or connect workloads, for A/B work on
a busy machine, where wall-clock rates swing with other jobs but a process's own CPU time
and instruction count do not (much).

    python benchmarks/profile_ws.py broadcast --app broadcast_app --backend trio --measure cpu
    python benchmarks/profile_ws.py broadcast --measure pyinstrument   # writes an HTML profile
    python benchmarks/profile_ws.py connect --measure callgrind        # instructions, exact

Run it with the Python of ``benchmarks/.venvs/ours`` (or ``upstream``). The server is
hypercorn in a child process serving ``e2e_app:<app>``; only the measured phase is counted
(the broadcast, from the request to the last frame at the clients; or the connects):
``cpu`` reads the server's user+system CPU, ``pyinstrument`` starts and stops a sampling
profiler in it on SIGUSR1/SIGUSR2, ``callgrind`` runs it under valgrind and switches
instrumentation on and off with ``callgrind_control``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import workloads  # noqa: E402


def serve(app_name: str, backend: str, port: int, profile_to: str | None, server: str) -> None:
    """The child: hypercorn serving ``e2e_app:<app_name>``, profiled between signals."""
    import importlib

    from hypercorn.config import Config

    app = getattr(importlib.import_module("e2e_app"), app_name)
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.backlog = 1024
    if profile_to:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.002, async_mode="disabled")

        def start(*_: Any) -> None:
            profiler.start()

        def stop(*_: Any) -> None:
            profiler.stop()
            Path(profile_to).write_text(profiler.output_html())
            Path(profile_to).with_suffix(".txt").write_text(
                profiler.output_text(unicode=False, show_all=False)
            )

        signal.signal(signal.SIGUSR1, start)
        signal.signal(signal.SIGUSR2, stop)
    if server == "channels":
        from channels.serving import serve as channels_serve

        # No keepalive: under valgrind, a slow connect phase would count as silence.
        channels_serve(app, bind=[f"127.0.0.1:{port}"], backend=backend, ping_interval=None)  # type: ignore[arg-type]
    elif backend == "trio":
        import trio
        from hypercorn.trio import serve as trio_serve

        trio.run(trio_serve, app, config)
    else:
        import asyncio

        from hypercorn.asyncio import serve as asyncio_serve

        asyncio.run(asyncio_serve(app, config))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("phase", choices=["broadcast", "connect"])
    parser.add_argument("--app", default="broadcast_app")
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    parser.add_argument(
        "--server", default="hypercorn", choices=["hypercorn", "channels"],
        help="hypercorn's own serve(), or this package's channels.serving.serve()",
    )  # fmt: skip
    parser.add_argument("--measure", default="cpu", choices=["cpu", "pyinstrument", "callgrind"])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--sends", type=int, default=50)
    parser.add_argument("--out", default="/tmp/profile_ws")
    if sys.argv[1:2] == ["--serve"]:
        app_name, backend, port, profile_to, server = sys.argv[2:7]
        serve(app_name, backend, int(port), profile_to if profile_to != "-" else None, server)
        return
    args = parser.parse_args()

    workloads.raise_open_files_limit(args.connections + 512)
    port = workloads.free_port()
    profile_to = f"{args.out}.html" if args.measure == "pyinstrument" else "-"
    command = [sys.executable, __file__, "--serve", args.app, args.backend, str(port)]
    command += [profile_to, args.server]
    if args.measure == "callgrind":
        command = [
            "valgrind", "--tool=callgrind", "--instr-atstart=no",
            f"--callgrind-out-file={args.out}.callgrind", *command,
        ]  # fmt: skip
    server = subprocess.Popen(command, cwd=HERE, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, server)
        params = {
            "connections": args.connections,
            "processes": args.processes,
            "sends": args.sends,
            "concurrency": 25,
        }
        mode = "broadcast" if args.phase == "broadcast" else "idle"
        if args.phase == "connect":
            import anyio

            anyio.run(workloads.warm_up, port, backend="asyncio")
        with workloads.client_pool(port, "/", params, mode) as pool:
            if args.phase == "broadcast":
                pool.read()
            toggle(args.measure, server.pid, on=True)
            cpu = workloads.tree_cpu_s(server.pid)
            started = time.perf_counter()
            if args.phase == "broadcast":
                import anyio

                anyio.run(workloads.request_broadcast, port, args.sends, "x" * 64)
                results = pool.read()
                count = sum(len(r["latencies"]) for r in results)
            else:
                ready = pool.read()
                count = sum(r["ready"] for r in ready)
            elapsed = time.perf_counter() - started
            cpu = workloads.tree_cpu_s(server.pid) - cpu
            toggle(args.measure, server.pid, on=False)
            if args.phase == "connect":
                pool.tell()
            pool.read()
        unit = "delivery" if args.phase == "broadcast" else "connect"
        print(
            json.dumps(
                {
                    "count": count,
                    "elapsed_s": round(elapsed, 3),
                    "server_cpu_s": round(cpu, 3),
                    f"server_cpu_us_per_{unit}": round(cpu / count * 1e6, 1),
                }
            )
        )
        if args.measure == "pyinstrument":
            text = Path(profile_to).with_suffix(".txt")
            deadline = time.monotonic() + 60
            while not text.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(0.5)
            print(f"profile: {profile_to} and {Path(profile_to).with_suffix('.txt')}")
    finally:
        server.terminate()
        server.wait(30)
    if args.measure == "callgrind":
        summary = subprocess.run(
            ["callgrind_annotate", f"{args.out}.callgrind"], capture_output=True, text=True
        ).stdout
        total = next((line for line in summary.splitlines() if "PROGRAM TOTALS" in line), "")
        print(f"instructions: {total.split()[0] if total else '?'} ({args.out}.callgrind)")


def toggle(measure: str, pid: int, *, on: bool) -> None:
    if measure == "pyinstrument":
        os.kill(pid, signal.SIGUSR1 if on else signal.SIGUSR2)
    elif measure == "callgrind":
        subprocess.run(["callgrind_control", "-i", "on" if on else "off", str(pid)], check=True)


def wait_listening(port: int, server: subprocess.Popen[bytes]) -> None:
    import socket

    deadline = time.monotonic() + 120
    while True:
        if server.poll() is not None:
            raise RuntimeError("the server exited")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start") from None
            time.sleep(0.1)


if __name__ == "__main__":
    main()
