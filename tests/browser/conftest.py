"""Real-browser fixtures: Debian's Chromium driven by Playwright, pages served by `live_server`.

`browser` is one Chromium for the session, `page` a fresh 1280x800 page per test whose last
state is saved to `artifacts/screenshots/<test name>.png`. Without /usr/bin/chromium the tests
skip, unless REQUIRE_SERVICES=1, when they fail.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.plugins.services import services_required

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"


def screenshot(page: Page, name: str) -> Path:
    """Save the page as `artifacts/screenshots/<name>.png` and return the path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.png"
    page.screenshot(path=str(path))
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One Chromium per test module. Playwright's sync API keeps an event loop running in
    this thread while it is open, so it is closed before other modules' async tests run; and
    while it is open Django would take the database work of `live_server` (flushing tables
    after each test) for async code, which the tests never do from a coroutine."""
    if not CHROMIUM.exists():
        if services_required():
            pytest.fail(f"REQUIRE_SERVICES=1 but {CHROMIUM} is not installed")
        pytest.skip(f"{CHROMIUM} is not installed")
    before = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            yield browser
            browser.close()
    finally:
        if before is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = before


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    try:
        screenshot(page, request.node.name)
    finally:
        context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest.fixture
def browser_page(page: Page) -> Page:
    """The same as `page`, under a name that says it is a real browser's."""
    return page
