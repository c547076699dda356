"""JSON documents read piece by piece (``crowd.json_stream``): a file walked with ijson
answers every question as the parsed document does, and one that is not JSON says so when
the walk reaches the fault."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from crowd.json_stream import MISSING, NotJson, Parsed, Streamed

DOCUMENTS: list[Any] = [
    {"model_version": "v1", "predictions": [{"image": 1, "annotations": [], "score": 0.5}]},
    {"predictions": [1, 2.5, None, "x"], "model_version": "late", "extra": {"a": [1]}},
    {"info": {"predictions": []}, "images": [{"id": 1}], "annotations": [], "categories": []},
    [{"data": {"image": "a.jpg"}, "predictions": []}, {"data": {}}],
    [{"image_id": 3, "bbox": [1, 2, 3, 4], "score": 0.25}],
    [],
    {},
    "text",
    12,
]


def _sources(document: Any) -> tuple[Parsed, Streamed]:
    return Parsed(document), Streamed(io.BytesIO(json.dumps(document).encode()))


@pytest.mark.parametrize("document", DOCUMENTS)
def test_a_walked_file_answers_as_the_parsed_document(document: Any) -> None:
    parsed, streamed = _sources(document)
    assert streamed.shape() == parsed.shape()
    for wanted in ({"predictions"}, {"images", "annotations"}, {"gold"}, {"info", "images"}):
        assert streamed.first_key(wanted) == parsed.first_key(wanted)
    for key in ("model_version", "predictions", "images", "categories", "missing"):
        assert streamed.value(key) == parsed.value(key) or (
            streamed.value(key) is MISSING and parsed.value(key) is MISSING
        )
        assert streamed.is_array(key) == parsed.is_array(key)
        assert list(streamed.elements(key)) == list(parsed.elements(key))
    assert streamed.is_array(None) == parsed.is_array(None)
    assert list(streamed.elements(None)) == list(parsed.elements(None))
    # Asked again, a file is walked again from the start.
    assert list(streamed.elements(None)) == list(parsed.elements(None))


def test_numbers_come_as_ints_and_floats() -> None:
    _, streamed = _sources([{"bbox": [1, 2.5, 1e-3, 2**53]}])
    (element,) = streamed.elements(None)
    assert element == {"bbox": [1, 2.5, 0.001, 2**53]}
    assert [type(v) for v in element["bbox"]] == [int, float, float, int]


def test_a_file_that_is_not_json_says_so_where_the_walk_finds_it() -> None:
    raw = json.dumps({"model_version": "v", "predictions": [{"image": 1}, {"image": 2}]})
    cut = Streamed(io.BytesIO(raw[:-12].encode()))
    assert cut.shape() == "object"
    assert cut.value("model_version") == "v"
    walked = cut.elements("predictions")
    assert next(walked) == {"image": 1}
    with pytest.raises(NotJson):
        list(walked)
    for raw_bytes in (b"", b"{not json", b"\xff\xfe\x00", b'{"a": []} trailing'):
        source = Streamed(io.BytesIO(raw_bytes))
        with pytest.raises(NotJson):
            _walk(source)


def _walk(source: Streamed) -> None:
    """What a reader does: look at the shape, then walk."""
    source.shape()
    list(source.elements("a"))
