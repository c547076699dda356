"""Who may open which page, for every page route in the URL conf: anonymous visitors are sent
to log in, a role a page is not for is sent to its own home page, and another manager's
project page is a 404, as its API is. A new page without an entry here fails."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from crowd.models import User
from tests.security.world import World

# name -> (roles that may open it, whether it shows one project)
PAGES: dict[str, tuple[set[str], bool]] = {
    "home": ({"anonymous", "worker", "manager", "client"}, False),
    "login": ({"anonymous", "worker", "manager", "client"}, False),
    "signup": ({"anonymous", "worker", "manager", "client"}, False),
    "annotator-demo": ({"anonymous", "worker", "manager", "client"}, False),
    "work": ({"worker"}, False),
    "workspace": ({"worker"}, True),
    "manage": ({"manager"}, False),
    "project-new": ({"manager"}, False),
    "dashboard": ({"manager"}, True),
    "gold-editor": ({"manager"}, True),
    "review": ({"manager"}, True),
    "client": ({"client", "manager"}, False),
}
HOME = {"worker": "/work/", "manager": "/manage/", "client": "/client/"}


def page_routes() -> list[URLPattern]:
    resolver = get_resolver()
    frontend = next(
        p
        for p in resolver.url_patterns
        if isinstance(p, URLResolver) and "frontend" in repr(p.urlconf_name)
    )
    return [p for p in frontend.url_patterns if isinstance(p, URLPattern)]


def url_for(pattern: URLPattern, project_id: int) -> str:
    return "/" + re.sub(r"<int:project_id>", str(project_id), str(pattern.pattern))


def test_every_page_route_has_a_decision() -> None:
    names = {p.name for p in page_routes()}
    assert names == set(PAGES), (
        f"pages without a decision: {names - set(PAGES)}; gone: {set(PAGES) - names}"
    )


@pytest.mark.django_db
def test_pages_by_role(world: World) -> None:
    side = world.a
    people: dict[str, User | None] = {
        "anonymous": None, "worker": side.worker, "manager": side.owner, "client": side.client,
    }  # fmt: skip
    side.project.refresh_from_db()
    for pattern in page_routes():
        allowed, per_project = PAGES[str(pattern.name)]
        url = url_for(pattern, side.project.pk)
        for role, user in people.items():
            browser = Client()
            if user is not None:
                browser.force_login(user)
            response = browser.get(url)
            if role in allowed:
                expected = 200 if pattern.name != "home" or role == "anonymous" else 302
                assert response.status_code == expected, (url, role, response.status_code)
                if expected == 302:
                    assert response["Location"] == HOME[role]
            elif role == "anonymous":
                assert response.status_code == 302, (url, role)
                assert response["Location"].startswith("/login/?next="), (url, role)
            else:
                assert response.status_code == 302, (url, role)
                assert response["Location"] == HOME[role], (url, role)
        if per_project:
            # A project that is not there, and (for managers) another manager's: hidden, as in
            # the API. Workers may open any active project's workspace.
            insider = Client()
            insider.force_login(side.owner if "manager" in allowed else side.worker)
            assert insider.get(url_for(pattern, 10**9)).status_code == 404, url
            if "manager" in allowed:
                outsider = Client()
                outsider.force_login(world.b.owner)
                assert outsider.get(url).status_code == 404, url
