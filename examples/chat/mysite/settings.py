"""Settings for the chat example: Django's defaults, plus Channels and the chat app."""

import os
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = "django-insecure-example-only-never-use-in-production"
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    # First, so its runserver (hypercorn, asyncio or trio) replaces Django's.
    "channels",
    "chat",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "mysite.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Channels: the ASGI application to serve, and an in-process channel layer (one server
# process; use channels.layers.redis.RedisChannelLayer for more). Each room's group keeps
# its last 100 messages for an hour, so a visitor whose connection dropped gets what was
# sent meanwhile; rooms announce who comes and goes.
ASGI_APPLICATION = "mysite.asgi.application"
CHANNEL_LAYERS: dict[str, dict[str, Any]] = {
    "default": {
        "BACKEND": "channels.layers.InMemoryChannelLayer",
        "CONFIG": {
            "group_history": {"chat_*": {"size": 100, "ttl": 3600}},
            "presence_events": ["chat_*"],
        },
    }
}

# CHAT_REDIS_URL=redis://127.0.0.1:6379/0 runs the chat on the Redis layer instead (for
# more than one server process; its history also survives a server restart).
# CHAT_REDIS_PREFIX keeps its keys apart from other users of that Redis.
if os.environ.get("CHAT_REDIS_URL"):
    CHANNEL_LAYERS["default"]["BACKEND"] = "channels.layers.redis.RedisChannelLayer"
    CHANNEL_LAYERS["default"]["CONFIG"]["hosts"] = [os.environ["CHAT_REDIS_URL"]]
    CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = os.environ.get("CHAT_REDIS_PREFIX", "asgi")

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": BASE_DIR / "db.sqlite3",
        # The live-server tests run the server in another process, which needs a file.
        "TEST": {"NAME": BASE_DIR / "test_db.sqlite3"},
    }
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
