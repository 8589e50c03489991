"""The process-local delivery the Redis layers share (``channels.layers.redis.local``).

A group message is filed for every local member at once, with one deadline and one copy
decision for them all; these check that each member still gets its own copy, its own
capacity and the message's expiry. Filings give the clock (``now``) and expiry is run
for explicit moments, so no test waits for time to pass; those moments are counted from
the real clock, which ``take`` reads.
"""

from __future__ import annotations

import time

import anyio
import anyio.lowlevel

from channels.layers.redis.local import _MIN_COMPACTION, Mailboxes, Readers, deliver
from channels.types import Message


def mailboxes(
    capacities: dict[str, int] | None = None, expiry: float = 60, dropped: list[str] | None = None
) -> Mailboxes:
    """Mailboxes with a capacity of 100 unless ``capacities`` says otherwise; the channels
    of dropped messages are appended to ``dropped``."""
    log = dropped if dropped is not None else []
    return Mailboxes(expiry, lambda channel: (capacities or {}).get(channel, 100), log.append)


def test_each_member_of_a_flat_group_message_gets_its_own_copy() -> None:
    boxes = mailboxes()
    members = ["a", "b", "c"]
    message: Message = {"type": "m", "n": 1, "text": "hi"}
    assert deliver(boxes, Readers(boxes), members, message)
    received = [boxes.take(channel) for channel in members]
    assert all(got == {"type": "m", "n": 1, "text": "hi"} for got in received)
    assert len({id(got) for got in received}) == 3
    first = received[0]
    assert first is not None
    first["n"] = 2
    first["added"] = True
    assert received[1] == received[2] == {"type": "m", "n": 1, "text": "hi"}


def test_each_member_of_a_nested_group_message_gets_its_own_copy() -> None:
    boxes = mailboxes()
    members = ["a", "b"]
    deliver(boxes, Readers(boxes), members, {"type": "m", "items": [1], "deep": {"k": "v"}})
    first, second = boxes.take("a"), boxes.take("b")
    assert first is not None
    first["items"].append(2)
    first["deep"]["k"] = "changed"
    assert second == {"type": "m", "items": [1], "deep": {"k": "v"}}


def test_a_full_member_drops_its_oldest_and_the_others_keep_theirs() -> None:
    dropped: list[str] = []
    boxes = mailboxes({"small": 1}, dropped=dropped)
    readers = Readers(boxes)
    for n in range(3):
        deliver(boxes, readers, ["small", "big"], {"type": "m", "n": n})
    assert dropped == ["small", "small"]
    assert boxes.take("small") == {"type": "m", "n": 2}
    assert boxes.take("small") is None
    assert [boxes.take("big") for _ in range(3)] == [{"type": "m", "n": n} for n in range(3)]


def test_a_group_message_expires_for_every_member_that_has_not_taken_it() -> None:
    boxes = mailboxes(expiry=60)
    readers = Readers(boxes)
    start = time.monotonic()
    deliver(boxes, readers, ["a", "b", "c"], {"type": "old"}, now=start)
    deliver(boxes, readers, ["a", "b"], {"type": "new"}, now=start + 5)
    assert boxes.take("a") == {"type": "old"}  # taken before its deadline
    boxes.expire(start + 60)
    assert boxes.take("b") == {"type": "new"}
    assert boxes.take("c") is None
    assert "c" not in boxes.buffers  # an emptied buffer goes with its last deadline
    boxes.expire(start + 65)
    assert boxes.buffers == {}


def test_filing_expires_what_is_past_its_deadline() -> None:
    boxes = mailboxes(expiry=60)
    readers = Readers(boxes)
    start = time.monotonic()
    deliver(boxes, readers, ["a", "b"], {"type": "old"}, now=start - 70)
    deliver(boxes, readers, ["b"], {"type": "new"}, now=start)
    assert "a" not in boxes.buffers
    assert [entry[1] for entry in boxes.buffers["b"]] == [{"type": "new"}]


def test_deadlines_follow_what_is_buffered_not_the_traffic() -> None:
    """A busy channel's filings, taken at once, do not pile up until they expire; what is
    still buffered keeps its deadline, and buffers of channels gone quiet are dropped."""
    boxes = mailboxes(expiry=60)
    readers = Readers(boxes)
    start = time.monotonic()
    deliver(boxes, readers, ["waiting"], {"type": "kept"}, now=start)
    for n in range(5 * _MIN_COMPACTION):
        channel = f"churned{n}" if n < 1000 else "busy"
        deliver(boxes, readers, [channel], {"type": "m", "n": n}, now=start + 1)
        assert boxes.take(channel) == {"type": "m", "n": n}
    members = [f"member{n}" for n in range(50)]
    for n in range(500):  # group messages: each deadline names all 50 members
        deliver(boxes, readers, [*members], {"type": "g", "n": n}, now=start + 1)
        assert all(boxes.take(member) == {"type": "g", "n": n} for member in members)
    named = sum(len(channels) for _, channels in boxes._deadlines)
    assert named <= 2 * _MIN_COMPACTION
    assert set(boxes.buffers) <= {"waiting", "busy", *members}
    boxes.expire(start + 60)
    assert "waiting" not in boxes.buffers  # its deadline was kept through the rebuilds


async def test_a_waiting_member_is_woken_by_the_group_filing() -> None:
    boxes = mailboxes()
    readers = Readers(boxes)
    readers.reading = True  # someone else reads: these receivers wait

    async def never() -> None:
        raise AssertionError("nobody should read")

    got: dict[str, Message] = {}

    async def receive(channel: str) -> None:
        got[channel] = await readers.receive(channel, never)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            for channel in ("a", "b"):
                group.start_soon(receive, channel)
            while len(readers.waiters) < 2:
                await anyio.lowlevel.checkpoint()
            deliver(boxes, readers, ["a", "b"], {"type": "m"})
    assert got == {"a": {"type": "m"}, "b": {"type": "m"}}
    assert got["a"] is not got["b"]
    assert readers.waiters == {}


async def test_a_cancelled_waiter_is_forgotten_and_its_message_kept() -> None:
    boxes = mailboxes()
    readers = Readers(boxes)
    readers.reading = True

    async def never() -> None:
        raise AssertionError("nobody should read")

    with anyio.move_on_after(0.05):
        await readers.receive("a", never)
    assert readers.waiters == {}
    deliver(boxes, readers, ["a"], {"type": "after"})
    with anyio.fail_after(5):
        assert await readers.receive("a", never) == {"type": "after"}
