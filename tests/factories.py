from __future__ import annotations

from typing import TYPE_CHECKING

import factory
from rest_framework.authtoken.models import Token

from crowd.models import Role, User
from tasks.models import Image, ImageStatus, Project

if TYPE_CHECKING:
    from tasks.models import Task

PASSWORD = "a-long-test-password-42"


class UserFactory(factory.django.DjangoModelFactory[User]):
    class Meta:
        model = User
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.org")
    role = Role.WORKER
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def _save(obj: User, create: bool, extracted: object, **kwargs: object) -> None:
        if create:
            obj.save()


class WorkerFactory(UserFactory):
    username = factory.Sequence(lambda n: f"worker{n}")
    role = Role.WORKER


class ManagerFactory(UserFactory):
    username = factory.Sequence(lambda n: f"manager{n}")
    role = Role.MANAGER


class ClientFactory(UserFactory):
    username = factory.Sequence(lambda n: f"client{n}")
    role = Role.CLIENT


def token_for(user: User) -> str:
    return Token.objects.get_or_create(user=user)[0].key


def project_create(owner: User, **overrides: object) -> Project:
    """A project made through the service, as the API would."""
    from tasks.services import project_create as create

    data: dict[str, object] = {"name": "Cars", "kind": "bbox", "labels": ["car", "tree"]}
    data.update(overrides)
    return create(owner=owner, data=data)


def image_ready(project: Project, width: int = 320, height: int = 240, seed: int = 0) -> Image:
    """A ready image with its tasks, without going through upload (for tests of later steps)."""
    from tasks.ingest import tasks_create_for_image

    image = Image.objects.create(
        project=project, name=f"img{seed}.jpg", file=f"projects/{project.pk}/images/{seed}.jpg",
        sha256=f"{seed:064x}", format="JPEG", width=width, height=height, size_bytes=1,
        status=ImageStatus.READY,
    )  # fmt: skip
    tasks_create_for_image(project=project, image=image)
    return image


def project_with_tasks(manager: User, tasks: int, overlap: int) -> Project:
    """An active bbox project with ``tasks`` ready single-task images, made in bulk."""
    from tasks.models import Task
    from tasks.services import project_transition

    project = project_create(
        manager, min_overlap=overlap, max_overlap=overlap, gold_rate=0.0, tile_size=0
    )
    images = Image.objects.bulk_create(
        Image(project=project, name=f"{i}.jpg", file=f"x/{i}.jpg", sha256=f"{i:064x}",
              format="JPEG", width=640, height=480, size_bytes=1, status=ImageStatus.READY)
        for i in range(tasks)
    )  # fmt: skip
    Task.objects.bulk_create(
        Task(project=project, image=image, width=640, height=480, required_overlap=overlap)
        for image in images
    )
    return project_transition(project=project, action="start")


def answers_counted(project: Project, worker: User, tasks: list[Task], answer: list) -> None:
    """``worker`` has answered each of ``tasks`` (a counted, submitted assignment a task and
    the task's answers raised), in bulk: no decision, pay or event follows."""
    from django.db.models import F
    from django.utils import timezone

    from tasks.models import Assignment, AssignmentStatus, Task

    now = timezone.now()
    Assignment.objects.bulk_create(
        Assignment(task=task, project=project, worker=worker, leased_at=now, expires_at=now,
                   submitted_at=now, status=AssignmentStatus.SUBMITTED, answer=answer,
                   counted=True)
        for task in tasks
    )  # fmt: skip
    Task.objects.filter(pk__in=[t.pk for t in tasks]).update(answers=F("answers") + 1)
