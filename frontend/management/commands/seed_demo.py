"""``manage.py seed_demo``: the demo's accounts, and a worked project of every kind.

Each project has generated scenes with gold from their exact truth, is shared with the demo
client, and has been worked part of the way by a short simulated crowd (``qa.sim``) through
the services: answers approved and paid (a few quality bonuses), a spammer suspended by its
gold answers, a consensus run and a COCO dataset version. Tasks are left open, so the demo
workers find work when they log in.

Idempotent: a demo project that was seeded to the end is left as it is; one left behind by
an interrupted run is replaced. ``--reset`` replaces them all. The ledger is append-only, so
a project whose work was paid cannot be deleted: it is renamed and paused instead.
"""

from __future__ import annotations

import os
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.db.models import ProtectedError
from django.utils import timezone

from crowd.models import Role, User
from frontend.sim.engine import crowd_work
from frontend.sim.errors import SimError
from frontend.sim.manager import consensus_fresh, reviews_finish
from frontend.sim.report import crowd_report
from frontend.sim.seeding import sim_project_create
from frontend.sim.settle import jobs_settle
from frontend.sim.truth import truth_path
from qa.exports.build import export_build, export_request
from qa.models import DatasetExport, RunStatus
from tasks.models import Project, ProjectState
from tasks.services import project_client_add, project_transition, project_update

# Demo accounts only: `make demo` prints these so a newcomer can log in at once.
DEMO_ACCOUNTS = [
    ("manager", Role.MANAGER, "demo-manager-pass"),
    ("client", Role.CLIENT, "demo-client-pass"),
    ("worker1", Role.WORKER, "demo-worker-pass"),
    ("worker2", Role.WORKER, "demo-worker-pass"),
    ("worker3", Role.WORKER, "demo-worker-pass"),
]
DEMO_PROJECTS = [
    ("classification", "Demo: which shape is it?"),
    ("bbox", "Demo: box every shape"),
    ("polygon", "Demo: outline every shape"),
    ("keypoints", "Demo: corners and tips"),
    ("mask", "Demo: paint every shape"),
]
DEMO_IMAGES = 24
DEMO_GOLD = 6
DEMO_CROWD = [("careful", 4), ("sloppy", 2), ("spammer", 1)]
# The crowd stops when this share of a project's tasks is done: the rest is for the demo's
# workers.
DEMO_DONE_SHARE = 0.6
DEMO_SETTINGS: dict[str, Any] = {
    "min_overlap": 2,
    "max_overlap": 4,
    "gold_rate": 0.3,
    # The shortest lease the settings allow, so that the task of a simulated dropout (say
    # in the README's HTTP example) comes back within a minute; a person who takes longer
    # may still hand in while the task needs the answer.
    "assignment_seconds": 30,
    "auto_bonus_amount": "0.25",
    "auto_bonus_min_answers": 6,
    "auto_bonus_min_score": 0.85,
}
# Rewards for an effective hourly rate of 12-18 USD at the simulated crowd's median time per
# task (``qa.sim.crowd.TIMES``: about 2 s a classification, 25 s a bbox, 18 s a keypoints
# task, 60 s a mask task), above the fair-pay floor (10 USD by default); the polygon project,
# whose outlines take longest for its pay (about 40 s a task), pays below it, so that the demo
# shows the warning.
DEMO_REWARDS = {
    "classification": "0.01", "bbox": "0.10", "polygon": "0.10", "keypoints": "0.07",
    "mask": "0.25",
}  # fmt: skip
PAGES = [
    ("/", "home"),
    ("/work/", "worker workspace"),
    ("/manage/", "manager dashboard"),
    ("/client/", "client downloads"),
    ("/api/docs/", "API documentation"),
]


