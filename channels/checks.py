"""System checks for projects using Channels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig, apps
from django.core.checks import CheckMessage, Tags, Warning, register

__all__ = ["check_runserver_order"]


@register(Tags.compatibility)
def check_runserver_order(
    *,
    app_configs: Sequence[AppConfig] | None = None,
    databases: Sequence[str] | None = None,
    **kwargs: Any,
) -> list[CheckMessage]:
    """Django runs the ``runserver`` of the first installed app that has one; with
    staticfiles listed first, ``manage.py runserver`` would serve WSGI, without
    WebSockets, and nothing would say why."""
    names = [config.name for config in apps.get_app_configs()]
    if "django.contrib.staticfiles" not in names:
        return []
    if names.index("channels") < names.index("django.contrib.staticfiles"):
        return []
    return [
        Warning(
            "'channels' comes after 'django.contrib.staticfiles' in INSTALLED_APPS, so "
            "`manage.py runserver` is staticfiles' WSGI server, which cannot serve "
            "WebSockets.",
            hint="Move 'channels' above 'django.contrib.staticfiles' in INSTALLED_APPS.",
            id="channels.W001",
        )
    ]
