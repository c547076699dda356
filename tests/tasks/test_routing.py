"""Each routing rule of DESIGN.md, through the services and the HTTP API."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tasks import routing
from tasks.hooks import Admission, Decision, register_routing_policy, routing_policy
from tasks.models import Assignment, AssignmentStatus, Task, TaskState
from tasks.services import project_transition, tasks_mark_gold
from tests.factories import WorkerFactory, image_ready, project_create
from tests.tasks.routing_helpers import assert_counters_match_recount, assert_no_worker_twice

pytestmark = [pytest.mark.django_db, pytest.mark.both_databases]

BOX = [{"label": "car", "bbox": [1, 1, 10, 10]}]


def active_project(manager, images: int = 3, **settings):
    project = project_create(manager, gold_rate=0.0, **settings)
    for seed in range(images):
        image_ready(project, seed=seed)
    return project_transition(project=project, action="start")


def never() -> float:
    return 1.0  # rand() >= any gold rate: never choose gold


def lease_for(project, worker) -> Assignment:
    assignment = routing.assignment_next(project=project, worker=worker, rand=never)
    assert assignment is not None
    return assignment


def work(project, worker, annotations=BOX):
    assignment = lease_for(project, worker)
    if assignment is not None:
        routing.assignment_submit(
            assignment_id=assignment.pk, worker=worker, annotations=annotations
        )
    return assignment


class TestSelection:
    def test_own_open_lease_is_redelivered_not_duplicated(self, manager, worker) -> None:
        project = active_project(manager)
        first = lease_for(project, worker)
        again = lease_for(project, worker)
        assert first is not None
        assert again is not None
        assert again.pk == first.pk
        assert Assignment.objects.count() == 1
        assert Task.objects.get(pk=first.task_id).open_leases == 1

    def test_overlap_is_never_exceeded_and_no_worker_gets_a_task_twice(self, manager) -> None:
        project = active_project(manager, images=1, min_overlap=3, max_overlap=3)
        workers = [WorkerFactory.create() for _ in range(4)]
        got = [routing.assignment_next(project=project, worker=w, rand=never) for w in workers]
        assert [a is not None for a in got] == [True, True, True, False]
        for worker, assignment in zip(workers, got[:3], strict=False):
            assert assignment is not None
            routing.assignment_submit(assignment_id=assignment.pk, worker=worker, annotations=BOX)
        assert routing.assignment_next(project=project, worker=workers[0], rand=never) is None
        task = Task.objects.get()
        assert (task.answers, task.open_leases, task.state) == (3, 0, TaskState.DONE)
        assert_counters_match_recount(project)
        assert_no_worker_twice(project)

    def test_breadth_first_closest_to_done_then_priority_then_age(self, manager) -> None:
        project = active_project(manager, images=4, min_overlap=3, max_overlap=3)
        t1, t2, t3, t4 = Task.objects.order_by("pk")
        # All equal, the oldest goes first: t1 gets one answer, which makes it the closest to
        # done for the next worker; then t4 by its priority, then t2 and t3 by age.
        work(project, WorkerFactory.create())
        Task.objects.filter(pk=t4.pk).update(priority=5)
        worker = WorkerFactory.create()
        order = []
        while (
            a := routing.assignment_next(project=project, worker=worker, rand=never)
        ) is not None:
            order.append(a.task_id)
            routing.assignment_skip(assignment_id=a.pk, worker=worker)
        assert order == [t1.pk, t4.pk, t2.pk, t3.pk]

    def test_gold_rate_warms_up_then_settles_at_the_base_rate(self, manager, worker) -> None:
        project = active_project(manager, images=30, min_overlap=1, max_overlap=1)
        project.gold_rate = 0.2
        rates = []
        for _ in range(25):
            rates.append(routing.gold_rate_for(project=project, worker=worker))
            work(project, worker)
        assert rates[0] == pytest.approx(0.5)  # min(3 x base, 50%)
        assert rates[10] == pytest.approx(0.35)
        assert rates[20:] == [pytest.approx(0.2)] * 5

    def test_the_gold_draw_reads_the_count_only_between_the_base_and_the_start(
        self, manager, worker
    ) -> None:
        """``_wants_gold`` says what the draw against the warm-up rate says, for every draw;
        below the base rate and above the start it reads nothing."""
        project = active_project(manager, images=12, min_overlap=1, max_overlap=1)
        draws = [k / 100 for k in range(101)]
        for base in (0.0, 0.05, 0.2, 0.4):
            project.gold_rate = base
            for _ in range(3):
                rate = routing.gold_rate_for(project=project, worker=worker)
                for draw in draws:
                    start = max(base, min(routing.GOLD_WARMUP_MAX_RATE, 3 * base))
                    with CaptureQueriesContext(connection) as queries:
                        wants = routing._wants_gold(project, worker, draw)
                    assert wants == (base > 0 and draw < rate), (base, draw)
                    assert len(queries) == int(base <= draw < start), (base, draw)
                work(project, worker)

    def test_gold_is_mixed_in_at_the_rate_within_statistical_bounds(self, manager) -> None:
        project = project_create(manager, gold_rate=0.2, min_overlap=1, max_overlap=1)
        for seed in range(400):
            image = image_ready(project, seed=seed)
            if seed % 4 == 0:
                tasks_mark_gold(image=image)
        project = project_transition(project=project, action="start")
        rng = random.Random(7)
        gold = total = 0
        for worker in (WorkerFactory.create(), WorkerFactory.create()):
            for n in range(150):
                assignment = routing.assignment_next(
                    project=project, worker=worker, rand=rng.random
                )
                assert assignment is not None
                if n >= routing.GOLD_WARMUP_TASKS:
                    gold += assignment.task.is_gold
                    total += 1
                routing.assignment_submit(
                    assignment_id=assignment.pk, worker=worker, annotations=BOX
                )
        share, sigma = gold / total, (0.2 * 0.8 / total) ** 0.5
        assert abs(share - 0.2) <= 3 * sigma, (share, total)

    def test_no_second_gold_from_an_image_already_seen(self, manager, worker) -> None:
        project = project_create(manager, gold_rate=0.5, tile_size=256, tile_overlap=32)
        image = image_ready(project, width=600, height=300)  # several tiles
        tasks_mark_gold(image=image)
        project = project_transition(project=project, action="start")
        always = lambda: 0.0  # noqa: E731
        first = routing.assignment_next(project=project, worker=worker, rand=always)
        assert first is not None
        assert first.task.is_gold
        routing.assignment_submit(assignment_id=first.pk, worker=worker, annotations=[])
        assert routing.assignment_next(project=project, worker=worker, rand=always) is None

    def test_gold_looks_exactly_like_a_real_task(self, api_as, manager, monkeypatch) -> None:
        project = project_create(manager, gold_rate=0.5, min_overlap=1, max_overlap=1)
        real, gold = image_ready(project, seed=1), image_ready(project, seed=2)
        tasks_mark_gold(image=gold)
        project_transition(project=project, action="start")
        bodies = {}
        for image, draw in ((real, 1.0), (gold, 0.0)):  # draw 0.0: gold whenever available
            monkeypatch.setattr(routing.random, "random", lambda draw=draw: draw)
            worker = WorkerFactory.create()
            Task.objects.exclude(image=image).update(state=TaskState.DONE)
            Task.objects.filter(image=image).update(state=TaskState.OPEN)
            response = api_as(worker).post(f"/api/v1/projects/{project.pk}/assignments/next/")
            assert response.status_code == 201
            bodies[image.pk] = response.json()
            assert Assignment.objects.get(pk=bodies[image.pk]["id"]).task.is_gold == (image == gold)
        real_body, gold_body = bodies[real.pk], bodies[gold.pk]

        def shape(value):
            if isinstance(value, dict):
                return {k: shape(v) for k, v in value.items()}
            return type(value).__name__

        assert shape(real_body) == shape(gold_body)
        assert "gold" not in str(gold_body).lower()

    def test_skip_frees_the_slot_and_the_task_never_comes_back(self, manager, worker) -> None:
        project = active_project(manager, images=1)
        assignment = lease_for(project, worker)
        skipped = routing.assignment_skip(assignment_id=assignment.pk, worker=worker)
        assert skipped.status == AssignmentStatus.SKIPPED
        assert (
            routing.assignment_skip(assignment_id=assignment.pk, worker=worker).status == "skipped"
        )
        assert Task.objects.get().open_leases == 0
        assert routing.assignment_next(project=project, worker=worker, rand=never) is None
        assert routing.assignment_next(project=project, worker=WorkerFactory.create(), rand=never)

    def test_paused_project_hands_out_nothing(self, api_as, manager, worker) -> None:
        project = active_project(manager)
        project_transition(project=project, action="pause")
        response = api_as(worker).post(f"/api/v1/projects/{project.pk}/assignments/next/")
        assert response.status_code == 204

    def test_draft_project_is_not_found(self, api_as, manager, worker) -> None:
        project = project_create(manager)
        image_ready(project)
        response = api_as(worker).post(f"/api/v1/projects/{project.pk}/assignments/next/")
        assert response.status_code == 404

    def test_a_blocked_worker_gets_403_with_the_reason(self, api_as, manager, worker) -> None:
        project = active_project(manager)
        previous = routing_policy()

        class Suspending(type(previous)):  # type: ignore[misc]
            def admission(self, *, project, worker):
                return Admission(
                    reason="Suspended: gold accuracy 40% is below the project's minimum of 70%."
                )

        register_routing_policy(Suspending())
        try:
            response = api_as(worker).post(f"/api/v1/projects/{project.pk}/assignments/next/")
        finally:
            register_routing_policy(previous)
        assert response.status_code == 403
        assert response.json()["code"] == "not_eligible"
        assert "below the project's minimum" in response.json()["detail"]
        assert not Assignment.objects.exists()

    def test_only_workers_ask_for_work(self, api_as, manager) -> None:
        project = active_project(manager)
        response = api_as(manager).post(f"/api/v1/projects/{project.pk}/assignments/next/")
        assert response.status_code == 403


class TestLeases:
    def expire(self, assignment) -> None:
        Assignment.objects.filter(pk=assignment.pk).update(
            expires_at=timezone.now() - timedelta(seconds=1)
        )

    def test_expired_lease_is_released_by_whoever_comes_next(self, manager) -> None:
        project = active_project(manager, images=1, min_overlap=1, max_overlap=1)
        first, second = WorkerFactory.create(), WorkerFactory.create()
        lease = lease_for(project, first)
        assert routing.assignment_next(project=project, worker=second, rand=never) is None
        self.expire(lease)
        taken = routing.assignment_next(project=project, worker=second, rand=never)
        assert taken is not None
        assert taken.task_id == lease.task_id
        assert Assignment.objects.get(pk=lease.pk).status == AssignmentStatus.EXPIRED
        assert_counters_match_recount(project)

    def test_late_submit_is_409_when_the_task_no_longer_needs_it(self, api_as, manager) -> None:
        project = active_project(manager, images=1, min_overlap=1, max_overlap=1)
        late, other = WorkerFactory.create(), WorkerFactory.create()
        lease = lease_for(project, late)
        self.expire(lease)
        work(project, other)
        response = api_as(late).post(
            f"/api/v1/assignments/{lease.pk}/submit/", {"annotations": BOX}, format="json"
        )
        assert response.status_code == 409
        assert response.json()["code"] == "lease_expired"
        assert "no longer needs" in response.json()["detail"]
        assert Task.objects.get().answers == 1
        assert_counters_match_recount(project)

    def test_late_submit_is_accepted_while_the_task_still_needs_it(self, manager) -> None:
        project = active_project(manager, images=1, min_overlap=2, max_overlap=2)
        worker = WorkerFactory.create()
        lease = lease_for(project, worker)
        self.expire(lease)
        done = routing.assignment_submit(assignment_id=lease.pk, worker=worker, annotations=BOX)
        assert done.status == AssignmentStatus.SUBMITTED
        task = Task.objects.get()
        assert (task.answers, task.open_leases) == (1, 0)
        # And once the sweep has already expired it, the same holds.
        other = WorkerFactory.create()
        lease2 = lease_for(project, other)
        self.expire(lease2)
        assert routing.leases_release_expired() == 1
        routing.assignment_submit(assignment_id=lease2.pk, worker=other, annotations=BOX)
        assert Task.objects.get().answers == 2
        assert_counters_match_recount(project)

    def test_the_sweep_job_releases_expired_leases(self, manager, worker) -> None:
        from tasks.jobs import leases_sweep

        project = active_project(manager, images=1)
        self.expire(lease_for(project, worker))
        leases_sweep.fn()
        assert Task.objects.get().open_leases == 0
        assert Assignment.objects.get().status == AssignmentStatus.EXPIRED

    def test_one_open_lease_per_worker_per_project_is_a_database_constraint(
        self, manager, worker
    ) -> None:
        project = active_project(manager, images=2)
        a = lease_for(project, worker)
        other_task = Task.objects.exclude(pk=a.task_id).get()
        with pytest.raises(IntegrityError), transaction.atomic():
            Assignment.objects.create(
                task=other_task, project=project, worker=worker, leased_at=a.leased_at,
                expires_at=a.expires_at,
            )  # fmt: skip

    def test_over_assignment_is_a_database_constraint(self, manager) -> None:
        project = active_project(manager, images=1, min_overlap=2, max_overlap=2)
        with pytest.raises(IntegrityError), transaction.atomic():
            Task.objects.filter(project=project).update(open_leases=2, answers=1)


class TestSubmit:
    def test_submit_is_idempotent(self, api_as, manager, worker) -> None:
        project = active_project(manager, images=1, min_overlap=2, max_overlap=2)
        lease = lease_for(project, worker)
        client = api_as(worker)
        url = f"/api/v1/assignments/{lease.pk}/submit/"
        first = client.post(url, {"annotations": BOX}, format="json", HTTP_IDEMPOTENCY_KEY="k1")
        again = client.post(url, {"annotations": BOX}, format="json", HTTP_IDEMPOTENCY_KEY="k1")
        other = client.post(url, {"annotations": []}, format="json")
        assert first.status_code == again.status_code == 200
        assert first.json() == again.json() == {"id": lease.pk, "status": "submitted", "clipped": 0}
        # A different answer is not silently dropped: 409, and the first answer is kept.
        assert other.status_code == 409
        assert other.json()["code"] == "already_submitted"
        assert Task.objects.get().answers == 1
        assert Assignment.objects.get().answer == [{"label": "car", "bbox": [1.0, 1.0, 10.0, 10.0]}]
        assert Assignment.objects.get().idempotency_key == "k1"

    def test_bad_answer_is_400_and_records_nothing(self, api_as, manager, worker) -> None:
        project = active_project(manager, images=1)
        lease = lease_for(project, worker)
        response = api_as(worker).post(
            f"/api/v1/assignments/{lease.pk}/submit/",
            {"annotations": [{"label": "car", "bbox": [0, 0, 9999, 1]}]},
            format="json",
        )
        assert response.status_code == 400
        assert "annotations[0].bbox" in response.json()["errors"]
        assert Assignment.objects.get().status == AssignmentStatus.LEASED
        assert Task.objects.get().answers == 0

    def test_someone_elses_assignment_is_a_404(self, api_as, manager, worker) -> None:
        project = active_project(manager)
        lease = lease_for(project, worker)
        intruder = api_as(WorkerFactory.create())
        for action in ("submit", "skip"):
            response = intruder.post(
                f"/api/v1/assignments/{lease.pk}/{action}/", {"annotations": BOX}, format="json"
            )
            assert response.status_code == 404
        assert Assignment.objects.get().status == AssignmentStatus.LEASED

    def test_time_spent_is_recorded_and_bounded_by_the_lease(self, manager, worker) -> None:
        project = active_project(manager)
        lease = lease_for(project, worker)
        Assignment.objects.filter(pk=lease.pk).update(
            leased_at=timezone.now() - timedelta(seconds=12)
        )
        done = routing.assignment_submit(
            assignment_id=lease.pk, worker=worker, annotations=BOX, time_spent_ms=10**7
        )
        assert done.time_spent_ms is not None
        assert 11_000 <= done.time_spent_ms <= 13_000

    def test_history_lists_the_workers_assignments(self, api_as, manager, worker) -> None:
        project = active_project(manager, reward="0.05")
        work(project, worker)
        body = api_as(worker).get("/api/v1/me/assignments/").json()
        assert body["count"] == 1
        assert body["results"][0]["status"] == "submitted"
        assert body["results"][0]["reward"] == "0.05"


class TestDynamicOverlap:
    def classification(self, manager, **settings):
        project = project_create(
            manager, kind="classification", labels=["cat", "dog"], gold_rate=0.0, **settings
        )
        image_ready(project)
        return project_transition(project=project, action="start")

    def answer(self, project, label: str) -> None:
        work(project, WorkerFactory.create(), annotations=[{"label": label}])

    def test_agreement_completes_at_min_overlap(self, manager) -> None:
        project = self.classification(
            manager, min_overlap=2, max_overlap=4, agreement_threshold=0.7
        )
        self.answer(project, "cat")
        self.answer(project, "cat")
        task = Task.objects.get()
        assert (task.state, task.required_overlap) == (TaskState.DONE, 2)
        # Newcomers count as typical workers (right 80% of the time): two who agree make the
        # posterior 4^2 / (4^2 + 1).
        assert task.confidence == pytest.approx(16 / 17)

    def test_disagreement_grows_overlap_until_agreement(self, manager) -> None:
        project = self.classification(
            manager, min_overlap=2, max_overlap=4, agreement_threshold=0.85
        )
        self.answer(project, "cat")
        self.answer(project, "dog")
        task = Task.objects.get()
        assert (task.state, task.required_overlap) == (TaskState.OPEN, 3)
        self.answer(project, "cat")  # posterior 16 / 20 = 0.8 < 0.85
        assert Task.objects.get().required_overlap == 4
        self.answer(project, "cat")  # 64 / 68 >= 0.85
        task = Task.objects.get()
        assert (task.state, task.answers, task.low_confidence) == (TaskState.DONE, 4, False)
        assert task.confidence == pytest.approx(64 / 68)

    def test_stops_at_max_overlap_with_a_low_confidence_flag(self, manager) -> None:
        project = self.classification(
            manager, min_overlap=2, max_overlap=3, agreement_threshold=0.9
        )
        for label in ("cat", "dog", "cat"):
            self.answer(project, label)
        task = Task.objects.get()
        assert (task.state, task.answers, task.low_confidence) == (TaskState.DONE, 3, True)
        assert task.confidence == pytest.approx(0.8)
        assert (
            routing.assignment_next(project=project, worker=WorkerFactory.create(), rand=never)
            is None
        )

    def test_policy_sees_every_answer(self, manager) -> None:
        project = active_project(manager, images=1, min_overlap=2, max_overlap=2)
        seen = []
        previous = routing_policy()

        class Recording(type(previous)):  # type: ignore[misc]
            def decide(self, *, task, answers):
                seen.append(sorted(a.worker_id for a in answers))
                return Decision(complete=True, confidence=0.9)

        register_routing_policy(Recording())
        try:
            workers = [WorkerFactory.create() for _ in range(2)]
            for w in workers:
                work(project, w)
        finally:
            register_routing_policy(previous)
        assert seen == [sorted(w.pk for w in workers)]
        assert Task.objects.get().confidence == 0.9
