"""Consensus on polygons: merge workers' polygons into one set per image, with a model of each
worker learnt over a whole batch of images. Pure.

The merge, for a batch of images (``crowds[k]`` the answers on an image of ``sizes[k]``):

1. **Rasterise** every polygon into a mask (pycocotools, as COCO's evaluation does) and take
   the mask IoU of every pair on an image once. A polygon of fewer than three points marks
   nothing (its worker still votes, as one who marked nothing there).
2. **Cluster**, on each image, at most one polygon of each worker per cluster, labels ignored:
   workers in decreasing order of weight; each next worker's polygons are matched one to one
   (Hungarian method, pairs below ``iou_threshold`` excluded) to the clusters by their
   weighted mean IoU with the members; a polygon left over opens a cluster.
3. **Learn each worker** from every cluster of the batch (:func:`polygon_model`):

   - *recall* and *false marks* by :func:`qa.consensus.box_em.existence_em`: a cluster is a
     real object or one worker's stray polygon, judged by who drew it and who answered the
     image and did not;
   - *label accuracy* (one chance of giving the right label, the others spread evenly), by EM
     over the clusters' labels;
   - *boundary bias* and *boundary noise*: how far, as a share of the object's radius, the
     worker's outline lies outside (positive) or inside the consensus outline on average,
     and the spread around that. Someone who traces the outer edge of every object, or whose
     few vertices cut every curve, has a steady bias; someone who clicks carelessly, noise.
     They come from alternating: consensus masks from the current model, then each member's
     boundary pixels measured against the signed distance to its consensus outline. The
     biases are anchored so the median worker (by evidence) has none: the crowd's typical
     worker is taken to trace the boundary itself.

   Each rate is shrunk toward the crowd's mean by a prior worth a few answers, so a worker
   seen on one image sits near the average.
4. **Keep** a cluster when its posterior of being real reaches 0.5 (``method="em"``), or,
   with ``method="quorum"``, when its support (members' weight over all voters' weight,
   empty answers included) reaches ``quorum``.
5. **Label** by the label accuracies (a weighted vote with weights ``log(a (K - 1) / (1 - a))``);
   ties go to the label seen first among the members.
6. **Mask**, in a window around the cluster (the members' union box plus a margin): each
   member's outline becomes a signed distance map (pixels, positive outside), moved inward
   by its worker's bias, clipped at 1.345 times its worker's noise (Huber's constant: a part
   the worker left out or a stray vertex counts as about a noise width, not by its size) and
   averaged with weights ``weight / noise**2`` (the given weight, from gold, times the
   precision the crowd's outlines show); the consensus is where the average is negative.
   Where workers agree this is the mean of their outlines, which is steadier than the median
   outline a pixel vote takes, and it is corrected for who draws wide or narrow. The largest
   region is kept, holes filled, and returned as a COCO RLE with string counts.
7. **Polygon**: the outline of that mask, traced (OpenCV, pixel edges), lightly simplified
   (0.5 px), so the polygon and the RLE describe the same region.
8. **Score**: the posterior of being real (``em``), else (weight of the members that gave the
   winning label / weight of all voters) x (weighted mean IoU of the members with the mask).

The given weights order the clustering, decide ``support`` and ``agreement`` and scale each
member's say in the mask; the model decides the rest. :func:`merge_polygons_batch` learns
the model from its batch unless one is given (``model=``): a project merged in chunks with
the model of the whole project gets the objects it would get in one batch, since with a
given model each image's objects depend on that image alone. :func:`merge_polygons` is the
same for one image; a ``quorum`` given there keeps the fixed quorum.

:func:`pixel_majority_vote` is the plain baseline the merge is measured against: per label,
a pixel is in when more than half of the workers covered it, and each connected region of
such pixels is one object. It ignores weights and cannot split touching objects.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import cv2
import numpy as np
import numpy.typing as npt
from pycocotools import mask as coco_mask
from scipy import ndimage

from qa.consensus.box_em import (
    JOIN,
    PRIOR_STRENGTH,
    RATE_FLOOR,
    GoldRates,
    Prior,
    existence_em,
)
from qa.consensus.objects import (
    EPS,
    Answer,
    MergedObject,
    Rle,
    as_answers,
    cluster_by_rank,
    weighted_median,
)
from qa.geometry import mask_iou, polygons_to_rles

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
BoolArray = npt.NDArray[np.bool_]
Method = Literal["quorum", "em"]

# The crowd's typical boundary noise (root mean square offset as a share of the radius) before
# anything is learnt, and the floor under a worker's: a few per cent of the radius is where a
# careful worker's clicks land; the floor stops one worker's weight from swamping the rest.
TYPICAL_NOISE, NOISE_FLOOR = 0.05, 0.01
# A boundary pixel counts at most this far (a share of the radius) from the consensus outline:
# a part left out or a stray polygon tells that its worker is imprecise, not by how much.
OFFSET_CAP = 0.5
# A worker's bias moves their outline by at most this share of the radius.
BIAS_CAP = 0.3
# A member's signed distance is clipped at this many times its worker's noise (never under
# CLIP_FLOOR_PX, the pixel grid's own uncertainty): Huber's constant, which keeps 95% of the
# mean's efficiency where offsets are Gaussian and caps what a part left out can pull.
CLIP_NOISES, CLIP_FLOOR_PX = 1.345, 1.5
# Rounds of (consensus masks, then bias and noise); the measured biases settle in two or three.
BOUNDARY_ROUNDS = 3
LABEL_ROUNDS = 20
TYPICAL_LABEL_ACCURACY = 0.8
# The window around a cluster: its members' union box plus a margin of MARGIN_PX and the
# largest bias, room to move an outline outward.
MARGIN_PX = 4
# The model learns from at most this many clusters, evenly spread over the batch: a few
# thousand outlines settle each worker's two boundary numbers; a project's batch can be
# far larger, and every cluster costs a few distance transforms a round.
LEARNING_CLUSTERS = 2000
# Outline simplification (Douglas-Peucker tolerance in pixels): removes the pixel staircase.
SIMPLIFY_PX = 0.5
MITER_LIMIT = 2.0


class PolygonWorker(NamedTuple):
    """What the crowd's answers tell of one worker who draws polygons."""

    recall: float  # chance they mark an object that is there
    false_marks: float  # polygons a picture they draw where nothing is
    bias: float  # mean outward offset of their outline, a share of the object's radius
    noise: float  # root mean square of the offset around their bias, same unit
    label_accuracy: float  # chance their label is the right one
    images: int  # images they answered in the batch


