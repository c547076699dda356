"""Pre-labels on leases and the record of what each answer did with them: which tasks get
them (on, not held out, min_score), the holdout draw, and the outcomes the server computes
(kept, moved, relabelled, deleted, added) whatever the client claims."""

from __future__ import annotations

import math
from typing import Any

import pytest

from tasks import prelabel_core as core
from tasks import prelabels, routing
from tasks.models import Assignment, Image, ImageStatus, Prediction, PredictionSource, Task
from tasks.services import project_transition
from tests.factories import image_ready, project_create, project_with_tasks

pytestmark = [pytest.mark.both_databases]

CAR = {"label": "car", "bbox": [10.0, 20.0, 50.0, 40.0], "score": 0.9}
TREE = {"label": "tree", "bbox": [100.0, 60.0, 30.0, 80.0], "score": 0.6}
FAINT = {"label": "car", "bbox": [200.0, 150.0, 20.0, 20.0], "score": 0.2}


def stored_record(assignment_id: int) -> dict[str, Any]:
    record = Assignment.objects.get(pk=assignment_id).prelabels
    assert isinstance(record, dict)
    return record


def predict(project, image, items, version="v1") -> Prediction:
    return Prediction.objects.create(
        project=project, image=image, model_version=version, annotations=items,
        source=PredictionSource.IMPORT,
    )  # fmt: skip


def shown_task(project, *, held_out: bool) -> Task:
    """A task of the project the draw holds out (or not)."""
    for task in Task.objects.filter(project=project).order_by("pk"):
        if prelabels.held_out(project, task.pk) == held_out:
            return task
    raise AssertionError("no such task")


def lease_of(api, project) -> dict[str, Any]:
    response = api.post(f"/api/v1/projects/{project.pk}/assignments/next/")
    assert response.status_code == 201, response.content
    body: dict[str, Any] = response.json()
    return body


def bbox_project(manager, *, images: int = 1, **fields: Any):
    fields = {"gold_rate": 0, "tile_size": 0, "min_overlap": 1, "max_overlap": 1, **fields}
    project = project_create(manager, prelabels=True, prelabel_holdout=0.0, **fields)
    made = [image_ready(project, seed=i + 1) for i in range(images)]
    return project_transition(project=project, action="start"), made


# --- The pure core ----------------------------------------------------------------------------


def test_cut_keeps_what_lies_in_the_region_as_the_workspace_would_submit_it() -> None:
    region = [0, 0, 100, 100]
    assert core.cut("bbox", {"label": "car", "bbox": [90, 10, 30, 20]}, region) == {
        "label": "car",
        "bbox": [90.0, 10.0, 10.0, 20.0],
    }
    assert core.cut("bbox", {"label": "car", "bbox": [99.5, 10, 30, 20]}, region) is None
    square = {"label": "car", "points": [[80, 80], [120, 80], [120, 120], [80, 120]]}
    assert core.cut("polygon", square, region) == {
        "label": "car",
        # The order annotator.js's clipPolygon gives (the same Sutherland-Hodgman steps).
        "points": [[80.0, 100.0], [80.0, 80.0], [100.0, 80.0], [100.0, 100.0]],
    }
    person = {"label": "p", "keypoints": [[10.004, 10, 2], [150, 10, 2], [0, 0, 0]]}
    assert core.cut("keypoints", person, region) == {
        "label": "p",
        "keypoints": [[10.0, 10.0, 2], [0.0, 0.0, 0], [0.0, 0.0, 0]],
    }
    assert core.cut("keypoints", {"label": "p", "keypoints": [[150, 10, 2]]}, region) is None


def test_the_record_computes_every_outcome() -> None:
    shown = core.offered(
        "bbox", [CAR, TREE, FAINT], [0, 0, 320, 240], min_score=None, model_version="v1"
    )
    answer = [
        {"label": "car", "bbox": [10.0, 20.0, 50.0, 40.0]},  # pre-label 0, unchanged
        {"label": "car", "bbox": [100.0, 60.0, 30.0, 80.0]},  # pre-label 1, relabelled
        {"label": "tree", "bbox": [5.0, 5.0, 5.0, 5.0]},  # new
    ]
    out = core.record("bbox", shown, answer, [0, 1, None])
    assert out["counts"] == {"kept": 1, "moved": 0, "relabelled": 1, "deleted": 1, "added": 1}
    by = {(o["annotation"], o["prelabel"]): o for o in out["objects"]}
    assert by[(0, 0)]["outcome"] == "kept"
    assert by[(1, 1)] == {
        "annotation": 1, "prelabel": 1, "outcome": "relabelled", "moved": False,
        "from_label": "tree", "score": 0.6,
    }  # fmt: skip
    assert by[(2, None)]["outcome"] == "added"
    assert by[(None, 2)]["outcome"] == "deleted"
    moved = core.record("bbox", shown[:1], [{"label": "car", "bbox": [12, 20, 50, 40]}], [0])
    assert moved["objects"][0]["outcome"] == "moved"


