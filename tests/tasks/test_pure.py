"""Pure modules: tiling, annotation validation, perceptual hashing, archive screening."""

from __future__ import annotations

import io
import itertools
import zipfile

import numpy as np
import pytest
from PIL import Image

from tasks import archives, imaging
from tasks.annotations import AnnotationError, Annotations, Schema, validate_annotations
from tasks.tiling import tile_regions
from tests import images


class TestTiling:
    def test_5000_by_3000_splits_into_six_overlapping_tiles(self) -> None:
        regions = tile_regions(5000, 3000, 2048, 256)
        assert regions == [
            (0, 0, 2048, 2048), (1476, 0, 2048, 2048), (2952, 0, 2048, 2048),
            (0, 952, 2048, 2048), (1476, 952, 2048, 2048), (2952, 952, 2048, 2048),
        ]  # fmt: skip

    @pytest.mark.parametrize(
        ("width", "height", "tile", "overlap"),
        [(5000, 3000, 2048, 256), (4097, 2049, 2048, 0), (10000, 700, 1024, 100),
         (2049, 2049, 2048, 512), (30000, 20000, 4096, 300)],
    )  # fmt: skip
    def test_tiles_cover_the_image_and_overlap_at_least_as_asked(
        self, width: int, height: int, tile: int, overlap: int
    ) -> None:
        regions = tile_regions(width, height, tile, overlap)
        covered = np.zeros((height, width), dtype=bool)
        for x, y, w, h in regions:
            assert x >= 0
            assert y >= 0
            assert x + w <= width
            assert y + h <= height
            assert w <= tile
            assert h <= tile
            covered[y : y + h, x : x + w] = True
        assert covered.all()
        xs = sorted({r[0] for r in regions})
        for a, b in itertools.pairwise(xs):
            assert a + tile - b >= overlap

    def test_small_images_are_one_region(self) -> None:
        assert tile_regions(800, 600, 2048, 256) == [(0, 0, 800, 600)]
        assert tile_regions(5000, 3000, 0, 0) == [(0, 0, 5000, 3000)]


SCHEMA = {
    "bbox": Schema("bbox", {"car": [], "tree": []}),
    "polygon": Schema("polygon", {"car": []}),
    "keypoints": Schema("keypoints", {"person": ["nose", "left_eye", "right_eye"]}),
    "classification": Schema("classification", {"cat": [], "dog": []}),
}


def check(kind: str, payload: object) -> Annotations:
    return validate_annotations(payload, schema=SCHEMA[kind], width=100, height=50)


def errors_of(kind: str, payload: object) -> dict[str, list[str]]:
    with pytest.raises(AnnotationError) as caught:
        check(kind, payload)
    return caught.value.errors


