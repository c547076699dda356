"""Pre-labels in the workspace, in a real browser against the served app: a worker is shown the
model's boxes, cannot pass them by unconfirmed, accepts them all with A, moves one, relabels
one, deletes one and draws one of their own; the stored answer records each outcome."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import screenshot
from tests.browser.site import MANAGER, Site, site_running
from tests.browser.test_pages import drag, log_in

pytestmark = pytest.mark.browser

WIDTH, HEIGHT = 640, 480
FIT_MARGIN = 12  # annotator.js: the fitted view leaves this margin around the region
MODEL = [
    {"label": "car", "bbox": [40.0, 40.0, 120.0, 90.0], "score": 0.93},  # kept
    {"label": "car", "bbox": [260.0, 60.0, 110.0, 80.0], "score": 0.81},  # moved
    {"label": "car", "bbox": [60.0, 300.0, 100.0, 90.0], "score": 0.66},  # relabelled
    {"label": "person", "bbox": [430.0, 320.0, 90.0, 100.0], "score": 0.42},  # deleted
]


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    yield from site_running()


def to_page(page: Page, x: float, y: float) -> tuple[float, float]:
    """The page position of the full-image point (x, y) in the fitted view."""
    box = page.locator("#stage canvas").bounding_box()
    assert box is not None
    scale = min((box["width"] - 2 * FIT_MARGIN) / WIDTH, (box["height"] - 2 * FIT_MARGIN) / HEIGHT)
    left = box["x"] + (box["width"] - WIDTH * scale) / 2
    top = box["y"] + (box["height"] - HEIGHT * scale) / 2
    return left + x * scale, top + y * scale


def submit_and_read(page: Page, site: Site, project: dict) -> dict:
    """Press Enter in the workspace and return the one answer the project then has, as its
    manager reviews it."""
    page.keyboard.press("Enter")
    expect(page.locator("#session-stats")).to_contain_text("1 submitted this session")
    answers = site.call(
        "GET", f"/api/v1/projects/{project['id']}/reviews/?status=all", as_=MANAGER
    )["results"]
    assert len(answers) == 1
    return answers[0]


def centre(item: dict) -> tuple[float, float]:
    x, y, w, h = item["bbox"]
    return x + w / 2, y + h / 2


def test_a_worker_accepts_corrects_and_deletes_prelabels(page: Page, site: Site) -> None:
    project = site.project(images=1, prelabels=True, prelabel_holdout=0)
    images = site.call("GET", f"/api/v1/projects/{project['id']}/images/", as_=MANAGER)
    image = images["results"][0]["id"]
    site.call(
        "POST",
        f"/api/v1/projects/{project['id']}/predictions/",
        {"model_version": "detector-7", "predictions": [{"image": image, "annotations": MODEL}]},
        as_=MANAGER,
    )
    worker = site.worker(f"checker-{uuid.uuid4().hex[:6]}")
    log_in(page, site, worker)
    page.goto(f"{site.url}/work/projects/{project['id']}/")
    objects = page.locator("#objects li")
    expect(objects).to_have_count(4)
    expect(objects.first).to_contain_text("model 93%, unconfirmed")
    expect(page.locator("#prelabel-note")).to_be_visible()
    screenshot(page, "workspace-prelabels")

    # The model's boxes cannot be passed by unconfirmed.
    expect(page.get_by_role("button", name=re.compile("^Submit"))).to_be_enabled()  # loaded
    page.locator("#stage").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#task-error")).to_contain_text("4 of the model's pre-labels are")
    page.locator("#stage").focus()
    page.keyboard.press("a")
    expect(page.locator("#objects")).not_to_contain_text("unconfirmed")
    expect(objects.nth(1)).to_contain_text("(from the model)")

    # Move the second box 30 px right and 20 px down (image pixels).
    start = to_page(page, *centre(MODEL[1]))
    end = to_page(page, centre(MODEL[1])[0] + 30, centre(MODEL[1])[1] + 20)
    drag(page, start, end)
    # Relabel the third: select it, press 2 (person).
    page.mouse.click(*to_page(page, *centre(MODEL[2])))
    page.keyboard.press("2")
    expect(objects.nth(2)).to_contain_text("person")
    # Delete the fourth.
    page.mouse.click(*to_page(page, *centre(MODEL[3])))
    page.keyboard.press("Delete")
    expect(objects).to_have_count(3)
    # And draw one the model missed.
    drag(page, to_page(page, 300, 250), to_page(page, 380, 300))
    expect(objects).to_have_count(4)
    screenshot(page, "workspace-prelabels-corrected")
    answer = submit_and_read(page, site, project)
    record = answer["prelabels"]
    assert (record["model_version"], record["held_out"], record["offered"]) == (
        "detector-7", False, 4,
    )  # fmt: skip
    assert record["counts"] == {"kept": 1, "moved": 1, "relabelled": 1, "deleted": 1, "added": 1}
    by_prelabel = {o["prelabel"]: o for o in record["objects"] if o["prelabel"] is not None}
    assert by_prelabel[0]["outcome"] == "kept"
    assert by_prelabel[1]["outcome"] == "moved"
    assert by_prelabel[2]["outcome"] == "relabelled"
    assert by_prelabel[2]["moved"] is False
    assert by_prelabel[3] == {
        "annotation": None,
        "prelabel": 3,
        "outcome": "deleted",
        "score": 0.42,
    }
    moved = answer["annotations"][by_prelabel[1]["annotation"]]["bbox"]
    assert moved[0] == pytest.approx(290, abs=2)
    assert moved[1] == pytest.approx(80, abs=2)
    assert answer["annotations"][by_prelabel[0]["annotation"]]["bbox"] == MODEL[0]["bbox"]
    assert answer["time_spent_ms"] > 0
    # The next lease: the page went on to no task (one image, overlap one).
    expect(page.locator("#empty")).to_be_visible()
    assert re.search("No tasks", page.locator("#empty").inner_text())

    # The manager's dashboard shows what became of the pre-labels and the comparison.
    page.context.clear_cookies()
    log_in(page, site, MANAGER)
    page.goto(f"{site.url}/manage/projects/{project['id']}/#model")
    effect = page.locator("#prelabel-effect")
    expect(effect).to_contain_text("1 of 1 images predicted")
    for outcome in ("kept", "moved", "relabelled", "deleted", "added"):
        expect(effect.locator(f"[data-stat='{outcome}'] .value")).to_have_text("1")
    expect(effect.locator("table")).to_contain_text("All workers")
    expect(effect.locator("table")).to_contain_text(worker[0])
    screenshot(page, "dashboard-prelabel-effect")


def _mask_rle() -> dict:
    import numpy as np
    from pycocotools import mask as coco_mask

    bitmap = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    bitmap[100:220, 150:330] = 1
    rle = coco_mask.encode(np.asfortranarray(bitmap))
    return {"size": [HEIGHT, WIDTH], "counts": rle["counts"].decode("ascii")}


KINDS = {
    "polygon": (
        ["car", "person"],
        [{"label": "car", "points": [[50.0, 50.0], [200.0, 60.0], [120.0, 180.0]], "score": 0.8}],
    ),
    "keypoints": (
        [{"name": "person", "keypoints": ["head", "hand"]}],
        [{"label": "person", "keypoints": [[100.0, 100.0, 2], [0.0, 0.0, 0]], "score": 0.7}],
    ),
    "classification": (["cat", "dog"], [{"label": "dog", "score": 0.6}]),
    "mask": (["road", "tree"], [{"label": "road", "rle": "MASK", "score": 0.9}]),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_shows_prelabels_that_a_accepts(page: Page, site: Site, kind: str) -> None:
    labels, items = KINDS[kind]
    if kind == "mask":
        items = [{**items[0], "rle": _mask_rle()}]
    project = site.project(images=1, kind=kind, labels=labels, prelabels=True, prelabel_holdout=0)
    image = site.call("GET", f"/api/v1/projects/{project['id']}/images/", as_=MANAGER)
    site.call(
        "POST",
        f"/api/v1/projects/{project['id']}/predictions/",
        {
            "model_version": "m-1",
            "predictions": [{"image": image["results"][0]["id"], "annotations": items}],
        },
        as_=MANAGER,
    )
    log_in(page, site, site.worker(f"{kind[:4]}-{uuid.uuid4().hex[:6]}"))
    page.goto(f"{site.url}/work/projects/{project['id']}/")
    expect(page.locator("#prelabel-note")).to_be_visible()
    if kind != "mask":
        expect(page.locator("#objects")).to_contain_text("unconfirmed")
    expect(page.get_by_role("button", name=re.compile("^Submit"))).to_be_enabled()  # loaded
    page.locator("#stage").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#task-error")).to_contain_text("not confirmed yet")
    page.locator("#stage").focus()
    page.keyboard.press("a")
    expect(page.locator("#task-error")).to_be_hidden()  # the refusal goes with the last one
    if kind == "mask":
        expect(page.locator("#objects")).to_contain_text("road")
    else:
        expect(page.locator("#objects")).to_contain_text("(from the model)")
    screenshot(page, f"workspace-prelabels-{kind}")
    answer = submit_and_read(page, site, project)
    assert answer["prelabels"]["counts"] == {
        "kept": 1, "moved": 0, "relabelled": 0, "deleted": 0, "added": 0,
    }  # fmt: skip
    stripped = [{k: v for k, v in item.items() if k != "score"} for item in items]
    assert answer["annotations"] == stripped


def test_an_accepted_mask_prelabel_that_is_repainted_is_moved(page: Page, site: Site) -> None:
    """Masks accepted with A keep which pre-label each came from: one left as it was is kept,
    one the eraser took a bite out of is moved (not deleted and added)."""
    import numpy as np
    from pycocotools import mask as coco_mask

    def rle(x0: int, y0: int, x1: int, y1: int) -> dict:
        bitmap = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
        bitmap[y0:y1, x0:x1] = 1
        counts = coco_mask.encode(np.asfortranarray(bitmap))["counts"].decode("ascii")
        return {"size": [HEIGHT, WIDTH], "counts": counts}

    project = site.project(
        images=1, kind="mask", labels=["road", "tree"], prelabels=True, prelabel_holdout=0
    )
    image = site.call("GET", f"/api/v1/projects/{project['id']}/images/", as_=MANAGER)
    items = [
        {"label": "road", "rle": rle(40, 40, 200, 200), "score": 0.9},
        {"label": "tree", "rle": rle(400, 200, 560, 400), "score": 0.8},
    ]
    site.call(
        "POST",
        f"/api/v1/projects/{project['id']}/predictions/",
        {"model_version": "m-1", "predictions": [{"image": image["results"][0]["id"], "annotations": items}]},
        as_=MANAGER,
    )  # fmt: skip
    log_in(page, site, site.worker(f"mask-{uuid.uuid4().hex[:6]}"))
    page.goto(f"{site.url}/work/projects/{project['id']}/")
    expect(page.get_by_role("button", name=re.compile("^Submit"))).to_be_enabled()  # loaded
    page.locator("#stage").focus()
    page.keyboard.press("a")
    expect(page.locator("#objects")).to_contain_text("tree")
    # The eraser (no object selected: it clears every object) across the tree's middle.
    page.keyboard.press("e")
    drag(page, to_page(page, 420, 300), to_page(page, 540, 300))
    answer = submit_and_read(page, site, project)
    assert answer["prelabels"]["counts"] == {
        "kept": 1, "moved": 1, "relabelled": 0, "deleted": 0, "added": 0,
    }  # fmt: skip
    outcomes = {o["prelabel"]: o["outcome"] for o in answer["prelabels"]["objects"]}
    assert outcomes == {0: "kept", 1: "moved"}
    erased = coco_mask.decode({**answer["annotations"][1]["rle"],
                               "counts": answer["annotations"][1]["rle"]["counts"].encode()})  # fmt: skip
    assert erased.sum() < 160 * 200
    assert not erased[300, 480]
