"""The names a Channels 4.3 project imports must exist where it imports them from."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

import channels

PUBLIC = {
    "channels": ["__version__", "DEFAULT_CHANNEL_LAYER"],
    "channels.consumer": ["AsyncConsumer", "SyncConsumer", "get_handler_name"],
    "channels.routing": [
        "ProtocolTypeRouter",
        "URLRouter",
        "ChannelNameRouter",
        "get_default_application",
    ],
    "channels.layers": [
        "get_channel_layer",
        "channel_layers",
        "BaseChannelLayer",
        "InMemoryChannelLayer",
    ],
    "channels.db": ["database_sync_to_async", "aclose_old_connections"],
    "channels.exceptions": [
        "StopConsumer",
        "AcceptConnection",
        "DenyConnection",
        "ChannelFull",
        "InvalidChannelLayerError",
        "RequestAborted",
        "RequestTimeout",
        "MessageTooLarge",
    ],
    "channels.generic.websocket": [
        "WebsocketConsumer",
        "AsyncWebsocketConsumer",
        "JsonWebsocketConsumer",
        "AsyncJsonWebsocketConsumer",
    ],
    "channels.generic.http": ["AsyncHttpConsumer"],
    "channels.testing": ["ApplicationCommunicator", "HttpCommunicator", "WebsocketCommunicator"],
    "channels.worker": ["Worker"],
    "channels.utils": ["await_many_dispatch", "name_that_thing"],
    "channels.management.commands.runworker": ["Command"],
    "channels.auth": ["AuthMiddleware", "AuthMiddlewareStack", "login", "logout", "get_user"],
    "channels.sessions": [
        "SessionMiddleware",
        "SessionMiddlewareStack",
        "CookieMiddleware",
        "InstanceSessionWrapper",
    ],
    "channels.security.websocket": [
        "OriginValidator",
        "AllowedHostsOriginValidator",
        "WebsocketDenier",
    ],
    "channels.middleware": ["BaseMiddleware"],
    "channels.concurrency": ["sync_to_async", "async_to_sync", "SyncToAsync"],
    "channels.types": ["Scope", "Message", "Receive", "Send", "ASGIApp", "ChannelLayer"],
    "channels.apps": ["ChannelsConfig"],
    "channels.http": ["ASGIHandler", "get_asgi_application"],
    "channels.staticfiles": ["StaticFilesWrapper"],
}


@pytest.mark.parametrize("module_name", sorted(PUBLIC))
def test_public_names_are_importable_and_listed(module_name: str) -> None:
    module = importlib.import_module(module_name)
    for name in PUBLIC[module_name]:
        assert hasattr(module, name), f"{module_name}.{name} is missing"
    exported = getattr(module, "__all__", None)
    if exported is not None:
        for name in exported:
            assert hasattr(module, name), f"{module_name}.__all__ lists missing {name}"
        missing = set(PUBLIC[module_name]) - set(exported)
        assert not missing, f"{module_name}.__all__ leaves out {sorted(missing)}"


def test_version_and_default_alias_match_channels() -> None:
    assert channels.__version__ == "4.3.2"
    assert channels.DEFAULT_CHANNEL_LAYER == "default"


def test_the_package_ships_its_types() -> None:
    assert (Path(channels.__file__).parent / "py.typed").is_file()


def test_exception_tree_matches_upstream() -> None:
    from channels import exceptions

    assert issubclass(exceptions.RequestTimeout, exceptions.RequestAborted)
    assert issubclass(exceptions.InvalidChannelLayerError, ValueError)
    assert not issubclass(exceptions.AsyncBridgeError, RuntimeError)


def test_the_in_memory_layer_satisfies_the_layer_protocol() -> None:
    from channels.layers import InMemoryChannelLayer
    from channels.types import ChannelLayer

    layer: ChannelLayer = InMemoryChannelLayer()  # mypy checks the same claim statically
    assert isinstance(layer, ChannelLayer)
    assert {"groups", "flush"} <= set(layer.extensions)