@dataclass(frozen=True)
class PolygonModel:
    """The worker model :func:`polygon_model` learns; ``crowd`` stands for a worker it has not
    seen, ``objects`` is the real objects a picture and ``n_labels`` the labels in use (how
    far one worker's label outweighs a wrong one; a model rebuilt from stored parameters
    without it counts two)."""

    workers: dict[Hashable, PolygonWorker]
    crowd: PolygonWorker
    objects: float
    n_labels: int = 2

    def worker(self, worker: Hashable) -> PolygonWorker:
        return self.workers.get(worker, self.crowd)


def merge_polygons(
    answers: Sequence[Answer | Sequence[Any]],
    *,
    width: int,
    height: int,
    iou_threshold: float = 0.5,
    quorum: float | None = None,
    model: PolygonModel | None = None,
) -> list[MergedObject]:
    """Merge the workers' ``answers`` on one image into consensus polygons (see the module).

    Each answer is ``(worker, weight, items)``, items ``{"label", "points": [[x, y], ...]}`` in
    full-image pixels. A ``quorum`` keeps clusters by support instead of by the model's
    posterior. Returns the kept objects, highest score first.
    """
    (objects,) = merge_polygons_batch(
        [answers],
        [(width, height)],
        iou_threshold=iou_threshold,
        method="em" if quorum is None else "quorum",
        quorum=0.5 if quorum is None else quorum,
        model=model,
    )
    return objects


