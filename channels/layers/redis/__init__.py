"""Channel layers on Redis, compatible with channels_redis 4.x (needs the ``redis`` extra).

``RedisChannelLayer`` keeps messages in sorted sets (channels_redis's ``RedisChannelLayer``);
``RedisPubSubChannelLayer`` uses PUBLISH/SUBSCRIBE (channels_redis's pub/sub layer).
"""

from __future__ import annotations

from .core import RedisChannelLayer as RedisChannelLayer
from .pubsub import RedisPubSubChannelLayer as RedisPubSubChannelLayer

__all__ = ["RedisChannelLayer", "RedisPubSubChannelLayer"]
