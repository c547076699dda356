"""The pages in a real browser against the app served as `make demo` serves it: a worker signs
up and annotates, a manager sets up a project and watches a crowd work live, a client
downloads a dataset. Each test leaves screenshots in artifacts/screenshots/."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from playwright.sync_api import FilePayload, Page, expect
from pycocotools.coco import COCO

from tests.browser.conftest import screenshot
from tests.browser.site import CLIENT, MANAGER, Site, corrupt_files, crowd, site_running
from tests.images import encode, scene
from tests.reliability.seeding import seed_in

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    yield from site_running()


def log_in(page: Page, site: Site, credentials: tuple[str, str]) -> None:
    page.goto(f"{site.url}/login/")
    page.get_by_label("Username").fill(credentials[0])
    page.get_by_label("Password").fill(credentials[1])
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/(work|manage|client)/$"))


def drag(page: Page, start: tuple[float, float], end: tuple[float, float]) -> None:
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move((start[0] + end[0]) / 2, (start[1] + end[1]) / 2, steps=4)
    page.mouse.move(*end, steps=4)
    page.mouse.up()


def test_a_worker_signs_up_draws_two_boxes_submits_and_gets_the_next_task(
    page: Page, site: Site
) -> None:
    project = site.project(images=3)
    name = f"newcomer-{uuid.uuid4().hex[:6]}"

    page.goto(f"{site.url}/")
    screenshot(page, "home")
    page.get_by_role("link", name="Sign up to work").first.click()
    page.get_by_label("Username").fill(name)
    page.get_by_label("Email").fill(f"{name}@example.org")
    page.get_by_label("Password").fill("short")
    page.get_by_role("button", name="Create account").click()
    expect(page.locator("#password-error")).to_be_visible()  # the server's rule, shown inline
    screenshot(page, "signup-error")
    page.get_by_label("Password").fill(f"pw-{uuid.uuid4().hex}")
    page.get_by_role("button", name="Create account").click()
    page.wait_for_url(f"{site.url}/work/")

    card = page.locator(f"[data-project='{project['id']}']")
    expect(card).to_contain_text("3 tasks available now")
    expect(card).to_contain_text("0.05 USD")
    screenshot(page, "worker-projects")
    card.get_by_role("link", name="Start working").click()
    page.wait_for_url(f"{site.url}/work/projects/{project['id']}/")

    canvas = page.locator("#stage canvas")
    expect(canvas).to_be_visible()
    expect(page.locator("#countdown")).to_contain_text(":")
    expect(page.get_by_role("button", name=re.compile("^Submit"))).to_be_enabled()
    box = canvas.bounding_box()
    assert box is not None
    x0, y0 = box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3
    drag(page, (x0, y0), (x0 + 120, y0 + 80))
    page.keyboard.press("2")  # relabel the selected box: person
    drag(page, (x0 + 180, y0 + 20), (x0 + 260, y0 + 140))
    expect(page.locator("#objects li")).to_have_count(2)
    screenshot(page, "workspace-two-boxes")
    sent: list[str] = []
    page.on("request", lambda request: sent.append(request.url))
    page.keyboard.press("Enter")

    expect(page.locator("#session-stats")).to_contain_text("1 submitted this session")
    expect(page.locator("#objects")).to_contain_text("No objects yet")  # a fresh task
    expect(page.get_by_role("button", name=re.compile("^Submit"))).to_be_enabled()
    # The next task came with the answer's receipt: one round trip, no separate next/.
    api_calls = [url for url in sent if "/api/v1/" in url and "/api/v1/images/" not in url]
    assert [url for url in api_calls if "/submit/" in url] == [
        url for url in api_calls if url.endswith("/submit/?next=1")
    ]
    assert len(api_calls) == 1, api_calls
    screenshot(page, "workspace-next-task")

    answers = site.call(
        "GET", f"/api/v1/projects/{project['id']}/reviews/?status=all", as_=MANAGER
    )["results"]
    assert len(answers) == 1
    labels = sorted(a["label"] for a in answers[0]["annotations"])
    assert labels == ["car", "person"]
    for item in answers[0]["annotations"]:
        w, h = item["bbox"][2:]
        assert w > 20
        assert h > 20

    page.goto(f"{site.url}/work/")
    expect(page.locator("#history")).to_contain_text(project["name"])
    screenshot(page, "worker-history")


def test_a_manager_creates_a_project_uploads_and_watches_a_crowd_live(
    page: Page, site: Site
) -> None:
    log_in(page, site, MANAGER)
    page.get_by_role("link", name="New project").click()
    name = f"Street scenes {uuid.uuid4().hex[:6]}"
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Instructions for workers").fill("Box every car.")
    page.get_by_label("Answers per task (at least)").fill("1")
    page.get_by_label("Answers per task (at most, when they disagree)").fill("1")
    page.get_by_label(re.compile("^Gold rate")).fill("0")
    page.get_by_label("Tile size in pixels (0: whole images)").fill("0")
    page.get_by_label("Reward per task").fill("0.10")
    screenshot(page, "project-new")
    page.get_by_role("button", name="Create project").click()
    page.wait_for_url(re.compile(r"/manage/projects/\d+/$"))
    project_id = int(page.url.rstrip("/").rsplit("/", 1)[1])
    expect(page.locator("#project-state")).to_have_text("draft")

    files: list[FilePayload] = [
        {
            "name": f"street{i}.jpg",
            "mimeType": "image/jpeg",
            "buffer": encode(scene(480, 360, seed=10 + i)),
        }
        for i in range(6)
    ]
    files += [{"name": n, "mimeType": "image/png", "buffer": b} for n, b in corrupt_files().items()]
    page.locator("#files").set_input_files(files)
    result = page.locator("#upload-result")
    expect(result).to_contain_text("6 created, 0 duplicates, 1 rejected")
    rejected = result.locator("tr", has_text="broken.png")
    expect(rejected.locator("[data-result='rejected']")).to_be_visible()
    assert rejected.locator("td").nth(2).inner_text().strip()  # with the reason
    screenshot(page, "dashboard-upload")
    site.wait_ready(project_id, 6)

    page.get_by_role("button", name="Start").click()
    expect(page.locator("#project-state")).to_have_text("active")
    expect(page.locator("#live-state")).to_have_text("live")
    expect(page.locator("#progress-text")).to_contain_text("0 of 6 tasks done")

    stop = threading.Event()
    workers = crowd(site, project_id, workers=3, stop=stop)
    try:
        # No reload: the numbers arrive over the project's WebSocket.
        expect(page.locator("#progress-text")).to_contain_text("6 of 6 tasks done", timeout=30_000)
        expect(page.locator("#worker-table tbody tr")).to_have_count(3, timeout=15_000)
    finally:
        stop.set()
        for thread in workers:
            thread.join(timeout=30)
    expect(page.locator("[data-stat='spent']")).to_contain_text("USD")
    expect(page.locator("#chart path.submitted")).to_have_count(1)
    screenshot(page, "dashboard-live")

    page.get_by_role("link", name="Review queue").click()
    page.wait_for_url(f"{site.url}/manage/projects/{project_id}/review/")
    expect(page.locator("#queue-count")).to_contain_text("6 waiting")
    expect(page.locator("#reference-name")).to_contain_text("consensus of 1 answers")
    screenshot(page, "review")
    page.locator("#approve").click()
    expect(page.locator("#queue-count")).to_contain_text("5 on this page")
    page.get_by_label("Reason (required to reject; the worker sees it)").fill(
        "The box misses the car."
    )
    page.locator("#reject").click()
    expect(page.locator("#queue-count")).to_contain_text("4 on this page")
    reviewed = site.call(
        "GET", f"/api/v1/projects/{project_id}/reviews/?status=rejected", as_=MANAGER
    )["results"]
    assert [r["reason"] for r in reviewed] == ["The box misses the car."]


def test_a_manager_sends_the_images_the_model_labelled_alone_back_to_the_crowd(
    page: Page, site: Site
) -> None:
    project = site.project(images=4)
    path = f"/api/v1/projects/{project['id']}"
    site.call("PATCH", path + "/", {"auto_accept": {"target_accuracy": 0.9}}, as_=MANAGER)
    images = seed_in(site.env, f"seeding.auto_accepted({project['id']}, 2)")["images"]
    assert len(images) == 2

    log_in(page, site, MANAGER)
    page.goto(f"{site.url}/manage/projects/{project['id']}/")
    box = page.locator("#auto-accept")
    expect(box.locator("[data-stat='auto_accepted'] .value")).to_have_text("2")
    expect(box).to_contain_text("Target accuracy 90.0% with 95.0% confidence")
    expect(box.locator("[data-auto-accept]")).to_have_attribute("data-auto-accept", "off")
    screenshot(page, "dashboard-auto-accept")

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name=re.compile("^Send every image the model labelled")).click()
    expect(box.locator("[data-stat='auto_accepted'] .value")).to_have_text("0")
    expect(page.locator("#auto-accept-reopen")).to_be_disabled()
    assert site.call("GET", path + "/auto-accept/", as_=MANAGER)["images_auto_accepted"] == 0
    progress = site.call("GET", path + "/progress/", as_=MANAGER)
    assert progress["done"] == 0  # both tasks open again, for people
    assert progress["open"] == 4


def test_a_manager_saves_a_gold_answer_drawn_in_the_editor(page: Page, site: Site) -> None:
    project = site.project(images=2)
    log_in(page, site, MANAGER)
    page.goto(f"{site.url}/manage/projects/{project['id']}/gold/")
    page.locator("[data-image]").first.click()
    canvas = page.locator("#stage canvas")
    expect(canvas).to_be_visible()
    expect(canvas).to_have_attribute("aria-label", re.compile("^Image"))
    box = canvas.bounding_box()
    assert box is not None
    x0, y0 = box["x"] + box["width"] * 0.4, box["y"] + box["height"] * 0.4
    drag(page, (x0, y0), (x0 + 100, y0 + 60))
    page.get_by_role("button", name="Save gold").click()
    expect(page.locator("#gold-count")).to_contain_text("1 with gold")
    screenshot(page, "gold-editor")
    gold = site.call("GET", f"/api/v1/projects/{project['id']}/gold/", as_=MANAGER)["results"]
    assert len(gold) == 1
    assert [a["label"] for a in gold[0]["annotations"]] == ["car"]


def test_a_manager_imports_gold_from_a_coco_file_strict_then_lenient(
    page: Page, site: Site
) -> None:
    project = site.project(images=3)
    path = f"/api/v1/projects/{project['id']}"
    coco = {
        "images": [
            {"id": 1, "file_name": "scene0.jpg", "width": 640, "height": 480},
            {"id": 2, "file_name": "scene1.jpg", "width": 640, "height": 480},
        ],
        "categories": [{"id": 1, "name": "car"}, {"id": 2, "name": "truck"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [40, 50, 120, 80]},
            {"id": 2, "image_id": 2, "category_id": 2, "bbox": [10, 10, 60, 40]},
        ],
    }
    payload = FilePayload(name="truth.json", mimeType="application/json",
                          buffer=json.dumps(coco).encode())  # fmt: skip
    log_in(page, site, MANAGER)
    page.goto(f"{site.url}/manage/projects/{project['id']}/gold/")
    expect(page.locator("[data-image]")).to_have_count(3)

    # Strict (the default): the truck is not a label of the project, so nothing is stored.
    page.get_by_label("File (JSON)").set_input_files(payload)
    page.get_by_role("button", name="Import gold").click()
    result = page.locator("#import-result")
    expect(result.locator("[data-import='refused']")).to_contain_text("Nothing was stored")
    expect(result.locator("tbody tr")).to_have_count(1)
    assert site.call("GET", path + "/gold/", as_=MANAGER)["count"] == 0

    # Lenient: the car's image becomes gold, and the other item is listed.
    page.get_by_label("File (JSON)").set_input_files(payload)
    page.get_by_label("Format").select_option("coco")
    page.get_by_label(re.compile("Store the valid items")).check()
    page.get_by_role("button", name="Import gold").click()
    expect(result.locator("[data-import='stored']")).to_have_text(
        "1 made gold, 0 replaced (images); 1 not stored (items)."
    )
    expect(result.locator("tbody tr")).to_have_count(1)
    expect(page.locator("#gold-count")).to_contain_text("1 with gold")
    screenshot(page, "gold-import")
    gold = site.call("GET", path + "/gold/", as_=MANAGER)["results"]
    assert [[a["label"] for a in g["annotations"]] for g in gold] == [["car"]]
    assert gold[0]["annotations"][0]["bbox"] == [40, 50, 120, 80]


def test_a_client_downloads_a_coco_export_that_pycocotools_loads(
    page: Page, site: Site, tmp_path
) -> None:
    project = site.project(images=3)
    stop = threading.Event()
    for thread in crowd(site, project["id"], workers=1, stop=stop):
        thread.join(timeout=60)
    site.call(
        "POST", f"/api/v1/projects/{project['id']}/clients/", {"username": CLIENT[0]}, as_=MANAGER
    )
    export = site.call(
        "POST", f"/api/v1/projects/{project['id']}/exports/", {"format": "coco"}, as_=MANAGER
    )
    deadline = time.monotonic() + 60
    while site.call("GET", f"/api/v1/exports/{export['id']}/", as_=MANAGER)["status"] != "done":
        assert time.monotonic() < deadline, "the export did not finish"
        time.sleep(0.3)

    log_in(page, site, CLIENT)
    card = page.locator(f"[data-export='{export['id']}']")
    expect(card).to_contain_text("done")
    card.locator("summary", has_text="Dataset card").click()
    screenshot(page, "client-datasets")
    with page.expect_download() as download_info:
        card.get_by_role("link", name=re.compile("^Download")).click()
    path = tmp_path / "coco.json"
    download_info.value.save_as(path)
    coco = COCO(str(path))
    assert len(coco.getImgIds()) == 3
    assert len(coco.getAnnIds()) == 3
    assert {c["name"] for c in coco.loadCats(coco.getCatIds())} == {"car", "person"}
    assert json.loads(path.read_text())["annotations"][0]["bbox"] == [40, 40, 120, 80]


def test_pages_refuse_the_wrong_role_and_anonymous_visitors(page: Page, site: Site) -> None:
    page.goto(f"{site.url}/manage/")
    assert page.url == f"{site.url}/login/?next=/manage/"
    log_in(page, site, CLIENT)
    page.goto(f"{site.url}/manage/")
    assert page.url == f"{site.url}/client/"  # a client is sent to their own page
    response = page.goto(f"{site.url}/work/projects/999999/")
    assert response is not None
    assert page.url == f"{site.url}/client/"


UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea, button, a[href]')]
  .filter((el) => el.offsetParent !== null || el.type === 'file')
  .filter((el) => {
    const name = (el.labels && el.labels.length ? [...el.labels].map((l) => l.textContent).join(' ') : '')
      || el.getAttribute('aria-label') || el.getAttribute('aria-labelledby') || el.textContent
      || el.getAttribute('title') || el.getAttribute('placeholder');
    return !name || !name.trim();
  })
  .map((el) => el.outerHTML.slice(0, 120))"""