def merge_polygons_batch(
    crowds: Sequence[Sequence[Answer | Sequence[Any]]],
    sizes: Sequence[tuple[int, int]],
    *,
    iou_threshold: float = 0.5,
    method: Method = "em",
    quorum: float = 0.5,
    model: PolygonModel | None = None,
) -> list[list[MergedObject]]:
    """:func:`merge_polygons` for many images: ``crowds[k]`` answered on an image of
    ``sizes[k]`` (width, height). One list of objects per image, in order.

    The worker model is learnt from the whole batch unless ``model`` is given; ``quorum`` is
    used with ``method="quorum"`` only.
    """
    if method not in ("quorum", "em"):
        raise ValueError(f"method must be 'quorum' or 'em', got {method!r}")
    batch = _Batch.build(crowds, sizes, iou_threshold)
    if model is None:
        model = _learn(batch)
    return _apply(batch, model, method, quorum)


def polygon_model(
    crowds: Sequence[Sequence[Answer | Sequence[Any]]],
    sizes: Sequence[tuple[int, int]],
    *,
    iou_threshold: float = 0.5,
    prior: Mapping[Hashable, GoldRates] | None = None,
) -> PolygonModel:
    """The model of each worker that :func:`merge_polygons_batch` learns from this batch.
    ``prior`` gives some workers' recall and false marks measured on gold: their prior is
    centred there instead of on the crowd's mean."""
    return _learn(_Batch.build(crowds, sizes, iou_threshold), prior)


# The batch


class _Polygons:
    """All polygons of one image, flat, with their answer's weight and rank."""

    def __init__(self, crowd: list[Answer], width: int, height: int) -> None:
        order = sorted(range(len(crowd)), key=lambda a: -crowd[a].weight)
        rank_of = {a: r for r, a in enumerate(order)}
        self.answer: list[int] = []
        self.item: list[int] = []
        self.labels: list[str] = []
        points: list[FloatArray] = []
        for a, answer in enumerate(crowd):
            for i, item in enumerate(answer.items):
                shape = np.asarray(item["points"], dtype=np.float64).reshape(-1, 2)
                if not np.isfinite(shape).all():
                    raise ValueError(
                        f"polygon {i} of worker {answer.worker!r} has a coordinate that is not "
                        "a finite number"
                    )
                if len(shape) < 3:
                    continue
                self.answer.append(a)
                self.item.append(i)
                self.labels.append(item["label"])
                points.append(shape)
        self.n = len(points)
        self.points = points
        self.rank = np.array([rank_of[a] for a in self.answer], dtype=np.intp)
        self.weight = np.array([crowd[a].weight for a in self.answer], dtype=np.float64)
        self.rles = polygons_to_rles([p.tolist() for p in points], width, height)
        self.area = coco_mask.area(self.rles).astype(np.float64) if self.n else np.zeros(0)
        self.iou = mask_iou(self.rles, self.rles)


@dataclass(frozen=True)
class _Cluster:
    image: int
    members: list[int]  # indices into the image's polygons


@dataclass
class _Batch:
    crowds: list[list[Answer]]
    sizes: list[tuple[int, int]]
    polygons: list[_Polygons]
    clusters: list[_Cluster]

    @classmethod
    def build(
        cls,
        crowds: Sequence[Sequence[Answer | Sequence[Any]]],
        sizes: Sequence[tuple[int, int]],
        iou_threshold: float,
        shapes: Callable[[list[Answer], int, int], _Polygons] = _Polygons,
        similarity: Callable[[list[_Polygons]], list[FloatArray]] | None = None,
    ) -> _Batch:
        """The batch of ``crowds``; ``shapes`` reads one image's items (the polygons, or the
        masks of :mod:`qa.consensus.masks`, which merges by the same clusters and model);
        ``similarity`` gives each image's matrix to cluster by (the shapes' IoU unless
        given)."""
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError("iou_threshold must be in (0, 1]")
        if len(crowds) != len(sizes):
            raise ValueError("crowds and sizes must be as long as each other")
        checked = [as_answers(crowd) for crowd in crowds]
        polygons = [
            shapes(crowd, int(w), int(h)) for crowd, (w, h) in zip(checked, sizes, strict=True)
        ]
        matrices = [image.iou for image in polygons] if similarity is None else similarity(polygons)
        clusters: list[_Cluster] = []
        for k, (image, matrix) in enumerate(zip(polygons, matrices, strict=True)):
            if image.n:
                found = cluster_by_rank(matrix, image.weight, image.rank, iou_threshold)
                clusters.extend(_Cluster(k, members) for members in found)
        return cls(checked, [(int(w), int(h)) for w, h in sizes], polygons, clusters)

    def member_workers(self, cluster: _Cluster) -> list[Hashable]:
        image = self.polygons[cluster.image]
        return [self.crowds[cluster.image][image.answer[i]].worker for i in cluster.members]

    def support(self, cluster: _Cluster) -> float:
        image = self.polygons[cluster.image]
        voters = sum(answer.weight for answer in self.crowds[cluster.image])
        return float(image.weight[cluster.members].sum()) / voters


