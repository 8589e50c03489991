"""channels_redis.utils' helpers that mean something here, under their names there.

Code written against channels_redis (a management command that reads the ``hosts``
setting, a test that finds which shard a group lives on) imports these unchanged:

- :func:`decode_hosts` turns the ``hosts`` setting into channels_redis's list of
  connection-option dicts.
- ``_consistent_hash(value, ring_size)`` is the shard index both packages give a channel
  or group name, so both agree on where it lives.

``create_pool`` is not here: channels_redis returns a redis-py connection pool, which these
layers neither use nor depend on (their connections belong to the task using them, see
``connection.py``), so a pool from here would configure nothing.
"""

from __future__ import annotations

from .hosts import consistent_hash
from .hosts import decode_hosts as decode_hosts

__all__ = ["decode_hosts"]

#: channels_redis's (private) name for :func:`~channels.layers.redis.hosts.consistent_hash`.
_consistent_hash = consistent_hash