def test_an_unnamed_copy_of_a_prelabel_is_that_prelabel_kept() -> None:
    shown = core.offered("bbox", [CAR], [0, 0, 320, 240], min_score=None, model_version="v")
    out = core.record("bbox", shown, [{"label": "car", "bbox": [10, 20, 50, 40]}], [None])
    assert out["objects"] == [{"annotation": 0, "prelabel": 0, "outcome": "kept", "score": 0.9}]


def test_a_claimed_outcome_the_shape_does_not_show_is_refused() -> None:
    shown = core.offered("bbox", [CAR], [0, 0, 320, 240], min_score=None, model_version="v")
    moved = [{"label": "car", "bbox": [30, 20, 50, 40]}]
    with pytest.raises(core.ProvenanceError) as caught:
        core.record("bbox", shown, moved, [0], ["kept"])
    assert "moved, not kept" in str(caught.value)
    assert core.record("bbox", shown, moved, [0], ["moved"])["counts"]["moved"] == 1


def test_references_are_checked() -> None:
    with pytest.raises(core.ProvenanceError) as caught:
        core.references([{"prelabel": 3}, {"prelabel": True}, {"prelabel": 0}, {"prelabel": 0}], 2)
    errors = caught.value.errors
    assert set(errors) == {
        "annotations[0].prelabel", "annotations[1].prelabel", "annotations[3].prelabel",
    }  # fmt: skip
    assert "already annotations[2]" in errors["annotations[3].prelabel"][0]
    with pytest.raises(core.ProvenanceError, match="offered no pre-labels"):
        core.references([{"prelabel": 0}], 0)


# --- Leases -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_lease_carries_the_current_prediction_filtered_by_min_score(
    manager, worker, api_as
) -> None:
    project, (image,) = bbox_project(manager)
    predict(project, image, [TREE], version="old")
    predict(project, image, [CAR, TREE, FAINT], version="v2")
    project.ml_backend_min_score = 0.5
    project.save(update_fields=["ml_backend_min_score"])
    lease = lease_of(api_as(worker), project)
    assert lease["prelabels"] == [
        {**CAR, "model_version": "v2"},
        {**TREE, "model_version": "v2"},
    ]


@pytest.mark.django_db
def test_no_prelabels_when_the_project_is_off_or_the_task_held_out(manager, worker, api_as) -> None:
    project, (image,) = bbox_project(manager)
    predict(project, image, [CAR])
    project.prelabels = False
    project.save(update_fields=["prelabels"])
    off = lease_of(api_as(worker), project)
    assert off["prelabels"] == []
    # Every task held out: the key is there, the list empty (as for an image with no model
    # output), so the response's shape says nothing.
    project.prelabels, project.prelabel_holdout = True, 1.0
    project.save(update_fields=["prelabels", "prelabel_holdout"])
    Assignment.objects.all().delete()
    Task.objects.update(open_leases=0)
    assert lease_of(api_as(worker), project)["prelabels"] == []


@pytest.mark.django_db
def test_tiled_tasks_get_the_prelabels_of_their_tile(manager, worker, api_as) -> None:
    project = project_create(
        manager, prelabels=True, prelabel_holdout=0.0, gold_rate=0, tile_size=256,
        tile_overlap=0, min_overlap=1, max_overlap=1,
    )  # fmt: skip
    image = image_ready(project, width=512, height=256, seed=1)
    project = project_transition(project=project, action="start")
    predict(project, image, [{"label": "car", "bbox": [200.0, 10.0, 100.0, 50.0], "score": 0.8}])
    regions = {}
    api = api_as(worker)
    for _ in range(2):
        lease = lease_of(api, project)
        regions[tuple(lease["task"]["region"])] = lease["prelabels"]
        assert api.post(f"/api/v1/assignments/{lease['id']}/skip/").status_code == 200
    assert regions[(0, 0, 256, 256)][0]["bbox"] == [200.0, 10.0, 56.0, 50.0]
    assert regions[(256, 0, 256, 256)][0]["bbox"] == [256.0, 10.0, 44.0, 50.0]