def test_a_suspended_worker_sees_why_and_every_control_has_a_name(page: Page, site: Site) -> None:
    project = site.project(images=2)
    credentials = site.worker(f"suspended-{uuid.uuid4().hex[:6]}")
    token = site.token(*credentials)
    status, lease = site.server.request(
        "POST", f"/api/v1/projects/{project['id']}/assignments/next/", token=token
    )
    assert status == 201, lease
    worker_id = site.call("GET", "/api/v1/me/", as_=credentials)["id"]
    site.call(
        "POST",
        f"/api/v1/projects/{project['id']}/workers/{worker_id}/suspend/",
        {"reason": "Boxes drawn at random."},
        as_=MANAGER,
    )

    log_in(page, site, credentials)
    expect(page.locator("#suspensions")).to_contain_text("Boxes drawn at random.")
    assert page.evaluate(UNLABELLED) == []
    page.goto(f"{site.url}/work/projects/{project['id']}/")
    expect(page.locator("#empty")).to_contain_text(
        "You cannot work on this project now. Boxes drawn at random."
    )
    expect(page.get_by_role("button", name=re.compile("^Submit"))).to_be_disabled()
    screenshot(page, "workspace-suspended")

    log_in(page, site, MANAGER)
    for path in ("/manage/", "/manage/projects/new/", f"/manage/projects/{project['id']}/",
                 f"/manage/projects/{project['id']}/gold/", f"/manage/projects/{project['id']}/review/"):  # fmt: skip
        page.goto(f"{site.url}{path}")
        page.wait_for_load_state("networkidle")
        assert page.locator("h1").count() == 1, path
        assert page.evaluate(UNLABELLED) == [], path
        assert page.evaluate("document.documentElement.lang") == "en"