# Existence and labels


@dataclass(frozen=True)
class _Pairs:
    """Every (cluster, voter of its image) pair, for the existence model."""

    candidate: IntArray
    worker: IntArray
    marked: BoolArray
    worker_images: IntArray
    workers: list[Hashable]

    @classmethod
    def build(cls, batch: _Batch) -> _Pairs:
        ids: dict[Hashable, int] = {}
        for crowd in batch.crowds:
            for answer in crowd:
                ids.setdefault(answer.worker, len(ids))
        candidate: list[int] = []
        worker: list[int] = []
        marked: list[bool] = []
        for c, cluster in enumerate(batch.clusters):
            drew = set(batch.member_workers(cluster))
            for answer in batch.crowds[cluster.image]:
                candidate.append(c)
                worker.append(ids[answer.worker])
                marked.append(answer.worker in drew)
        answered = [ids[answer.worker] for crowd in batch.crowds for answer in crowd]
        return cls(
            np.asarray(candidate, dtype=np.intp),
            np.asarray(worker, dtype=np.intp),
            np.asarray(marked, dtype=np.bool_),
            np.bincount(np.asarray(answered, dtype=np.intp), minlength=len(ids)),
            list(ids),
        )


def _existence_posterior(batch: _Batch, model: PolygonModel) -> FloatArray:
    """Each cluster's probability of being real under ``model`` (the E step of
    :func:`qa.consensus.box_em.existence_em`, with the model's rates)."""
    out = np.zeros(len(batch.clusters))
    for c, cluster in enumerate(batch.clusters):
        drew = set(batch.member_workers(cluster))
        real = np.log(model.objects)
        made = 0.0
        n_voters = n_marks = 0
        for answer in batch.crowds[cluster.image]:
            rates = model.worker(answer.worker)
            n_voters += 1
            if answer.worker in drew:
                n_marks += 1
                real += np.log(rates.recall)
                made += rates.false_marks
            else:
                real += np.log1p(-rates.recall)
        spurious = (
            np.log(max(made, RATE_FLOOR))
            + (n_marks - 1) * np.log(JOIN)
            + (n_voters - n_marks) * np.log1p(-JOIN)
        )
        out[c] = 0.5 * (1.0 + np.tanh(0.5 * (real - spurious)))
    return out


def _label_votes(batch: _Batch, cluster: _Cluster, accuracy: dict[Hashable, float], k: int) -> str:
    """The cluster's label under one-coin label accuracies; ties to the first member's."""
    image = batch.polygons[cluster.image]
    votes: dict[str, float] = {}
    for i, worker in zip(cluster.members, batch.member_workers(cluster), strict=True):
        a = accuracy[worker]
        votes[image.labels[i]] = votes.get(image.labels[i], 0.0) + _log_odds(a, k)
    return max(votes, key=lambda name: votes[name])


def _log_odds(accuracy: float, k: int) -> float:
    return float(np.log(accuracy * max(k - 1, 1) / (1.0 - accuracy)))


