"""``GET /exports/``: every dataset version the caller may download, across projects, and a
project's own versions, both as pages."""

from __future__ import annotations

import pytest

from qa.exports.build import export_options
from qa.models import DatasetExport, RunStatus
from tasks.models import Project
from tasks.services import project_client_add
from tests.factories import ClientFactory, ManagerFactory, project_create

pytestmark = pytest.mark.django_db


def export_row(
    project: Project, fmt: str = "coco", status: str = RunStatus.QUEUED
) -> DatasetExport:
    """A version row, made without building it: the list reads rows, not files."""
    checked, options = export_options(project, {"format": fmt})
    version = DatasetExport.objects.filter(project=project).count() + 1
    return DatasetExport.objects.create(
        project=project, version=version, format=checked, options=options, status=status
    )


@pytest.fixture
def world(manager, client_user):
    """Two projects of one manager (one shared with the client) and one of another."""
    mine = project_create(manager, name="Streets")
    shared = project_create(manager, name="Shared", kind="classification", labels=["a", "b"])
    project_client_add(project=shared, username=client_user.username)
    other = ManagerFactory.create()
    theirs = project_create(other, name="Theirs")
    return {
        "other": other,
        "mine": [export_row(mine), export_row(mine, "yolo", RunStatus.DONE)],
        "shared": [export_row(shared, "csv", RunStatus.FAILED)],
        "theirs": [export_row(theirs)],
        "projects": (mine, shared, theirs),
    }


def listed(client, query: str = "") -> list[int]:
    response = client.get(f"/api/v1/exports/{query}")
    assert response.status_code == 200, response.content
    page = response.json()
    assert set(page) == {"count", "next", "previous", "results"}
    assert page["count"] == len(page["results"])
    return [row["id"] for row in page["results"]]


def test_a_manager_sees_every_version_of_their_projects_newest_first(api_as, manager, world):
    ids = listed(api_as(manager))
    assert ids == [e.pk for e in reversed(world["mine"] + world["shared"])]
    # Another manager's versions never show, and theirs are all they see.
    assert listed(api_as(world["other"])) == [world["theirs"][0].pk]


def test_a_client_sees_the_versions_of_projects_shared_with_them(api_as, client_user, world):
    assert listed(api_as(client_user)) == [world["shared"][0].pk]
    assert listed(api_as(ClientFactory.create())) == []


def test_workers_may_not_list_versions(api_as, worker, world):
    assert api_as(worker).get("/api/v1/exports/").status_code == 403


def test_each_item_is_the_version_as_its_own_route_renders_it_with_its_project(
    api_as, manager, world
):
    api = api_as(manager)
    done = world["mine"][1]
    [row] = api.get("/api/v1/exports/?status=done").json()["results"]
    detail = api.get(f"/api/v1/exports/{done.pk}/").json()
    assert row == {**detail, "project_name": "Streets"}
    assert row["project"] == done.project_id


def test_filters_narrow_the_list(api_as, manager, world):
    api = api_as(manager)
    mine, shared, theirs = world["projects"]
    assert listed(api, f"?project={shared.pk}") == [world["shared"][0].pk]
    assert listed(api, f"?project={theirs.pk}") == []  # not theirs to see: nothing, no hint
    assert listed(api, "?format=yolo") == [world["mine"][1].pk]
    assert listed(api, "?status=failed") == [world["shared"][0].pk]
    assert listed(api, f"?project={mine.pk}&status=queued") == [world["mine"][0].pk]


@pytest.mark.parametrize(
    ("query", "parameter"),
    [("?project=abc", "project"), ("?format=png", "format"), ("?status=lost", "status")],
)
def test_a_filter_value_that_is_not_valid_is_a_400_naming_it(
    api_as, manager, world, query, parameter
):
    response = api_as(manager).get(f"/api/v1/exports/{query}")
    assert response.status_code == 400
    assert list(response.json()["errors"]) == [parameter]


def test_the_list_pages(api_as, manager, world):
    page = api_as(manager).get("/api/v1/exports/?limit=2").json()
    assert page["count"] == 3
    assert len(page["results"]) == 2
    assert page["next"]
    assert "offset=2" in page["next"]
    assert page["previous"] is None


def test_a_projects_versions_are_a_page_newest_version_first(api_as, manager, world):
    mine = world["projects"][0]
    page = api_as(manager).get(f"/api/v1/projects/{mine.pk}/exports/?limit=1").json()
    assert page["count"] == 2
    assert [row["version"] for row in page["results"]] == [2]
    assert page["next"]
