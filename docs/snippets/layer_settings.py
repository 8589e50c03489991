"""CHANNEL_LAYERS settings from docs/topics/channel_layers.md (each one is built in a test)."""

SECRET_KEY = "use-your-project-secret-key"

# [in-memory]
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels.layers.InMemoryChannelLayer",
        # Optional; these are the defaults.
        "CONFIG": {"expiry": 60, "group_expiry": 86400, "capacity": 100},
    },
}
# [/in-memory]

IN_MEMORY = CHANNEL_LAYERS

# [redis]
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels.layers.redis.RedisChannelLayer",
        "CONFIG": {
            "hosts": ["redis://127.0.0.1:6379/0"],
            "prefix": "asgi",
            "expiry": 60,
            "group_expiry": 86400,
            "capacity": 100,
            "channel_capacity": {"http.request": 200, "websocket.send*": 20},
            "symmetric_encryption_keys": [SECRET_KEY],
            "serializer_format": "msgpack",
        },
    },
}
# [/redis]

REDIS = CHANNEL_LAYERS

# [pubsub]
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels.layers.redis.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": ["redis://127.0.0.1:6379/0"], "prefix": "asgi"},
    },
}
# [/pubsub]

PUBSUB = CHANNEL_LAYERS

# [cluster]
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels.layers.redis.RedisClusterChannelLayer",
        "CONFIG": {
            # Any reachable nodes: the rest of the cluster is learned from them.
            "hosts": ["redis://10.0.0.11:6379", "redis://10.0.0.12:6379"],
            "prefix": "asgi",
            "partitions": 16,
        },
    },
}
# [/cluster]

CLUSTER = CHANNEL_LAYERS

# [test-config]
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels.layers.redis.RedisChannelLayer",
        "CONFIG": {"hosts": ["redis://127.0.0.1:6379/0"]},
        # channel_layers.make_test_backend("default") builds from this instead.
        "TEST_CONFIG": {"hosts": ["redis://127.0.0.1:6379/1"], "expiry": 5},
    },
}
# [/test-config]

WITH_TEST_CONFIG = CHANNEL_LAYERS
