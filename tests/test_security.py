"""Origin validation for WebSockets, and the denier that refuses connections."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import override_settings

from channels.generic.websocket import AsyncWebsocketConsumer
from channels.security.websocket import (
    AllowedHostsOriginValidator,
    OriginValidator,
    WebsocketDenier,
)
from channels.testing import HttpCommunicator, WebsocketCommunicator
from channels.types import ASGIApp

reached: list[str] = []


class Accepting(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        reached.append(self.scope["path"])
        await self.accept()


@pytest.fixture(autouse=True)
def forget_reached() -> None:
    reached.clear()


async def connects(app: ASGIApp, *origins: bytes) -> bool:
    """Whether a WebSocket sending these Origin headers is accepted (and reaches the
    consumer); a refusal must close during the handshake."""
    headers = [(b"origin", origin) for origin in origins]
    communicator = WebsocketCommunicator(app, "/ws", headers=headers)
    accepted, detail = await communicator.connect()
    if not accepted:
        assert detail == 1000
        assert reached == []
    else:
        assert reached == ["/ws"]
        await communicator.disconnect()
    reached.clear()
    return accepted


# (allowed origins, Origin header, accepted): as upstream Channels 4.3.2 decides, except
# where noted.
ORIGIN_CASES: list[tuple[list[str], str, bool]] = [
    (["http://example.com"], "http://example.com", True),
    (["http://example.com"], "http://example.com:80", True),
    (["http://example.com"], "https://example.com", False),
    (["http://example.com"], "http://example.com:8080", False),
    (["http://example.com"], "http://sub.example.com", False),
    (["http://example.com"], "http://EXAMPLE.com", True),
    (["HTTP://Example.COM"], "http://example.com", True),
    (["https://example.com"], "https://example.com:443", True),
    (["wss://example.com"], "wss://example.com:443", True),
    (["https://example.com"], "wss://example.com", False),
    (["http://example.com:8080"], "http://example.com:8080", True),
    (["http://example.com:8080"], "http://example.com", False),
    (["http://.example.com"], "http://example.com", True),
    (["http://.example.com"], "http://a.b.example.com", True),
    (["http://.example.com"], "https://a.example.com", False),
    (["http://.example.com"], "http://badexample.com", False),
    (["example.com"], "https://example.com:8443", True),
    (["example.com"], "http://sub.example.com", False),
    ([".example.com"], "http://sub.example.com", True),
    ([".example.com"], "http://example.com", True),
    ([".example.com"], "http://example.com.evil.org", False),
    (["example.com:8000"], "http://example.com:8000", False),  # read as a scheme
    (["[::1]"], "http://[::1]:8000", True),
    (["127.0.0.1"], "http://127.0.0.1:8000", True),
    (["*"], "http://anything.org", True),
    (["http://a.org", "http://b.org"], "http://b.org", True),
    ([], "http://example.com", False),
    (["custom://example.com"], "custom://example.com", True),
    (["custom://example.com"], "custom://example.com:1", False),
    # Any port (upstream after 4.3.2):
    (["https://example.com:*"], "https://example.com", True),
    (["https://example.com:*"], "https://example.com:8443", True),
    (["https://example.com:*"], "http://example.com:8443", False),
    (["https://.example.com:*"], "https://a.example.com:1", True),
    (["http://[::1]:*"], "http://[::1]:8000", True),
]


@pytest.mark.parametrize(("allowed", "origin", "accepted"), ORIGIN_CASES)
async def test_origin_patterns(allowed: list[str], origin: str, accepted: bool) -> None:
    app = OriginValidator(Accepting.as_asgi(), allowed)
    assert await connects(app, origin.encode()) is accepted


# Origins no browser sends, and none at all: refused unless everything is allowed.
UNUSABLE_ORIGINS: list[tuple[bytes, ...]] = [
    (),
    (b"null",),  # sandboxed frames, file: pages
    (b"",),
    (b"example.com",),  # no scheme, so no host
    (b"http://[::1",),  # urlparse raises
    (b"http://example.com:99999",),  # port out of range
    (b"http://example.com:port",),  # port not a number
    (b"\xff\xfe\x00",),
]


@pytest.mark.parametrize("origins", UNUSABLE_ORIGINS)
async def test_missing_or_malformed_origin_is_refused_unless_all_are_allowed(
    origins: tuple[bytes, ...],
) -> None:
    strict = OriginValidator(Accepting.as_asgi(), ["example.com", "http://example.com"])
    assert await connects(strict, *origins) is False
    assert await connects(OriginValidator(Accepting.as_asgi(), ["*"]), *origins) is True


async def test_the_last_origin_header_counts() -> None:
    app = OriginValidator(Accepting.as_asgi(), ["http://example.com"])
    assert await connects(app, b"http://evil.org", b"http://example.com") is True
    assert await connects(app, b"http://example.com", b"http://evil.org") is False


@pytest.mark.parametrize(
    "pattern",
    ["http://[::1", "http://example.com:99999", "http://", "https://:443", "http://a:*:*", 42],
)
def test_unusable_pattern_is_a_clear_error_at_construction(pattern: Any) -> None:
    with pytest.raises(ValueError, match="llowed origin"):
        OriginValidator(Accepting.as_asgi(), ["http://fine.example.com", pattern])


async def test_origin_validator_refuses_to_guard_other_protocols() -> None:
    app = OriginValidator(Accepting.as_asgi(), ["*"])
    communicator = HttpCommunicator(app, "GET", "/")
    with pytest.raises(ValueError, match=r"non-WebSocket connection .*'http'"):
        await communicator.get_response()


@pytest.mark.parametrize(
    ("debug", "allowed_hosts", "origin", "accepted"),
    [
        (True, [], "http://localhost:8000", True),
        (True, [], "http://127.0.0.1:8000", True),
        (True, [], "https://[::1]", True),
        (True, [], "http://sub.localhost", False),
        (True, [], "http://example.com", False),
        (False, [], "http://localhost:8000", False),
        (True, ["example.com"], "http://localhost:8000", False),
        (True, ["example.com"], "https://example.com", True),
        (False, [".example.com"], "https://chat.example.com", True),
        (False, [".example.com"], "https://example.org", False),
        (False, ["*"], "https://example.org", True),
    ],
)
async def test_allowed_hosts_origin_validator(
    debug: bool, allowed_hosts: list[str], origin: str, accepted: bool
) -> None:
    with override_settings(DEBUG=debug, ALLOWED_HOSTS=allowed_hosts):
        app = AllowedHostsOriginValidator(Accepting.as_asgi())
    assert await connects(app, origin.encode()) is accepted


async def test_allowed_hosts_wildcard_lets_a_missing_origin_through() -> None:
    with override_settings(ALLOWED_HOSTS=["*"]):
        app = AllowedHostsOriginValidator(Accepting.as_asgi())
    assert await connects(app) is True


async def test_websocket_denier_closes_websockets_during_the_handshake() -> None:
    communicator = WebsocketCommunicator(WebsocketDenier.as_asgi(), "/")
    assert await communicator.connect() == (False, 1000)
    await communicator.disconnect()


async def test_websocket_denier_answers_http_with_403() -> None:
    communicator = HttpCommunicator(WebsocketDenier.as_asgi(), "POST", "/", body=b"ignored")
    response = await communicator.get_response()
    assert response == {
        "status": 403,
        "headers": [(b"content-type", b"text/plain; charset=utf-8")],
        "body": b"Forbidden",
    }
    await communicator.wait()  # and it is done
