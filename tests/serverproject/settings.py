"""Settings for the server processes the serving and runserver tests start."""

from tests.settings import *  # noqa: F403

DEBUG = True
ALLOWED_HOSTS = ["localhost", "127.0.0.1"]
