from django.apps import AppConfig


class QaConfig(AppConfig):
    name = "qa"
    verbose_name = "Quality: gold, scores, consensus and datasets"

    def ready(self) -> None:
        from django.db.models.signals import post_delete

        from crowd import contracts
        from crowd.profile import me_contributions
        from qa.auto_accept import auto_accept_request
        from qa.events import status_frames
        from qa.exports.build import exports_files_delete
        from qa.jobs import stranded_jobs_resend
        from qa.models import WorkerScore
        from qa.policy import QaRoutingPolicy
        from qa.profile import my_quality
        from qa.worker_model import refits_request
        from tasks import hooks
        from tasks.models import Project

        hooks.register_routing_policy(QaRoutingPolicy())
        hooks.worker_snapshot.register("status", status_frames)
        contracts.worker_score.register(
            "score",
            lambda project, worker_id: (
                WorkerScore.objects.filter(project=project, worker_id=worker_id)
                .values_list("score", flat=True)
                .first()
            ),
        )
        me_contributions.register("qa", my_quality)
        hooks.periodic.register("stranded_jobs", stranded_jobs_resend)
        hooks.periodic.register("worker_models", refits_request)
        hooks.auto_accept_inputs_changed.register("auto_accept", auto_accept_request)
        post_delete.connect(exports_files_delete, sender=Project, dispatch_uid="project_exports")