def _label_accuracy(
    batch: _Batch, real: FloatArray, workers: list[Hashable], k: int
) -> dict[Hashable, float]:
    """One-coin label accuracy of each worker by EM over the clusters, each counted by how
    likely it is real; shrunk toward the crowd's mean like the other rates."""
    accuracy = dict.fromkeys(workers, TYPICAL_LABEL_ACCURACY)
    for _ in range(LABEL_ROUNDS):
        right = dict.fromkeys(workers, 0.0)
        seen = dict.fromkeys(workers, 0.0)
        for c, cluster in enumerate(batch.clusters):
            if real[c] < RATE_FLOOR:
                continue
            image = batch.polygons[cluster.image]
            members = batch.member_workers(cluster)
            labels = [image.labels[i] for i in cluster.members]
            scores: dict[str, float] = {}
            for label, worker in zip(labels, members, strict=True):
                scores[label] = scores.get(label, 0.0) + _log_odds(accuracy[worker], k)
            top = max(scores.values())
            odds = {name: np.exp(s - top) for name, s in scores.items()}
            total = sum(odds.values())
            for label, worker in zip(labels, members, strict=True):
                right[worker] += real[c] * odds[label] / total
                seen[worker] += real[c]
        crowd = (sum(right.values()) + PRIOR_STRENGTH * TYPICAL_LABEL_ACCURACY) / (
            sum(seen.values()) + PRIOR_STRENGTH
        )
        accuracy = {
            w: float(
                np.clip(
                    (right[w] + PRIOR_STRENGTH * crowd) / (seen[w] + PRIOR_STRENGTH),
                    1.0 / max(k, 2) + RATE_FLOOR,
                    1.0 - RATE_FLOOR,
                )
            )
            for w in workers
        }
    return accuracy


# Geometry in a window around a cluster


@dataclass(frozen=True)
class _Window:
    x0: int
    y0: int
    width: int
    height: int
    radius: float  # the object's radius in pixels, the unit of bias and noise
    packed: npt.NDArray[np.uint8]  # the members' masks, bits packed (learning holds many)

    @property
    def masks(self) -> npt.NDArray[np.uint8]:
        """(n, height, width), one mask per member."""
        size = self.width * self.height
        bits = np.unpackbits(self.packed, axis=1, count=size)
        return bits.reshape(-1, self.height, self.width)


def _window(batch: _Batch, cluster: _Cluster) -> _Window | None:
    image = batch.polygons[cluster.image]
    width, height = batch.sizes[cluster.image]
    members = cluster.members
    boxes = coco_mask.toBbox([image.rles[i] for i in members])  # x, y, w, h
    boxes = boxes[boxes[:, 2] * boxes[:, 3] > 0]
    if not len(boxes):
        return None
    area = weighted_median(image.area[members], np.ones(len(members)))
    radius = max(float(np.sqrt(area / np.pi)), 1.0)
    x0, y0 = boxes[:, :2].min(axis=0)
    x1 = (boxes[:, 0] + boxes[:, 2]).max()
    y1 = (boxes[:, 1] + boxes[:, 3]).max()
    margin = MARGIN_PX + BIAS_CAP * radius
    left, top = max(int(x0 - margin), 0), max(int(y0 - margin), 0)
    right, bottom = min(int(np.ceil(x1 + margin)), width), min(int(np.ceil(y1 + margin)), height)
    w, h = right - left, bottom - top
    if w <= 0 or h <= 0:
        return None
    shifted = [(image.points[i] - (left, top)).tolist() for i in members]
    masks = _decode(polygons_to_rles(shifted, w, h)).transpose(2, 0, 1).reshape(len(members), -1)
    return _Window(left, top, w, h, radius, np.packbits(masks, axis=1))


