"""``manage.py crowdsim``: a simulated crowd works a project; the result is measured against
the exact truth of the generated images (see ``qa.sim``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from django.core.management.base import BaseCommand, CommandError, CommandParser

from crowd.models import Role
from frontend.sim.accounts import account_ensure, sim_password
from frontend.sim.engine import crowd_work
from frontend.sim.errors import SimError
from frontend.sim.manager import (
    consensus_fresh,
    model_predictions,
    model_text,
    prelabel_effect_text,
    reviews_finish,
)
from frontend.sim.report import ProgressBar, crowd_report, report_text
from frontend.sim.seeding import sim_project_create
from frontend.sim.settle import jobs_settle
from frontend.sim.truth import truth_load, truth_path
from qa.prelabel_effect import prelabel_effect
from qa.sim import scenes
from qa.sim.crowd import crowd_parse
from tasks.models import Project
from tasks.services import project_update

DEFAULT_CROWD = "careful:6,sloppy:3,spammer:2,adversary:1,dropout:1"


class Command(BaseCommand):
    help = (
        "Work a project with a simulated crowd (in-process or over HTTP), then print the merged "
        "labels' accuracy against the exact truth, the cost and the suspended workers."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument(
            "--project", type=int, help="an active project the simulator created earlier"
        )
        target.add_argument(
            "--create", choices=scenes.KINDS, help="create and start a project of this kind"
        )
        parser.add_argument("--images", type=int, default=24, help="with --create (24)")
        parser.add_argument("--gold", type=int, default=6, help="gold images, with --create (6)")
        parser.add_argument(
            "--manager", default="sim-manager",
            help="owner of the created project, created if missing (sim-manager)",
        )  # fmt: skip
        parser.add_argument(
            "--crowd", default=DEFAULT_CROWD, help=f"behaviour:count,... ({DEFAULT_CROWD})"
        )
        parser.add_argument(
            "--via", choices=["services", "http"],
            help="services (in-process, default) or http (default when --url is given)",
        )  # fmt: skip
        parser.add_argument("--url", default="", help="the server, e.g. http://localhost:8000")
        parser.add_argument(
            "--workers-concurrency", type=int, default=None,
            help="workers acting at once (1 in-process, 8 over HTTP)",
        )  # fmt: skip
        parser.add_argument(
            "--speed", type=float, default=0.0,
            help="real seconds per simulated second (0: as fast as possible)",
        )  # fmt: skip
        parser.add_argument(
            "--max-answers", type=int, default=0, help="stop after this many answers (0: no limit)"
        )
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument(
            "--approve", action="store_true",
            help="the manager rejects suspended workers' answers while the crowd works (their "
            "tasks ask for another answer) and approves the rest at the end, so money moves",
        )  # fmt: skip
        parser.add_argument(
            "--model", default="",
            help="a simulated model predicts every image first and votes in consensus when "
            "gold allows, its items of the project's kind, e.g. "
            "recall=0.85,calibration=over-confident,small=0.05,false=0.3",
        )  # fmt: skip
        parser.add_argument(
            "--prelabels", type=float, default=None, metavar="HOLDOUT",
            help="show workers the model's pre-labels, holding out this share of tasks "
            "(e.g. 0.1); with --model",
        )  # fmt: skip
        parser.add_argument(
            "--anchoring", type=float, default=0.0,
            help="0..1: how often a worker keeps a pre-label as it is (the model's mistakes "
            "too) instead of judging it, and leaves an object the model missed unmarked (0)",
        )  # fmt: skip
        parser.add_argument("--quiet", action="store_true", help="no progress bar")
        parser.add_argument("--json", default="", help="also write the report to this file")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            crowd = crowd_parse(options["crowd"])
        except ValueError as exc:
            raise CommandError(f"--crowd: {exc}") from None
        url = options["url"]
        via = options["via"] or ("http" if url else "services")
        if via == "http":
            url = url or "http://localhost:8000"
            parsed = urlparse(url)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise CommandError(f"--url {url!r}: give the server as http://host:port.")
        elif url:
            raise CommandError("--url is for --via http.")
        concurrency = options["workers_concurrency"] or (8 if via == "http" else 1)
        if not 1 <= concurrency <= 256:
            raise CommandError("--workers-concurrency: between 1 and 256.")
        if options["speed"] < 0:
            raise CommandError("--speed: 0 (as fast as possible) or more.")
        if options["max_answers"] < 0:
            raise CommandError("--max-answers: 0 (no limit) or more.")
        if not 0 <= options["anchoring"] <= 1:
            raise CommandError("--anchoring: between 0 and 1.")
        holdout = options["prelabels"]
        if holdout is not None and not 0 <= holdout <= 1:
            raise CommandError("--prelabels: the share held out, between 0 and 1.")
        try:
            self._run(options, crowd=crowd, via=via, url=url, concurrency=concurrency)
        except SimError as exc:
            raise CommandError(str(exc)) from None
        finally:
            jobs_settle()

    def _run(
        self,
        options: dict[str, Any],
        *,
        crowd: list[tuple[str, int]],
        via: str,
        url: str,
        concurrency: int,
    ) -> None:
        quiet = options["quiet"]
        if options["create"]:
            manager, created = account_ensure(options["manager"], Role.MANAGER)
            if created and not quiet:
                self.stdout.write(
                    f"Created manager {manager.username!r} with password "
                    f"{sim_password(manager.username)!r}."
                )
            project, truth = sim_project_create(
                kind=options["create"], images=options["images"], gold=options["gold"],
                manager=manager, seed=options["seed"],
            )  # fmt: skip
            if not quiet:
                self.stdout.write(
                    f"Created project {project.pk} ({project.kind}): {len(truth.images)} "
                    f"images, {options['gold']} gold; truth in {truth_path(project.pk)}."
                )
        else:
            found = Project.objects.filter(pk=options["project"]).select_related("owner").first()
            if found is None:
                raise CommandError(f"No project {options['project']}.")
            project, manager = found, found.owner
            truth = truth_load(project)
        if options["model"]:
            version, predicted = model_predictions(
                project=project, truth=truth, spec=options["model"], seed=options["seed"]
            )
            if not quiet:
                self.stdout.write(f"Model {version} predicted {predicted} images.")
        if options["prelabels"] is not None:
            project = project_update(
                project=project,
                data={"prelabels": True, "prelabel_holdout": options["prelabels"]},
            )
        bar = None if quiet else ProgressBar(self._progress_write, tty=self.stderr.isatty())
        try:
            stats = crowd_work(
                project=project, truth=truth, crowd=crowd, via=via, url=url,
                seed=options["seed"], speed=options["speed"], concurrency=concurrency,
                max_answers=options["max_answers"], progress=bar,
                manager=manager if options["approve"] else None,
                anchoring=options["anchoring"],
            )  # fmt: skip
        finally:
            if bar is not None:
                bar.close()
        reviews = reviews_finish(project=project, manager=manager) if options["approve"] else None
        run = consensus_fresh(project=project, user=manager)
        report = crowd_report(project=project, truth=truth, stats=stats, run=run, reviews=reviews)
        self.stdout.write(report_text(report))
        if options["model"]:
            self.stdout.write(model_text(project, run.tally.get("model")))
        if project.prelabels:
            effect = prelabel_effect(project)
            report["prelabel_effect"] = {
                key: effect[key] for key in ("prelabel_holdout", "overall", "outcomes")
            }
            self.stdout.write(prelabel_effect_text(effect))
        if options["json"]:
            path = Path(options["json"])
            try:
                path.write_text(json.dumps(report, indent=2) + "\n")
            except OSError as exc:
                raise CommandError(f"--json: cannot write {path}: {exc}") from None

    def _progress_write(self, text: str) -> None:
        self.stderr.write(text, ending="")
        self.stderr.flush()