@pytest.mark.django_db
def test_the_holdout_share_is_binomial_and_blind_to_gold(manager) -> None:
    project = project_with_tasks(manager, tasks=2000, overlap=1)
    project.prelabel_holdout = 0.1
    ids = list(Task.objects.filter(project=project).values_list("pk", flat=True))
    n, p = len(ids), 0.1
    out = [prelabels.held_out(project, pk) for pk in ids]
    # Within 4 standard deviations of n*p (a false alarm about once in 16,000 runs).
    assert abs(sum(out) - n * p) <= 4 * math.sqrt(n * p * (1 - p))
    # Fixed for the task's life: the same draw every time.
    assert out == [prelabels.held_out(project, pk) for pk in ids]
    # Independent of gold: a quarter of the tasks made gold are held out at the same rate as
    # the rest (the draw never reads is_gold; this checks no id pattern couples them).
    gold = set(ids[::4])
    Task.objects.filter(pk__in=gold).update(is_gold=True)
    g = [o for pk, o in zip(ids, out, strict=True) if pk in gold]
    r = [o for pk, o in zip(ids, out, strict=True) if pk not in gold]
    pooled = sum(out) / n
    se = math.sqrt(pooled * (1 - pooled) * (1 / len(g) + 1 / len(r)))
    assert abs(sum(g) / len(g) - sum(r) / len(r)) <= 4 * se
    # And nested: raising the share only adds tasks to those held out.
    project.prelabel_holdout = 0.2
    assert all(prelabels.held_out(project, pk) for pk, o in zip(ids, out, strict=True) if o)


@pytest.mark.django_db
def test_prelabel_holdout_is_a_project_setting(manager, api_as) -> None:
    api = api_as(manager)
    created = api.post(
        "/api/v1/projects/", {"name": "P", "kind": "bbox", "labels": ["car"]}, format="json"
    )
    assert created.json()["prelabel_holdout"] == 0.1
    pk = created.json()["id"]
    ok = api.patch(f"/api/v1/projects/{pk}/", {"prelabel_holdout": 0.25}, format="json")
    assert ok.status_code == 200
    assert ok.json()["prelabel_holdout"] == 0.25
    for bad in (-0.1, 1.5, "x"):
        refused = api.patch(f"/api/v1/projects/{pk}/", {"prelabel_holdout": bad}, format="json")
        assert refused.status_code == 400, bad
        assert "prelabel_holdout" in refused.json()["errors"]


# --- Submissions ------------------------------------------------------------------------------


def submit(api, lease, annotations, **extra):
    return api.post(
        f"/api/v1/assignments/{lease['id']}/submit/",
        {"annotations": annotations, **extra},
        format="json",
    )


@pytest.mark.django_db
def test_the_answer_records_what_became_of_each_prelabel(manager, worker, api_as) -> None:
    project, (image,) = bbox_project(manager)
    predict(project, image, [CAR, TREE, FAINT])
    api = api_as(worker)
    lease = lease_of(api, project)
    shown = lease["prelabels"]
    answer = [
        {**{k: shown[0][k] for k in ("label", "bbox")}, "prelabel": 0, "outcome": "kept"},
        {"label": "car", "bbox": [104.0, 60.0, 30.0, 80.0], "prelabel": 1},  # moved + relabelled
        {"label": "tree", "bbox": [250.0, 10.0, 20.0, 20.0]},
    ]
    done = submit(api, lease, answer, time_spent_ms=4200)
    assert done.status_code == 200, done.content
    assert set(done.json()) == {"id", "status", "clipped"}
    stored = Assignment.objects.get(pk=lease["id"])
    assert stored.answer == [{k: v for k, v in a.items() if k in ("label", "bbox")} for a in answer]
    record = stored_record(stored.pk)
    assert (record["model_version"], record["held_out"], record["offered"]) == ("v1", False, 3)
    assert record["counts"] == {"kept": 1, "moved": 0, "relabelled": 1, "deleted": 1, "added": 1}
    relabelled = next(o for o in record["objects"] if o["outcome"] == "relabelled")
    assert relabelled["moved"] is True
    assert relabelled["from_label"] == "tree"
    deleted = next(o for o in record["objects"] if o["outcome"] == "deleted")
    assert deleted == {"annotation": None, "prelabel": 2, "outcome": "deleted", "score": 0.2}
    assert stored.time_spent_ms is not None
    assert 0 < stored.time_spent_ms <= 4200


