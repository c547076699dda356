"""Geometry of annotations: similarity of shapes and one-to-one matching. Pure (numpy, scipy,
pycocotools; no Django).

Every similarity is a matrix whose rows are the first argument's items and whose columns are
the second's, and every function accepts empty inputs (a matrix with a zero dimension).
Coordinates are pixels of the full upright image, origin top-left, boxes COCO ``[x, y, w, h]``.

- Boxes: intersection over union, computed exactly as ``pycocotools.mask.iou`` does for boxes.
- Polygons: intersection over union of their masks, rasterised by pycocotools into run-length
  encodings (RLE) at the image's size, so two polygons are compared pixel by pixel the way
  COCO's evaluation compares segmentations.
- Masks: intersection over union of their COCO RLEs (``{"size", "counts"}``), by pycocotools
  without decoding them.
- Keypoints: object keypoint similarity (OKS) as defined by COCO: for each keypoint the
  reference marked, ``exp(-d^2 / (2 s^2 k^2))`` with ``d`` the distance between the two
  positions, ``s^2`` the reference's area and ``k = 2 sigma`` the keypoint's tolerance; OKS is
  the mean over those keypoints.

:func:`match` pairs rows with columns one to one, maximising the total similarity (the
Hungarian method, not a greedy pass), and keeps pairs at or above a threshold.
:func:`match_annotations` does this for annotation items: first within each label, then across
labels for what is left, so that a shape drawn in the right place with the wrong label is told
apart from a missed shape plus an extra one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
Item = Mapping[str, Any]
Polygon = Sequence[Sequence[float]]
Rle = dict[str, Any]

SHAPE_KINDS = ("bbox", "polygon", "keypoints", "mask")

# Boxes


def _boxes(boxes: npt.ArrayLike) -> FloatArray:
    array = np.asarray(boxes, dtype=np.float64)
    if array.size == 0:
        return np.zeros((0, 4))
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"expected boxes of shape (n, 4), got {array.shape}")
    return array


def box_iou(a: npt.ArrayLike, b: npt.ArrayLike) -> FloatArray:
    """IoU of every box of ``a`` (N, 4) with every box of ``b`` (M, 4), COCO ``[x, y, w, h]``.

    Boxes that do not overlap, including boxes of zero area, have IoU 0.
    """
    rows, cols = _boxes(a), _boxes(b)
    ax, ay, aw, ah = (rows[:, i, None] for i in range(4))
    bx, by, bw, bh = (cols[None, :, i] for i in range(4))
    inter_w = np.minimum(ax + aw, bx + bw) - np.maximum(ax, bx)
    inter_h = np.minimum(ay + ah, by + bh) - np.maximum(ay, by)
    overlaps = (inter_w > 0) & (inter_h > 0)
    inter = np.where(overlaps, inter_w * inter_h, 0.0)
    # Same order of operations as pycocotools, so results agree to the last bit or two.
    union = aw * ah + bw * bh - inter
    out = np.zeros(inter.shape)
    np.divide(inter, union, out=out, where=overlaps)
    return out


# Polygons


def polygons_to_rles(polygons: Sequence[Polygon], width: int, height: int) -> list[Rle]:
    """Rasterise polygons (each a list of at least three ``[x, y]`` points) into COCO RLEs."""
    if not polygons:
        return []
    flat = [np.asarray(points, dtype=np.float64).reshape(-1) for points in polygons]
    for index, coords in enumerate(flat):
        # pycocotools reads a list of exactly four numbers as a box, and fewer as nothing.
        if coords.size < 6 or coords.size % 2:
            raise ValueError(f"polygon {index} needs at least 3 [x, y] points")
    from pycocotools import mask as coco_mask

    rles: list[Rle] = coco_mask.frPyObjects([c.tolist() for c in flat], height, width)
    return rles


def mask_iou(rles_a: Sequence[Rle], rles_b: Sequence[Rle]) -> FloatArray:
    """IoU of every mask of ``rles_a`` with every mask of ``rles_b``, as an (N, M) matrix."""
    if not rles_a or not rles_b:
        return np.zeros((len(rles_a), len(rles_b)))
    from pycocotools import mask as coco_mask

    ious = coco_mask.iou(list(rles_a), list(rles_b), [0] * len(rles_b))
    return np.nan_to_num(np.asarray(ious, dtype=np.float64).reshape(len(rles_a), len(rles_b)))


def polygon_iou(
    polys_a: Sequence[Polygon], polys_b: Sequence[Polygon], width: int, height: int
) -> FloatArray:
    """Mask IoU of every polygon of ``polys_a`` with every polygon of ``polys_b``."""
    return mask_iou(
        polygons_to_rles(polys_a, width, height), polygons_to_rles(polys_b, width, height)
    )


# Keypoints

COCO_KEYPOINT_SIGMAS: dict[str, float] = {
    "nose": 0.026,
    "left_eye": 0.025,
    "right_eye": 0.025,
    "left_ear": 0.035,
    "right_ear": 0.035,
    "left_shoulder": 0.079,
    "right_shoulder": 0.079,
    "left_elbow": 0.072,
    "right_elbow": 0.072,
    "left_wrist": 0.062,
    "right_wrist": 0.062,
    "left_hip": 0.107,
    "right_hip": 0.107,
    "left_knee": 0.087,
    "right_knee": 0.087,
    "left_ankle": 0.089,
    "right_ankle": 0.089,
}


def keypoint_sigmas(names: Iterable[str], default: float = 0.05) -> FloatArray:
    """Per keypoint tolerance: COCO's sigma for a COCO person keypoint name, else ``default``."""
    return np.array([COCO_KEYPOINT_SIGMAS.get(name, default) for name in names], dtype=np.float64)


