"""Predictions on the dashboard, in a real browser: a manager runs the reference ML backend (a
real process, spoken to through the Label Studio protocol) and watches the run to its end
live, then imports a file of a model's output, refused whole and then stored in part."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import FilePayload, Page, expect

from tests.browser.conftest import screenshot
from tests.browser.site import MANAGER, Site, site_running
from tests.browser.test_pages import log_in
from tests.tasks.test_reference_backend import astronaut_png
from tests.tasks.test_reference_backend import backend as backend  # a fixture

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def site(backend: str) -> Iterator[Site]:
    yield from site_running(ML_BACKEND_HOSTS=backend.removeprefix("http://"))


def test_a_manager_runs_the_ml_backend_and_imports_a_predictions_file(
    page: Page,
    site: Site,
    backend: str,
) -> None:
    project = site.project(images=1, labels=[{"name": "face", "color": "#e6194b"}])
    path = f"/api/v1/projects/{project['id']}"
    site.upload(project["id"], {"astronaut.png": astronaut_png()})
    site.wait_ready(project["id"], 2)
    log_in(page, site, MANAGER)
    page.goto(f"{site.url}/manage/projects/{project['id']}/#model")
    run_box = page.locator("#prediction-run")
    expect(run_box).to_contain_text("No ML backend")
    expect(
        page.get_by_role("button", name="Predict the images without a prediction")
    ).to_be_disabled()

    site.call("PATCH", path + "/", {"ml_backend": {"url": backend}}, as_=MANAGER)
    page.reload()
    expect(run_box).to_contain_text(f"ML backend: {backend}")
    expect(run_box).to_contain_text("has not been run")
    page.get_by_role("button", name="Predict the images without a prediction").click()
    # The run's frames reach the dashboard live, to the end.
    expect(run_box.locator("[data-run-status]")).to_have_attribute(
        "data-run-status", "done", timeout=60_000
    )
    expect(run_box).to_contain_text("2 of 2 images")
    expect(run_box.locator("[data-stat='predicted'] .value")).to_have_text("2")
    expect(run_box.locator("[data-stat='failed'] .value")).to_have_text("0")
    expect(page.get_by_role("button", name="Cancel the run")).to_be_hidden()
    screenshot(page, "dashboard-prediction-run")
    run = site.call("GET", path + "/predictions/run/", as_=MANAGER)
    assert (run["status"], run["predicted"]) == ("done", 2)

    # A file of another model's output: one item names an image the project does not have.
    output = {
        "model_version": "faces-v2",
        "predictions": [
            {"file_name": "astronaut.png",
             "annotations": [{"label": "face", "bbox": [170, 55, 110, 120], "score": 0.9}]},
            {"file_name": "nobody.png",
             "annotations": [{"label": "face", "bbox": [1, 1, 10, 10], "score": 0.5}]},
        ],
    }  # fmt: skip
    payload = FilePayload(name="faces.json", mimeType="application/json",
                          buffer=json.dumps(output).encode())  # fmt: skip
    form = page.locator("#predictions-import")
    result = page.locator("#predictions-import-result")
    form.get_by_label("File (JSON)").set_input_files(payload)
    form.get_by_role("button", name="Import predictions").click()
    expect(result.locator("[data-import='refused']")).to_contain_text("Nothing was stored")
    expect(result.locator("tbody tr")).to_have_count(1)
    expect(result.locator("tbody")).to_contain_text("nobody.png")
    versions = {
        p["model_version"] for p in site.call("GET", path + "/predictions/", as_=MANAGER)["results"]
    }
    assert "faces-v2" not in versions

    form.get_by_label("File (JSON)").set_input_files(payload)
    form.get_by_label(re.compile("Store the valid items")).check()
    form.get_by_role("button", name="Import predictions").click()
    expect(result.locator("[data-import='stored']")).to_have_text(
        "1 predictions stored; 1 items not stored."
    )
    screenshot(page, "dashboard-predictions-import")
    listed = site.call("GET", path + "/predictions/?model_version=faces-v2", as_=MANAGER)
    assert [p["annotations"][0]["bbox"] for p in listed["results"]] == [[170, 55, 110, 120]]
