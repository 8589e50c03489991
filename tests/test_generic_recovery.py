"""Positions from the query string and the recovery frame, as channels.js speaks them."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from channels.generic.recovery import positions_from_scope, recovery_status
from channels.layers.durable import GroupHistory, StreamPosition


def scope_with(query: str) -> dict[str, object]:
    return {"type": "websocket", "query_string": query.encode()}


def test_positions_come_from_the_query_string() -> None:
    sent = {"chat_a": {"epoch": "e1", "offset": 7}, "news": {"epoch": "e2", "offset": 0}}
    scope = scope_with(f"room=a&positions={quote(json.dumps(sent))}")
    assert positions_from_scope(scope) == {
        "chat_a": StreamPosition("e1", 7),
        "news": StreamPosition("e2", 0),
    }
    assert (
        positions_from_scope(scope_with(f"p={quote(json.dumps(sent))}"), "p")["news"].offset == 0
    )


def test_no_positions_is_a_first_connection() -> None:
    assert positions_from_scope(scope_with("")) == {}
    assert positions_from_scope({"type": "websocket"}) == {}


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("{nope", "is not JSON"),
        ("[1]", "must be a JSON object of group -> position, got list"),
        ('{"g": {"epoch": "e"}}', "The position of group 'g' is invalid: .*'epoch' and 'offset'"),
        ('{"g": {"epoch": "e", "offset": -1}}', "The position of group 'g' is invalid"),
        ('{"g": 3}', "The position of group 'g' is invalid"),
    ],
)
def test_bad_positions_are_a_clear_error(value: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        positions_from_scope(scope_with(f"positions={quote(value)}"))


def test_the_recovery_status_frame() -> None:
    history = GroupHistory(StreamPosition("e", 9), [], True)
    assert recovery_status("g", history) == {
        "__recovery__": {"group": "g", "recovered": True, "position": {"epoch": "e", "offset": 9}}
    }
    assert recovery_status("g", GroupHistory(None, [], False)) == {
        "__recovery__": {"group": "g", "recovered": False, "position": None}
    }
