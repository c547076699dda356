"""Consensus on polygons: merge several workers' polygons on one image into one set. Pure.

The merge, for one image (``width`` x ``height`` pixels):

1. **Rasterise** every polygon into a mask (pycocotools, as COCO's evaluation does) and take
   the mask IoU of every pair once.
2. **Cluster**, at most one polygon of each worker per cluster, labels ignored: workers in
   decreasing order of weight; the first one's polygons open clusters, each next worker's
   polygons are matched one to one (Hungarian method, pairs below ``iou_threshold`` excluded)
   to the clusters by their weighted mean IoU with the cluster's members; a polygon left over
   opens a cluster.
3. **Keep** a cluster when its support (members' weight over all voters' weight, empty answers
   included) reaches ``quorum``; **label** by weighted vote (ties: the label seen first).
4. **Mask**: a pixel is in the consensus mask when the members whose masks hold it carry at
   least half of the cluster's weight. The mask is returned as a COCO RLE with string counts.
5. **Polygon**: the member polygon closest (IoU) to the consensus mask, so the item stays a
   polygon a worker drew and the mask is the exact consensus.
6. **Score**: (weight of the members that gave the winning label / weight of all voters) x
   (weighted mean IoU of the members with the consensus mask).

:func:`pixel_majority_vote` is the plain baseline the merge is measured against: per label,
a pixel is in when more than half of the workers covered it, and each connected region of
such pixels is one object. It ignores weights and cannot split touching objects.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from pycocotools import mask as coco_mask
from scipy import ndimage

from qa.consensus.objects import EPS, Answer, MergedObject, Rle, as_answers, cluster_by_rank
from qa.geometry import mask_iou, polygons_to_rles

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]


def merge_polygons(
    answers: Sequence[Answer | Sequence[Any]],
    *,
    width: int,
    height: int,
    iou_threshold: float = 0.5,
    quorum: float = 0.5,
) -> list[MergedObject]:
    """Merge the workers' ``answers`` on one image into consensus polygons (see the module).

    Each answer is ``(worker, weight, items)``, items ``{"label", "points": [[x, y], ...]}`` in
    full-image pixels. Returns the kept objects, highest score first.
    """
    crowd = as_answers(answers)
    polygons = _Polygons(crowd, width, height)
    if not polygons.n:
        return []
    voters = sum(answer.weight for answer in crowd)
    clusters = cluster_by_rank(polygons.iou, polygons.weight, polygons.rank, iou_threshold)
    out: list[MergedObject] = []
    for members in clusters:
        weight = polygons.weight[members]
        if weight.sum() / voters < quorum - EPS:
            continue
        merged = _merge(polygons, members, crowd, voters, width, height)
        if merged is not None:
            out.append(merged)
    out.sort(key=lambda obj: -obj.score)
    return out


class _Polygons:
    """All polygons of one image, flat, with their answer's weight and rank."""

    def __init__(self, crowd: list[Answer], width: int, height: int) -> None:
        order = sorted(range(len(crowd)), key=lambda a: -crowd[a].weight)
        rank_of = {a: r for r, a in enumerate(order)}
        self.answer: list[int] = []
        self.item: list[int] = []
        self.labels: list[str] = []
        points: list[Any] = []
        for a, answer in enumerate(crowd):
            for i, item in enumerate(answer.items):
                self.answer.append(a)
                self.item.append(i)
                self.labels.append(item["label"])
                points.append(item["points"])
        for index, shape in enumerate(points):
            if not np.isfinite(np.asarray(shape, dtype=np.float64)).all():
                raise ValueError(f"polygon {index} has a coordinate that is not a finite number")
        self.n = len(points)
        self.points = points
        self.rank = np.array([rank_of[a] for a in self.answer], dtype=np.intp)
        self.weight = np.array([crowd[a].weight for a in self.answer], dtype=np.float64)
        self.rles = polygons_to_rles(points, width, height)
        self.iou = mask_iou(self.rles, self.rles)


