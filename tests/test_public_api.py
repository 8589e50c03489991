"""The names a Channels 4.3 project imports must exist where it imports them from."""

from __future__ import annotations

import importlib
import sys
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
        # Not documented, but upstream's module imports them and projects import them here.
        "ChannelFull",
        "InvalidChannelLayerError",
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
    "channels.testing": [
        "ApplicationCommunicator",
        "HttpCommunicator",
        "WebsocketCommunicator",
        "ChannelsLiveServerTestCase",
    ],
    "channels.testing.live": [
        "ChannelsLiveServerTestCase",
        "TEST_DATABASE_PREFIX",
        "make_application",
        "set_database_connection",
    ],
    "channels.serving": ["serve", "serve_async", "GracefulShutdown", "Backend"],
    "channels.management.commands.runserver": ["Command"],
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
    "channels.testing.http": ["HttpCommunicator", "HttpResponse"],
    "channels.testing.layers": [
        "ChannelLayerConformance",
        "FEATURES",
        "CONFIG_KEYS",
        "KNOWN_EXTENSIONS",
    ],
    "channels.apps": ["ChannelsConfig"],
    "channels.http": ["ASGIHandler", "get_asgi_application"],
    "channels.staticfiles": ["StaticFilesWrapper"],
    "channels.observers": [
        "ModelObserver",
        "AsyncObserverMixin",
        "ObserverMixin",
        "Subscription",
    ],
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


def test_every_shipped_layer_satisfies_the_layer_protocol_at_run_time() -> None:
    from channels.layers import BaseChannelLayer
    from channels.layers.redis import RedisChannelLayer, RedisPubSubChannelLayer
    from channels.types import ChannelLayer

    for layer in (BaseChannelLayer(), RedisChannelLayer(), RedisPubSubChannelLayer()):
        assert isinstance(layer, ChannelLayer), type(layer).__name__
    assert not isinstance(object(), ChannelLayer)


def test_the_typing_examples_are_harmless_to_import() -> None:
    """tests/typecheck/ is for the type checkers (make typecheck) and is not collected; its
    modules only define things, so importing them runs nothing."""
    typing_dir = Path(__file__).parent / "typecheck"
    names = sorted(path.stem for path in typing_dir.glob("*.py") if path.stem != "__init__")
    assert "third_party_layer" in names
    for name in names:
        assert not name.startswith("test_"), f"pytest would collect tests/typecheck/{name}.py"
        importlib.import_module(f"tests.typecheck.{name}")


def test_no_test_directory_shadows_a_standard_module() -> None:
    """Scripts run from tests/ (the Redis process tests) have it first on sys.path: a
    ``tests/typing/`` package, say, would replace the standard ``typing`` for them."""
    here = Path(__file__).parent
    shadowing = [p.name for p in here.iterdir() if p.stem in sys.stdlib_module_names]
    assert not shadowing
