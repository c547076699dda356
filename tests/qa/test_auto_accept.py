"""Auto-accept (``qa.auto_accept``): the model alone labels images whose confidence passes a
threshold calibrated on human-checked images, never gold, never a task a worker holds, with
a spot-checked share left to people; every export format flags what it labelled."""

from __future__ import annotations

import csv
import io
import json
import math
import random
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path
from typing import Any

import pytest
from rest_framework.test import APIClient

from qa import auto_accept
from qa.auto_accept_core import choose_threshold, lower_bound, upper_bound
from qa.exports.build import export_build
from qa.merge import consensus_compute, consensus_run_request
from qa.models import DatasetExport
from qa.services import answer_compare, gold_set
from tasks import routing
from tasks.models import Image, Project, Task, TaskState
from tasks.predictions import predictions_import
from tasks.services import project_client_add, project_update
from tests.factories import ClientFactory, WorkerFactory, token_for
from tests.qa.helpers import LABELS, classification_project, no_gold

pytestmark = pytest.mark.django_db

LENIENT = {"target_accuracy": 0.7, "confidence": 0.9, "spot_check_rate": 0.0, "min_checked": 10}


def _as(user: Any) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user)}")
    return client


# --- The bound and the threshold, against a hand computation -----------------------------------


def _binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed term by term."""
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))


def _clopper_pearson_by_hand(k: int, n: int, confidence: float) -> float:
    """The lower bound's definition: the p at which seeing k or more successes has
    probability 1 - confidence, found by bisection on the binomial tail (no beta function)."""
    if k == 0:
        return 0.0
    lo, hi = 0.0, 1.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if _binomial_tail(k, n, mid) < 1 - confidence:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


@pytest.mark.parametrize(
    ("k", "n", "confidence"),
    [(59, 59, 0.95), (58, 59, 0.95), (45, 50, 0.9), (1, 3, 0.95), (97, 100, 0.99)],
)
def test_lower_bound_is_clopper_pearson(k: int, n: int, confidence: float) -> None:
    assert lower_bound(k, n, confidence) == pytest.approx(
        _clopper_pearson_by_hand(k, n, confidence), abs=1e-9
    )
    # All right: the bound has the closed form (1 - c) ** (1 / n).
    assert lower_bound(n, n, confidence) == pytest.approx((1 - confidence) ** (1 / n))
    assert lower_bound(0, n, confidence) == 0.0
    assert upper_bound(k, n, confidence) >= k / n >= lower_bound(k, n, confidence)


def test_the_threshold_is_the_lowest_whose_bound_reaches_the_target() -> None:
    # 70 images scored 0.99 down to 0.30: every one at 0.60 or above right, and below it one
    # wrong in three.
    confidences = [round(0.99 - 0.01 * i, 2) for i in range(70)]
    correct = [c >= 0.6 or i % 3 != 0 for i, c in enumerate(confidences)]
    target, confidence = 0.9, 0.95
    got = choose_threshold(confidences, correct, target=target, confidence=confidence,
                           min_checked=20)  # fmt: skip
    # By hand: for each candidate, the images at or above it and the bound of their accuracy.
    passing = []
    for t in confidences:
        above = [r for c, r in zip(confidences, correct, strict=True) if c >= t]
        if (
            len(above) >= 20
            and _clopper_pearson_by_hand(sum(above), len(above), confidence) >= target
        ):
            passing.append(t)
    assert got.threshold == min(passing)
    above = [r for c, r in zip(confidences, correct, strict=True) if c >= min(passing)]
    assert (got.checked, got.correct) == (len(above), sum(above))
    assert got.lower_bound == pytest.approx(_clopper_pearson_by_hand(sum(above), len(above), 0.95))
    assert got.lower_bound >= target
    assert got.reason == ""


def test_no_threshold_with_too_few_or_too_poor_answers() -> None:
    few = choose_threshold([0.99] * 9, [True] * 9, target=0.7, confidence=0.9, min_checked=10)
    assert few.threshold is None
    assert "at least 10" in few.reason
    poor = choose_threshold([0.9] * 40, [i % 2 == 0 for i in range(40)], target=0.9,
                            confidence=0.95, min_checked=10)  # fmt: skip
    assert poor.threshold is None
    assert "no confidence threshold reaches 90.0%" in poor.reason
    # 59 right of 59 reach 95% at 95% confidence; 58 do not.
    assert choose_threshold([0.9] * 59, [True] * 59, target=0.95, confidence=0.95,
                            min_checked=1).threshold == 0.9  # fmt: skip
    assert choose_threshold([0.9] * 58, [True] * 58, target=0.95, confidence=0.95,
                            min_checked=1).threshold is None  # fmt: skip


# --- The setting -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ("yes", None),
        ([0.9], None),
        ({"target_accuracy": 1.0}, "target_accuracy"),
        ({"target_accuracy": 0.3}, "target_accuracy"),
        ({"target_accuracy": "0.9"}, "target_accuracy"),
        ({"confidence": True}, "confidence"),
        ({"confidence": 1.5}, "confidence"),
        ({"spot_check_rate": -0.1}, "spot_check_rate"),
        ({"spot_check_rate": 1.01}, "spot_check_rate"),
        ({"min_checked": 0}, "min_checked"),
        ({"min_checked": 2.5}, "min_checked"),
        ({"threshold": 0.9}, "threshold"),
    ],
)
def test_bad_settings_are_a_400_and_change_nothing(manager: Any, value: Any, field: str) -> None:
    project, _ = classification_project(manager, images=1, gold=0)
    response = _as(manager).patch(
        f"/api/v1/projects/{project.pk}/", {"auto_accept": value, "name": "renamed"},
        format="json",
    )  # fmt: skip
    assert response.status_code == 400, response.content
    errors = response.json()["errors"]["auto_accept"]
    if field is not None:
        assert field in errors
    project.refresh_from_db()
    assert project.auto_accept is None
    assert project.name != "renamed"


def test_the_setting_is_stored_with_defaults_shown_and_null_turns_it_off(manager: Any) -> None:
    project, _ = classification_project(manager, images=1, gold=0)
    client = _as(manager)
    response = client.patch(
        f"/api/v1/projects/{project.pk}/", {"auto_accept": {"target_accuracy": 0.98}},
        format="json",
    )  # fmt: skip
    assert response.status_code == 200, response.content
    assert response.json()["auto_accept"] == {"target_accuracy": 0.98}
    shown = client.get(f"/api/v1/projects/{project.pk}/auto-accept/").json()
    assert shown["settings"] == {
        "target_accuracy": 0.98, "confidence": 0.95, "spot_check_rate": 0.05, "min_checked": 30,
    }  # fmt: skip
    assert shown["enabled"] is False
    assert shown["images_auto_accepted"] == 0
    client.patch(f"/api/v1/projects/{project.pk}/", {"auto_accept": None}, format="json")
    project.refresh_from_db()
    assert project.auto_accept is None


def test_workers_and_clients_neither_see_nor_set_it(manager: Any) -> None:
    project, _ = classification_project(manager, images=1, gold=0)
    project_update(project=project, data={"auto_accept": LENIENT})
    client_user = ClientFactory.create()
    project_client_add(project=project, username=client_user.username)
    worker = WorkerFactory.create()
    for user in (worker, client_user):
        api = _as(user)
        assert api.get(f"/api/v1/projects/{project.pk}/auto-accept/").status_code == 403
        assert api.post(f"/api/v1/projects/{project.pk}/auto-accept/").status_code == 403
        seen = api.get(f"/api/v1/projects/{project.pk}/")
        assert seen.status_code == 200
        assert "auto_accept" not in seen.json()
        patch = api.patch(f"/api/v1/projects/{project.pk}/", {"auto_accept": None}, format="json")
        assert patch.status_code in (403, 404)
    project.refresh_from_db()
    assert project.auto_accept == LENIENT
    # Another project's manager sees nothing of it either.
    from tests.factories import ManagerFactory

    other = _as(ManagerFactory.create())
    assert other.get(f"/api/v1/projects/{project.pk}/auto-accept/").status_code in (403, 404)


# --- Applying ----------------------------------------------------------------------------------


def _predict(project: Project, labels: dict[int, str], score: float = 0.97) -> None:
    predictions_import(
        project=project,
        data={
            "model_version": "m1",
            "predictions": [
                {"image": i, "annotations": [{"label": label, "score": score}]}
                for i, label in labels.items()
            ],
        },
    )


def _calibrated_classification(manager: Any, *, real: int = 6, **settings: Any):
    """12 gold images the model gets right at 0.97, and ``real`` images it predicts at 0.97
    (the truth); auto-accept at 70% with 90% confidence from 10 checked images."""
    project, truth = classification_project(
        manager, images=real, gold=12, min_overlap=1, max_overlap=1, gold_rate=0.0
    )
    project_update(project=project, data={"auto_accept": {**LENIENT, **settings}})
    project.refresh_from_db()
    _predict(project, truth)
    return project, truth


@pytest.mark.both_databases
def test_passing_images_are_completed_by_the_model_without_answers_or_pay(manager: Any) -> None:
    project, truth = _calibrated_classification(manager)
    result = auto_accept.auto_accept_run(project_id=project.pk)
    state = _as(manager).get(f"/api/v1/projects/{project.pk}/auto-accept/").json()
    assert state["enabled"] is True
    assert state["threshold"] == pytest.approx(0.97)
    assert state["images_checked"] == 12
    assert state["gold_images"] == 12
    # 12 of 12 right: the bound is 0.1 ** (1 / 12).
    assert state["lower_bound"] == pytest.approx(0.1 ** (1 / 12), abs=1e-4)
    real = Task.objects.filter(project=project, is_gold=False)
    assert result["accepted"] == 6 == state["images_auto_accepted"]
    assert set(real.values_list("state", flat=True)) == {TaskState.DONE}
    assert set(real.values_list("auto_accepted_version", flat=True)) == {"m1"}
    assert not routing.assignment_next(project=project, worker=WorkerFactory.create(), rand=no_gold)
    from payouts.models import LedgerEntry

    assert not LedgerEntry.objects.exists()
    # The consensus ships the model's label for those images, as auto-accepted.
    run = consensus_compute(run_id=consensus_run_request(project=project).pk)
    assert run is not None
    assert run.status == "done", run.error
    from qa.models import ConsensusResult

    rows = ConsensusResult.objects.filter(run=run, method=auto_accept.METHOD)
    assert {r.image_id: r.annotations[0]["label"] for r in rows} == {
        i: truth[i] for i in real.values_list("image_id", flat=True)
    }
    assert run.tally["auto_accepted"]["images"] == 6
    # An auto-accepted image made gold afterwards ships its gold answer, once.
    first = rows.order_by("image_id").first()
    assert first is not None
    gold_set(project=project, image_id=first.image_id, annotations=[{"label": "fish"}],
             user=manager)  # fmt: skip
    again = consensus_compute(run_id=consensus_run_request(project=project).pk)
    assert again is not None
    assert again.status == "done", again.error
    shipped = ConsensusResult.objects.filter(run=again, image_id=first.image_id)
    assert list(shipped.values_list("method", flat=True)) == ["gold"]
    assert again.tally["auto_accepted"]["images"] == 5
    # Run again: nothing more to do, nothing done twice.
    assert auto_accept.auto_accept_run(project_id=project.pk)["accepted"] == 0


@pytest.mark.both_databases
def test_images_the_model_labelled_go_back_to_the_crowd_when_the_manager_says(
    manager: Any,
) -> None:
    project, _ = _calibrated_classification(manager)
    assert auto_accept.auto_accept_run(project_id=project.pk)["accepted"] == 6
    real = Task.objects.filter(project=project, is_gold=False).order_by("image_id")
    first, second = list(real.values_list("image_id", flat=True))[:2]
    url = f"/api/v1/projects/{project.pk}/auto-accept/reopen/"
    api = _as(manager)

    response = api.post(url, {"images": [first, second]}, format="json")
    assert response.status_code == 200, response.content
    assert response.json() == {"reopened": 2, "images_auto_accepted": 4}
    back = Task.objects.filter(project=project, image_id__in=[first, second])
    assert set(back.values_list("state", "auto_accepted_version", "people_only", "answers")) == {
        (TaskState.OPEN, "", True, 0)
    }
    assert not back.exclude(done_at=None).exists()
    # People get them, and the model does not label them again.
    lease = routing.assignment_next(project=project, worker=WorkerFactory.create(), rand=no_gold)
    assert lease is not None
    assert lease.task.image_id in (first, second)
    assert auto_accept.auto_accept_run(project_id=project.pk)["accepted"] == 0
    assert back.filter(state=TaskState.OPEN).count() == 2

    # An image not labelled by the model alone (now, or ever) is a 400 naming it; nothing moves.
    gold_image = Task.objects.filter(project=project, is_gold=True).values_list(
        "image_id", flat=True
    )[0]
    third = list(real.values_list("image_id", flat=True))[2]
    refused = api.post(url, {"images": [third, first, gold_image]}, format="json")
    assert (refused.status_code, refused.json()["code"]) == (400, "not_auto_accepted")
    assert refused.json()["errors"] == {
        "images": [
            f"Image {i} was not labelled by the model alone." for i in sorted([first, gold_image])
        ]
    }
    assert real.filter(image_id=third).get().state == TaskState.DONE
    body: dict[str, Any]
    for body in ({}, {"images": []}, {"images": ["1"]}, {"all": False},
                 {"all": True, "images": [third]}, {"all": "yes"}):  # fmt: skip
        assert api.post(url, body, format="json").status_code == 400, body
    assert auto_accept.project_auto_accept(project)["images_auto_accepted"] == 4

    everything = api.post(url, {"all": True}, format="json").json()
    assert everything == {"reopened": 4, "images_auto_accepted": 0}
    assert not real.exclude(state=TaskState.OPEN).exclude(image_id__in=[first, second]).exists()
    for user in (WorkerFactory.create(), ClientFactory.create()):
        assert _as(user).post(url, {"all": True}, format="json").status_code == 403


@pytest.mark.both_databases
def test_gold_is_never_auto_accepted(manager: Any) -> None:
    project, _ = _calibrated_classification(manager)
    auto_accept.auto_accept_run(project_id=project.pk)
    gold = Task.objects.filter(project=project, is_gold=True)
    assert gold.count() == 12
    assert set(gold.values_list("state", flat=True)) == {TaskState.OPEN}
    assert set(gold.values_list("auto_accepted_version", flat=True)) == {""}
    # Even a gold task that a direct call names is refused.
    task = gold.first()
    assert task is not None
    assert not routing.image_auto_accept(
        project=project, image_id=task.image_id, model_version="m1", confidence=1.0
    )


@pytest.mark.both_databases
def test_a_leased_or_answered_task_is_not_auto_accepted(manager: Any) -> None:
    project, truth = _calibrated_classification(manager)
    holder, answerer = WorkerFactory.create(), WorkerFactory.create()
    leased = routing.assignment_next(project=project, worker=holder, rand=no_gold)
    assert leased is not None
    answered = routing.assignment_next(project=project, worker=answerer, rand=no_gold)
    assert answered is not None
    # max_overlap 1: the answer completes the task; make the project ask for two first.
    Project.objects.filter(pk=project.pk).update(min_overlap=2, max_overlap=2)
    Task.objects.filter(pk=answered.task_id).update(required_overlap=2)
    routing.assignment_submit(
        assignment_id=answered.pk, worker=answerer,
        annotations=[{"label": truth[answered.task.image_id]}],
    )  # fmt: skip
    result = auto_accept.auto_accept_run(project_id=project.pk)
    assert result["accepted"] == 4
    for task_id in (leased.task_id, answered.task_id):
        task = Task.objects.get(pk=task_id)
        assert task.state == TaskState.OPEN
        assert task.auto_accepted_version == ""
    # The lease still submits.
    done = routing.assignment_submit(
        assignment_id=leased.pk, worker=holder, annotations=[{"label": LABELS[0]}]
    )
    assert done.status == "submitted"


def test_spot_checked_images_go_to_people(manager: Any) -> None:
    project, _ = _calibrated_classification(manager, real=40, spot_check_rate=0.25)
    result = auto_accept.auto_accept_run(project_id=project.pk)
    drawn = {
        t.image_id
        for t in Task.objects.filter(project=project, is_gold=False)
        if auto_accept.spot_checked(project, t.image_id, 0.25)
    }
    assert 0 < len(drawn) < 40
    assert result == {"accepted": 40 - len(drawn), "spot_checked": len(drawn)}
    open_ids = set(
        Task.objects.filter(project=project, is_gold=False, state=TaskState.OPEN).values_list(
            "image_id", flat=True
        )
    )
    assert open_ids == drawn


def test_spot_checks_that_show_the_model_falls_short_stop_it(manager: Any) -> None:
    project, truth = _calibrated_classification(manager, real=80, spot_check_rate=0.5)
    auto_accept.auto_accept_run(project_id=project.pk)
    drawn = list(
        Task.objects.filter(project=project, is_gold=False, state=TaskState.OPEN).values_list(
            "image_id", flat=True
        )
    )
    assert len(drawn) >= 25
    # People answer the spot-checked images: the model was wrong on every one of them.
    Project.objects.filter(pk=project.pk).update(agreement_threshold=0.0)
    wrong = {i: LABELS[(LABELS.index(truth[i]) + 1) % len(LABELS)] for i in drawn}
    worker = WorkerFactory.create()
    while lease := routing.assignment_next(project=project, worker=worker, rand=no_gold):
        routing.assignment_submit(
            assignment_id=lease.pk,
            worker=worker,
            annotations=[{"label": wrong[lease.task.image_id]}],
        )
    # One answer each, from a worker no gold has judged: they must still be human results.
    run = consensus_compute(run_id=consensus_run_request(project=project).pk)
    assert run is not None
    auto_accept.calibrate(project)
    state = auto_accept.project_auto_accept(project)
    assert state["enabled"] is False, {
        k: state[k] for k in ("images_checked", "checked", "spot_checks", "consensus_run")
    }
    assert state["reason"].startswith(("stopped: spot-checks", "no confidence threshold"))
    assert state["spot_checks"]["checked"] == 0 or state["spot_checks"]["accuracy"] == 0.0


# --- Exports -----------------------------------------------------------------------------------


@pytest.fixture
def media_root(settings: Any, tmp_path: Path) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"


BOX = {"label": "car", "bbox": [20, 30, 80, 60]}


def _bbox_project(manager: Any) -> tuple[Project, set[int], set[int]]:
    """12 gold images the model gets right, 2 images it labels alone, 2 people label."""
    from tasks.services import project_transition
    from tests.factories import image_ready, project_create
    from tests.qa.test_exports import real_file

    project = project_create(
        manager, kind="bbox", labels=["car", "tree"], gold_rate=0.0, min_overlap=1,
        max_overlap=1, agreement_threshold=0.1, name="Streets",
    )  # fmt: skip
    images = []
    for seed in range(16):
        image = image_ready(project, width=320, height=240, seed=seed)
        real_file(image, seed)
        images.append(image)
    for image in images[:12]:
        gold_set(project=project, image_id=image.pk, annotations=[BOX], user=manager)
    project = project_transition(project=project, action="start")
    project_update(project=project, data={"auto_accept": LENIENT})
    project.refresh_from_db()
    machine = {images[12].pk, images[13].pk}
    predicted = [image.pk for image in images[:14]]
    predictions_import(
        project=project,
        data={"model_version": "m1", "predictions": [
            {"image": i, "annotations": [{**BOX, "score": 0.96}]} for i in predicted
        ]},
    )  # fmt: skip
    assert auto_accept.auto_accept_run(project_id=project.pk)["accepted"] == 2
    worker = WorkerFactory.create()
    while lease := routing.assignment_next(project=project, worker=worker, rand=no_gold):
        routing.assignment_submit(
            assignment_id=lease.pk, worker=worker,
            annotations=[{"label": "tree", "bbox": [100, 100, 50, 50]}],
        )  # fmt: skip
    people = {images[14].pk, images[15].pk}
    return project, machine, people


def _export(manager: Any, project: Project, **body: Any) -> tuple[DatasetExport, bytes]:
    api: Any = _as(manager)
    response = api.post(f"/api/v1/projects/{project.pk}/exports/", body, format="json")
    assert response.status_code == 202, response.content
    export = export_build(export_id=response.json()["id"])
    assert export is not None
    assert export.status == "done", export.error
    download = api.get(f"/api/v1/exports/{export.pk}/download/")
    return export, b"".join(download.streaming_content)


def test_every_export_format_flags_machine_labelled_images(
    manager: Any, media_root: None, tmp_path: Path
) -> None:
    from datumaro.components.dataset import Dataset
    from pycocotools.coco import COCO

    project, machine, people = _bbox_project(manager)
    names = dict(Image.objects.filter(project=project).values_list("pk", "name"))

    # COCO: an image field, and an attribute of each annotation (read back by pycocotools
    # and by Datumaro).
    export, data = _export(manager, project, format="coco")
    assert export.counts["machine_labelled"] == 2
    (tmp_path / "c.json").write_bytes(data)
    coco = COCO(str(tmp_path / "c.json"))
    flagged = {i for i, image in coco.imgs.items() if image["machine_labelled"]}
    assert flagged == machine
    assert all(
        a["attributes"]["machine_labelled"] == (a["image_id"] in machine)
        for a in coco.anns.values()
    )
    _, zipped = _export(manager, project, format="coco", include_images=True)
    root = tmp_path / "coco"
    zipfile.ZipFile(io.BytesIO(zipped)).extractall(root)
    dataset = Dataset.import_from(str(root), "coco_instances")
    flagged_items = {
        item.id for item in dataset for a in item.annotations
        if a.attributes.get("machine_labelled")
    }  # fmt: skip
    assert len(flagged_items) == 2
    assert "labelled by the model alone (auto-accept) | 2 |" in export.card
    assert "Auto-accept: 2 images" in export.card

    # YOLO: a list of the label files, beside the files Datumaro reads.
    _, data = _export(manager, project, format="yolo")
    root = tmp_path / "yolo"
    zipfile.ZipFile(io.BytesIO(data)).extractall(root)
    listed = [
        line for line in (root / "machine_labelled.txt").read_text().splitlines()
        if not line.startswith("#")
    ]  # fmt: skip
    assert len(listed) == 2
    assert all((root / path).exists() for path in listed)
    assert {Path(p).stem for p in listed} == {Path(names[i]).stem for i in machine}
    assert len(Dataset.import_from(str(root), "yolo")) == 16

    # VOC: a field of each annotation file.
    _, data = _export(manager, project, format="voc")
    root = tmp_path / "voc"
    zipfile.ZipFile(io.BytesIO(data)).extractall(root)
    flags = {
        ET.parse(path).findtext("filename"): ET.parse(path).findtext("machine_labelled")
        for path in (root / "Annotations").glob("*.xml")
    }
    assert sorted(str(flag) for flag in flags.values()) == ["0"] * 14 + ["1"] * 2
    assert len(Dataset.import_from(str(root), "voc_detection")) == 16

    # JSON Lines (raw answers): the model's line for each image it labelled alone.
    _, data = _export(manager, project, format="raw")
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        lines = [json.loads(x) for x in archive.read("answers.jsonl").splitlines()]
    assert {x["image"] for x in lines if x["machine_labelled"]} == machine
    assert {x["image"] for x in lines if not x["machine_labelled"]} == people
    assert all(x["worker"] == "model" for x in lines if x["machine_labelled"])


def test_csv_flags_machine_labelled_images(manager: Any, media_root: None) -> None:
    project, _ = _calibrated_classification(manager, real=3)
    auto_accept.auto_accept_run(project_id=project.pk)
    _, data = _export(manager, project, format="csv")
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        rows = list(csv.DictReader(io.StringIO(archive.read("labels.csv").decode())))
    flags = {int(r["image_id"]): r["machine_labelled"] for r in rows}
    real = set(
        Task.objects.filter(project=project, is_gold=False).values_list("image_id", flat=True)
    )
    assert {i for i, f in flags.items() if f == "1"} == real
    assert {i for i, f in flags.items() if f == "0"} == set(flags) - real


# --- A simulated crowd and a simulated model ---------------------------------------------------


# (model, must it find a threshold): a calibrated detector of recall 0.95 reaches the target
# on this crowd; an over-confident one of recall 0.85 that never finds small shapes may not,
# and must then stay off rather than label badly.
SIM_MODELS = [
    ("recall=0.95,calibration=calibrated", True),
    ("recall=0.85,calibration=over-confident,small=0.05", False),
]


@pytest.mark.usefixtures("seeded_draws")
@pytest.mark.parametrize(("model", "reaches"), SIM_MODELS)
def test_auto_accept_reaches_its_target_on_a_simulated_crowd(
    manager: Any, media_root: None, model: str, reaches: bool
) -> None:
    """A bbox project of generated scenes: a simulated crowd answers the first half, a
    simulated detector predicts every image, and auto-accept labels what passes of the rest.
    Measured against the scenes' exact truth, the images the model labelled alone are right
    at least as often as the target."""
    from frontend.sim.manager import model_predictions
    from frontend.sim.seeding import sim_project_create
    from qa.sim import scenes
    from qa.sim.crowd import BEHAVIOURS, SimWorker, TaskView

    target = 0.85
    project, truth = sim_project_create(
        kind="bbox", images=160, gold=16, manager=manager, seed=3,
        overrides={"min_overlap": 2, "max_overlap": 4, "gold_rate": 0.1, "auto_accept": {
            "target_accuracy": target, "confidence": 0.9, "spot_check_rate": 0.1,
            "min_checked": 20,
        }},
    )  # fmt: skip
    model_predictions(project=project, truth=truth, spec=model,
                      seed=3)  # fmt: skip
    images = {i.pk: i for i in Image.objects.filter(project=project)}
    truth_of = {pk: truth.images[image.name] for pk, image in images.items()}
    workers = [(WorkerFactory.create(), SimWorker(BEHAVIOURS["careful"], n, seed=3))
               for n in range(1, 6)]  # fmt: skip
    draws = random.Random(3)  # routing's draws of gold, the same in every run
    # Round robin, one task each: breadth-first routing finishes tasks in id order, so the
    # crowd answers the first ~half of the images.
    real = Task.objects.filter(project=project, is_gold=False).count()
    while (
        Task.objects.filter(project=project, is_gold=False, state=TaskState.DONE).count()
        < real // 2
    ):
        for user, sim in workers:
            lease = routing.assignment_next(project=project, worker=user, rand=draws.random)
            if lease is None:
                continue
            task = lease.task
            view = TaskView(kind="bbox", keypoints={name: [] for name in scenes.CLASSES}, width=images[task.image_id].width,
                            height=images[task.image_id].height, region=task.region)  # fmt: skip
            routing.assignment_submit(
                assignment_id=lease.pk, worker=user,
                annotations=sim.answer(view, truth_of[task.image_id]),
            )  # fmt: skip
    run = consensus_compute(run_id=consensus_run_request(project=project).pk)
    assert run is not None
    assert run.status == "done"
    auto_accept.auto_accept_run(project_id=project.pk)
    state = auto_accept.project_auto_accept(project)
    accepted = set(
        Task.objects.filter(project=project)
        .exclude(auto_accepted_version="")
        .values_list("image_id", flat=True)
    )
    print(f"{model}: {state}")
    if not reaches and not state["enabled"]:
        assert not accepted
        assert "no confidence threshold reaches" in state["reason"]
        return
    assert state["enabled"], state["reason"]
    assert len(accepted) >= 20, state
    project.refresh_from_db()
    from tasks.models import Prediction

    right = 0
    for prediction in Prediction.objects.filter(project=project, image_id__in=accepted):
        _, answer = auto_accept.image_confidence(project, prediction.annotations, prediction.score)
        image = images[prediction.image_id]
        result = answer_compare(project=project, reference=truth_of[image.pk], answer=answer,
                                width=image.width, height=image.height)  # fmt: skip
        right += result.score >= project.gold_pass_score
    accuracy = right / len(accepted)
    print(f"{model}: auto-accepted {len(accepted)} images, accuracy {accuracy:.3f}")
    assert accuracy >= target


# --- When it runs ------------------------------------------------------------------------------


def test_it_is_queued_after_predictions_consensus_and_setting_changes(
    manager: Any, monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> None:
    from qa import jobs

    sent: list[int] = []
    monkeypatch.setattr(jobs.auto_accept_run, "send", lambda project_id: sent.append(project_id))
    project, truth = classification_project(manager, images=2, gold=0)
    with django_capture_on_commit_callbacks(execute=True):
        _predict(project, truth)
    assert sent == []  # off: nothing queued
    with django_capture_on_commit_callbacks(execute=True):
        project_update(project=project, data={"auto_accept": LENIENT})
    assert sent == [project.pk]
    project.refresh_from_db()
    with django_capture_on_commit_callbacks(execute=True):
        _predict(project, truth)
    assert sent == [project.pk] * 2
    run = consensus_run_request(project=project)  # its own job is never sent: no commit
    with django_capture_on_commit_callbacks(execute=True):
        consensus_compute(run_id=run.pk)
    assert sent == [project.pk] * 3
    with django_capture_on_commit_callbacks(execute=True):
        project_update(project=project, data={"name": "renamed"})
    assert sent == [project.pk] * 3  # nothing auto-accept rests on changed
    image = Task.objects.filter(project=project).first()
    assert image is not None
    with django_capture_on_commit_callbacks(execute=True):
        gold_set(project=project, image_id=image.image_id, annotations=[{"label": truth[image.image_id]}],
                 user=manager)  # fmt: skip
    assert sent == [project.pk] * 4  # gold is human-checked: the calibration rests on it
