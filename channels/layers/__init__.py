"""Channel layers: how consumers in one process or many send each other messages."""

from __future__ import annotations

from .. import DEFAULT_CHANNEL_LAYER as DEFAULT_CHANNEL_LAYER

# Upstream's channels.layers module imports these two, and projects import them from there.
from ..exceptions import ChannelFull as ChannelFull
from ..exceptions import InvalidChannelLayerError as InvalidChannelLayerError
from .base import BaseChannelLayer as BaseChannelLayer
from .durable import GroupHistory as GroupHistory
from .durable import StreamPosition as StreamPosition
from .inmemory import InMemoryChannelLayer as InMemoryChannelLayer
from .manager import ChannelLayerManager as ChannelLayerManager
from .manager import channel_layers as channel_layers
from .manager import get_channel_layer as get_channel_layer

__all__ = [
    "DEFAULT_CHANNEL_LAYER",
    "BaseChannelLayer",
    "ChannelFull",
    "ChannelLayerManager",
    "GroupHistory",
    "InMemoryChannelLayer",
    "InvalidChannelLayerError",
    "StreamPosition",
    "channel_layers",
    "get_channel_layer",
]
