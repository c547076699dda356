from django.apps import AppConfig


class CrowdConfig(AppConfig):
    name = "crowd"
    verbose_name = "Crowd: site and people"

    def ready(self) -> None:
        from crowd.tokens import connect_signals

        connect_signals()
