"""Channel layers on Redis, compatible with channels_redis 4.x (needs the ``redis`` extra).

``RedisChannelLayer`` keeps messages in sorted sets (channels_redis's ``RedisChannelLayer``);
``RedisPubSubChannelLayer`` uses PUBLISH/SUBSCRIBE (channels_redis's pub/sub layer);
``RedisClusterChannelLayer`` runs on a Redis Cluster, by sharded pub/sub.
Both take ``serializer_format`` from :mod:`channels.layers.redis.serializers`' registry.
"""

from __future__ import annotations

from .cluster import RedisClusterChannelLayer as RedisClusterChannelLayer
from .core import RedisChannelLayer as RedisChannelLayer
from .errors import ForeignChannelError as ForeignChannelError
from .errors import InvalidPrefixError as InvalidPrefixError
from .pubsub import RedisPubSubChannelLayer as RedisPubSubChannelLayer

__all__ = [
    "ForeignChannelError",
    "InvalidPrefixError",
    "RedisChannelLayer",
    "RedisClusterChannelLayer",
    "RedisPubSubChannelLayer",
]
