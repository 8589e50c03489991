"""Tools for testing Channels applications: communicators that drive an application
in-process, on asyncio or trio."""

from .application import ApplicationCancelled as ApplicationCancelled
from .application import ApplicationCommunicator as ApplicationCommunicator
from .http import HttpCommunicator as HttpCommunicator
from .websocket import WebsocketCommunicator as WebsocketCommunicator

__all__ = [
    "ApplicationCancelled",
    "ApplicationCommunicator",
    "HttpCommunicator",
    "WebsocketCommunicator",
]
