"""Which channel layer an alias means: ``CHANNEL_LAYERS`` made into layer instances."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from .. import DEFAULT_CHANNEL_LAYER
from ..exceptions import InvalidChannelLayerError
from ..types import ChannelLayer

__all__ = ["ChannelLayerManager", "channel_layers", "get_channel_layer"]


class ChannelLayerManager:
    """Builds each configured layer on first use and keeps it, one per alias.

    The cache is dropped whenever ``CHANNEL_LAYERS`` changes (``override_settings`` in
    tests), so a changed configuration is never served from a stale layer.
    """

    def __init__(self) -> None:
        self.backends: dict[str, ChannelLayer] = {}
        setting_changed.connect(self._reset_backends)

    def _reset_backends(self, setting: str, **kwargs: Any) -> None:
        if setting == "CHANNEL_LAYERS":
            self.backends = {}

    @property
    def configs(self) -> dict[str, Any]:
        configs: dict[str, Any] = getattr(settings, "CHANNEL_LAYERS", {})
        return configs

    def make_backend(self, name: str) -> ChannelLayer:
        """Build a fresh layer from the alias's ``CONFIG``."""
        return self._make_backend(name, self.configs[name].get("CONFIG", {}))

    def make_test_backend(self, name: str) -> ChannelLayer:
        """Build a fresh layer from the alias's ``TEST_CONFIG``."""
        try:
            config = self.configs[name]["TEST_CONFIG"]
        except KeyError:
            raise InvalidChannelLayerError(f"No TEST_CONFIG specified for {name}") from None
        return self._make_backend(name, config)

    def _make_backend(self, name: str, config: dict[str, Any]) -> ChannelLayer:
        if "ROUTING" in self.configs[name]:
            raise InvalidChannelLayerError(
                f"ROUTING key found for {name} - this is no longer needed in Channels 2."
            )
        try:
            path = self.configs[name]["BACKEND"]
        except KeyError:
            raise InvalidChannelLayerError(f"No BACKEND specified for {name}") from None
        try:
            backend_class = import_string(path)
        except ImportError as exc:
            raise InvalidChannelLayerError(
                f"Cannot import BACKEND {path!r} specified for {name}"
            ) from exc
        return backend_class(**config)  # type: ignore[no-any-return]

    def __getitem__(self, key: str) -> ChannelLayer:
        if key not in self.backends:
            self.backends[key] = self.make_backend(key)
        return self.backends[key]

    def __contains__(self, key: object) -> bool:
        return key in self.configs

    def set(self, key: str, layer: ChannelLayer) -> ChannelLayer | None:
        """Point ``key`` at ``layer`` (handy in tests) and return the layer it replaced."""
        old = self.backends.get(key)
        self.backends[key] = layer
        return old

    async def close_all(self) -> None:
        """Close every layer built so far (the server's shutdown calls this)."""
        for layer in list(self.backends.values()):
            close = getattr(layer, "close", None)
            if close is not None:
                await close()


channel_layers: ChannelLayerManager = ChannelLayerManager()


def get_channel_layer(alias: str = DEFAULT_CHANNEL_LAYER) -> ChannelLayer | None:
    """The layer configured as ``alias``, or ``None`` when there is no such alias."""
    try:
        return channel_layers[alias]
    except KeyError:
        return None
