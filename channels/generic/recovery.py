"""The server's half of the browser client's recovery: positions in, recovery status out.

``channels.js`` remembers the last ``__position__`` it saw per group and, when it
reconnects, sends them all in the query string: ``?positions={"group": {"epoch": "...",
"offset": 7}, ...}`` (JSON, URL-encoded). A consumer reads them with
:func:`positions_from_scope`, joins each group from there with ``group_join(group,
after=...)`` and tells the client how that went with :func:`recovery_status`::

    async def connect(self):
        await self.accept()
        try:
            positions = positions_from_scope(self.scope)
        except ValueError:
            positions = {}  # a mangled URL: start afresh (recovered is then False)
        history = await self.group_join("chat_lobby", after=positions.get("chat_lobby"))
        await self.send_json(recovery_status("chat_lobby", history))

The client then emits a ``recovery`` event; ``recovered: false`` means "messages were
missed that cannot be replayed: reload your state".
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

from ..layers.durable import GroupHistory, StreamPosition
from ..types import Scope

__all__ = ["POSITIONS_PARAM", "RECOVERY_KEY", "positions_from_scope", "recovery_status"]

#: The query parameter channels.js sends positions in (its ``positionsParam`` option).
POSITIONS_PARAM = "positions"
#: The key of the frame that tells channels.js how a group's recovery went.
RECOVERY_KEY = "__recovery__"


def positions_from_scope(scope: Scope, param: str = POSITIONS_PARAM) -> dict[str, StreamPosition]:
    """The last position per group the client saw, from the connection's query string.

    An absent parameter gives ``{}`` (a first connection).

    :raises ValueError: if the parameter is there but is not a JSON object of group names
        to ``{"epoch", "offset"}`` positions; the message says what is wrong.
    """
    query = scope.get("query_string", b"")
    if isinstance(query, bytes):
        query = query.decode("latin-1")
    values = parse_qs(query).get(param)
    if not values:
        return {}
    try:
        content: Any = json.loads(values[-1])
    except ValueError:
        raise ValueError(f"The {param!r} query parameter is not JSON") from None
    if not isinstance(content, Mapping):
        raise ValueError(
            f"The {param!r} query parameter must be a JSON object of group -> position, "
            f"got {type(content).__name__}"
        )
    positions: dict[str, StreamPosition] = {}
    for group, value in content.items():  # pyright: ignore[reportUnknownVariableType]
        try:
            positions[str(group)] = StreamPosition.from_value(value)  # pyright: ignore[reportUnknownArgumentType]
        except (TypeError, ValueError) as error:
            raise ValueError(f"The position of group {group!r} is invalid: {error}") from None
    return positions


def recovery_status(group: str, history: GroupHistory) -> dict[str, Any]:
    """The frame payload that tells channels.js how joining ``group`` went:
    ``{"__recovery__": {"group", "recovered", "position"}}``.

    Send it right after ``group_join`` (the replayed messages follow it). With
    ``recovered`` false the client takes ``position`` (the stream's top) as its own and
    the app reloads its state.
    """
    position = history.position.as_dict() if history.position is not None else None
    return {RECOVERY_KEY: {"group": group, "recovered": history.recovered, "position": position}}
