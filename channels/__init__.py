"""Django Channels, rebuilt on anyio: the same API, served on asyncio or trio."""

__version__ = "4.3.2"

#: The alias consumers use when they do not set ``channel_layer_alias``.
DEFAULT_CHANNEL_LAYER = "default"
