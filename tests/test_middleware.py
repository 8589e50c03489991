"""BaseMiddleware: each connection's scope is its own (CVE-2020-35681)."""

from __future__ import annotations

from typing import Any

from channels.middleware import BaseMiddleware
from channels.testing import ApplicationCommunicator
from channels.types import Receive, Scope, Send


async def reporting_app(scope: Scope, receive: Receive, send: Send) -> str:
    """Changes its scope, waits for a message, then reports the scope it ended with."""
    scope["changed_by_app"] = True
    scope["tag"] = f"for {scope['client']}"
    await send({"type": "ready"})
    message = await receive()
    await send({"type": "report", "tag": scope["tag"], "for": message["for"]})
    return "result of the app"


async def test_inner_changes_do_not_reach_the_outer_scope() -> None:
    original: dict[str, Any] = {"type": "test", "client": "a"}
    seen: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)
        scope["changed_by_app"] = True
        await send({"type": "done"})

    communicator = ApplicationCommunicator(BaseMiddleware(app), original)
    assert await communicator.receive_output() == {"type": "done"}
    await communicator.wait()
    assert original == {"type": "test", "client": "a"}
    assert seen[0] is not original
    assert seen[0] == {"type": "test", "client": "a", "changed_by_app": True}


async def test_concurrent_connections_through_one_middleware_keep_their_own_scope() -> None:
    """One middleware instance serves both connections, interleaved: neither the other
    connection nor the server's scopes see what an app wrote in its scope."""
    middleware = BaseMiddleware(reporting_app)
    scopes = [{"type": "test", "client": "a"}, {"type": "test", "client": "b"}]
    first = ApplicationCommunicator(middleware, scopes[0])
    second = ApplicationCommunicator(middleware, scopes[1])
    # Both apps run and have changed their scopes before either is asked to report.
    assert await first.receive_output() == {"type": "ready"}
    assert await second.receive_output() == {"type": "ready"}
    await second.send_input({"type": "go", "for": "b"})
    await first.send_input({"type": "go", "for": "a"})
    reports = [await second.receive_output(), await first.receive_output()]
    assert reports == [
        {"type": "report", "tag": "for b", "for": "b"},
        {"type": "report", "tag": "for a", "for": "a"},
    ]
    assert await first.future == "result of the app"  # the inner app's return value passes
    assert scopes == [{"type": "test", "client": "a"}, {"type": "test", "client": "b"}]
