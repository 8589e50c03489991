"""channels/_hypercorn.py against the installed hypercorn: an upgrade that moves what it
relies on fails here, with a message naming the adapter."""

from __future__ import annotations

import tomllib
from importlib.metadata import version
from typing import Any

import pytest

from channels import _hypercorn
from channels.serving import serve_async

from .server_process import ROOT


def test_the_installed_hypercorn_has_everything_the_adapter_uses() -> None:
    _hypercorn.check()  # raises HypercornChanged, naming channels/_hypercorn.py, if not


def test_the_installed_hypercorn_is_in_the_supported_range() -> None:
    installed = tuple(int(part) for part in version("hypercorn").split(".")[:2])
    assert _hypercorn.SUPPORTED == ">=0.18,<0.19"  # change with the check below
    assert (0, 18) <= installed < (0, 19), (
        f"hypercorn {version('hypercorn')} is installed; channels/_hypercorn.py is written "
        f"for hypercorn{_hypercorn.SUPPORTED}: check it against this version, then widen "
        "SUPPORTED and the cap in pyproject.toml"
    )


def test_pyproject_caps_hypercorn_to_the_adapters_range() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert f"hypercorn{_hypercorn.SUPPORTED}" in project["dependencies"]
    assert project["optional-dependencies"]["server"] == []  # the old extra still installs


class RenamedParameters:
    def __init__(self, application: Any, configuration: Any) -> None:
        pass


def test_a_changed_signature_is_named_with_the_adapter(monkeypatch: pytest.MonkeyPatch) -> None:
    import hypercorn.trio.tcp_server

    # What an upgrade renaming TCPServer's parameters would look like.
    monkeypatch.setattr(hypercorn.trio.tcp_server, "TCPServer", RenamedParameters)
    with pytest.raises(_hypercorn.HypercornChanged) as info:
        _hypercorn.check()
    message = str(info.value)
    assert message.startswith("channels/_hypercorn.py (written for hypercorn>=0.18,<0.19)")
    assert "hypercorn.trio.tcp_server.TCPServer takes ['application', 'configuration']" in message


def test_a_part_that_is_gone_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import hypercorn.asyncio.lifespan

    monkeypatch.delattr(hypercorn.asyncio.lifespan, "Lifespan")
    with pytest.raises(_hypercorn.HypercornChanged, match=r"asyncio\.lifespan\.Lifespan is gone"):
        _hypercorn.check()


def test_a_missing_attribute_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from hypercorn.config import Config

    monkeypatch.delattr(Config, "websocket_ping_interval")
    with pytest.raises(_hypercorn.HypercornChanged, match="Config has no websocket_ping_interval"):
        _hypercorn.check()


async def test_serve_async_checks_the_adapter_before_serving(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import hypercorn.asyncio.tcp_server

    monkeypatch.setattr(hypercorn.asyncio.tcp_server, "TCPServer", RenamedParameters)
    monkeypatch.setattr(_hypercorn, "checked", _hypercorn.check)  # no cached success
    with pytest.raises(_hypercorn.HypercornChanged, match=r"channels/_hypercorn\.py"):
        await serve_async(RenamedParameters, bind=["127.0.0.1:0"], handle_signals=False)


def test_a_trio_read_loop_that_changed_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """The adapter replaces the trio server's ``_read_data``: a hypercorn that reads
    differently must be looked at before that replacement is trusted."""
    from hypercorn.trio.tcp_server import TCPServer

    async def _read_data(self: Any) -> None:
        pass

    monkeypatch.setattr(TCPServer, "_read_data", _read_data)
    with pytest.raises(_hypercorn.HypercornChanged, match=r"TCPServer\._read_data no longer has"):
        _hypercorn.check()
