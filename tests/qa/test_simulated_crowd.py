"""A simulated crowd works a project through the real services: spammers are suspended
within their first 20 gold tasks, good workers never are."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from qa.models import GoldResult, WorkerScore, WorkerStatus
from tasks import routing
from tasks.routing import NotEligible
from tests.factories import WorkerFactory
from tests.qa.helpers import LABELS, classification_project

pytestmark = [pytest.mark.django_db]

Behaviour = Callable[[str, random.Random], str]


def skilled(accuracy: float) -> Behaviour:
    def label(truth: str, rng: random.Random) -> str:
        if rng.random() < accuracy:
            return truth
        return rng.choice([x for x in LABELS if x != truth])

    return label


def spammer(truth: str, rng: random.Random) -> str:
    return rng.choice(LABELS)


def adversary(truth: str, rng: random.Random) -> str:
    # Answers what gold most often says, whatever the image shows: gold-like, never looking.
    return LABELS[0]


CROWD: list[tuple[str, Behaviour]] = [
    *[("good", skilled(0.93))] * 6,
    *[("sloppy", skilled(0.8))] * 3,
    *[("spammer", spammer)] * 3,
    ("adversary", adversary),
]


@pytest.mark.parametrize("seed", [7, 2026])
def test_spammers_are_suspended_early_and_good_workers_never(manager, seed) -> None:
    rng = random.Random(seed)
    project, truth = classification_project(
        manager, gold=60, images=240, gold_rate=0.2, min_overlap=3, max_overlap=5,
        agreement_threshold=0.7, min_worker_score=0.6,
    )  # fmt: skip
    workers = [(kind, behave, WorkerFactory.create()) for kind, behave in CROWD]
    active = list(workers)
    while active:
        for entry in list(active):
            _, behave, worker = entry
            try:
                lease = routing.assignment_next(project=project, worker=worker, rand=rng.random)
            except NotEligible:
                active.remove(entry)
                continue
            if lease is None:
                active.remove(entry)
                continue
            label = behave(truth[lease.task.image_id], rng)
            routing.assignment_submit(
                assignment_id=lease.pk, worker=worker, annotations=[{"label": label}]
            )
    status = {
        w.pk: s for w, s in (
            (w, WorkerScore.objects.get(project=project, worker=w).status) for _, _, w in workers
        )
    }  # fmt: skip
    for kind, _, worker in workers:
        gold_answers = GoldResult.objects.filter(project=project, worker=worker).count()
        if kind in ("spammer", "adversary"):
            assert status[worker.pk] == WorkerStatus.SUSPENDED, (kind, gold_answers)
            assert gold_answers <= 20, (kind, gold_answers)
        if kind == "good":
            assert status[worker.pk] == WorkerStatus.ACTIVE, (kind, gold_answers)
