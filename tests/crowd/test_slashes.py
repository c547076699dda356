"""API routes answer with and without the trailing slash, for every method, with no redirect
(a client that follows one after a POST loses the body)."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.django_db]


def test_every_method_works_without_the_trailing_slash(api_as, manager) -> None:
    client = api_as(manager)
    created = client.post(
        "/api/v1/projects", {"name": "Birds", "kind": "bbox", "labels": ["owl"]}, format="json"
    )
    assert created.status_code == 201, created.content
    project = created.json()["id"]
    assert client.get(f"/api/v1/projects/{project}").json()["name"] == "Birds"
    patched = client.patch(f"/api/v1/projects/{project}", {"name": "Owls"}, format="json")
    assert (patched.status_code, patched.json()["name"]) == (200, "Owls")
    assert client.get("/api/v1/projects").status_code == 200
    # With the slash, as before; a path that is no route either way is still a JSON 404.
    assert client.get(f"/api/v1/projects/{project}/").status_code == 200
    missing = client.get("/api/v1/no-such-thing")
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")


def test_pages_keep_the_redirect(client) -> None:
    response = client.get("/login")
    assert response.status_code == 301
    assert response["Location"] == "/login/"