class Command(BaseCommand):
    help = (
        "Seed the demo: accounts (passwords reset) and a worked project of every annotation "
        "kind. Idempotent; --reset replaces the demo projects."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--reset", action="store_true", help="replace the demo projects with fresh ones"
        )
        parser.add_argument(
            "--url",
            default="",
            help="where the site will be served, for the printed links "
            "(default http://localhost:$PORT)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        started = time.monotonic()
        users = self._accounts()
        manager, client = users["manager"], users["client"]
        if options["reset"]:
            for _, name in DEMO_PROJECTS:
                for old in Project.objects.filter(owner=manager, name=name):
                    self._retire(old)
        lines = []
        for index, (kind, name) in enumerate(DEMO_PROJECTS, start=1):
            project: Project | None = (
                Project.objects.filter(owner=manager, name=name).order_by("pk").first()
            )
            if project is not None and not self._finished(project):
                self._retire(project)  # the leftover of an interrupted run
                project = None
            if project is None:
                try:
                    lines.append(self._seed(kind, name, manager, client, seed=index))
                except SimError as exc:
                    raise CommandError(f"Seeding the {kind} project failed: {exc}") from None
            else:
                project_client_add(project=project, username=client.username)
                lines.append(f"  {kind:<15} project {project.pk}: seeded earlier, left as it is")
        base = (options["url"] or f"http://localhost:{os.environ.get('PORT', '8000')}").rstrip("/")
        self.stdout.write("Demo projects:")
        self.stdout.write("\n".join(lines))
        self.stdout.write("Pages:")
        for path, what in PAGES:
            self.stdout.write(f"  {base}{path:<12} {what}")
        self.stdout.write("Demo accounts (username / password):")
        for username, role, password in DEMO_ACCOUNTS:
            self.stdout.write(f"  {role:<8} {username:<8} / {password}")
        jobs_settle()
        self.stdout.write(f"Seeded in {time.monotonic() - started:.1f} s.")

    @transaction.atomic
    def _accounts(self) -> dict[str, User]:
        users = {}
        for username, role, password in DEMO_ACCOUNTS:
            user, _ = User.objects.get_or_create(
                username=username, defaults={"role": role, "email": f"{username}@demo.invalid"}
            )
            user.role = role
            user.is_active = True
            user.set_password(password)
            user.save()
            users[username] = user
        return users

    @staticmethod
    def _finished(project: Project) -> bool:
        return DatasetExport.objects.filter(project=project, status=RunStatus.DONE).exists()

    def _retire(self, project: Project) -> None:
        """Delete a demo project; one with money on the ledger is renamed and paused."""
        project_id = project.pk
        try:
            with transaction.atomic():
                project.delete()
        except ProtectedError:
            stamp = timezone.now().strftime("%Y-%m-%d %H:%M:%S")
            project_update(project=project, data={"name": f"{project.name} (replaced {stamp})"})
            if project.state == ProjectState.ACTIVE:
                project_transition(project=project, action="pause")
            return
        truth_path(project_id).unlink(missing_ok=True)

    def _seed(self, kind: str, name: str, manager: User, client: User, *, seed: int) -> str:
        project, truth = sim_project_create(
            kind=kind, images=DEMO_IMAGES, gold=DEMO_GOLD, manager=manager, seed=seed,
            name=name, overrides={**DEMO_SETTINGS, "reward": DEMO_REWARDS[kind]},
        )  # fmt: skip
        project_client_add(project=project, username=client.username)
        stats = crowd_work(
            project=project,
            truth=truth,
            crowd=DEMO_CROWD,
            seed=seed,
            until_done=DEMO_DONE_SHARE,
            manager=manager,
        )
        reviews = reviews_finish(project=project, manager=manager)
        run = consensus_fresh(project=project, user=manager)
        with transaction.atomic():
            # Built here before its job starts (the job then finds it done), so the version
            # is downloadable when the server comes up.
            export = export_request(
                project=project, user=manager, data={"format": "coco", "consensus_run": run.pk}
            )
            export_build(export_id=export.pk)
        report = crowd_report(project=project, truth=truth, stats=stats, run=run, reviews=reviews)
        quality = report["quality"]
        measure = (
            f"accuracy {quality['accuracy']}" if kind == "classification" else f"F1 {quality['f1']}"
        )
        suspended = ", ".join(s["worker"] for s in report["suspended"]) or "nobody"
        tasks = report["tasks"]
        return (
            f"  {kind:<15} project {project.pk}: {tasks['done']}/{tasks['total']} tasks done, "
            f"{stats.answers} answers ({reviews['approved']} approved, {reviews['rejected']} "
            f"rejected), {measure} on done images, suspended: {suspended}, COCO version "
            f"{export.version}"
        )
