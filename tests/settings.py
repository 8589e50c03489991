import os
import tempfile

SECRET_KEY = "tests-only-not-secret"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "channels",
    "tests.testapp",
    # After channels, whose runserver must win (tests/test_runserver.py).
    "django.contrib.staticfiles",
]
STATIC_URL = "static/"
# What the live-server tests serve (their server process loads these settings).
ASGI_APPLICATION = "tests.serverproject.asgi.application"
ROOT_URLCONF = "tests.serverproject.urls"
# A file, not ":memory:": worker threads then share the test database through their own
# connections, and closing a connection really closes it (tests observe that).
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.path.join(tempfile.gettempdir(), "channels-anyio-tests.sqlite3"),
        "TEST": {
            "NAME": os.path.join(
                tempfile.gettempdir(), f"channels-anyio-test-{os.getpid()}.sqlite3"
            )
        },
    }
}
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
# Fast hashing: tests create users, and the default hasher is slow on purpose.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
