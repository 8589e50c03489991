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
    },
    # A second SQLite database and a PostgreSQL one, for the tests that ask for them
    # (pytest-django creates only the databases a collected test names).
    "other": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.path.join(tempfile.gettempdir(), "channels-anyio-tests-other.sqlite3"),
        "TEST": {
            "NAME": os.path.join(
                tempfile.gettempdir(), f"channels-anyio-test-other-{os.getpid()}.sqlite3"
            )
        },
    },
    # PostgreSQL on 127.0.0.1:5432 with trust auth (.ci/run makes sure of it); each test
    # process creates and drops a database of its own.
    "postgres": {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": os.environ.get("CHANNELS_TEST_POSTGRES_HOST", "127.0.0.1"),
        "PORT": os.environ.get("CHANNELS_TEST_POSTGRES_PORT", "5432"),
        "USER": os.environ.get("CHANNELS_TEST_POSTGRES_USER", "postgres"),
        "NAME": "test",
        "TEST": {"NAME": f"channels_anyio_test_{os.getpid()}"},
    },
}
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
# Fast hashing: tests create users, and the default hasher is slow on purpose.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
