"""``manage.py aggregate``: the product's consensus on answers collected elsewhere.

Classification reads CSV ``task,worker,label`` and writes ``task,label,confidence,votes``.
Shapes read JSON Lines ``{"task", "worker", "annotations": [...], "width"?, "height"?,
"weight"?}`` and write ``{"task", "annotations": [... with "score", "num_votes"]}``. No
database is touched.
"""

from __future__ import annotations

import csv
import json
import sys
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any

import numpy as np
from django.core.management.base import BaseCommand, CommandError, CommandParser

from qa.consensus import classification as cls
from qa.consensus.boxes import merge_boxes, merge_boxes_batch
from qa.consensus.keypoints import merge_keypoints
from qa.consensus.objects import Answer
from qa.consensus.polygons import merge_polygons
from qa.geometry import keypoint_sigmas
from tasks.annotations import AnnotationError, Schema, validate_annotations

KINDS = ("classification", "bbox", "polygon", "keypoints")
CLASSIFICATION_METHODS = ("auto", "majority_vote", "weighted_vote", "dawid_skene")
SHAPE_METHODS = ("auto", "merge", "em")
DEFAULT_QUORUM = 0.5


class Command(BaseCommand):
    help = "Run consensus on answers from another tool (CSV or JSON Lines); no database needed."
    requires_system_checks: list[str] = []
    requires_migrations_checks = False

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--kind", required=True, choices=KINDS)
        parser.add_argument(
            "--method",
            default="auto",
            help="classification: auto (Dawid-Skene from 200 answers on, majority vote "
            "before), majority_vote, dawid_skene; shapes: auto (bbox: em unless --quorum is "
            "given; polygon, keypoints: merge), merge (a fixed --quorum, 0.5 by default), em "
            "(bbox: a model of each worker learnt by EM over the whole input)",
        )
        parser.add_argument("--input", required=True, help="file to read, - for stdin")
        parser.add_argument("--output", required=True, help="file to write, - for stdout")
        parser.add_argument("--iou-threshold", type=float, default=0.5)
        parser.add_argument(
            "--quorum",
            type=float,
            default=None,
            help="keep an object marked by at least this weighted share of the answers "
            "(fixed-quorum merge; 0.5 when not given)",
        )
        parser.add_argument(
            "--keypoint-sigma", type=float, default=0.05, help="OKS sigma of non-COCO keypoints"
        )
        parser.add_argument(
            "--keypoint-names",
            default="",
            help="comma-separated keypoint names in order (COCO names get COCO sigmas)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        kind = options["kind"]
        quorum = options["quorum"]
        if not 0 < options["iou_threshold"] <= 1 or not (quorum is None or 0 < quorum <= 1):
            raise CommandError("--iou-threshold and --quorum must be in (0, 1].")
        with _open(options["input"], "r") as source, _open(options["output"], "w") as target:
            if kind == "classification":
                method = options["method"]
                if method not in CLASSIFICATION_METHODS:
                    choices = ", ".join(CLASSIFICATION_METHODS)
                    raise CommandError(f"--method for classification: {choices}.")
                count = classify(source, target, method, warn=self.stderr.write)
            else:
                method = options["method"]
                if method not in SHAPE_METHODS or (method == "em" and kind != "bbox"):
                    raise CommandError("--method for shapes: auto, merge; em for bbox only.")
                if method == "em" and quorum is not None:
                    raise CommandError("--method em has no quorum; leave --quorum out.")
                count = merge_shapes(source, target, kind, options)
        self.stderr.write(f"{count} tasks aggregated.\n")


@contextmanager
def _open(path: str, mode: str) -> Iterator[IO[str]]:
    if path == "-":
        yield sys.stdin if mode == "r" else sys.stdout
        return
    try:
        handle = open(path, mode, newline="", encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        raise CommandError(f"Cannot open {path}: {exc.strerror}.") from None
    with handle:
        yield handle


def classify(
    source: IO[str], target: IO[str], method: str, warn: Callable[[str], object] = print
) -> int:
    reader = csv.DictReader(source)
    if not reader.fieldnames or not {"task", "worker", "label"} <= set(reader.fieldnames):
        found = ",".join(reader.fieldnames or []) or "nothing"
        raise CommandError(
            "The CSV's first line must name its columns: task,worker,label (in any order, "
            f"other columns ignored); it has {found}."
        )
    rows = []
    for line, row in enumerate(reader, start=2):
        if not row["task"] or not row["worker"] or row["label"] in (None, ""):
            raise CommandError(f"Line {line}: task, worker and label must all be given.")
        rows.append((row["task"], row["worker"], row["label"]))
    if not rows:
        raise CommandError("No answers in the input.")
    if method == "dawid_skene" and len(rows) < cls.MIN_ANSWERS_FOR_DS:
        warn(
            f"Dawid-Skene on {len(rows)} answers: too few to learn each worker's confusion, so "
            "its confidences are overstated; --method auto uses majority vote below "
            f"{cls.MIN_ANSWERS_FOR_DS}.\n"
        )
    answers, tasks, _, labels = cls.encode(rows)
    result = cls.aggregate(answers, method=method)  # type: ignore[arg-type]
    writer = csv.writer(target, lineterminator="\n")
    writer.writerow(["task", "label", "confidence", "votes"])
    for i, task in enumerate(tasks):
        label = labels[int(result.label[i])]
        writer.writerow([task, label, f"{result.confidence[i]:.6f}", int(result.votes[i])])
    return len(tasks)


def merge_shapes(source: IO[str], target: IO[str], kind: str, options: dict[str, Any]) -> int:
    by_task: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for line, text in enumerate(source, start=1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CommandError(f"Line {line}: not JSON ({exc.msg}).") from None
        if not isinstance(row, dict) or "task" not in row or "worker" not in row:
            raise CommandError(f'Line {line}: each line is {{"task", "worker", "annotations"}}.')
        if not isinstance(row.get("annotations"), list):
            raise CommandError(f"Line {line}: annotations must be a list.")
        weight = row.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 < weight <= 1:
            raise CommandError(f"Line {line}: weight must be a number in (0, 1].")
        row["_line"] = line
        by_task[row["task"]].append(row)
    names = [n.strip() for n in options["keypoint_names"].split(",") if n.strip()]
    if kind == "bbox":
        # Boxes merge as one batch over every image: the per-image path costs more in Python
        # overhead than the merge itself on large inputs, and the worker model (em) learns
        # from all of them.
        tasks = list(by_task)
        crowds = [_crowd(by_task[task], kind, names)[0] for task in tasks]
        fixed = options["method"] == "merge" or options["quorum"] is not None
        batch = merge_boxes_batch(
            crowds,
            iou_threshold=options["iou_threshold"],
            quorum=_quorum(options),
            method="quorum" if fixed else "em",
        )
        for task, merged in zip(tasks, batch, strict=True):
            _write(target, task, merged)
        return len(tasks)
    for task, rows in by_task.items():
        crowd, (width, height), schema = _crowd(rows, kind, names)
        _write(target, task, _merge(kind, crowd, width, height, schema, options))
    return len(by_task)


def _quorum(options: dict[str, Any]) -> float:
    return DEFAULT_QUORUM if options["quorum"] is None else float(options["quorum"])


def _write(target: IO[str], task: Any, merged: list[Any]) -> None:
    target.write(json.dumps({"task": task, "annotations": [o.to_item() for o in merged]}))
    target.write("\n")


def _crowd(
    rows: list[dict[str, Any]], kind: str, names: list[str]
) -> tuple[list[Answer], tuple[int, int], Schema]:
    """One task's answers, validated (and clipped) against the image and the labels seen."""
    width, height = _size(rows, kind)
    labels = sorted(
        {
            item["label"]
            for r in rows
            for item in r["annotations"]
            if isinstance(item, dict) and isinstance(item.get("label"), str)
        }
    )
    counts = _keypoint_counts(rows) if kind == "keypoints" else {}
    schema = Schema(kind=kind, keypoints={
        label: names or [f"k{i}" for i in range(counts.get(label, 0))] for label in labels
    })  # fmt: skip
    crowd = []
    for r in rows:
        try:
            items = validate_annotations(
                r["annotations"], schema=schema, width=width, height=height
            )
        except AnnotationError as exc:
            raise CommandError(f"Line {r['_line']}: {exc}") from None
        crowd.append(Answer(r["worker"], float(r.get("weight", 1.0)), items))
    return crowd, (width, height), schema


def _size(rows: list[dict[str, Any]], kind: str) -> tuple[int, int]:
    """The image size given with the answers, or the extent of everything marked."""
    sizes = {(r.get("width"), r.get("height")) for r in rows if r.get("width")}
    if sizes:
        width, height = max(sizes, key=lambda s: (s[0] or 0) * (s[1] or 0))
        if isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0:
            return width, height
        raise CommandError("width and height must be positive integers.")
    extent = [0.0, 0.0]
    for r in rows:
        for item in r["annotations"]:
            for x, y in _points(item):
                extent = [max(extent[0], x), max(extent[1], y)]
    return int(np.ceil(extent[0])) + 1, int(np.ceil(extent[1])) + 1


def _points(item: Any) -> list[tuple[float, float]]:
    if not isinstance(item, dict):
        return []
    try:
        if "bbox" in item:
            x, y, w, h = (float(v) for v in item["bbox"])
            return [(x + w, y + h)]
        if "points" in item:
            return [(float(p[0]), float(p[1])) for p in item["points"]]
        if "keypoints" in item:
            return [(float(p[0]), float(p[1])) for p in item["keypoints"]]
    except (TypeError, ValueError, IndexError):
        return []  # validation reports it
    return []


def _keypoint_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in rows:
        for item in r["annotations"]:
            if isinstance(item, dict) and isinstance(item.get("keypoints"), list):
                counts.setdefault(str(item.get("label")), len(item["keypoints"]))
    return counts


def _merge(
    kind: str, crowd: list[Answer], width: int, height: int, schema: Schema, options: dict[str, Any]
) -> list[Any]:
    threshold, quorum = options["iou_threshold"], _quorum(options)
    if kind == "bbox":
        return merge_boxes(crowd, iou_threshold=threshold, quorum=quorum)
    if kind == "polygon":
        return merge_polygons(
            crowd, width=width, height=height, iou_threshold=threshold, quorum=quorum
        )
    sigmas = {
        label: keypoint_sigmas(list(names), default=options["keypoint_sigma"])
        for label, names in schema.keypoints.items()
    }
    return merge_keypoints(crowd, sigmas=sigmas, oks_threshold=threshold, quorum=quorum)
