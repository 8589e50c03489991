"""Settings of the served soak project; the harness picks the layer through the environment.

``SOAK_LAYER``: ``redis`` (the core Redis layer, the default), ``pubsub`` (the Redis
pub/sub layer) or ``memory``; ``SOAK_REDIS_URL``: the harness's private Redis.
``SOAK_FAULT=leak-membership`` makes the consumer forget to leave its group, so that the
harness's own tests can show that the churn probe catches a leak.
"""

from __future__ import annotations

import os

SECRET_KEY = "soak-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS: list[str] = []
USE_TZ = True

LAYER_BACKENDS = {
    "redis": "channels.layers.redis.RedisChannelLayer",
    "pubsub": "channels.layers.redis.RedisPubSubChannelLayer",
    "memory": "channels.layers.InMemoryChannelLayer",
}
SOAK_LAYER = os.environ.get("SOAK_LAYER", "redis")
if SOAK_LAYER not in LAYER_BACKENDS:
    raise ValueError(f"SOAK_LAYER must be one of {sorted(LAYER_BACKENDS)}, got {SOAK_LAYER!r}")
SOAK_FAULT = os.environ.get("SOAK_FAULT", "")

_config: dict[str, object] = {}
if SOAK_LAYER != "memory":
    _config = {"hosts": [os.environ.get("SOAK_REDIS_URL", "redis://127.0.0.1:6379/0")]}
    _config["prefix"] = "soak"
CHANNEL_LAYERS = {"default": {"BACKEND": LAYER_BACKENDS[SOAK_LAYER], "CONFIG": _config}}
