"""The reliability suite's machinery (``make soak``), at sizes that take seconds.

The soak's verdicts involve time bounds, which a unit test must not judge; so these tests
read the raw numbers the probes measured (leftover counts, close codes, deliveries) and
check that the harness notices a leak when the served project has one. The server runs on
each backend in turn; the harness's clients are asyncio (``websockets``) either way.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any

import anyio
import pytest

from soak.probes import Outcome, Plan
from soak.run import PROBES, failures, run_backend, table

BACKENDS = ["asyncio", "trio"]
TINY = Plan(
    churn=20,
    warmup=4,
    concurrency=2,
    abrupt=2,
    members=2,
    ping_interval=0.5,
    ping_timeout=0.5,
    graceful_timeout=1.0,
)


def run(backend: str, names: list[str], **options: Any) -> dict[str, Outcome]:
    """The harness as ``python -m soak`` runs it: its own asyncio loop, here in a thread
    of its own (whatever event-loop state earlier tests left in this one)."""
    selected = [probe for probe in PROBES if probe.name in names]

    def harness() -> dict[str, Outcome]:
        return anyio.run(
            lambda: run_backend(backend, TINY, selected, report=lambda line: None, **options),
            backend="asyncio",
        )

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(harness).result()


@pytest.mark.parametrize("backend", BACKENDS)
def test_churn_disconnects_and_bad_frames_leave_nothing_behind(backend: str) -> None:
    outcomes = run(backend, ["churn", "fin", "rst", "not-json", "nested"], layer="memory")
    churn = outcomes["churn"].values
    assert churn["cycles"] == 20
    for key in ("consumers", "consumers_alive", "memberships", "channels", "tasks"):
        assert churn[f"{key}_left"] == 0, (key, outcomes["churn"].figures)
    assert all(kib > 0 for kib in churn["rss_kib"])
    assert outcomes["fin"].values["cleaned"], outcomes["fin"].figures
    assert outcomes["rst"].values["cleaned"], outcomes["rst"].figures
    for kind in ("not-json", "nested"):
        found = outcomes[kind].values
        # The offender alone was closed, by a server-side error; the healthy client went on.
        assert found["close_code"] == 1011, outcomes[kind].figures
        assert found["cleaned"], outcomes[kind].figures
        assert found["healthy_error"] is None
        assert found["healthy_round_trips"] > 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_churn_probe_catches_a_consumer_that_stays_in_its_group(backend: str) -> None:
    outcomes = run(backend, ["churn"], layer="memory", fault="leak-membership")
    churn = outcomes["churn"]
    assert not churn.passed
    assert churn.values["memberships_left"] == churn.values["cycles"]
    assert f"{churn.values['cycles']} members" in " ".join(churn.figures)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_persisted_redis_restart_keeps_the_group_delivering(backend: str) -> None:
    outcomes = run(backend, ["redis-persisted"])
    found = outcomes["redis-persisted"].values
    assert found["reached"] == TINY.members, outcomes["redis-persisted"].figures
    assert found["still_open"] == TINY.members
    assert found["fresh_ok"]


def test_the_table_shows_each_verdict_and_failures_are_listed() -> None:
    selected = [probe for probe in PROBES if probe.name in ("fin", "rst")]
    results = {
        "asyncio": {"fin": Outcome(True, ["2 cleaned up"]), "rst": Outcome(False, ["1 left"])},
        "trio": {"fin": Outcome(True, ["2 cleaned up"]), "rst": Outcome(True, ["ok"])},
    }
    rendered = table(results, selected)
    rst_row = next(line for line in rendered.splitlines() if "disconnect: RST" in line)
    assert "FAIL" in rst_row.split("|")[2]
    assert "PASS" in rst_row.split("|")[3]
    assert "1 left" in rendered
    assert failures(results, selected) == ["rst on asyncio"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_access_log_probe_counts_a_line_per_request_and_websocket_event(
    backend: str,
) -> None:
    outcome = run(backend, ["access-log"], layer="memory")["access-log"]
    counted = outcome.values["counted"]
    assert counted == {
        "HTTP": TINY.access,
        "HANDSHAKING": TINY.access,
        "CONNECT": TINY.access,
        "DISCONNECT": TINY.access,
        "REJECT": 0,
    }, outcome.figures
    assert outcome.values["malformed"] == []
    assert outcome.values["whole_clients"] == TINY.access
