"""From Enter to the next task on screen, in a real browser on the embedded default.

A worker in Chromium (Debian's, through Playwright) presses Enter on a bbox task; the
workspace sends ``submit/?next=1``, receives the next lease with the receipt, fetches that
task's image, decodes and draws it. The page marks ``crowd:submit`` when Enter is handled and
``crowd:task-shown`` in the frame after the image is drawn; the time between is what the
worker waits. Beside it, from the same run, the browser's own timings of the two requests it
waits on (the submit round trip and the image download): what is left is the page's work
(decoding, drawing, building the canvas). Run for photos of two sizes, served by ``make demo``'s
server (SQLite, one uvicorn process) on this machine.
"""

from __future__ import annotations

import contextlib
import statistics
import uuid
from pathlib import Path
from typing import Any

NAME = "workspace"
DESCRIPTION = "Enter to the next task's image on screen, Chromium, embedded default"
CHROMIUM = Path("/usr/bin/chromium")


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _project(site: Any, width: int, height: int, images: int) -> dict[str, Any]:
    from tests.browser.site import MANAGER
    from tests.images import encode, scene

    data = {
        "name": f"Workspace bench {width}x{height} {uuid.uuid4().hex[:4]}",
        "kind": "bbox",
        "labels": [{"name": "car", "color": "#e6194b"}],
        "min_overlap": 1, "max_overlap": 1, "gold_rate": 0, "tile_size": 0, "reward": "0.05",
    }  # fmt: skip
    project = site.call("POST", "/api/v1/projects/", data, as_=MANAGER)
    files = {f"photo{i}.jpg": encode(scene(width, height, seed=i)) for i in range(images)}
    for start in range(0, images, 20):  # uploads of a modest size each
        batch = dict(list(files.items())[start : start + 20])
        site.upload(project["id"], batch)
    site.wait_ready(project["id"], images, timeout=300)
    return dict(site.call("POST", f"/api/v1/projects/{project['id']}/start/", as_=MANAGER))


def _measure(page: Any, url: str, presses: int) -> dict[str, Any]:
    page.goto(url)
    page.wait_for_function(
        "performance.getEntriesByName('crowd:task-shown').length >= 1", timeout=30_000
    )
    for i in range(presses):
        page.keyboard.press("Enter")
        page.wait_for_function(
            f"performance.getEntriesByName('crowd:task-shown').length >= {i + 2}", timeout=30_000
        )
    timings = page.evaluate(
        """() => {
          const submits = performance.getEntriesByName('crowd:submit').map(e => e.startTime);
          const shown = performance.getEntriesByName('crowd:task-shown').map(e => e.startTime);
          const resources = performance.getEntriesByType('resource');
          return {
            waits: submits.map((t, i) => shown[i + 1] - t),
            submit: resources.filter(r => r.name.includes('/submit/?next=1')).map(r => r.duration),
            image: resources.filter(r => /\\/api\\/v1\\/images\\/\\d+\\/file\\//.test(r.name))
                            .map(r => r.duration),
          };
        }"""
    )
    return dict(timings)


def run(quick: bool = False) -> list[dict[str, Any]]:
    if not CHROMIUM.exists():
        raise SystemExit(f"{CHROMIUM} is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    from tests.browser.conftest import CHROMIUM_ARGS
    from tests.browser.site import site_running

    presses = 20 if quick else 60
    rows = []
    with contextlib.contextmanager(site_running)() as site, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        for width, height in ((640, 480), (1920, 1080)):
            project = _project(site, width, height, presses + 2)
            credentials = site.worker(f"bench-{uuid.uuid4().hex[:8]}")
            # Playwright evaluates its waits as strings, which the pages' policy forbids.
            context = browser.new_context(viewport={"width": 1280, "height": 800}, bypass_csp=True)
            page = context.new_page()
            page.goto(f"{site.url}/login/")
            page.get_by_label("Username").fill(credentials[0])
            page.get_by_label("Password").fill(credentials[1])
            page.get_by_role("button", name="Log in").click()
            page.wait_for_url(f"{site.url}/work/")
            found = _measure(page, f"{site.url}/work/projects/{project['id']}/", presses)
            context.close()
            waits, submit, image = found["waits"], found["submit"], found["image"]
            rows.append({
                "image": f"{width}x{height} JPEG",
                "presses": len(waits),
                "enter_to_shown_p50_ms": statistics.median(waits),
                "enter_to_shown_p95_ms": _quantile(waits, 0.95),
                "enter_to_shown_max_ms": max(waits),
                "submit_request_p50_ms": statistics.median(submit),
                "image_request_p50_ms": statistics.median(image),
                "page_work_p50_ms": statistics.median(waits)
                - statistics.median(submit) - statistics.median(image),
            })  # fmt: skip
        browser.close()
    return rows