# The smallest area an instance's keypoints stand for: COCO's bound of a small object (32 x 32
# pixels). A single point, or points on a line, span no area, and OKS at scale 0 would accept
# only the exact pixel; at this floor a click 3 pixels off still scores 0.64 at sigma 0.05.
MIN_KEYPOINT_AREA = 32.0 * 32.0


def keypoint_area(kps: npt.ArrayLike) -> float:
    """Area of the bounding box of an instance's labelled (v > 0) keypoints, (K, 3) ``x, y, v``,
    at least ``MIN_KEYPOINT_AREA``; 0 when nothing is labelled.

    Stands in for the object's area (the OKS scale) when no segmentation gives one.
    """
    points = np.asarray(kps, dtype=np.float64).reshape(-1, 3)
    labelled = points[points[:, 2] > 0, :2]
    if len(labelled) == 0:
        return 0.0
    extent = labelled.max(axis=0) - labelled.min(axis=0)
    return max(float(extent[0] * extent[1]), MIN_KEYPOINT_AREA)


def _instances(kps: npt.ArrayLike, k: int) -> FloatArray:
    array = np.asarray(kps, dtype=np.float64)
    if array.size == 0:
        return np.zeros((0, k, 3))
    if array.ndim != 3 or array.shape[1:] != (k, 3):
        raise ValueError(f"expected keypoints of shape (n, {k}, 3), got {array.shape}")
    return array


def oks(
    a: npt.ArrayLike, b: npt.ArrayLike, sigmas: npt.ArrayLike, areas: npt.ArrayLike
) -> FloatArray:
    """OKS of every candidate instance of ``a`` (N, K, 3) with every reference of ``b`` (M, K, 3).

    ``sigmas`` (K,) are the keypoints' tolerances and ``areas`` (M,) the references' areas.
    Only keypoints the reference labelled (v > 0) count; a reference with none scores 0.
    A keypoint the candidate left unlabelled (v = 0) scores 0 wherever its stored position is
    (COCO's detections carry no visibility; here an absent point must not land on a hit).
    """
    tolerance = (2 * np.asarray(sigmas, dtype=np.float64).reshape(-1)) ** 2
    k = len(tolerance)
    cand, ref = _instances(a, k), _instances(b, k)
    scale = np.asarray(areas, dtype=np.float64).reshape(-1)
    if len(scale) != len(ref):
        raise ValueError(f"expected {len(ref)} areas, got {len(scale)}")
    if len(cand) == 0 or len(ref) == 0:
        return np.zeros((len(cand), len(ref)))
    squared = ((cand[:, None, :, :2] - ref[None, :, :, :2]) ** 2).sum(axis=-1)  # (N, M, K)
    # COCO adds machine epsilon so a reference of zero area is a hit only at distance 0.
    exponent = squared / tolerance / (scale[None, :, None] + np.spacing(1)) / 2
    counted = (ref[None, :, :, 2] > 0) & (cand[:, None, :, 2] > 0)
    similarity = np.where(counted, np.exp(-exponent), 0.0).sum(axis=-1)
    labelled = (ref[:, :, 2] > 0).sum(axis=-1)  # (M,)
    out = np.zeros(similarity.shape)
    np.divide(similarity, labelled[None, :], out=out, where=labelled[None, :] > 0)
    return out


