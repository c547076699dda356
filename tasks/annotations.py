"""Validation of annotation payloads, shared by gold answers and worker submissions. Pure.

Returns a normalised copy (floats, known keys only) or raises :class:`AnnotationError` with
one message per problem, keyed like ``annotations[2].bbox``, that a person can act on.
Coordinates are pixels of the full upright image, origin top-left.

An object cut by the image's edge is common, and a box drawn to it often reaches a little past
it: coordinates within ``edge_tolerance`` of the image are clipped to it (the result counts
the objects clipped), and only those further out are refused.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MAX_ITEMS = 2000
# How far past the edge a coordinate may lie and still be clipped: a few pixels, more on a
# large image (1% of its longer side).
EDGE_TOLERANCE_PX = 4.0
EDGE_TOLERANCE_SHARE = 0.01
MAX_POLYGON_POINTS = 5000
# Masks: at most this many a answer, and a counts string at most this long (a mask of a
# 100-megapixel image with a busy outline fits in well under a megabyte).
MAX_MASKS = 200
MAX_RLE_CHARS = 1_000_000
MASK_MODES = ("instance", "semantic")
VISIBILITY = (0, 1, 2)  # COCO: 0 not labelled/absent, 1 labelled but occluded, 2 visible


class AnnotationError(ValueError):
    def __init__(self, errors: dict[str, list[str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))


@dataclass(frozen=True)
class Schema:
    """What a project accepts: its kind, label names, and per label its keypoint names.

    ``mask_mode`` matters to masks only: ``instance`` takes any number of masks a label,
    overlapping or not; ``semantic`` gives each pixel at most one label, so the masks of one
    answer must not overlap.
    """

    kind: str
    keypoints: Mapping[str, Sequence[str]]  # label name -> keypoint names (empty list if none)
    mask_mode: str = "instance"

    @property
    def labels(self) -> Sequence[str]:
        return list(self.keypoints)


def edge_tolerance(width: int, height: int) -> float:
    return max(EDGE_TOLERANCE_PX, EDGE_TOLERANCE_SHARE * max(width, height))


class Annotations(list[dict[str, Any]]):
    """Validated annotations, and how many objects had coordinates clipped to the image."""

    clipped: int = 0


_PLAIN = (int, float)


def _number(value: Any) -> float | None:
    # bool is an int in Python, but `true` is not a coordinate.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


class _Checker:
    def __init__(self, schema: Schema, width: int, height: int) -> None:
        self.schema, self.width, self.height = schema, width, height
        self.tolerance = edge_tolerance(width, height)
        self.errors: dict[str, list[str]] = {}
        self.clipped = False  # whether the item being checked had a coordinate clipped
        # A task's tile [x, y, w, h], which its masks must lie inside; None: the whole image.
        self.region: tuple[int, ...] | None = None

    def _clip(self, value: float, size: int) -> float | None:
        """The coordinate inside [0, size], or None when it lies too far out to clip."""
        if 0 <= value <= size:
            return value
        if -self.tolerance <= value <= size + self.tolerance:
            self.clipped = True
            return min(max(value, 0.0), float(size))
        return None

    def fail(self, where: str, message: str) -> None:
        self.errors.setdefault(where, []).append(message)

    def label(self, item: Mapping[str, Any], where: str) -> str | None:
        label = item.get("label")
        if not isinstance(label, str):
            self.fail(f"{where}.label", "Give the label as a string.")
            return None
        if label not in self.schema.keypoints:
            self.fail(
                f"{where}.label",
                f"Unknown label {label!r}; this project's labels are: "
                f"{', '.join(self.schema.labels)}.",
            )
            return None
        return label

    def point(self, raw: Any, where: str) -> tuple[float, float] | None:
        if not isinstance(raw, list | tuple) or len(raw) < 2:
            self.fail(where, "A point is [x, y].")
            return None
        x, y = _number(raw[0]), _number(raw[1])
        if x is None or y is None:
            self.fail(where, "Point coordinates must be finite numbers.")
            return None
        cx, cy = self._clip(x, self.width), self._clip(y, self.height)
        if cx is None or cy is None:
            self.fail(
                where,
                f"Point ({x:g}, {y:g}) is outside the {self.width}x{self.height} image (by more "
                f"than the {self.tolerance:g} pixels clipped to its edge).",
            )
            return None
        return cx, cy

    def bbox(self, item: Mapping[str, Any], where: str) -> list[float] | None:
        raw = item.get("bbox")
        # The common case in a few operations (an import checks millions of boxes): four
        # plain numbers (not bools), the box inside the image, nothing to clip. NaN and
        # infinities fail a comparison and take the full path, as anything else does.
        if type(raw) is list and len(raw) == 4:
            x, y, w, h = raw
            if type(x) in _PLAIN and type(y) in _PLAIN and type(w) in _PLAIN and type(h) in _PLAIN:
                right, bottom = x + w, y + h
                if 0 <= x < right <= self.width and 0 <= y < bottom <= self.height and w > 0 < h:
                    return [float(x), float(y), float(right - x), float(bottom - y)]
        if not isinstance(raw, list | tuple) or len(raw) != 4:
            self.fail(f"{where}.bbox", "A box is [x, y, width, height].")
            return None
        values = [_number(v) for v in raw]
        if any(v is None for v in values):
            self.fail(f"{where}.bbox", "Box values must be finite numbers.")
            return None
        x, y, w, h = (float(v) for v in values)  # type: ignore[arg-type]
        if w <= 0 or h <= 0:
            self.fail(f"{where}.bbox", "A box needs a positive width and height.")
            return None
        left, top = self._clip(x, self.width), self._clip(y, self.height)
        right, bottom = self._clip(x + w, self.width), self._clip(y + h, self.height)
        if left is None or top is None or right is None or bottom is None:
            self.fail(
                f"{where}.bbox",
                f"Box [{x:g}, {y:g}, {w:g}, {h:g}] extends outside the "
                f"{self.width}x{self.height} image (by more than the {self.tolerance:g} pixels "
                "clipped to its edge).",
            )
            return None
        if right <= left or bottom <= top:
            self.fail(f"{where}.bbox", "The box lies outside the image, along its edge.")
            return None
        return [left, top, right - left, bottom - top]

    def polygon(self, item: Mapping[str, Any], where: str) -> list[list[float]] | None:
        raw = item.get("points")
        if not isinstance(raw, list | tuple):
            self.fail(f"{where}.points", "A polygon is a list of [x, y] points.")
            return None
        if len(raw) < 3:
            self.fail(f"{where}.points", "A polygon needs at least 3 points.")
            return None
        if len(raw) > MAX_POLYGON_POINTS:
            self.fail(f"{where}.points", f"A polygon may have at most {MAX_POLYGON_POINTS} points.")
            return None
        points = [self.point(p, f"{where}.points[{i}]") for i, p in enumerate(raw)]
        if any(p is None for p in points):
            return None
        xs = [p[0] for p in points]  # type: ignore[index]
        ys = [p[1] for p in points]  # type: ignore[index]
        area = 0.5 * abs(sum(xs[i] * ys[i - 1] - xs[i - 1] * ys[i] for i in range(len(points))))
        if area <= 0:
            self.fail(f"{where}.points", "The polygon encloses no area.")
            return None
        return [[x, y] for x, y in zip(xs, ys, strict=True)]

    def keypoints(
        self, item: Mapping[str, Any], label: str, where: str
    ) -> list[list[float]] | None:
        names = self.schema.keypoints[label]
        raw = item.get("keypoints")
        if not isinstance(raw, list | tuple):
            self.fail(f"{where}.keypoints", "Keypoints are a list of [x, y, v].")
            return None
        if len(raw) != len(names):
            self.fail(
                f"{where}.keypoints",
                f"Label {label!r} has {len(names)} keypoints ({', '.join(names)}); got {len(raw)}.",
            )
            return None
        out: list[list[float]] = []
        for i, point in enumerate(raw):
            spot = f"{where}.keypoints[{i}]"
            if not isinstance(point, list | tuple) or len(point) != 3:
                self.fail(spot, "A keypoint is [x, y, v].")
                return None
            v = point[2]
            if isinstance(v, bool) or v not in VISIBILITY:
                self.fail(spot, "Visibility v must be 0 (absent), 1 (occluded) or 2 (visible).")
                return None
            if v == 0:
                out.append([0.0, 0.0, 0])  # COCO: an absent keypoint has no position
                continue
            xy = self.point(point[:2], spot)
            if xy is None:
                return None
            out.append([xy[0], xy[1], int(v)])
        if all(p[2] == 0 for p in out):
            self.fail(
                f"{where}.keypoints", "Mark at least one keypoint, or leave the instance out."
            )
            return None
        return out

    def mask(self, item: Mapping[str, Any], where: str) -> dict[str, Any] | None:
        raw = item.get("rle")
        spot = f"{where}.rle"
        if not isinstance(raw, dict) or set(raw) != {"size", "counts"}:
            self.fail(spot, 'A mask is {"size": [height, width], "counts": "..."}.')
            return None
        size, counts = raw["size"], raw["counts"]
        if (
            not isinstance(size, list | tuple)
            or len(size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in size)
        ):
            self.fail(f"{spot}.size", "The size is [height, width] in whole pixels.")
            return None
        if list(size) != [self.height, self.width]:
            self.fail(
                f"{spot}.size",
                f"The mask is {size[0]}x{size[1]} (height x width); the image is "
                f"{self.height}x{self.width}. Encode a mask of the full image.",
            )
            return None
        if not isinstance(counts, str):
            self.fail(
                f"{spot}.counts",
                "Give the counts as the string pycocotools.mask.encode writes (bytes decoded "
                "as ASCII), not a list.",
            )
            return None
        if len(counts) > MAX_RLE_CHARS:
            self.fail(f"{spot}.counts", f"The counts may be at most {MAX_RLE_CHARS} characters.")
            return None
        runs = rle_runs(counts)
        if runs is None:
            self.fail(f"{spot}.counts", "The counts are not a COCO compressed RLE string.")
            return None
        pixels = self.width * self.height
        if sum(runs) != pixels:
            self.fail(
                f"{spot}.counts",
                f"The runs cover {sum(runs)} pixels; a {self.height}x{self.width} mask has "
                f"{pixels}.",
            )
            return None
        if not any(runs[1::2]):
            self.fail(spot, "The mask is empty; leave an empty mask out of the answer.")
            return None
        if self.region is not None and not self._inside_region(counts):
            x, y, w, h = self.region
            self.fail(
                spot,
                f"The mask marks pixels outside this task's region [{x}, {y}, {w}, {h}] (a tile "
                "of the image); paint inside the region only, in full-image coordinates.",
            )
            return None
        return {"size": [self.height, self.width], "counts": counts}

    def _inside_region(self, counts: str) -> bool:
        from pycocotools import mask as coco_mask

        assert self.region is not None
        x, y, w, h = self.region
        left, top, width, height = coco_mask.toBbox(
            {"size": [self.height, self.width], "counts": counts.encode("ascii")}
        ).tolist()
        return left >= x and top >= y and left + width <= x + w and top + height <= y + h

    def disjoint(self, items: Sequence[Mapping[str, Any]]) -> None:
        """Semantic masks: no pixel may carry two labels (nor be marked twice)."""
        if len(items) < 2:
            return
        # Imported here: crowd-aggregate reads its input before it loads numpy (see there).
        from pycocotools import mask as coco_mask

        rles = [dict(item["rle"]) for item in items]
        overlap = coco_mask.iou(rles, rles, [0] * len(rles))
        for i in range(len(rles)):
            for j in range(i + 1, len(rles)):
                if overlap[i, j] <= 0:
                    continue
                shared = int(coco_mask.area(coco_mask.merge([rles[i], rles[j]], intersect=True)))
                self.fail(
                    f"annotations[{j}].rle",
                    f"This mask overlaps annotations[{i}] on {shared} "
                    f"pixel{'' if shared == 1 else 's'}; in a semantic project each pixel has "
                    "at most one label. Erase the overlap from one of them.",
                )


def rle_runs(counts: str) -> list[int] | None:
    """The run lengths of a COCO compressed RLE counts string (as ``pycocotools.mask.encode``
    writes it: runs alternate background and mask, from background, in column-major order),
    or None when the string is not one: a character outside ``0``..``o``, a run cut off at
    the end, or a negative run."""
    runs: list[int] = []
    value = shift = 0
    for char in counts:
        code = ord(char) - 48
        if not 0 <= code < 64:
            return None
        value |= (code & 0x1F) << shift
        shift += 5
        if code & 0x20:
            continue
        if code & 0x10:
            value -= 1 << shift  # the group's top bit is the sign
        if len(runs) > 2:
            value += runs[-2]  # after the first two, each run is stored as a difference
        if value < 0:
            return None
        runs.append(value)
        value = shift = 0
    if shift:
        return None
    return runs


def validate_annotations(
    payload: Any,
    *,
    schema: Schema,
    width: int,
    height: int,
    region: Sequence[int] | None = None,
) -> Annotations:
    """Check ``payload`` (the ``annotations`` list) against the project's schema and the image;
    coordinates a little past the edge are clipped (``clipped`` counts those objects). With
    the ``region`` ``[x, y, w, h]`` of a task on a tile, a mask must lie inside it."""
    if not isinstance(payload, list):
        raise AnnotationError({"annotations": ["Give the annotations as a list."]})
    if len(payload) > MAX_ITEMS:
        raise AnnotationError({"annotations": [f"At most {MAX_ITEMS} annotations per answer."]})
    if schema.kind == "mask" and len(payload) > MAX_MASKS:
        raise AnnotationError({"annotations": [f"At most {MAX_MASKS} masks per answer."]})
    if schema.kind == "classification" and len(payload) != 1:
        raise AnnotationError(
            {"annotations": ['A classification answer has exactly one item: {"label": ...}.']}
        )
    check = _Checker(schema, width, height)
    if region is not None and list(region) != [0, 0, width, height]:
        check.region = tuple(int(v) for v in region)
    out = Annotations()
    for index, item in enumerate(payload):
        where = f"annotations[{index}]"
        check.clipped = False
        if not isinstance(item, dict):
            check.fail(where, "Each annotation is a JSON object.")
            continue
        label = check.label(item, where)
        if label is None:
            continue
        if schema.kind == "classification":
            out.append({"label": label})
        elif schema.kind == "bbox":
            box = check.bbox(item, where)
            if box is not None:
                out.append({"label": label, "bbox": box})
        elif schema.kind == "polygon":
            points = check.polygon(item, where)
            if points is not None:
                out.append({"label": label, "points": points})
        elif schema.kind == "keypoints":
            keypoints = check.keypoints(item, label, where)
            if keypoints is not None:
                out.append({"label": label, "keypoints": keypoints})
        elif schema.kind == "mask":
            rle = check.mask(item, where)
            if rle is not None:
                out.append({"label": label, "rle": rle})
        else:
            raise ValueError(f"unknown annotation kind {schema.kind!r}")
        out.clipped += check.clipped
    if schema.kind == "mask" and schema.mask_mode == "semantic" and not check.errors:
        check.disjoint(out)
    if check.errors:
        raise AnnotationError(check.errors)
    return out
