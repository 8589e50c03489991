from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"

    def ready(self) -> None:
        # Defining the observer class registers it.
        from . import observers  # noqa: F401
