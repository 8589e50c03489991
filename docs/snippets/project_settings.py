"""The settings Channels needs, from docs/installation.md."""

# [settings]
INSTALLED_APPS = [
    "channels",  # first: its runserver command then replaces Django's and staticfiles'
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    # your apps
]

ASGI_APPLICATION = "mysite.asgi.application"
# [/settings]
