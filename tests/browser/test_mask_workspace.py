"""A worker paints masks in the real workspace (the app served as `make demo` serves it) and
submits; the stored answers, decoded with pycocotools, hold the pixels that were painted. A
submission the server refuses (400) is shown to the worker, the painting kept."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from playwright.sync_api import Page, expect
from pycocotools import mask as coco_mask

from tests.browser.conftest import screenshot
from tests.browser.site import MANAGER, Site, site_running

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    yield from site_running()


def log_in(page: Page, site: Site, credentials: tuple[str, str]) -> None:
    page.goto(f"{site.url}/login/")
    page.get_by_label("Username").fill(credentials[0])
    page.get_by_label("Password").fill(credentials[1])
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/work/$"))


def decoded(item: dict[str, Any]) -> np.ndarray:
    rle = {"size": item["rle"]["size"], "counts": item["rle"]["counts"].encode("ascii")}
    return np.asarray(coco_mask.decode(rle), dtype=bool)


def bounds(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def lasso(page: Page, x0: float, y0: float, x1: float, y1: float) -> None:
    """A closed outline of the screen rectangle, drawn with the mouse."""
    page.mouse.move(x0, y0)
    page.mouse.down()
    for x, y in [(x1, y0), (x1, y1), (x0, y1), (x0, y0 + 1)]:
        page.mouse.move(x, y, steps=8)
    page.mouse.up()


# Wraps the page's fetch so that, while `window.mangleSubmits` holds, a submitted answer's first
# mask claims to be 48x64.
MANGLE_SUBMITS = """() => {
    const send = window.fetch;
    window.mangleSubmits = true;
    window.fetch = (url, init) => {
        if (window.mangleSubmits && String(url).includes("/submit/")) {
            const body = JSON.parse(init.body);
            body.annotations[0].rle.size = [48, 64];
            init = { ...init, body: JSON.stringify(body) };
        }
        return send(url, init);
    };
}"""


def answers(site: Site, project: int) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = site.call(
        "GET", f"/api/v1/projects/{project}/reviews/?status=all", as_=MANAGER
    )["results"]
    return results


def test_a_worker_paints_semantic_masks_submits_and_sees_a_refusal(page: Page, site: Site) -> None:
    project = site.project(
        images=2,
        kind="mask",
        mask_mode="semantic",
        instructions="Paint the cars and the people; each pixel is one or the other.",
    )
    log_in(page, site, site.worker(f"painter-{uuid.uuid4().hex[:6]}"))
    page.goto(f"{site.url}/work/projects/{project['id']}/")
    canvas = page.locator("#stage canvas")
    expect(canvas).to_be_visible()
    tools = page.get_by_role("toolbar", name="Mask tools")
    expect(tools).to_be_visible()
    expect(tools.locator(".annotator-size")).to_have_text("Brush 20 px")
    expect(tools.get_by_role("button", name="New object")).to_be_disabled()  # semantic
    expect(page.locator("#hint")).to_contain_text("Brush 20 px")
    box = canvas.bounding_box()
    assert box is not None
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2

    # Car: a lasso square around the middle of the image.
    page.locator("#stage").focus()
    page.keyboard.press("l")
    lasso(page, cx - 100, cy - 80, cx + 60, cy + 80)
    expect(page.locator("#objects li")).to_have_count(1)
    expect(page.locator("#objects")).to_contain_text("car")
    # Person: a brush stroke across the car's right edge takes those pixels from the car.
    page.keyboard.press("2")
    page.keyboard.press("b")
    page.keyboard.press("]")
    page.keyboard.press("]")
    expect(tools.locator(".annotator-size")).to_have_text("Brush 32 px")
    page.mouse.move(cx + 20, cy - 150)
    page.mouse.down()
    page.mouse.move(cx + 20, cy + 150, steps=20)
    page.mouse.up()
    expect(page.locator("#objects li")).to_have_count(2)
    screenshot(page, "workspace-masks")
    page.keyboard.press("Enter")
    expect(page.locator("#session-stats")).to_contain_text("1 submitted this session")
    expect(page.locator("#objects")).to_contain_text("No masks yet")  # the next task

    stored = answers(site, project["id"])
    assert len(stored) == 1
    items = {item["label"]: item for item in stored[0]["annotations"]}
    assert sorted(items) == ["car", "person"]
    car, person = decoded(items["car"]), decoded(items["person"])
    assert car.shape == person.shape == (480, 640)
    assert not (car & person).any()
    # The car is the lasso's 160x160 screen square less the person's band; its bounds give
    # the scale from screen to image pixels, the same on both axes.
    x0, y0, x1, y1 = bounds(car)
    scale = (y1 - y0) / 160
    assert (x1 - x0) / 160 == pytest.approx(scale, rel=0.03)
    px0, py0, px1, py1 = bounds(person)
    assert px1 - px0 == pytest.approx(32, abs=2)  # the brush's diameter in image pixels
    assert py1 - py0 == pytest.approx(300 * scale + 32, rel=0.03)
    assert int(car.sum()) == pytest.approx((160 * scale) ** 2 - 32 * 160 * scale, rel=0.05)
    assert int(person.sum()) == pytest.approx(32 * 300 * scale + np.pi * 16**2, rel=0.05)

    # The second task: the server refuses a mangled answer; the worker sees why.
    page.locator("#stage").focus()
    page.keyboard.press("l")
    lasso(page, cx - 50, cy - 50, cx + 50, cy + 50)
    expect(page.locator("#objects li")).to_have_count(1)

    # The answer is mangled in the page as it is sent (its mask's size is not the image's), so
    # the change is in place before the request exists and cannot race it.
    page.evaluate(MANGLE_SUBMITS)
    page.keyboard.press("Enter")
    error = page.locator("#task-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("The answer was not accepted")
    expect(error).to_contain_text("Object 1 (mask)")
    expect(error).to_contain_text("Encode a mask of the full image")
    expect(page.locator("#objects li")).to_have_count(1)  # the painting is kept
    screenshot(page, "workspace-mask-refused")
    page.evaluate("() => { window.mangleSubmits = false; }")
    page.get_by_role("button", name=re.compile("^Submit")).click()
    expect(page.locator("#session-stats")).to_contain_text("2 submitted this session")
    second = [a for a in answers(site, project["id"]) if a["id"] != stored[0]["id"]]
    assert len(second) == 1
    mask = decoded(second[0]["annotations"][0])
    assert int(mask.sum()) == pytest.approx((100 * scale) ** 2, rel=0.06)
