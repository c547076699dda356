"""The OpenAPI schema describes every operation completely: built without a warning, each
operation tagged, described and typed, request and response bodies alike."""

from __future__ import annotations

from typing import Any

import pytest
from drf_spectacular.drainage import GENERATOR_STATS
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.validation import validate_schema
from jsonschema import Draft4Validator  # type: ignore[import-untyped]

pytestmark = pytest.mark.django_db

TAGS = {
    "Accounts",
    "Projects",
    "Images",
    "Work",
    "Quality",
    "Review",
    "Money",
    "Datasets",
    "Models",
}
BINARY = ("image/*", "application/zip", "application/json; download", "text/csv")


@pytest.fixture(scope="module")
def built() -> tuple[dict[str, Any], list[str]]:
    GENERATOR_STATS.reset()
    with GENERATOR_STATS.silence():
        schema = SchemaGenerator().get_schema(request=None, public=True)
    problems = sorted({*GENERATOR_STATS._warn_cache, *GENERATOR_STATS._error_cache})
    GENERATOR_STATS.reset()
    return schema, problems


def operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
    ]


def untyped(node: Any, where: str) -> list[str]:
    """Objects that say nothing of their contents (``{}`` or a bare ``type: object``)."""
    found: list[str] = []
    if isinstance(node, dict):
        if node == {} or (
            node.get("type") == "object"
            and not {"properties", "additionalProperties", "oneOf", "allOf"} & set(node)
        ):
            found.append(where)
        for key, value in node.items():
            if key not in ("example", "examples"):
                found.extend(untyped(value, f"{where}.{key}"))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found.extend(untyped(value, f"{where}[{i}]"))
    return found


def test_the_schema_builds_without_a_warning_and_is_valid_openapi(built) -> None:
    schema, problems = built
    assert not problems, "\n".join(problems)
    validate_schema(schema)


def test_every_operation_is_tagged_described_and_uniquely_named(built) -> None:
    schema, _ = built
    ids = [op["operationId"] for _, _, op in operations(schema)]
    assert len(ids) == len(set(ids))
    for method, path, op in operations(schema):
        assert len(op["tags"]) == 1, (method, path, op["tags"])
        assert op["tags"][0] in TAGS, (method, path, op["tags"])
        assert len(op.get("description", "")) >= 20, f"{method} {path} has no description"
    used = {op["tags"][0] for _, _, op in operations(schema)}
    assert used == TAGS == {t["name"] for t in schema["tags"]}


def test_every_body_is_typed(built) -> None:
    schema, _ = built
    for method, path, op in operations(schema):
        where = f"{method} {path}"
        for media, body in op.get("requestBody", {}).get("content", {}).items():
            assert untyped(body["schema"], f"{where} request {media}") == []
        success = [code for code in op["responses"] if code.startswith("2")]
        assert success, f"{where} documents no success status"
        for code, response in op["responses"].items():
            for media, body in response.get("content", {}).items():
                if media.startswith(BINARY):
                    continue
                assert "schema" in body, f"{where} {code} {media} has no schema"
                assert untyped(body["schema"], f"{where} {code} {media}") == []
    for name, component in schema["components"]["schemas"].items():
        assert untyped(component, name) == [], name


def test_annotation_items_are_one_of_per_kind(built) -> None:
    schema, _ = built
    submit = schema["paths"]["/api/v1/assignments/{assignment_id}/submit/"]["post"]
    body = submit["requestBody"]["content"]["application/json"]["schema"]
    ref = body["$ref"].rsplit("/", 1)[1]
    annotations = schema["components"]["schemas"][ref]["properties"]["annotations"]
    refs = [item["$ref"].rsplit("/", 1)[1] for item in annotations["items"]["oneOf"]]
    assert sorted(refs) == [
        "BoxItem", "ClassificationItem", "KeypointsItem", "MaskItem", "PolygonItem"
    ]  # fmt: skip
    # Each kind's item, as a worker sends it and as a merge returns it, matches exactly one
    # of the items: a client can tell them apart by the schema alone.
    components = schema["components"]["schemas"]
    samples: dict[str, list[dict[str, Any]]] = {
        "ClassificationItem": [{"label": "cat"}, {"label": "cat", "score": 0.9, "num_votes": 3}],
        "BoxItem": [{"label": "car", "bbox": [1, 2, 3, 4]},
                    {"label": "car", "bbox": [1, 2, 3, 4], "score": 0.8, "num_votes": 2}],
        "PolygonItem": [{"label": "tree", "points": [[0, 0], [4, 0], [4, 4]]}],
        "KeypointsItem": [{"label": "person", "keypoints": [[1, 2, 2], [0, 0, 0]]}],
        "MaskItem": [{"label": "road", "rle": {"size": [4, 5], "counts": "52?0"}},
                     {"label": "road", "rle": {"size": [4, 5], "counts": "52?0"}, "score": 0.7,
                      "num_votes": 3}],
    }  # fmt: skip
    for kind, items in samples.items():
        for item in items:
            matches = [name for name in refs if Draft4Validator(components[name]).is_valid(item)]
            assert matches == [kind], (item, matches)


@pytest.mark.parametrize(
    ("method", "path", "statuses"),
    [
        ("POST", "/api/v1/projects/", {"201"}),
        ("POST", "/api/v1/projects/{project_id}/gold/", {"201"}),
        ("POST", "/api/v1/projects/{project_id}/gold/bulk/", {"201"}),
        ("POST", "/api/v1/projects/{project_id}/gold/file/", {"201"}),
        ("POST", "/api/v1/projects/{project_id}/assignments/next/", {"201", "204"}),
        ("POST", "/api/v1/assignments/{assignment_id}/submit/", {"200"}),
        ("POST", "/api/v1/projects/{project_id}/images/", {"200", "201"}),
        ("POST", "/api/v1/projects/{project_id}/exports/", {"202"}),
        ("POST", "/api/v1/projects/{project_id}/consensus/", {"202"}),
        ("POST", "/api/v1/projects/{project_id}/predictions/", {"201"}),
        ("POST", "/api/v1/projects/{project_id}/predictions/file/", {"201"}),
        ("POST", "/api/v1/projects/{project_id}/predictions/run/", {"202"}),
        ("DELETE", "/api/v1/projects/{project_id}/gold/{image_id}/", {"204"}),
    ],
)
def test_success_statuses_are_the_ones_the_server_answers(built, method, path, statuses) -> None:
    schema, _ = built
    op = schema["paths"][path][method.lower()]
    assert {code for code in op["responses"] if code.startswith("2")} == statuses
