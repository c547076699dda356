from django.apps import AppConfig


class TasksConfig(AppConfig):
    name = "tasks"
    verbose_name = "Tasks: projects, images, microtasks and routing"

    def ready(self) -> None:
        from django.db.models.signals import post_delete

        from tasks.models import Project
        from tasks.services import project_files_delete

        post_delete.connect(project_files_delete, sender=Project, dispatch_uid="project_files")
