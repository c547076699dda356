from django.apps import AppConfig


class QaConfig(AppConfig):
    name = "qa"
    verbose_name = "Quality: gold, scores, consensus and datasets"

    def ready(self) -> None:
        from crowd.profile import me_contributions
        from qa.policy import QaRoutingPolicy
        from qa.profile import my_quality
        from tasks.hooks import register_routing_policy

        register_routing_policy(QaRoutingPolicy())
        me_contributions.register("qa", my_quality)
