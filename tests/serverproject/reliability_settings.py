"""runserver serving tests/serverproject/reliability.py."""

from tests.serverproject.settings import *  # noqa: F403

ASGI_APPLICATION = "tests.serverproject.reliability.application"
