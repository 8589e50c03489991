"""The benchmark workloads (``benchmarks/workloads.py``) run correctly on this package.

``make bench`` is not part of CI; this keeps its workload code honest there, at sizes that
take milliseconds. Speed is not asserted: only that every message arrives, in order.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio.lowlevel
import pytest

from channels.layers import InMemoryChannelLayer


@pytest.fixture(scope="module")
def workloads() -> ModuleType:
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "workloads.py"
    spec = importlib.util.spec_from_file_location("bench_workloads", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def test_point_to_point_delivers_everything_in_order(workloads: ModuleType) -> None:
    result = await workloads.point_to_point(InMemoryChannelLayer(), count=1_000)
    assert result["received"] == 1_000
    assert result["out_of_order"] == 0
    assert result["msgs_per_s"] > 0


@pytest.mark.parametrize(("members", "sends"), [(5, 30), (50, 3)])
async def test_fan_out_counts_deliveries_and_drops(
    workloads: ModuleType, members: int, sends: int
) -> None:
    result = await workloads.fan_out(InMemoryChannelLayer(), members=members, sends=sends)
    assert result["delivered"] + result["drops"] == members * sends
    assert result["drops"] == 0  # members keep up at the default capacity


class LaggingLayer(InMemoryChannelLayer):
    """Its receivers take a few scheduler turns to come back for each message."""

    async def receive(self, channel: str) -> dict[str, Any]:
        for _ in range(3):
            await anyio.lowlevel.checkpoint()
        return await super().receive(channel)


async def test_fan_out_counts_drops_when_members_lag(workloads: ModuleType) -> None:
    # Capacity 1 and members slower than the sender: some sends find a member's channel
    # full. They are counted as drops, and the run still ends.
    result = await workloads.fan_out(LaggingLayer(capacity=1), members=3, sends=20)
    assert result["drops"] > 0
    assert result["delivered"] + result["drops"] == 60


async def test_many_channels_reads_back_every_message(workloads: ModuleType) -> None:
    result = await workloads.many_channels(InMemoryChannelLayer(), channels=50, per_channel=10)
    assert result["out_of_order"] == 0
    assert result["receive_msgs_per_s"] > 0
