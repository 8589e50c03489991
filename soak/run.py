"""The soak's command line: serve, probe, print the table, exit 1 on any FAIL.

``python -m soak`` runs every probe on asyncio, then on trio; ``--quick`` (or
``SOAK=short`` in the environment) is the short form CI runs. ``--backend`` and
``--probe`` narrow the run; ``--json FILE`` also writes the outcomes with their raw numbers.

Per backend, a private ``redis-server`` is started; the project is served on the core
Redis layer (``--layer`` picks another: ``memory`` measures the server alone, as when
profiling the churn rate) for every probe but the pub/sub one, which gets a server of
its own. Probes
run one after another against the same process (a server that survived the previous
probes is the point), and each cleans up its own clients; the stop probe ends its server,
so it runs last.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import anyio

from tests.redis_server import RedisServer
from tests.server_process import ROOT, ServerProcess

from . import probes
from .probes import FULL, QUICK, Outcome, Plan, Target

BACKENDS = ("asyncio", "trio")
#: The layers the soak project can be served on (``SOAK_LAYER`` in soak/project/settings.py).
LAYERS = ("redis", "pubsub", "memory")
#: Longest a single probe may run before it is called a failure.
PROBE_DEADLINE = 120.0


@dataclass(frozen=True)
class Probe:
    name: str
    label: str
    run: Callable[[Target], Awaitable[Outcome]]
    #: The layer of the server it runs against; ``None``: the main server's.
    layer: str | None = None
    #: It stops its server, so it runs after the others on that server.
    ends_server: bool = False
    #: It needs a server started with ``--access-log`` (one of its own).
    access_log: bool = False


PROBES = [
    Probe("churn", "churn: connect/echo/close cycles", probes.churn),
    Probe("fin", "disconnect: FIN, no close frame", probes.fin),
    Probe("rst", "disconnect: RST", probes.rst),
    Probe("frozen", "disconnect: frozen, no pong", probes.frozen),
    Probe("not-json", "bad frame: not JSON", probes.bad_frame_probe("not-json")),
    Probe("binary", "bad frame: binary", probes.bad_frame_probe("binary")),
    Probe("huge", "bad frame: 17 MiB", probes.bad_frame_probe("huge")),
    Probe("nested", "bad frame: nested 100k deep", probes.bad_frame_probe("nested")),
    Probe("redis-persisted", "Redis restart, persisted", probes.redis_restart_persisted),
    Probe("redis-emptied", "Redis restart, emptied", probes.redis_restart_emptied),
    Probe(
        "pubsub-emptied",
        "Redis restart, emptied (pub/sub)",
        probes.redis_restart_emptied,
        layer="pubsub",
    ),
    Probe("access-log", "access log: a line per event", probes.access_log, access_log=True),
    Probe("stop", "stop with a stuck client", probes.stop_with_stuck_client, ends_server=True),
]


def serving_options() -> str:
    """``python -m channels.serving --help``: which options this checkout's server has."""
    result = subprocess.run(
        [sys.executable, "-m", "channels.serving", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
    )
    return result.stdout


@contextlib.asynccontextmanager
async def serving(
    backend: str,
    layer: str,
    plan: Plan,
    redis: RedisServer | None,
    *,
    pings: bool,
    fault: str = "",
    access_log: bool = False,
) -> AsyncIterator[Target]:
    """The soak project served on ``backend`` and ``layer``, warmed up, its idle taken;
    with ``access_log``, writing its access log to a temporary file."""
    directory = contextlib.ExitStack()
    log: Path | None = None
    if access_log:
        log = Path(directory.enter_context(tempfile.TemporaryDirectory())) / "access.log"
    args = [
        "-m", "channels.serving", "soak.project.asgi:application",
        "--bind", "127.0.0.1:0", "--backend", backend,
        "--graceful-timeout", str(plan.graceful_timeout),
    ]  # fmt: skip
    if pings:
        args += ["--ping-interval", str(plan.ping_interval)]
        args += ["--ping-timeout", str(plan.ping_timeout)]
    if log is not None:
        args += ["--access-log", str(log)]
    env = {"SOAK_LAYER": layer, "SOAK_FAULT": fault}
    if redis is not None:
        env["SOAK_REDIS_URL"] = redis.url
    with directory, ServerProcess(args, settings="soak.project.settings", env=env) as process:
        line = await anyio.to_thread.run_sync(process.wait_for_line, "Listening on")
        port = int(line.rsplit(":", 1)[1])
        target = Target(process, port, backend, layer, plan, redis, pings, access_log=log)
        await probes.cycles(port, plan.warmup, plan.concurrency)
        target.idle = await probes.settle(port)
        try:
            yield target
        finally:
            if process.process.poll() is None:
                process.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    await anyio.to_thread.run_sync(process.process.wait, 10)


async def run_probe(probe: Probe, target: Target) -> Outcome:
    if target.process.process.poll() is not None:
        return Outcome(False, [f"server exited ({target.process.process.returncode})"])
    try:
        with anyio.fail_after(PROBE_DEADLINE):
            return await probe.run(target)
    except Exception as exc:  # a probe that breaks is a FAIL with its reason, not a crash
        return Outcome(False, [f"error: {type(exc).__name__}: {exc}"[:300]])


async def run_backend(
    backend: str,
    plan: Plan,
    selected: Sequence[Probe],
    *,
    layer: str = "redis",
    fault: str = "",
    report: Callable[[str], None] = print,
) -> dict[str, Outcome]:
    """Every probe of ``selected`` on ``backend``: their outcomes by probe name."""
    pings = "--ping-interval" in serving_options()
    outcomes: dict[str, Outcome] = {}
    redis = RedisServer() if layer != "memory" or any(p.layer for p in selected) else None
    try:
        servers: dict[tuple[str, bool], list[Probe]] = {}
        for probe in selected:
            servers.setdefault((probe.layer or layer, probe.access_log), []).append(probe)
        for (server_layer, access_log), batch in servers.items():
            batch.sort(key=lambda probe: probe.ends_server)
            async with serving(
                backend, server_layer, plan, redis, pings=pings, fault=fault, access_log=access_log
            ) as target:
                for probe in batch:
                    started = time.monotonic()
                    outcome = outcomes[probe.name] = await run_probe(probe, target)
                    verdict = "PASS" if outcome.passed else "FAIL"
                    report(
                        f"  {backend:7} {probe.label:34} {verdict} "
                        f"({time.monotonic() - started:.1f} s)"
                    )
    finally:
        if redis is not None:
            redis.close()
    return outcomes


def table(results: dict[str, dict[str, Outcome]], selected: Sequence[Probe]) -> str:
    """Rows = probes, columns = backends; each cell is PASS/FAIL then its figures."""
    backends = list(results)
    width = 40
    label_width = max(len(probe.label) for probe in selected)
    rule = "+-" + "-" * label_width + "-+" + "+".join("-" * (width + 2) for _ in backends) + "+"
    lines = [rule, "| " + "probe".ljust(label_width) + " |"]
    lines[-1] += "|".join(f" {backend.ljust(width)} " for backend in backends) + "|"
    lines.append(rule.replace("-", "="))
    for probe in selected:
        cells = []
        for backend in backends:
            outcome = results[backend].get(probe.name)
            if outcome is None:
                cells.append(["-"])
                continue
            cell = ["PASS" if outcome.passed else "FAIL"]
            for figure in outcome.figures:
                cell += textwrap.wrap(figure, width, initial_indent="  ", subsequent_indent="    ")
            cells.append(cell)
        for index in range(max(len(cell) for cell in cells)):
            label = probe.label if index == 0 else ""
            row = "| " + label.ljust(label_width) + " |"
            row += "|".join(
                f" {(cell[index] if index < len(cell) else '').ljust(width)} " for cell in cells
            )
            lines.append(row + "|")
        lines.append(rule)
    return "\n".join(lines)


def failures(results: dict[str, dict[str, Outcome]], selected: Sequence[Probe]) -> list[str]:
    """``"probe on backend"`` for every FAIL."""
    return [
        f"{probe.name} on {backend}"
        for backend, outcomes in results.items()
        for probe in selected
        if probe.name in outcomes and not outcomes[probe.name].passed
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m soak",
        description="The reliability suite: real servers on asyncio and trio, real faults.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        default=os.environ.get("SOAK") == "short",
        help="the short form CI runs (also SOAK=short)",
    )
    parser.add_argument("--backend", action="append", choices=BACKENDS)
    parser.add_argument("--probe", action="append", choices=[probe.name for probe in PROBES])
    parser.add_argument(
        "--layer",
        choices=LAYERS,
        default="redis",
        help="the channel layer of the main server (default %(default)s); the Redis restart "
        "probes need a Redis one",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the outcomes as JSON")
    options = parser.parse_args(argv)
    plan = QUICK if options.quick else FULL
    backends = options.backend or list(BACKENDS)
    selected = [probe for probe in PROBES if not options.probe or probe.name in options.probe]

    started = time.monotonic()
    print(f"soak ({'short' if options.quick else 'full'} form): {plan}", flush=True)
    results = {
        backend: anyio.run(
            functools.partial(run_backend, backend, plan, selected, layer=options.layer),
            backend="asyncio",
        )
        for backend in backends
    }
    print(table(results, selected))
    failed = failures(results, selected)
    elapsed = time.monotonic() - started
    if options.json:
        with open(options.json, "w") as file:
            json.dump(
                {b: {n: asdict(o) for n, o in r.items()} for b, r in results.items()},
                file,
                indent=2,
                default=str,
            )
    if failed:
        print(f"soak: FAIL ({len(failed)}): {', '.join(failed)} [{elapsed:.0f} s]")
        return 1
    print(f"soak: PASS, every probe on {', '.join(backends)} [{elapsed:.0f} s]")
    return 0
