"""Settings for the server processes the serving tests start (and the live-server tests)."""

from tests.settings import *  # noqa: F403
from tests.settings import INSTALLED_APPS

DEBUG = True
ALLOWED_HOSTS = ["localhost", "127.0.0.1"]
# channels before staticfiles, so `runserver` is ours (as with daphne).
INSTALLED_APPS = [*INSTALLED_APPS, "django.contrib.staticfiles"]
ASGI_APPLICATION = "tests.serverproject.asgi.application"
STATIC_URL = "/static/"
ROOT_URLCONF = "tests.serverproject.urls"
