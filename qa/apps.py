from django.apps import AppConfig


class QaConfig(AppConfig):
    name = "qa"
    verbose_name = "Quality: gold, scores, consensus and datasets"

    def ready(self) -> None:
        from qa.policy import QaRoutingPolicy
        from tasks.hooks import register_routing_policy

        register_routing_policy(QaRoutingPolicy())
