"""The conformance tests of docs/snippets/third_party_layer.py, as its author's
``tests/test_conformance.py`` (shown whole in docs/topics/testing_layers.md)."""

from __future__ import annotations

from typing import Any

from channels.testing.layers import ChannelLayerConformance
from channels.types import ChannelLayer
from docs.snippets.third_party_layer import StreamLayer


class TestStreamLayerConformance(ChannelLayerConformance):
    """The conformance kit on the layer above, as its author would run it."""

    expected_extensions = ("groups",)  # no flush, history or presence tests generated
    lacks = {
        "message_expiry": "messages wait in their stream until received",
        "group_expiry": "memberships last until discarded (the layer takes no group_expiry)",
    }

    async def make_layer(self, **config: Any) -> ChannelLayer:
        return StreamLayer(**config)
