"""What every channel layer shares: name rules, capacities, and the API's shape."""

from __future__ import annotations

import fnmatch
import re
import warnings
from collections.abc import Mapping
from typing import ClassVar

from ..types import Message

__all__ = ["BaseChannelLayer"]

CapacityPattern = str | re.Pattern[str]


class BaseChannelLayer:
    """Base class for channel layers: validation and configuration, no transport.

    Name rules and their error messages are exactly Django Channels', because projects
    assert on them. ``channel_capacity`` keys are shell globs (``"http.request"``,
    ``"websocket.send!*"``) or compiled regexes; the first match, in the mapping's order,
    against the full channel name wins, else ``capacity`` applies.
    """

    MAX_NAME_LENGTH: ClassVar[int] = 100

    channel_name_regex: ClassVar[re.Pattern[str]] = re.compile(
        r"^[a-zA-Z\d\-_.]+(\![\d\w\-_.]*)?$", re.ASCII
    )
    group_name_regex: ClassVar[re.Pattern[str]] = re.compile(r"^[a-zA-Z\d\-_.]+$", re.ASCII)
    invalid_name_error: ClassVar[str] = (
        "{} name must be a valid unicode string "
        f"with length < {MAX_NAME_LENGTH} "
        "containing only ASCII alphanumerics, hyphens, underscores, or periods."
    )

    extensions: list[str] = []

    def __init__(
        self,
        expiry: float = 60,
        capacity: int = 100,
        channel_capacity: Mapping[CapacityPattern, int] | None = None,
    ) -> None:
        self.expiry = expiry
        self.capacity = capacity
        self.channel_capacity: list[tuple[re.Pattern[str], int]] = self.compile_capacities(
            channel_capacity or {}
        )

    # -- capacities --------------------------------------------------------------------

    def compile_capacities(
        self, channel_capacity: Mapping[CapacityPattern, int]
    ) -> list[tuple[re.Pattern[str], int]]:
        """Turn a ``channel_capacity`` mapping into ``(regex, capacity)`` pairs, in order."""
        compiled = []
        for pattern, value in channel_capacity.items():
            if isinstance(pattern, str):
                pattern = re.compile(fnmatch.translate(pattern))
            compiled.append((pattern, value))
        return compiled

    def get_capacity(self, channel: str) -> int:
        """The capacity of ``channel``: the first matching pattern's, else the default."""
        for pattern, capacity in self.channel_capacity:
            if pattern.match(channel):
                return capacity
        return self.capacity

    # -- names -------------------------------------------------------------------------

    def match_type_and_length(self, name: object) -> bool:
        return isinstance(name, str) and len(name) < self.MAX_NAME_LENGTH

    def require_valid_channel_name(self, name: object, receive: bool = False) -> bool:
        """Raise :class:`TypeError` unless ``name`` is a valid channel name.

        With ``receive=True``, a process-specific name (with ``!``) must end at the ``!``:
        that is the form a layer's low-level receive takes.
        """
        if not self.match_type_and_length(name):
            raise TypeError(self.invalid_name_error.format("Channel"))
        assert isinstance(name, str)
        if not self.channel_name_regex.fullmatch(name):
            raise TypeError(self.invalid_name_error.format("Channel"))
        if receive and "!" in name and not name.endswith("!"):
            raise TypeError("Specific channel names in receive() must end at the !")
        return True

    def require_valid_group_name(self, name: object) -> bool:
        """Raise :class:`TypeError` unless ``name`` is a valid group name."""
        if not self.match_type_and_length(name):
            raise TypeError(self.invalid_name_error.format("Group"))
        assert isinstance(name, str)
        if not self.group_name_regex.fullmatch(name):
            raise TypeError(self.invalid_name_error.format("Group"))
        return True

    def valid_channel_names(self, names: list[str], receive: bool = False) -> bool:
        if not isinstance(names, list) or not names:
            raise TypeError("names must be a non-empty list")
        for channel in names:
            self.require_valid_channel_name(channel, receive=receive)
        return True

    def non_local_name(self, name: str) -> str:
        """The part of a process-specific name up to and including ``!``; else ``name``."""
        bang = name.find("!")
        return name if bang == -1 else name[: bang + 1]

    def valid_channel_name(self, channel_name: object, receive: bool = False) -> bool:
        """Deprecated: use :meth:`require_valid_channel_name`."""
        warnings.warn(
            "valid_channel_name is deprecated, use require_valid_channel_name instead.",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.require_valid_channel_name(channel_name)

    def valid_group_name(self, group_name: object) -> bool:
        """Deprecated: use :meth:`require_valid_group_name`."""
        warnings.warn(
            "valid_group_name is deprecated, use require_valid_group_name instead.",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.require_valid_group_name(group_name)

    @staticmethod
    def require_valid_message(message: object) -> None:
        """Raise :class:`TypeError` unless ``message`` is a dict a layer may carry."""
        if not isinstance(message, dict):
            raise TypeError(f"Channel layer messages must be dicts, got {type(message).__name__}")
        if "__asgi_channel__" in message:
            raise ValueError(
                "Channel layer messages must not contain the reserved key '__asgi_channel__'"
            )

    # -- the API that layers implement ---------------------------------------------------

    async def send(self, channel: str, message: Message) -> None:
        raise NotImplementedError("send() should be implemented in a channel layer")

    async def receive(self, channel: str) -> Message:
        raise NotImplementedError("receive() should be implemented in a channel layer")

    async def new_channel(self, prefix: str = "specific.") -> str:
        raise NotImplementedError("new_channel() should be implemented in a channel layer")

    async def flush(self) -> None:
        raise NotImplementedError("flush() not implemented (flush extension)")

    async def group_add(self, group: str, channel: str) -> None:
        raise NotImplementedError("group_add() not implemented (groups extension)")

    async def group_discard(self, group: str, channel: str) -> None:
        raise NotImplementedError("group_discard() not implemented (groups extension)")

    async def group_send(self, group: str, message: Message) -> None:
        raise NotImplementedError("group_send() not implemented (groups extension)")

    async def close(self) -> None:
        """Release connections and other resources; the default holds none."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"