def _merge(
    polygons: _Polygons,
    members: list[int],
    crowd: list[Answer],
    voters: float,
    width: int,
    height: int,
) -> MergedObject | None:
    weight = polygons.weight[members]
    mask = _vote(polygons, members, weight, width, height)
    if mask is None:
        return None
    similarity = mask_iou([mask], [polygons.rles[i] for i in members])[0]
    votes: dict[str, float] = {}
    for i, w in zip(members, weight.tolist(), strict=True):
        votes[polygons.labels[i]] = votes.get(polygons.labels[i], 0.0) + w
    label = max(votes, key=lambda name: votes[name])
    agreement = float(similarity @ weight / weight.sum())
    closest = members[int(np.argmax(similarity))]
    return MergedObject(
        kind="polygon",
        label=label,
        score=min(1.0, votes[label] / voters * agreement),
        support=min(1.0, float(weight.sum()) / voters),
        agreement=agreement,
        num_votes=len(members),
        workers=tuple(crowd[polygons.answer[i]].worker for i in members),
        items=tuple(polygons.item[i] for i in members),
        points=tuple((float(x), float(y)) for x, y in polygons.points[closest]),
        mask=mask,
    )


def _vote(
    polygons: _Polygons, members: list[int], weight: FloatArray, width: int, height: int
) -> Rle | None:
    """Consensus mask of a cluster: pixels held by at least half of the members' weight.

    Votes are counted in the members' bounding rectangle only, then the result is placed in a
    full-size mask for encoding.
    """
    boxes = coco_mask.toBbox([polygons.rles[i] for i in members])  # x, y, w, h
    x0, y0 = np.floor(boxes[:, :2].min(axis=0)).astype(int)
    x1 = int(np.ceil((boxes[:, 0] + boxes[:, 2]).max()))
    y1 = int(np.ceil((boxes[:, 1] + boxes[:, 3]).max()))
    if x1 <= x0 or y1 <= y0:
        return None
    decoded = _decode([polygons.rles[i] for i in members])  # (h, w, n)
    tally = decoded[y0:y1, x0:x1, :] @ weight
    full = np.zeros((height, width), dtype=np.uint8, order="F")
    full[y0:y1, x0:x1] = tally >= weight.sum() / 2 - EPS
    if not full.any():
        return None
    return _encode(full)


def _decode(rles: list[Rle]) -> npt.NDArray[np.uint8]:
    # pycocotools' decoder hands numpy 2 an array view the old way; numpy warns, and copies.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        masks: npt.NDArray[np.uint8] = coco_mask.decode(rles)
    return masks


def _encode(mask: npt.NDArray[np.uint8]) -> Rle:
    rle: Rle = coco_mask.encode(np.asfortranarray(mask))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def pixel_majority_vote(
    answers: Sequence[Answer | Sequence[Any]], *, width: int, height: int
) -> list[MergedObject]:
    """Baseline: per label, pixels covered by more than half of the workers, one object per
    connected region. Weights are ignored. Each region's polygon is the closest member."""
    crowd = as_answers(answers)
    polygons = _Polygons(crowd, width, height)
    if not polygons.n:
        return []
    n_voters = len(crowd)
    decoded = _decode(polygons.rles)  # (h, w, n)
    out: list[MergedObject] = []
    for label in dict.fromkeys(polygons.labels):
        own = [i for i in range(polygons.n) if polygons.labels[i] == label]
        covered = np.zeros((height, width), dtype=np.intp)
        for a in {polygons.answer[i] for i in own}:
            mine = [i for i in own if polygons.answer[i] == a]
            covered += decoded[:, :, mine].any(axis=2)
        regions, count = ndimage.label(covered * 2 > n_voters)
        for region in range(1, count + 1):
            mask = _encode((regions == region).astype(np.uint8))
            similarity = mask_iou([mask], [polygons.rles[i] for i in own])[0]
            members = [i for i, s in zip(own, similarity.tolist(), strict=True) if s > 0]
            if not members:
                continue
            best = max(members, key=lambda i: similarity[own.index(i)])
            agreement = float(np.mean([similarity[own.index(i)] for i in members]))
            support = len({polygons.answer[i] for i in members}) / n_voters
            out.append(
                MergedObject(
                    kind="polygon",
                    label=label,
                    score=min(1.0, support * agreement),
                    support=min(1.0, support),
                    agreement=agreement,
                    num_votes=len(members),
                    workers=tuple(crowd[polygons.answer[i]].worker for i in members),
                    items=tuple(polygons.item[i] for i in members),
                    points=tuple((float(x), float(y)) for x, y in polygons.points[best]),
                    mask=mask,
                )
            )
    out.sort(key=lambda obj: -obj.score)
    return out