@pytest.mark.django_db
def test_a_forged_outcome_is_refused_and_nothing_is_stored(manager, worker, api_as) -> None:
    project, (image,) = bbox_project(manager)
    predict(project, image, [CAR])
    api = api_as(worker)
    lease = lease_of(api, project)
    forged = [{"label": "car", "bbox": [60.0, 60.0, 50.0, 40.0], "prelabel": 0, "outcome": "kept"}]
    refused = submit(api, lease, forged)
    assert refused.status_code == 400, refused.content
    assert refused.json()["code"] == "invalid_prelabels"
    assert "moved, not kept" in refused.json()["errors"]["annotations[0].outcome"][0]
    stored = Assignment.objects.get(pk=lease["id"])
    assert (stored.status, stored.answer, stored.prelabels) == ("leased", None, None)
    for bad, where in (
        ([{**CAR, "prelabel": 5}], "annotations[0].prelabel"),
        ([{**CAR, "prelabel": 0}, {**TREE, "prelabel": 0}], "annotations[1].prelabel"),
    ):
        response = submit(api, lease, bad)
        assert response.status_code == 400, bad
        assert where in response.json()["errors"], bad
    assert submit(api, lease, forged[:0]).status_code == 200
    assert stored_record(lease["id"])["counts"]["deleted"] == 1


@pytest.mark.django_db
def test_a_held_out_task_records_its_arm_and_refuses_references(manager, worker, api_as) -> None:
    project, images = bbox_project(manager, images=12)
    for image in images:
        predict(project, image, [CAR])
    project.prelabel_holdout = 0.5
    project.save(update_fields=["prelabel_holdout"])
    task = shown_task(project, held_out=True)
    Task.objects.filter(project=project).exclude(pk=task.pk).update(state="done")
    api = api_as(worker)
    lease = lease_of(api, project)
    assert lease["task"]["id"] == task.pk
    assert lease["prelabels"] == []
    assert submit(api, lease, [{**CAR, "prelabel": 0}]).status_code == 400
    assert submit(api, lease, [{"label": "car", "bbox": [10, 20, 50, 40]}]).status_code == 200
    record = stored_record(lease["id"])
    assert (record["held_out"], record["offered"], record["model_version"]) == (True, 0, "v1")
    assert record["counts"]["added"] == 1


@pytest.mark.django_db
def test_a_project_without_prelabels_records_nothing_and_refuses_references(
    manager, worker, api_as
) -> None:
    project = project_with_tasks(manager, tasks=1, overlap=1)
    lease = routing.assignment_next(project=project, worker=worker)
    assert lease is not None
    api = api_as(worker)
    body = {"id": lease.pk}
    assert submit(api, body, [{**CAR, "prelabel": 0}]).status_code == 400
    assert submit(api, body, [{"label": "car", "bbox": [1, 1, 5, 5]}]).status_code == 200
    assert Assignment.objects.get(pk=lease.pk).prelabels is None


@pytest.mark.django_db
def test_the_lease_version_is_used_when_a_newer_one_arrived(manager, worker, api_as) -> None:
    project, (image,) = bbox_project(manager)
    predict(project, image, [CAR], version="v1")
    api = api_as(worker)
    lease = lease_of(api, project)
    predict(project, image, [TREE], version="v2")  # imported while the worker annotates
    kept = [{"label": "car", "bbox": [10.0, 20.0, 50.0, 40.0], "prelabel": 0}]
    unknown = submit(api, lease, kept, prelabel_version="nope")
    assert unknown.status_code == 400
    assert "prelabel_version" in unknown.json()["errors"]
    assert submit(api, lease, kept, prelabel_version="v1").status_code == 200
    record = stored_record(lease["id"])
    assert record["model_version"] == "v1"
    assert record["counts"]["kept"] == 1


@pytest.mark.django_db
def test_classification_prelabel_kept_or_relabelled(manager, worker, api_as) -> None:
    project = project_create(
        manager, kind="classification", labels=["cat", "dog"], prelabels=True,
        prelabel_holdout=0.0, gold_rate=0, min_overlap=1, max_overlap=1,
    )  # fmt: skip
    image = image_ready(project, seed=3)
    project = project_transition(project=project, action="start")
    predict(project, image, [{"label": "cat", "score": 0.7}])
    api = api_as(worker)
    lease = lease_of(api, project)
    assert lease["prelabels"] == [{"label": "cat", "score": 0.7, "model_version": "v1"}]
    assert submit(api, lease, [{"label": "dog"}]).status_code == 200
    record = stored_record(lease["id"])
    assert record["objects"] == [
        {"annotation": 0, "prelabel": 0, "outcome": "relabelled", "moved": False,
         "from_label": "cat", "score": 0.7}
    ]  # fmt: skip


@pytest.mark.django_db
def test_an_image_without_a_prediction_offers_nothing(manager, worker, api_as) -> None:
    project, (image, other) = bbox_project(manager, images=2)
    predict(project, other, [CAR])
    Task.objects.filter(image=other).update(state="done")
    lease = lease_of(api_as(worker), project)
    assert lease["task"]["image"] == image.pk
    assert lease["prelabels"] == []
    assert Image.objects.filter(status=ImageStatus.READY).count() == 2
