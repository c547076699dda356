"""The export writers' pure parts: splits, file names, streamed COCO."""

from __future__ import annotations

import io
import json
import zipfile
from collections import Counter

import pytest

from qa.exports.build import _Names
from qa.exports.formats import Label, Record, Splitter, stratum, write_coco, write_yolo


def test_a_split_keeps_every_label_within_one_image_of_its_share() -> None:
    splitter = Splitter({"train": 0.7, "val": 0.2, "test": 0.1}, seed=3)
    placed: dict[str, Counter[str]] = {}
    for image_id in range(1, 2001):
        label = "rare" if image_id % 50 == 0 else ("cat" if image_id % 3 else "dog")
        placed.setdefault(label, Counter())[splitter.assign(image_id, label)] += 1
    for label, counts in placed.items():
        n = sum(counts.values())
        for subset, share in (("train", 0.7), ("val", 0.2), ("test", 0.1)):
            assert abs(counts[subset] - share * n) <= 1, (label, subset, counts)


def test_a_split_depends_on_the_seed_and_not_on_other_images() -> None:
    def split(seed: int, ids: range) -> dict[int, str]:
        splitter = Splitter({"train": 0.5, "val": 0.5}, seed=seed)
        return {i: splitter.assign(i, "x") for i in ids}

    assert split(1, range(100)) == split(1, range(100))
    assert split(1, range(100)) != split(2, range(100))


def test_stratum_is_the_most_frequent_label() -> None:
    assert stratum([]) == ""
    assert stratum([{"label": "b"}, {"label": "a"}, {"label": "b"}]) == "b"
    assert stratum([{"label": "b"}, {"label": "a"}]) == "a"  # ties by name


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("cat.jpg", "cat.jpg"),
        ("../../etc/passwd", "passwd.jpg"),
        ("C:\\photos\\dog.JPG", "dog.JPG"),
        ("a b/ü?.png", "_.png.jpg"),
        ("...", "image-7.jpg"),
        (".hidden.jpg", "hidden.jpg"),
    ],
)
def test_file_names_are_safe_path_members(name: str, expected: str) -> None:
    assert _Names(frozenset())(name, 7, "JPEG") == expected


def test_names_sharing_a_stem_get_the_image_id() -> None:
    names = _Names(frozenset({"cat"}))
    assert names("cat.jpg", 4, "JPEG") == "cat-4.jpg"
    assert names("dog.jpg", 5, "JPEG") == "dog.jpg"


def records(n: int) -> list[Record]:
    return [
        Record(id=i, file_name=f"{i}.jpg", width=100, height=50,
               annotations=[{"label": "car", "bbox": [10, 5, 20.5, 10], "score": 0.9,
                             "num_votes": 3}] * (i % 3))
        for i in range(1, n + 1)
    ]  # fmt: skip


def test_streamed_coco_is_one_valid_document() -> None:
    out = io.BytesIO()
    counts = write_coco(out, records(5), kind="bbox", labels=[Label("car")], description="d")
    data = json.loads(out.getvalue())
    assert [i["id"] for i in data["images"]] == [1, 2, 3, 4, 5]
    assert [a["id"] for a in data["annotations"]] == list(range(1, 7))  # 1 + 2 + 0 + 1 + 2
    assert [a["image_id"] for a in data["annotations"]] == [1, 2, 2, 4, 5, 5]
    assert data["annotations"][0] == {
        "id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 5, 20.5, 10], "area": 205,
        "segmentation": [], "iscrowd": 0, "score": 0.9, "num_votes": 3,
        "attributes": {"machine_labelled": False},
    }  # fmt: skip
    assert (counts.images, counts.annotations, counts.empty_images) == (5, 6, 1)


def test_an_empty_dataset_is_still_valid_coco() -> None:
    out = io.BytesIO()
    write_coco(out, [], kind="bbox", labels=[Label("car")], description="d")
    assert json.loads(out.getvalue())["images"] == []


def test_zip_members_carry_no_time_of_writing() -> None:
    out = io.BytesIO()
    write_yolo(out, records(2), kind="bbox", labels=[Label("car")], card=lambda c: "card")
    with zipfile.ZipFile(out) as archive:
        names = archive.namelist()
        assert {i.date_time for i in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert archive.read("labels/train/2.txt").decode().splitlines() == [
            "0 0.202500 0.200000 0.205000 0.200000",
            "0 0.202500 0.200000 0.205000 0.200000",
        ]
    assert names == [
        "labels/train/1.txt", "labels/train/2.txt", "data.yaml", "machine_labelled.txt", "README.md"
    ]  # fmt: skip
