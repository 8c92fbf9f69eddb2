from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"
    verbose_name = "Card placements"

    def ready(self) -> None:
        # Connects the logout receiver that closes the user's open sockets.
        from jobs import signals  # noqa: F401