# Matching


class Pair(NamedTuple):
    row: int
    col: int
    similarity: float


@dataclass(frozen=True)
class Match:
    """One-to-one pairs of rows and columns, and the rows and columns left over."""

    pairs: tuple[Pair, ...]
    unmatched_rows: tuple[int, ...]
    unmatched_cols: tuple[int, ...]


def match(similarity: npt.ArrayLike, threshold: float) -> Match:
    """Pair rows with columns one to one, maximising the total similarity of the pairs kept.

    Only pairs with similarity >= ``threshold`` are kept. Entries below the threshold are
    zeroed before the assignment, so the optimum never spends a row on a pair it then drops.
    """
    matrix = np.nan_to_num(np.asarray(similarity, dtype=np.float64))
    if matrix.ndim != 2:
        raise ValueError(f"expected a 2-d similarity matrix, got shape {matrix.shape}")
    n_rows, n_cols = matrix.shape
    pairs: list[Pair] = []
    if n_rows and n_cols:
        # Imported here: scipy.optimize takes most of a second to load, and a box merge that
        # never meets an ambiguous match (the command-line tool's usual case) never needs it.
        from scipy.optimize import linear_sum_assignment

        eligible = np.where(matrix >= threshold, matrix, 0.0)
        rows, cols = linear_sum_assignment(eligible, maximize=True)
        pairs = [
            Pair(int(i), int(j), float(matrix[i, j]))
            for i, j in zip(rows, cols, strict=True)
            if matrix[i, j] >= threshold
        ]
    used_rows = {p.row for p in pairs}
    used_cols = {p.col for p in pairs}
    return Match(
        pairs=tuple(pairs),
        unmatched_rows=tuple(i for i in range(n_rows) if i not in used_rows),
        unmatched_cols=tuple(j for j in range(n_cols) if j not in used_cols),
    )


class MatchedPair(NamedTuple):
    ref: int
    cand: int
    similarity: float


class LabelMismatch(NamedTuple):
    ref: int
    cand: int
    similarity: float
    ref_label: str
    cand_label: str


@dataclass(frozen=True)
class AnnotationMatch:
    """How a candidate's items pair with a reference's (indices into the two lists)."""

    matches: tuple[MatchedPair, ...]
    label_mismatches: tuple[LabelMismatch, ...]
    misses: tuple[int, ...]
    extras: tuple[int, ...]


def _keypoint_similarity(
    reference: Sequence[Item],
    candidate: Sequence[Item],
    sigmas: Mapping[str, npt.ArrayLike],
) -> FloatArray:
    """OKS, rows reference and columns candidate, one block per (reference label, candidate label).

    Each block is scored with the reference label's sigmas; instances of labels with different
    numbers of keypoints are not comparable and score 0.
    """
    out = np.zeros((len(reference), len(candidate)))
    ref_by_label, cand_by_label = _by_label(reference), _by_label(candidate)
    for ref_label, ref_rows in ref_by_label.items():
        if ref_label not in sigmas:
            raise ValueError(f"no keypoint sigmas for label {ref_label!r}")
        label_sigmas = np.asarray(sigmas[ref_label], dtype=np.float64)
        refs = np.array([reference[i]["keypoints"] for i in ref_rows], dtype=np.float64)
        areas = [keypoint_area(kps) for kps in refs]
        for cand_cols in cand_by_label.values():
            cands = np.array([candidate[j]["keypoints"] for j in cand_cols], dtype=np.float64)
            if cands.shape[1:] != refs.shape[1:]:
                continue
            out[np.ix_(ref_rows, cand_cols)] = oks(cands, refs, label_sigmas, areas).T
    return out


