"""The annotation canvas (frontend/static/frontend/annotator.js) driven in Chromium.

Every test works the demo page with real mouse and keyboard events and reads the result as
the pages do, through `window.annotator.getAnnotations()`. Image coordinates of a press are
computed from the canvas's box on the page and the view the module exposes
(`client = canvas.left + offsetX + x * scale`).
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.browser

Point = tuple[float, float]
X = "\N{MULTIPLICATION SIGN}"  # as the object list and the canvas description write sizes


def open_demo(page: Page, live_server: Any, query: str = "kind=bbox") -> None:
    page.goto(f"{live_server.url}/annotator-demo/?{query}")
    page.wait_for_selector("body[data-ready]", state="attached")
    assert page.evaluate("document.body.dataset.ready") == "true"


def wait_until(page: Page, expression: str, timeout: float = 5) -> None:
    """Poll a JavaScript expression (the site's CSP forbids the eval `wait_for_function` uses)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"still false after {timeout} s: {expression}"
        page.wait_for_timeout(20)


def at(page: Page, x: float, y: float) -> Point:
    """The page position of the full-image point (x, y)."""
    left, top, view = page.evaluate(
        """() => {
            const rect = document.querySelector('#annotator canvas').getBoundingClientRect();
            return [rect.left, rect.top, window.annotator.view];
        }"""
    )
    return left + view["offsetX"] + x * view["scale"], top + view["offsetY"] + y * view["scale"]


def drag(page: Page, start: Point, end: Point, steps: int = 8) -> None:
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(*end, steps=steps)
    page.mouse.up()


def click(page: Page, x: float, y: float) -> None:
    page.mouse.click(*at(page, x, y))


def payload(page: Page) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = page.evaluate("window.annotator.getAnnotations()")
    return result


def set_annotations(page: Page, items: list[dict[str, Any]]) -> None:
    page.evaluate("(items) => window.annotator.setAnnotations(items)", items)


def pixel(page: Page, x: float, y: float) -> list[int]:
    """The canvas's RGBA pixel at the full-image point (x, y), after the next paint."""
    result: list[int] = page.evaluate(
        """async ([x, y]) => {
            await new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)));
            const canvas = document.querySelector('#annotator canvas');
            const v = window.annotator.view;
            const dpr = canvas.width / canvas.getBoundingClientRect().width;
            const px = Math.floor((v.offsetX + x * v.scale) * dpr);
            const py = Math.floor((v.offsetY + y * v.scale) * dpr);
            return [...canvas.getContext('2d').getImageData(px, py, 1, 1).data];
        }""",
        [x, y],
    )
    return result


def flat(value: Any) -> list[float]:
    """Nested lists of numbers as one list (pytest.approx compares flat sequences)."""
    if isinstance(value, (list, tuple)):
        return [v for item in value for v in flat(item)]
    return [value]


def test_dragging_draws_boxes_in_full_image_pixels(page: Page, live_server: Any) -> None:
    open_demo(page, live_server)
    assert page.evaluate("window.annotator.label") == "car"

    drag(page, at(page, 100, 100), at(page, 220, 180))
    page.keyboard.press("2")  # nothing selected: picks the label of the next box
    drag(page, at(page, 400, 300), at(page, 300, 250))  # right to left, bottom to top

    got = payload(page)
    assert [a["label"] for a in got] == ["car", "person"]
    assert got[0]["bbox"] == pytest.approx([100, 100, 120, 80], abs=1)
    assert got[1]["bbox"] == pytest.approx([300, 250, 100, 50], abs=1)
    assert all(round(v, 2) == v for a in got for v in a["bbox"])
    assert page.evaluate("window.events.changes") == 2
    assert page.evaluate("window.events.labels") == ["car", "person"]
    # The helper the pages may use instead of the view agrees with it.
    mapped = page.evaluate("window.annotator.imageToClient(100, 100)")
    assert (mapped["x"], mapped["y"]) == pytest.approx(at(page, 100, 100), abs=0.01)


def test_a_click_without_a_drag_creates_nothing(page: Page, live_server: Any) -> None:
    open_demo(page, live_server)
    click(page, 300, 200)
    x, y = at(page, 200, 150)
    drag(page, (x, y), (x + 2, y + 1), steps=2)  # under the 3 px drag threshold
    assert payload(page) == []
    assert page.evaluate("window.events.changes") == 0


def test_escape_cancels_a_box_being_drawn(page: Page, live_server: Any) -> None:
    open_demo(page, live_server)
    page.mouse.move(*at(page, 100, 100))
    page.mouse.down()
    page.mouse.move(*at(page, 250, 200), steps=5)
    page.keyboard.press("Escape")
    page.mouse.up()
    assert payload(page) == []


def test_move_and_resize_a_box_each_one_undo_step(page: Page, live_server: Any) -> None:
    open_demo(page, live_server)
    set_annotations(page, [{"label": "car", "bbox": [100, 100, 120, 80]}])

    drag(page, at(page, 160, 140), at(page, 210, 170), steps=12)  # grab inside, move by (50, 30)
    assert payload(page)[0]["bbox"] == pytest.approx([150, 130, 120, 80], abs=1)

    drag(page, at(page, 270, 210), at(page, 300, 250), steps=12)  # bottom-right handle
    assert payload(page)[0]["bbox"] == pytest.approx([150, 130, 150, 120], abs=1)

    drag(page, at(page, 150, 190), at(page, 120, 190), steps=6)  # left edge handle
    assert payload(page)[0]["bbox"] == pytest.approx([120, 130, 180, 120], abs=1)

    page.keyboard.press("Control+z")
    assert payload(page)[0]["bbox"] == pytest.approx([150, 130, 150, 120], abs=1)
    page.keyboard.press("Control+z")
    assert payload(page)[0]["bbox"] == pytest.approx([150, 130, 120, 80], abs=1)
    page.keyboard.press("Control+z")
    assert payload(page)[0]["bbox"] == [100, 100, 120, 80]
    page.keyboard.press("Control+z")  # the setAnnotations call
    assert payload(page) == []
    assert page.evaluate("window.annotator.canUndo") is False


def test_delete_the_selected_box_and_from_the_list(page: Page, live_server: Any) -> None:
    open_demo(page, live_server)
    set_annotations(
        page,
        [
            {"label": "car", "bbox": [100, 100, 120, 80]},
            {"label": "tree", "bbox": [400, 90, 130, 240]},
        ],
    )
    page.keyboard.press("Delete")  # nothing selected yet
    assert len(payload(page)) == 2

    click(page, 160, 140)
    page.keyboard.press("Delete")
    assert [a["label"] for a in payload(page)] == ["tree"]

    click(page, 450, 200)
    page.keyboard.press("Backspace")
    assert payload(page) == []

    page.keyboard.press("Control+z")
    page.get_by_role("button", name=f"Delete 1. tree — box 130{X}240 at (400, 90)").click()
    assert payload(page) == []


def test_undo_and_redo_with_the_keyboard(page: Page, live_server: Any) -> None:
    open_demo(page, live_server)
    drag(page, at(page, 50, 50), at(page, 150, 120))
    drag(page, at(page, 300, 300), at(page, 380, 400))
    assert len(payload(page)) == 2

    page.keyboard.press("Control+z")
    assert len(payload(page)) == 1
    page.keyboard.press("Control+z")
    assert payload(page) == []
    assert page.evaluate("[window.annotator.canUndo, window.annotator.canRedo]") == [False, True]

    page.keyboard.press("Control+Shift+z")
    assert len(payload(page)) == 1
    page.keyboard.press("Control+y")
    assert len(payload(page)) == 2
    assert payload(page)[1]["bbox"] == pytest.approx([300, 300, 80, 100], abs=1)
    assert page.evaluate("window.annotator.canRedo") is False

    page.keyboard.press("Control+z")
    drag(page, at(page, 400, 50), at(page, 450, 90))  # a new edit drops what could be redone
    assert page.evaluate("window.annotator.canRedo") is False
    page.keyboard.press("Control+y")
    assert [a["bbox"][0] for a in payload(page)] == pytest.approx([50, 400], abs=1)


def test_a_number_key_relabels_the_selected_box_else_picks_the_label(
    page: Page, live_server: Any
) -> None:
    open_demo(page, live_server)
    drag(page, at(page, 100, 100), at(page, 220, 180))
    click(page, 160, 140)
    page.keyboard.press("3")
    assert payload(page)[0]["label"] == "tree"
    assert page.evaluate("window.annotator.label") == "car"

    page.keyboard.press("Escape")  # deselect
    page.keyboard.press("2")
    assert page.evaluate("window.annotator.label") == "person"
    assert payload(page)[0]["label"] == "tree"
    assert page.locator("#labels button[aria-pressed=true]").inner_text().startswith("person")
    page.keyboard.press("9")  # no ninth label
    assert page.evaluate("window.annotator.label") == "person"


def test_polygon_closes_on_its_first_vertex_c_or_double_click(page: Page, live_server: Any) -> None:
    open_demo(page, live_server, "kind=polygon")
    square = [(100, 100), (200, 100), (200, 200), (100, 200)]
    for x, y in square:
        click(page, x, y)
    assert page.evaluate("window.annotator.drafting") is True
    assert payload(page) == []  # still open
    click(page, 101, 101)  # the first vertex
    got = payload(page)
    assert len(got) == 1
    assert got[0]["label"] == "car"
    assert flat(got[0]["points"]) == pytest.approx(flat(square), abs=1)

    page.keyboard.press("3")
    for x, y in [(300, 100), (400, 100), (400, 200), (300, 250)]:
        click(page, x, y)
    page.keyboard.press("Backspace")  # drops (300, 250)
    page.keyboard.press("c")
    assert payload(page)[1]["label"] == "tree"
    assert flat(payload(page)[1]["points"]) == pytest.approx([300, 100, 400, 100, 400, 200], abs=1)

    for x, y in [(450, 300), (550, 300)]:
        click(page, x, y)
    page.mouse.dblclick(*at(page, 500, 400))
    assert flat(payload(page)[2]["points"]) == pytest.approx([450, 300, 550, 300, 500, 400], abs=1)

    for x, y in [(50, 300), (150, 300), (100, 400)]:
        click(page, x, y)
    page.keyboard.press("Escape")  # cancels the open polygon
    assert len(payload(page)) == 3
    assert page.evaluate("window.annotator.drafting") is False
    assert page.evaluate("window.events.changes") == 3

    for x, y in [(50, 300), (150, 300), (100, 400)]:
        click(page, x, y)
    page.keyboard.press("Enter")  # the page submits, closing the open polygon first
    assert page.evaluate("window.events.submits") == 1
    assert flat(payload(page)[3]["points"]) == pytest.approx([50, 300, 150, 300, 100, 400], abs=1)


def test_polygon_vertex_and_body_drags(page: Page, live_server: Any) -> None:
    open_demo(page, live_server, "kind=polygon")
    set_annotations(page, [{"label": "car", "points": [[100, 100], [200, 100], [150, 200]]}])
    click(page, 150, 130)  # select
    drag(page, at(page, 200, 100), at(page, 260, 90))
    assert flat(payload(page)[0]["points"]) == pytest.approx([100, 100, 260, 90, 150, 200], abs=1)
    drag(page, at(page, 150, 130), at(page, 170, 150))
    assert flat(payload(page)[0]["points"]) == pytest.approx([120, 120, 280, 110, 170, 220], abs=1)


def test_keypoints_in_order_with_occluded_and_skipped_points(page: Page, live_server: Any) -> None:
    open_demo(page, live_server, "kind=keypoints")
    hint = page.locator(".annotator-hint")
    assert hint.inner_text().startswith("Click head (1 of 5), Shift+click if occluded, N to skip")

    click(page, 340, 240)
    page.keyboard.down("Shift")
    click(page, 320, 262)  # left_hand, occluded
    page.keyboard.up("Shift")
    assert "right_hand (3 of 5)" in hint.inner_text()
    page.keyboard.press("n")  # right_hand absent
    assert "left_foot (4 of 5)" in hint.inner_text()
    click(page, 326, 335)
    assert payload(page) == []  # not complete yet
    click(page, 354, 335)

    got = payload(page)
    assert len(got) == 1
    assert got[0]["label"] == "person"
    expected = [[340, 240, 2], [320, 262, 1], [0, 0, 0], [326, 335, 2], [354, 335, 2]]
    assert [k[2] for k in got[0]["keypoints"]] == [k[2] for k in expected]
    assert flat(got[0]["keypoints"]) == pytest.approx(flat(expected), abs=1)

    page.keyboard.press("2")  # car: front_wheel, back_wheel
    click(page, 125, 315)
    page.keyboard.press("Escape")  # finishes early, the rest absent
    car = payload(page)[1]
    assert car["label"] == "car"
    assert car["keypoints"][0] == pytest.approx([125, 315, 2], abs=1)
    assert car["keypoints"][1] == [0, 0, 0]

    drag(page, at(page, 340, 240), at(page, 345, 230))  # the person's head, not selected yet
    assert payload(page)[0]["keypoints"][0] == pytest.approx([345, 230, 2], abs=1)
    assert payload(page)[0]["keypoints"][1] == pytest.approx([320, 262, 1], abs=1)


def test_wheel_zoom_keeps_the_point_under_the_cursor(page: Page, live_server: Any) -> None:
    open_demo(page, live_server)
    fitted = page.evaluate("window.annotator.view")
    # Mouse positions are whole CSS pixels: anchor at the one nearest the image point (150, 120).
    cx, cy = (round(v) for v in at(page, 150, 120))
    anchor = page.evaluate(f"window.annotator.clientToImage({cx}, {cy})")
    assert (anchor["x"], anchor["y"]) == pytest.approx((150, 120), abs=1)
    page.mouse.move(cx, cy)
    page.mouse.wheel(0, -300)
    wait_until(page, f"window.annotator.view.scale > {fitted['scale'] * 1.5}")
    under = page.evaluate(f"window.annotator.clientToImage({cx}, {cy})")
    assert (under["x"], under["y"]) == pytest.approx((anchor["x"], anchor["y"]), abs=0.01)
    assert at(page, anchor["x"], anchor["y"]) == pytest.approx((cx, cy), abs=0.01)

    page.mouse.move(cx + 200, cy + 100)
    before = page.evaluate(f"window.annotator.clientToImage({cx + 200}, {cy + 100})")
    page.mouse.wheel(0, 200)
    page.wait_for_timeout(100)
    after = page.evaluate(f"window.annotator.clientToImage({cx + 200}, {cy + 100})")
    assert (after["x"], after["y"]) == pytest.approx((before["x"], before["y"]), abs=0.05)

    page.mouse.click(cx, cy)  # the keys need the annotator focused; a click draws nothing
    page.keyboard.press("0")
    assert page.evaluate("window.annotator.view") == pytest.approx(fitted)
    assert payload(page) == []


def test_space_drag_right_drag_and_arrows_pan_without_drawing(page: Page, live_server: Any) -> None:
    open_demo(page, live_server)
    start = page.evaluate("window.annotator.view")
    x, y = at(page, 300, 200)

    page.mouse.click(x, y)  # focus the annotator
    page.keyboard.down(" ")
    drag(page, (x, y), (x + 60, y + 40))
    page.keyboard.up(" ")
    view = page.evaluate("window.annotator.view")
    assert (
        view["offsetX"] - start["offsetX"],
        view["offsetY"] - start["offsetY"],
    ) == pytest.approx((60, 40), abs=1)

    page.mouse.move(x, y)
    page.mouse.down(button="right")
    page.mouse.move(x - 30, y, steps=4)
    page.mouse.up(button="right")
    view = page.evaluate("window.annotator.view")
    assert view["offsetX"] - start["offsetX"] == pytest.approx(30, abs=1)

    page.keyboard.press("ArrowRight")
    assert page.evaluate("window.annotator.view")["offsetX"] == pytest.approx(view["offsetX"] - 40)
    assert payload(page) == []

    # With a box selected the arrows nudge it by one image pixel instead.
    set_annotations(page, [{"label": "car", "bbox": [100, 100, 50, 50]}])
    click(page, 120, 120)
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowDown")
    assert payload(page)[0]["bbox"] == [101, 101, 50, 50]


def test_shapes_are_clipped_to_the_task_region(page: Page, live_server: Any) -> None:
    open_demo(page, live_server, "kind=bbox&region=160,120,320,240")
    set_annotations(
        page,
        [
            {"label": "car", "bbox": [100, 100, 120, 80]},  # sticks out at the top left
            {"label": "person", "bbox": [0, 0, 50, 50]},  # wholly outside
            {"label": "tree", "bbox": [470, 350, 50, 50]},  # sticks out at the bottom right
            {"label": "tree", "bbox": [300, 200, 0.5, 40]},  # under a pixel wide
        ],
    )
    assert payload(page) == [
        {"label": "car", "bbox": [160, 120, 60, 60]},
        {"label": "tree", "bbox": [470, 350, 10, 10]},
    ]
    description = page.locator("#annotator canvas").get_attribute("aria-label") or ""
    assert f"task region 320{X}240 at (160, 120)" in description

    assert page.locator(".annotator-item-select").all_inner_texts()[:2] == [
        f"1. car — box 60{X}60 at (160, 120)",
        "2. person — box outside the task region or too small (not submitted)",
    ]

    drag(page, at(page, 400, 300), at(page, 600, 450))  # dragged out of the region
    assert payload(page)[-1]["bbox"] == pytest.approx([400, 300, 80, 60], abs=0.01)


def test_polygons_and_keypoints_are_clipped_to_the_region(page: Page, live_server: Any) -> None:
    open_demo(page, live_server, "kind=polygon&region=100,100,200,200")
    set_annotations(
        page,
        [
            {"label": "car", "points": [[50, 150], [250, 150], [250, 250]]},
            {"label": "car", "points": [[0, 0], [50, 0], [50, 50]]},
            {"label": "car", "points": [[150, 150], [200, 150]]},
        ],
    )
    # The edge from (250, 250) back to (50, 150) leaves the region at (100, 175).
    assert payload(page) == [
        {"label": "car", "points": [[100, 175], [100, 150], [250, 150], [250, 250]]}
    ]

    open_demo(page, live_server, "kind=keypoints&region=100,100,200,200")
    set_annotations(
        page,
        [
            {"label": "car", "keypoints": [[150.123, 150.456, 2], [350, 150, 2]]},
            {"label": "car", "keypoints": [[10, 10, 2], [20, 20, 1]]},
        ],
    )
    assert payload(page) == [{"label": "car", "keypoints": [[150.12, 150.46, 2], [0, 0, 0]]}]


def test_classification_by_number_key(page: Page, live_server: Any) -> None:
    open_demo(page, live_server, "kind=classification")
    assert payload(page) == []
    assert page.evaluate("window.annotator.label") is None
    page.keyboard.press("2")  # the canvas has no focus yet: nothing happens
    assert payload(page) == []

    page.locator("#annotator canvas").click()
    page.keyboard.press("2")
    assert payload(page) == [{"label": "park"}]
    page.keyboard.press("3")
    assert payload(page) == [{"label": "beach"}]
    assert page.evaluate("window.annotator.label") == "beach"
    assert "class beach" in (page.locator("#annotator canvas").get_attribute("aria-label") or "")
    page.keyboard.press("Control+z")
    assert payload(page) == [{"label": "park"}]
    page.locator("#labels button", has_text="street").click()
    assert payload(page) == [{"label": "street"}]
    assert page.evaluate("window.events.labels") == ["park", "beach", "park", "street"]


def test_typing_in_page_inputs_is_not_taken_and_enter_reaches_the_page(
    page: Page, live_server: Any
) -> None:
    open_demo(page, live_server)
    page.fill("#note", "")
    page.locator("#note").press_sequentially("2 n")
    assert page.input_value("#note") == "2 n"
    assert page.evaluate("window.annotator.label") == "car"

    click(page, 300, 200)  # focuses the annotator
    assert page.evaluate("document.activeElement.id") == "annotator"
    page.keyboard.press("Enter")
    assert page.evaluate("window.events.submits") == 1


def test_read_only_review_selects_zooms_and_pans_but_never_edits(
    page: Page, live_server: Any
) -> None:
    open_demo(page, live_server, "kind=bbox&readonly=1")
    boxes = [{"label": "car", "bbox": [100, 100, 120, 80]}]
    set_annotations(page, boxes)
    start = page.evaluate("window.annotator.view")

    drag(page, at(page, 300, 250), at(page, 400, 350))  # empty space: pans
    drag(page, at(page, 160, 140), at(page, 200, 160))  # on the box: pans too
    click(page, 130, 130)  # the box is now under the pan; find it again
    page.keyboard.press("Delete")
    page.keyboard.press("2")
    page.keyboard.press("Control+z")
    assert payload(page) == boxes
    assert page.evaluate("window.annotator.view")["offsetX"] != start["offsetX"]
    assert page.locator(".annotator-item-delete").count() == 0
    assert page.locator(".annotator-item-select").get_attribute("aria-pressed") == "true"


def test_object_list_hint_and_accessible_description(page: Page, live_server: Any) -> None:
    open_demo(page, live_server)
    canvas = page.locator("#annotator canvas")
    assert canvas.get_attribute("role") == "img"
    assert canvas.get_attribute("aria-label") == f"Image 640{X}480, 0 objects"
    assert page.locator(".annotator-hint").inner_text() == "Drag to draw a car box."

    set_annotations(
        page,
        [
            {"label": "car", "bbox": [30, 40, 120, 80]},
            {"label": "tree", "bbox": [400, 90, 130, 240]},
        ],
    )
    assert canvas.get_attribute("aria-label") == f"Image 640{X}480, 2 objects"
    assert page.locator(".annotator-item-select").all_inner_texts() == [
        f"1. car — box 120{X}80 at (30, 40)",
        f"2. tree — box 130{X}240 at (400, 90)",
    ]

    page.locator(".annotator-item-select").nth(1).click()
    assert page.locator(".annotator-item-select").nth(1).get_attribute("aria-pressed") == "true"
    assert page.locator(".annotator-hint").inner_text().startswith("tree box selected")

    delete = page.get_by_role("button", name=f"Delete 1. car — box 120{X}80 at (30, 40)")
    delete.focus()
    page.keyboard.press("Enter")  # a focused Delete button works from the keyboard
    assert payload(page) == [{"label": "tree", "bbox": [400, 90, 130, 240]}]
    assert (
        page.evaluate("document.activeElement.getAttribute('aria-label')")
        == f"Delete 1. tree — box 130{X}240 at (400, 90)"
    )
    assert page.evaluate("window.events.submits") == 0


def test_shapes_and_overlays_are_painted(page: Page, live_server: Any) -> None:
    open_demo(page, live_server)
    sky = pixel(page, 400, 60)
    set_annotations(page, [{"label": "car", "bbox": [300, 40, 200, 60]}])  # car is #e6194b
    filled = pixel(page, 400, 60)
    assert filled[0] > sky[0] + 5
    assert filled[1] < sky[1] - 20

    page.evaluate(
        "window.annotator.setOverlay('consensus', [{label: 'car', bbox: [300, 40, 200, 60]}], {color: '#00ff00', title: 'Consensus'})"
    )
    dash = pixel(page, 302, 40)  # on the first dash of the top edge
    gap = pixel(page, 300 + 8 / page.evaluate("window.annotator.view.scale"), 40)  # in the gap
    assert dash[:3] == [0, 255, 0]
    assert gap[:3] != [0, 255, 0]

    page.evaluate("window.annotator.setOverlay('consensus', null)")
    assert pixel(page, 302, 40)[:3] != [0, 255, 0]


def test_image_load_failure_rejects_ready_and_destroy_cleans_up(
    page: Page, live_server: Any
) -> None:
    open_demo(page, live_server)
    message = page.evaluate(
        """async () => {
            const { Annotator } = await import('/static/frontend/annotator.js');
            const div = document.createElement('div');
            document.body.append(div);
            const a = new Annotator(div, {kind: 'bbox', labels: ['x'], imageUrl: '/static/frontend/missing.png', width: 10, height: 10});
            try {
                await a.ready;
                return 'resolved';
            } catch (error) {
                return [error instanceof Error, error.message, div.querySelector('.annotator-hint').textContent];
            }
        }"""
    )
    assert message == [
        True,
        "The image could not be loaded (HTTP 404)",
        "The image could not be loaded.",
    ]

    left = page.evaluate(
        """() => {
            const url = window.annotator._objectUrl;
            window.annotator.destroy();
            const root = document.getElementById('annotator');
            return [root.children.length, root.hasAttribute('tabindex'), url.startsWith('blob:')];
        }"""
    )
    assert left == [0, False, True]


def test_a_finger_draws_a_box_and_two_fingers_pinch_zoom(
    browser: Browser, live_server: Any
) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, has_touch=True)
    try:
        page = context.new_page()
        open_demo(page, live_server)
        cdp = context.new_cdp_session(page)

        def touch(kind: str, *points: Point) -> None:
            cdp.send(
                "Input.dispatchTouchEvent",
                {
                    "type": kind,
                    "touchPoints": [{"x": x, "y": y, "id": i} for i, (x, y) in enumerate(points)],
                },
            )

        (x0, y0), (x1, y1) = at(page, 100, 100), at(page, 220, 180)
        touch("touchStart", (x0, y0))
        for t in (0.25, 0.5, 0.75, 1):
            touch("touchMove", (x0 + t * (x1 - x0), y0 + t * (y1 - y0)))
        touch("touchEnd")
        got = payload(page)
        assert len(got) == 1
        assert got[0]["bbox"] == pytest.approx([100, 100, 120, 80], abs=1.5)

        scale = page.evaluate("window.annotator.view.scale")
        a, b = at(page, 400, 300), at(page, 500, 300)
        touch("touchStart", a)
        touch("touchStart", a, b)
        for t in (10, 20, 30, 40, 50):
            touch("touchMove", (a[0] - t, a[1]), (b[0] + t, b[1]))
        touch("touchEnd")
        assert page.evaluate("window.annotator.view.scale") > scale * 1.4
        assert len(payload(page)) == 1  # the pinch drew nothing
    finally:
        context.close()
