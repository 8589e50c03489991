from __future__ import annotations

from django.apps import AppConfig


class ChannelsConfig(AppConfig):
    """Lets ``"channels"`` sit in ``INSTALLED_APPS`` (needed for its management commands).

    Being installed also makes Django's async API usable under trio (see
    :mod:`channels._django_trio`).
    """

    name = "channels"
    verbose_name: str = "Channels"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)
        from ._django_trio import install

        install()