def annotation_similarity(
    reference: Sequence[Item],
    candidate: Sequence[Item],
    *,
    kind: str,
    width: int | None = None,
    height: int | None = None,
    sigmas: Mapping[str, npt.ArrayLike] | None = None,
) -> FloatArray:
    """Similarity of every reference item (rows) with every candidate item (columns)."""
    if kind == "bbox":
        return box_iou([r["bbox"] for r in reference], [c["bbox"] for c in candidate])
    if kind == "polygon":
        if width is None or height is None:
            raise ValueError("polygon similarity needs the image's width and height")
        return polygon_iou(
            [r["points"] for r in reference], [c["points"] for c in candidate], width, height
        )
    if kind == "keypoints":
        if sigmas is None:
            raise ValueError("keypoint similarity needs per-label sigmas")
        return _keypoint_similarity(reference, candidate, sigmas)
    if kind == "mask":
        return mask_iou([r["rle"] for r in reference], [c["rle"] for c in candidate])
    raise ValueError(f"cannot match annotations of kind {kind!r}")


def _by_label(items: Sequence[Item]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for index, item in enumerate(items):
        groups[item["label"]].append(index)
    return dict(groups)


def _match_subset(
    similarity: FloatArray, rows: list[int], cols: list[int], threshold: float
) -> list[Pair]:
    """Match ``rows`` x ``cols`` of ``similarity``, with indices mapped back to the full matrix."""
    found = match(similarity[np.ix_(rows, cols)], threshold)
    return [Pair(rows[p.row], cols[p.col], p.similarity) for p in found.pairs]


def match_annotations(
    reference: Sequence[Item],
    candidate: Sequence[Item],
    *,
    kind: str,
    threshold: float,
    width: int | None = None,
    height: int | None = None,
    sigmas: Mapping[str, npt.ArrayLike] | None = None,
) -> AnnotationMatch:
    """Pair candidate items with reference items of one kind (``bbox``, ``polygon``,
    ``keypoints``, ``mask``).

    Items are matched first within each label, then what is left is matched across labels;
    those pairs are label mismatches. Similarity is box IoU, polygon mask IoU (needs ``width``
    and ``height``) or OKS (needs ``sigmas``: per label, one sigma per keypoint; the scale of
    a reference instance is the area of the bounding box of its labelled keypoints).
    """
    similarity = annotation_similarity(
        reference, candidate, kind=kind, width=width, height=height, sigmas=sigmas
    )
    ref_by_label, cand_by_label = _by_label(reference), _by_label(candidate)
    same_label: list[Pair] = []
    for label, rows in ref_by_label.items():
        same_label += _match_subset(similarity, rows, cand_by_label.get(label, []), threshold)
    left_rows = sorted(set(range(len(reference))) - {p.row for p in same_label})
    left_cols = sorted(set(range(len(candidate))) - {p.col for p in same_label})
    cross = _match_subset(similarity, left_rows, left_cols, threshold)
    mismatches = [
        LabelMismatch(
            p.row, p.col, p.similarity, reference[p.row]["label"], candidate[p.col]["label"]
        )
        for p in cross
    ]
    crossed_rows, crossed_cols = {p.row for p in cross}, {p.col for p in cross}
    return AnnotationMatch(
        matches=tuple(sorted(MatchedPair(*p) for p in same_label)),
        label_mismatches=tuple(sorted(mismatches)),
        misses=tuple(i for i in left_rows if i not in crossed_rows),
        extras=tuple(j for j in left_cols if j not in crossed_cols),
    )
