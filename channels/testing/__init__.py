"""Tools for testing Channels applications: communicators that drive an application
in-process, on asyncio or trio, and a test case with a live server in a subprocess."""

from .application import ApplicationCancelled as ApplicationCancelled
from .application import ApplicationCommunicator as ApplicationCommunicator
from .http import HttpCommunicator as HttpCommunicator
from .live import ChannelsLiveServerTestCase as ChannelsLiveServerTestCase
from .websocket import WebsocketCommunicator as WebsocketCommunicator

__all__ = [
    "ApplicationCancelled",
    "ApplicationCommunicator",
    "ChannelsLiveServerTestCase",
    "HttpCommunicator",
    "WebsocketCommunicator",
]
