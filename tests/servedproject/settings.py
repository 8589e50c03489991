"""Settings of the served project; the database file comes from SERVEDPROJECT_DB."""

import os

SECRET_KEY = "served-project-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "channels",
    "tests.testapp",
]
ROOT_URLCONF = "tests.servedproject.urls"
ASGI_APPLICATION = "tests.servedproject.asgi.application"
DATABASES = {
    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["SERVEDPROJECT_DB"]}
}
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
USE_TZ = True
# Small limits, so that the tests' uploads cross them.
FILE_UPLOAD_MAX_MEMORY_SIZE = 16 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = 32 * 1024
# Server errors go to hypercorn's output, where the tests read them.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {
        "django.request": {"handlers": ["stderr"], "level": "ERROR"},
        # runserver's access lines, shown even though DEBUG is off.
        "django.channels.server": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
    },
}
