"""A generated crowd painting masks, for the mask consensus tests: scenes of blobs (some
touching), and workers who are careful, who paint with a broad brush, or who spam."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from pycocotools import mask as coco_mask
from scipy import ndimage

from qa.geometry import mask_iou, match

Mask = npt.NDArray[np.uint8]
LABELS = ("car", "person")


def rle(mask: npt.NDArray[Any]) -> dict:
    encoded = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in encoded["size"]], "counts": encoded["counts"].decode()}


def ellipse(width: int, height: int, cx: float, cy: float, rx: float, ry: float) -> Mask:
    y, x = np.mgrid[0:height, 0:width]
    return ((((x + 0.5 - cx) / rx) ** 2 + ((y + 0.5 - cy) / ry) ** 2) <= 1.0).astype(np.uint8)


@dataclass(frozen=True)
class Scene:
    width: int
    height: int
    objects: list[tuple[str, Mask]]


def scene(rng: np.random.Generator, width: int = 96, height: int = 72) -> Scene:
    """Two to four blobs; the second sits against the first, so the two touch."""
    objects: list[tuple[str, Mask]] = []
    taken = np.zeros((height, width), dtype=np.uint8)
    for k in range(int(rng.integers(2, 5))):
        for _ in range(50):
            rx, ry = rng.uniform(7, 14), rng.uniform(7, 14)
            if k == 1:
                ((_, first),) = objects[:1]
                ys, xs = np.nonzero(first)
                cx, cy = xs.max() + 1 + rx, float(ys.mean())
            else:
                cx, cy = rng.uniform(rx, width - rx), rng.uniform(ry, height - ry)
            shape = ellipse(width, height, cx, cy, rx, ry) & (1 - taken)
            if shape.sum() > 60 and (shape & taken).sum() == 0:
                break
        objects.append((LABELS[int(rng.integers(len(LABELS)))], shape))
        taken |= shape
    return Scene(width, height, objects)


def _ragged(rng: np.random.Generator, mask: Mask, noise_px: float) -> Mask:
    """The mask with its edge moved by smooth noise of about ``noise_px`` pixels."""
    inside = ndimage.distance_transform_edt(mask)
    outside = ndimage.distance_transform_edt(1 - mask)
    signed = np.where(mask > 0, -inside + 0.5, outside - 0.5)
    field = ndimage.gaussian_filter(rng.normal(size=mask.shape), 3.0)
    field *= noise_px / max(float(field.std()), 1e-9)
    return (signed + field < 0).astype(np.uint8)


def careful(rng: np.random.Generator, truth: Scene) -> list[dict]:
    """Misses an object now and then; traces the edge within a pixel or so."""
    return [
        {"label": label, "rle": rle(_ragged(rng, mask, 0.7))}
        for label, mask in truth.objects
        if rng.random() < 0.8
    ]


def broad_brush(rng: np.random.Generator, truth: Scene) -> list[dict]:
    """Marks nearly everything, painting several pixels over every edge."""
    out = []
    for label, mask in truth.objects:
        if rng.random() < 0.95:
            grown = ndimage.binary_dilation(mask, iterations=int(rng.integers(4, 7)))
            out.append({"label": label, "rle": rle(_ragged(rng, grown.astype(np.uint8), 1.0))})
    return out


def spammer(rng: np.random.Generator, truth: Scene) -> list[dict]:
    """Random blobs with random labels, wherever."""
    out = []
    for _ in range(int(rng.integers(1, 4))):
        rx, ry = rng.uniform(6, 16), rng.uniform(6, 16)
        cx, cy = rng.uniform(0, truth.width), rng.uniform(0, truth.height)
        blob = ellipse(truth.width, truth.height, cx, cy, rx, ry)
        if blob.any():
            out.append({"label": LABELS[int(rng.integers(len(LABELS)))], "rle": rle(blob)})
    return out


WORKERS = {"c1": careful, "c2": careful, "c3": careful, "brush": broad_brush, "spam": spammer}


def crowd(seed: int, images: int) -> tuple[list[Scene], list[list[tuple[str, float, list[dict]]]]]:
    rng = np.random.default_rng(seed)
    scenes = [scene(rng) for _ in range(images)]
    crowds = [[(w, 1.0, paint(rng, s)) for w, paint in WORKERS.items()] for s in scenes]
    return scenes, crowds


def quality(truth: Scene, found: list[dict]) -> float:
    """Panoptic-style segmentation quality: the IoU of same-label matches (at IoU 0.5)
    summed, over the larger of the two object counts (1.0 when both are empty)."""
    if not truth.objects and not found:
        return 1.0
    truth_rles = [rle(mask) for _, mask in truth.objects]
    iou = mask_iou(truth_rles, [item["rle"] for item in found])
    same = np.array(
        [[label == item["label"] for item in found] for label, _ in truth.objects], dtype=bool
    ).reshape(iou.shape)
    matched = match(np.where(same, iou, 0.0), 0.5)
    return sum(p.similarity for p in matched.pairs) / max(len(truth.objects), len(found))