def _signed_distance(mask: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """Distance in pixels from each pixel to the mask's outline: negative inside."""
    if not mask.any():
        return np.full(mask.shape, float(sum(mask.shape)), dtype=np.float32)
    if mask.all():
        return np.full(mask.shape, -float(sum(mask.shape)), dtype=np.float32)
    inside = cv2.distanceTransform(mask, cv2.DIST_L2, cv2.DIST_MASK_5)
    outside = cv2.distanceTransform(1 - mask, cv2.DIST_L2, cv2.DIST_MASK_5)
    out: npt.NDArray[np.float32] = np.where(mask > 0, 0.5 - inside, outside - 0.5)
    return out


def _consensus(
    window: _Window, bias: FloatArray, noise: FloatArray, given: FloatArray
) -> npt.NDArray[np.uint8] | None:
    """The consensus mask in the window (largest region, holes filled), or None if empty.

    Members count by their worker's precision times their given weight: the weight is what
    gold says of the worker, the precision what the crowd's outlines say.
    """
    r = window.radius
    clip = np.maximum(CLIP_NOISES * noise * r, CLIP_FLOOR_PX)
    weight = given / noise**2
    total = np.zeros((window.height, window.width), dtype=np.float32)
    for mask, b, c, w in zip(window.masks, bias, clip, weight, strict=True):
        distance = _signed_distance(mask)
        distance += np.float32(b * r)
        np.clip(distance, -c, c, out=distance)
        distance *= np.float32(w)
        total += distance
    inside = (total < 0).astype(np.uint8)
    return _largest_region(inside)


def _largest_region(mask: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8] | None:
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return None
    largest = max(contours, key=lambda c: (cv2.contourArea(c), len(c)))
    out = np.zeros_like(mask)
    cv2.drawContours(out, [largest], -1, 1, thickness=cv2.FILLED)
    return out


def _boundary_offsets(
    masks: npt.NDArray[np.uint8], consensus: npt.NDArray[np.uint8]
) -> list[FloatArray]:
    """Per member, the signed distance (pixels, positive outside) of its outline from the
    consensus outline, at each of its boundary pixels, inner and outer."""
    distance = _signed_distance(consensus)
    kernel = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=np.uint8)
    out: list[FloatArray] = []
    for mask in masks:
        inner = (mask > 0) & (cv2.erode(mask, kernel, borderValue=0) == 0)
        outer = (mask == 0) & (cv2.dilate(mask, kernel) > 0)
        # A boundary pixel's centre lies half a pixel inside (or outside) the outline itself.
        offsets = np.concatenate([distance[inner] + 0.5, distance[outer] - 0.5])
        out.append(offsets.astype(np.float64))
    return out