class TestAnnotations:
    def test_valid_payloads_are_normalised(self) -> None:
        assert check("bbox", [{"label": "car", "bbox": [0, 0, 100, 50], "extra": 1}]) == [
            {"label": "car", "bbox": [0.0, 0.0, 100.0, 50.0]}
        ]
        assert check("bbox", []) == []
        assert check("classification", [{"label": "dog"}]) == [{"label": "dog"}]
        assert check("polygon", [{"label": "car", "points": [[0, 0], [10, 0], [10, 10]]}])
        kp = check(
            "keypoints", [{"label": "person", "keypoints": [[1, 2, 2], [5, 5, 0], [3, 4, 1]]}]
        )
        assert kp[0]["keypoints"][1] == [0.0, 0.0, 0]

    @pytest.mark.parametrize(
        ("kind", "payload", "where", "words"),
        [
            ("bbox", {"label": "car"}, "annotations", "list"),
            ("bbox", ["car"], "annotations[0]", "object"),
            ("bbox", [{"label": "bus", "bbox": [0, 0, 1, 1]}], "annotations[0].label", "Unknown"),
            ("bbox", [{"label": 3, "bbox": [0, 0, 1, 1]}], "annotations[0].label", "string"),
            ("bbox", [{"label": "car", "bbox": [0, 0, 0, 1]}], "annotations[0].bbox", "positive"),
            ("bbox", [{"label": "car", "bbox": [90, 0, 20, 1]}], "annotations[0].bbox", "outside"),
            ("bbox", [{"label": "car", "bbox": [-5, 0, 5, 5]}], "annotations[0].bbox", "outside"),
            ("bbox", [{"label": "car", "bbox": [float("nan"), 0, 5, 5]}], "annotations[0].bbox", "finite"),
            ("bbox", [{"label": "car", "bbox": [float("inf"), 0, 5, 5]}], "annotations[0].bbox", "finite"),
            ("bbox", [{"label": "car", "bbox": [True, 0, 5, 5]}], "annotations[0].bbox", "finite"),
            ("bbox", [{"label": "car", "bbox": ["1", 0, 5, 5]}], "annotations[0].bbox", "finite"),
            ("bbox", [{"label": "car", "bbox": [1, 2, 3]}], "annotations[0].bbox", "[x, y, width"),
            ("polygon", [{"label": "car", "points": [[0, 0], [1, 1]]}], "annotations[0].points", "3 points"),
            ("polygon", [{"label": "car", "points": []}], "annotations[0].points", "3 points"),
            ("polygon", [{"label": "car", "points": [[0, 0], [1, 1], [2, 2]]}], "annotations[0].points", "no area"),
            ("polygon", [{"label": "car", "points": [[0, 0], [1, 1], [200, 2]]}], "annotations[0].points[2]", "outside"),
            ("keypoints", [{"label": "person", "keypoints": [[1, 2, 2]]}], "annotations[0].keypoints", "has 3 keypoints"),
            ("keypoints", [{"label": "person", "keypoints": [[1, 2, 5], [1, 1, 2], [1, 1, 2]]}], "annotations[0].keypoints[0]", "Visibility"),
            ("keypoints", [{"label": "person", "keypoints": [[0, 0, 0]] * 3}], "annotations[0].keypoints", "at least one"),
            ("classification", [], "annotations", "exactly one"),
            ("classification", [{"label": "cat"}, {"label": "dog"}], "annotations", "exactly one"),
        ],
    )  # fmt: skip
    def test_each_problem_is_named_where_it_is(
        self, kind: str, payload: object, where: str, words: str
    ) -> None:
        errors = errors_of(kind, payload)
        assert where in errors, errors
        assert any(words in message for message in errors[where]), errors

    def test_coordinates_a_little_past_the_edge_are_clipped_and_counted(self) -> None:
        # 100 x 50 image: up to 4 pixels past an edge is clipped, further is refused.
        boxes = check("bbox", [
            {"label": "car", "bbox": [-1, 0, 5, 5]},  # one pixel left of the image
            {"label": "car", "bbox": [90, 46, 13, 7]},  # past the right and bottom edges
            {"label": "tree", "bbox": [10, 10, 5, 5]},  # inside
        ])  # fmt: skip
        assert [b["bbox"] for b in boxes] == [[0, 0, 4, 5], [90, 46, 10, 4], [10, 10, 5, 5]]
        assert boxes.clipped == 2
        polygon = check("polygon", [{"label": "car", "points": [[-2, 0], [10, 0], [10, 52]]}])
        assert polygon[0]["points"] == [[0, 0], [10, 0], [10, 50]]
        assert polygon.clipped == 1
        people = check(
            "keypoints", [{"label": "person", "keypoints": [[101, 2, 2], [5, 5, 0], [3, 4, 1]]}]
        )
        assert (people[0]["keypoints"][0], people.clipped) == ([100, 2, 2], 1)
        assert check("bbox", [{"label": "car", "bbox": [0, 0, 100, 50]}]).clipped == 0
        # A box wholly beyond the edge, within the tolerance, clips to nothing: refused.
        errors = errors_of("bbox", [{"label": "car", "bbox": [101, 0, 2, 5]}])
        assert "along its edge" in errors["annotations[0].bbox"][0]

    def test_a_box_checks_alike_on_the_short_path_and_the_full_one(self) -> None:
        # Lists of four plain numbers inside the image take a short path; a tuple always
        # takes the full one. Both give the same box, clipped count or error for each.
        rng = np.random.default_rng(7)
        picks = [0, 0.0, 1, 0.1, 0.2, 49.5, 50, 99.99, 100, 100.0, 101, -0.0, -1, 1e-300, 2**60]
        values: list[object] = [*picks, True, float("nan"), float("inf"), "3", None]
        for _ in range(3000):
            raw = [values[k] for k in rng.integers(len(values), size=4)]
            if rng.random() < 0.5:
                raw = [float(v) + float(rng.random()) if type(v) in (int, float) else v
                       for v in raw]  # fmt: skip
            outcomes: list[object] = []
            for box in (list(raw), tuple(raw)):
                try:
                    got = check("bbox", [{"label": "car", "bbox": box}])
                    outcomes.append((got, got.clipped))
                except AnnotationError as exc:
                    outcomes.append(exc.errors)
            assert outcomes[0] == outcomes[1], raw

    def test_payload_size_is_bounded(self) -> None:
        errors = errors_of("bbox", [{"label": "car", "bbox": [0, 0, 1, 1]}] * 2001)
        assert "At most" in errors["annotations"][0]


class TestImaging:
    def test_near_duplicates_hash_close_and_different_images_far(self) -> None:
        original = images.scene(640, 480, seed=1)
        resized = original.resize((320, 240))
        recompressed = Image.open(io.BytesIO(images.encode(original, "JPEG", quality=40)))
        other = images.scene(640, 480, seed=2)
        h = imaging.perceptual_hash
        base = h(original)
        near = imaging.hamming(base, np.array([h(resized), h(recompressed)]))
        far = imaging.hamming(base, np.array([h(other)]))
        assert (near <= 4).all(), near
        assert far[0] >= 16, far

    def test_inspect_reads_upright_dimensions_without_decoding(self, tmp_path) -> None:
        path = tmp_path / "sideways.jpg"
        path.write_bytes(images.rotated_jpeg(400, 200, orientation=6))
        header = imaging.inspect(str(path), max_pixels=10**8)
        assert (header.width, header.height, header.orientation) == (200, 400, 6)


class TestArchives:
    def test_hostile_entries_are_rejected_with_reasons(self) -> None:
        data = images.zip_of(
            {"ok.jpg": b"x", "../escape.jpg": b"x", "/etc/abs.jpg": b"x", "a/../../b.jpg": b"x",
             "inner.zip": b"PK\x03\x04", "C:/win.jpg": b"x", "__MACOSX/._ok.jpg": b"x"},
            symlinks={"link.jpg": "/etc/passwd"},
        )  # fmt: skip
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            found = {
                e.name: e.code
                for e in archives.entries(archive, max_entries=100, max_entry_bytes=10)
            }
        assert found == {
            "ok.jpg": None, "../escape.jpg": "unsafe_path", "/etc/abs.jpg": "unsafe_path",
            "a/../../b.jpg": "unsafe_path", "inner.zip": "nested_archive",
            "C:/win.jpg": "unsafe_path", "link.jpg": "symlink",
        }  # fmt: skip
