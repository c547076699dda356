"""Restrict answers to the region (tile) of a task before comparing them. Pure.

A task may be one tile of a large image, while gold answers cover the whole image. A worker
marks what they see in the tile, so an object cut by the tile's edge is marked as its visible
part. Before scoring, both sides are clipped to the region; a gold object with less than
``MIN_VISIBLE`` of its area inside is ambiguous (the worker may or may not mark a sliver),
so it neither counts as missed nor makes the worker's box on it an extra.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tasks.tiling import clip_polygon, polygon_area

Region = Sequence[float]  # [x, y, width, height]
Item = dict[str, Any]

MIN_VISIBLE = 0.5


def _clip_box(box: Sequence[float], region: Region) -> list[float]:
    rx, ry, rw, rh = region
    x0, y0 = max(box[0], rx), max(box[1], ry)
    x1, y1 = min(box[0] + box[2], rx + rw), min(box[1] + box[3], ry + rh)
    return [x0, y0, max(0.0, x1 - x0), max(0.0, y1 - y0)]


def _area(box: Sequence[float]) -> float:
    return float(box[2] * box[3])


def _bounds(points: Sequence[Sequence[float]]) -> list[float]:
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]


def _box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    inter = _area(_clip_box(a, b))
    union = _area(a) + _area(b) - inter
    return inter / union if union > 0 else 0.0


def _inside(point: Sequence[float], region: Region) -> bool:
    rx, ry, rw, rh = region
    return rx <= point[0] <= rx + rw and ry <= point[1] <= ry + rh


def restrict(
    kind: str, gold: list[Item], answer: list[Item], region: Region, *, image_size: Region
) -> tuple[list[Item], list[Item]]:
    """Gold and answer items as seen through the region. A region covering the whole image
    changes nothing."""
    if kind == "classification" or list(region) == list(image_size):
        return gold, answer
    if kind == "keypoints":
        return _restrict_keypoints(gold, answer, region)
    clip, measure, bounds = _shape_ops(kind, region)
    kept, ignored = [], []
    for item in gold:
        clipped = clip(item)
        whole = measure(item)
        if clipped is not None and whole > 0 and measure(clipped) >= MIN_VISIBLE * whole:
            kept.append(clipped)
        elif clipped is not None:
            ignored.append(bounds(clipped))
    seen = []
    for item in answer:
        clipped = clip(item)
        if clipped is None or measure(clipped) <= 0:
            continue
        if any(_box_iou(bounds(clipped), box) >= 0.5 for box in ignored):
            continue
        seen.append(clipped)
    return kept, seen


def clip_mask(rle: dict[str, Any], region: Region) -> dict[str, Any]:
    """A COCO RLE (counts a string or bytes) cut to the region's rectangle, counts a string."""
    from qa.consensus.masks import clip_rle

    cut = clip_rle(rle, [round(v) for v in region])
    return {"size": cut["size"], "counts": cut["counts"].decode("ascii")}


def _mask_ops(region: Region) -> tuple[Any, Any, Any]:
    from pycocotools import mask as coco_mask

    def as_coco(rle: dict[str, Any]) -> dict[str, Any]:
        counts = rle["counts"]
        return {
            "size": list(rle["size"]),
            "counts": counts.encode() if isinstance(counts, str) else counts,
        }

    def clip(item: Item) -> Item | None:
        cut = clip_mask(item["rle"], region)
        return {**item, "rle": cut} if coco_mask.area(as_coco(cut)) else None

    def measure(item: Item) -> float:
        return float(coco_mask.area(as_coco(item["rle"])))

    def bounds(item: Item) -> list[float]:
        return [float(v) for v in coco_mask.toBbox(as_coco(item["rle"]))]

    return clip, measure, bounds


def _shape_ops(kind: str, region: Region) -> tuple[Any, Any, Any]:
    if kind == "mask":
        return _mask_ops(region)
    if kind == "bbox":

        def clip_box(item: Item) -> Item | None:
            box = _clip_box(item["bbox"], region)
            return {**item, "bbox": box} if _area(box) > 0 else None

        return clip_box, lambda item: _area(item["bbox"]), lambda item: item["bbox"]

    def clip_poly(item: Item) -> Item | None:
        points = clip_polygon(item["points"], region)
        return {**item, "points": points} if len(points) >= 3 else None

    return (
        clip_poly,
        lambda item: polygon_area(item["points"]),
        lambda item: _bounds(item["points"]),
    )


def _restrict_keypoints(
    gold: list[Item], answer: list[Item], region: Region
) -> tuple[list[Item], list[Item]]:
    def clip(item: Item) -> tuple[Item, int, int]:
        points, labelled, inside = [], 0, 0
        for x, y, v in item["keypoints"]:
            if v > 0:
                labelled += 1
                if _inside((x, y), region):
                    inside += 1
                else:
                    v = 0
            points.append([x, y, v])
        return {**item, "keypoints": points}, labelled, inside

    kept = []
    for item in gold:
        clipped, labelled, inside = clip(item)
        if labelled and inside >= MIN_VISIBLE * labelled:
            kept.append(clipped)
    seen = [c for c, _, inside in map(clip, answer) if inside]
    return kept, seen