def trace_outline(
    mask: npt.NDArray[np.uint8], origin: tuple[int, int] = (0, 0)
) -> list[tuple[float, float]] | None:
    """The outline of ``mask``'s largest region as a polygon on the pixel edges (so that
    rasterising it gives the region back), simplified by ``SIMPLIFY_PX``; None if empty."""
    contours, _ = cv2.findContours(
        np.ascontiguousarray(mask, dtype=np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE
    )
    if not contours:
        return None
    largest = max(contours, key=lambda c: (cv2.contourArea(c), len(c)))
    return _outline(largest, origin)


def trace_outlines(
    mask: npt.NDArray[np.uint8], origin: tuple[int, int] = (0, 0)
) -> list[list[tuple[float, float]]]:
    """The outline of each region of ``mask`` (holes left out), largest first, traced as
    :func:`trace_outline` traces one."""
    contours, _ = cv2.findContours(
        np.ascontiguousarray(mask, dtype=np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE
    )
    ordered = sorted(contours, key=lambda c: (-cv2.contourArea(c), -len(c), c[0, 0, 1], c[0, 0, 0]))
    return [_outline(contour, origin) for contour in ordered]


def _outline(contour: npt.NDArray[Any], origin: tuple[int, int]) -> list[tuple[float, float]]:
    simple = cv2.approxPolyDP(contour, SIMPLIFY_PX, True)[:, 0, :].astype(np.float64)
    if len(simple) < 3 or abs(_signed_area(simple)) < 1.0:
        # A line or a dot of pixels: its bounding rectangle of pixel edges.
        x0, y0 = contour[:, 0, :].min(axis=0)
        x1, y1 = contour[:, 0, :].max(axis=0) + 1
        corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
        return [(float(x + origin[0]), float(y + origin[1])) for x, y in corners]
    # The contour runs through boundary pixels' centres (index + 0.5); the region's edge is
    # half a pixel further out.
    outline = _offset_outward(simple + 0.5, 0.5) + origin
    if _signed_area(outline) < 0:
        # Clockwise on the screen (y down), from the top-left vertex, as people draw.
        outline = np.concatenate([outline[:1], outline[:0:-1]])
    return [(float(x), float(y)) for x, y in outline]


def _signed_area(points: FloatArray) -> float:
    x, y = points[:, 0], points[:, 1]
    return float(0.5 * (x @ np.roll(y, -1) - y @ np.roll(x, -1)))


def _offset_outward(points: FloatArray, distance: float) -> FloatArray:
    """Each edge moved ``distance`` outward, vertices at the edges' meeting points (mitred,
    at most ``MITER_LIMIT`` times the distance from where they were)."""
    edge = np.roll(points, -1, axis=0) - points
    length = np.maximum(np.linalg.norm(edge, axis=1, keepdims=True), EPS)
    normal = np.column_stack([edge[:, 1], -edge[:, 0]]) / length
    if _signed_area(points) < 0:
        normal = -normal
    before, after = np.roll(normal, 1, axis=0), normal
    cosine = np.sum(before * after, axis=1, keepdims=True)
    miter = (before + after) / np.maximum(1.0 + cosine, EPS)
    reach = np.linalg.norm(miter, axis=1, keepdims=True)
    miter = np.where(reach > MITER_LIMIT, miter / np.maximum(reach, EPS) * MITER_LIMIT, miter)
    out: FloatArray = points + distance * miter
    return out


# Learning and applying the model


def _learn(batch: _Batch, prior: Mapping[Hashable, GoldRates] | None = None) -> PolygonModel:
    pairs = _Pairs.build(batch)
    workers = pairs.workers
    if not workers:
        crowd = PolygonWorker(0.8, 0.1, 0.0, TYPICAL_NOISE, TYPICAL_LABEL_ACCURACY, 0)
        return PolygonModel({}, crowd, 1.0, 2)
    if batch.clusters:
        existence = existence_em(
            pairs.candidate,
            pairs.worker,
            pairs.marked,
            worker_images=pairs.worker_images,
            start=np.array([min(batch.support(c), 1.0) for c in batch.clusters]),
            prior=Prior.of(workers, prior),
        )
        real, recall, false_marks, objects = (
            existence.posterior,
            existence.recall,
            existence.false_marks,
            existence.objects,
        )
    else:
        real = np.zeros(0)
        recall = np.full(len(workers), 0.8)
        false_marks = np.full(len(workers), 0.1)
        objects = RATE_FLOOR
    k = max(len({label for image in batch.polygons for label in image.labels}), 2)
    accuracy = _label_accuracy(batch, real, workers, k)
    bias, noise = _boundary_model(batch, real, workers)
    evidence = pairs.worker_images.astype(np.float64)
    model = {
        w: PolygonWorker(
            float(recall[j]),
            float(false_marks[j]),
            float(bias[j]),
            float(noise[j]),
            accuracy[w],
            int(pairs.worker_images[j]),
        )
        for j, w in enumerate(workers)
    }
    typical = PolygonWorker(
        float(recall @ evidence / evidence.sum()),
        float(false_marks @ evidence / evidence.sum()),
        0.0,
        float(np.sqrt((noise**2) @ evidence / evidence.sum())),
        float(np.mean(list(accuracy.values()))),
        0,
    )
    return PolygonModel(model, typical, float(objects), k)


def _boundary_model(
    batch: _Batch, real: FloatArray, workers: list[Hashable]
) -> tuple[FloatArray, FloatArray]:
    """Each worker's boundary bias and noise, alternating consensus masks and measurement."""
    ids = {w: j for j, w in enumerate(workers)}
    n = len(workers)
    bias = np.zeros(n)
    noise = np.full(n, TYPICAL_NOISE)
    # Only clusters likely real teach how workers draw; windows are built once.
    windows: list[tuple[float, list[int], FloatArray, _Window]] = []
    useful = [
        c
        for c, cluster in enumerate(batch.clusters)
        if real[c] >= 0.5 and len(cluster.members) >= 2
    ]
    step = max(len(useful) / LEARNING_CLUSTERS, 1.0)
    for c in [useful[int(i * step)] for i in range(min(len(useful), LEARNING_CLUSTERS))]:
        cluster = batch.clusters[c]
        window = _window(batch, cluster)
        if window is not None:
            member_ids = [ids[w] for w in batch.member_workers(cluster)]
            given = batch.polygons[cluster.image].weight[cluster.members]
            windows.append((float(real[c]), member_ids, given, window))
    if not windows:
        return bias, noise
    for _ in range(BOUNDARY_ROUNDS):
        total = np.zeros(n)
        square = np.zeros(n)
        seen = np.zeros(n)
        for q, member_ids, given, window in windows:
            consensus = _consensus(window, bias[member_ids], noise[member_ids], given)
            if consensus is None:
                continue
            for j, offsets in zip(
                member_ids, _boundary_offsets(window.masks, consensus), strict=True
            ):
                if not len(offsets):
                    continue
                share = np.clip(offsets / window.radius, -OFFSET_CAP, OFFSET_CAP)
                total[j] += q * share.mean()
                square[j] += q * (share**2).mean()
                seen[j] += q
        raw = total / (seen + PRIOR_STRENGTH)  # shrunk toward no bias
        # Anchor: the median worker, by evidence, traces the boundary itself.
        anchor = float(weighted_median(raw[seen > 0], seen[seen > 0])) if seen.any() else 0.0
        bias = np.clip(raw - anchor, -BIAS_CAP, BIAS_CAP)
        # Spread around the worker's own (unshifted) mean offset.
        mean = total / np.maximum(seen, EPS)
        spread = np.maximum(square - seen * mean**2, 0.0)
        crowd = (spread.sum() + PRIOR_STRENGTH * TYPICAL_NOISE**2) / (seen.sum() + PRIOR_STRENGTH)
        variance = (spread + PRIOR_STRENGTH * crowd) / (seen + PRIOR_STRENGTH)
        noise = np.maximum(np.sqrt(variance), NOISE_FLOOR)
    return bias, noise


def _apply(
    batch: _Batch, model: PolygonModel, method: Method, quorum: float
) -> list[list[MergedObject]]:
    posterior = _existence_posterior(batch, model)
    accuracy = {
        answer.worker: model.worker(answer.worker).label_accuracy
        for crowd in batch.crowds
        for answer in crowd
    }
    out: list[list[MergedObject]] = [[] for _ in batch.crowds]
    for c, cluster in enumerate(batch.clusters):
        if method == "em":
            if posterior[c] < 0.5:
                continue
        elif batch.support(cluster) < quorum - EPS:
            continue
        merged = _merge(batch, cluster, model, accuracy, float(posterior[c]), method)
        if merged is not None:
            out[cluster.image].append(merged)
    for objects in out:
        objects.sort(key=lambda obj: -obj.score)
    return out


def _merge(
    batch: _Batch,
    cluster: _Cluster,
    model: PolygonModel,
    accuracy: dict[Hashable, float],
    posterior: float,
    method: Method,
) -> MergedObject | None:
    image = batch.polygons[cluster.image]
    width, height = batch.sizes[cluster.image]
    members = cluster.members
    workers = batch.member_workers(cluster)
    window = _window(batch, cluster)
    if window is None:
        return None
    rates = [model.worker(w) for w in workers]
    consensus = _consensus(
        window,
        np.array([r.bias for r in rates]),
        np.array([max(r.noise, NOISE_FLOOR) for r in rates]),
        image.weight[members],
    )
    if consensus is None:
        return None
    points = trace_outline(consensus, (window.x0, window.y0))
    if points is None:
        return None
    full = np.zeros((height, width), dtype=np.uint8, order="F")
    full[window.y0 : window.y0 + window.height, window.x0 : window.x0 + window.width] = consensus
    mask = _encode(full)
    weight = image.weight[members]
    similarity = mask_iou([mask], [image.rles[i] for i in members])[0]
    agreement = float(similarity @ weight / weight.sum())
    label = _label_votes(batch, cluster, accuracy, model.n_labels)
    voters = sum(answer.weight for answer in batch.crowds[cluster.image])
    if method == "em":
        score = float(posterior)
    else:
        gave = sum(w for i, w in zip(members, weight, strict=True) if image.labels[i] == label)
        score = min(1.0, gave / voters * agreement)
    return MergedObject(
        kind="polygon",
        label=label,
        score=score,
        support=min(1.0, float(weight.sum()) / voters),
        agreement=agreement,
        num_votes=len(members),
        workers=tuple(workers),
        items=tuple(image.item[i] for i in members),
        points=tuple(points),
        mask=mask,
    )


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
