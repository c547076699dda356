"""Consensus on masks: merge workers' masks (COCO RLE of the full image) into one set per image,
with a model of each worker learnt over a whole batch of images. Pure.

Instance masks (any number a label, each object its own mask) go the polygon merge's way
(:mod:`qa.consensus.polygons`), with a pixel vote where polygons average outlines:

1. **Cluster**, on each image, at most one mask of each worker per cluster, labels ignored,
   by mask IoU at the crowd's edge tolerance (workers in decreasing order of weight,
   Hungarian matching at ``iou_threshold``): each mask dilated first by 1.5 times how far
   apart two workers' edges of one object typically lie, measured on the batch
   (:func:`edge_tolerance`, :func:`tolerant_iou`). A large object's IoU hardly changes; a
   stroke a few pixels across, whose workers' masks are off by a pixel or two and so overlap
   at IoU 0.2 to 0.5, is still one object, and two strokes further apart than that stay two.
2. **Learn each worker** from every cluster of the batch (:func:`mask_model`): *recall* and
   *false marks* by :func:`qa.consensus.box_em.existence_em` and *label accuracy* by EM over
   the clusters' labels, exactly as for polygons; and each worker's **pixel reliability**:
   *sensitivity* (the share of an object's pixels their mask covers) and *specificity* (the
   share of the pixels around the object, in the cluster's window, their mask leaves out),
   by alternating the consensus of each likely-real cluster and the measurement of every
   member against it, shrunk toward the crowd's mean by a prior worth a few clusters.
   Someone who paints over the edges with a broad brush covers the object and much around
   it (high sensitivity, low specificity); someone who dabs at it, the reverse. Both rates
   are also learnt band by band of a pixel's distance to the consensus edge
   (``EDGE_BANDS``: on the edge, 2 px, 3-4, 5-8, beyond), each worker's shrunk toward the
   crowd's in that band: a shaky hand errs on the edge and nowhere else, and a careful
   painter's word on the edge should outweigh theirs there, not merely on average.
3. **Keep** a cluster when its posterior of being real reaches 0.5 (``method="em"``), or its
   support reaches ``quorum`` (``method="quorum"``).
4. **Mask**: in a window around the cluster (the members' union box plus a margin), each
   pixel's posterior of belonging to the object, from a per-pixel vote of the members
   (Dawid-Skene on two classes: a member who marked the pixel adds
   ``log(sensitivity / (1 - specificity))``, one who did not
   ``log((1 - sensitivity) / specificity)``, each times the member's given weight over the
   members' mean), with the window's share of object pixels as the prior. That vote draws
   an edge; the vote is then drawn again (``EDGE_ROUNDS`` times) with each member's rates
   of the band each pixel lies in from that edge, and as each band's prior the share of its
   pixels inside that edge (about half near it, all deep inside). The mask is the pixels at
   posterior >= 0.5; it may have several parts and holes, as masks do.
5. **Label** by the label accuracies; **score**: the posterior of being real (``em``), else
   (weight of the members that gave the winning label / weight of all voters) x (weighted
   mean IoU of the members with the mask).

Semantic masks (each pixel at most one label) are merged pixel by pixel instead
(:func:`merge_semantic_batch`): each worker's answer is a label map, and every pixel some
worker marked gets the label of a weighted vote, ``none`` included, in which each worker
counts ``log(a (K - 1) / (1 - a))`` times their given weight (over the image's mean) with
``a`` their pixel accuracy, learnt by EM over the batch (one-coin Dawid-Skene, measured on
the pixels the answers dispute: where all agree everyone is right, and how much of an image
that is says how large its objects are against their edges, not how good its workers are)
and the classes' shares on the image as the prior. A pixel keeps the
label of the highest posterior (``none`` wins ties). One object a label: its pixels, scored
by their mean posterior.

:func:`pixel_majority_vote` is the plain baseline the merge is measured against: per label,
a pixel is in when more than half of the workers covered it, and each connected region is one
object.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, cast

import numpy as np
import numpy.typing as npt
from pycocotools import mask as coco_mask
from scipy import ndimage

from qa.consensus.box_em import PRIOR_STRENGTH, RATE_FLOOR, GoldRates, Prior, existence_em
from qa.consensus.objects import EPS, Answer, MergedObject, Rle, as_answers
from qa.consensus.polygons import (
    LEARNING_CLUSTERS,
    TYPICAL_LABEL_ACCURACY,
    _Batch,
    _Cluster,
    _decode,
    _encode,
    _existence_posterior,
    _label_accuracy,
    _label_votes,
    _Pairs,
    _Polygons,
)
from qa.geometry import mask_iou
from tasks.annotations import rle_runs

FloatArray = npt.NDArray[np.float64]
Method = Literal["quorum", "em"]

# Pixel reliability before anything is learnt, and the bounds of a worker's.
TYPICAL_SENSITIVITY, TYPICAL_SPECIFICITY = 0.9, 0.9
PIXEL_RATE_BOUNDS = (0.02, 0.995)
# Rounds of (consensus of every learning cluster, then sensitivity and specificity).
PIXEL_ROUNDS = 4
# Rounds of (pixel posteriors, then the window's share of object pixels) for one cluster.
PRIOR_ROUNDS = 4
# The window around a cluster: its members' union box plus this margin (pixels, and a share
# of the object's radius), so the specificity sees the pixels next to the object.
MARGIN_PX, MARGIN_SHARE = 3, 0.15
SEMANTIC_ROUNDS = 10
TYPICAL_PIXEL_ACCURACY = 0.9
# Bands of a pixel's distance to the consensus edge (pixels; 1 is a pixel on the edge):
# 1, 2, 3-4, 5-8, and beyond. A worker's reliability is learnt band by band, since a shaky
# hand or a broad brush errs near the edge and nowhere else.
EDGE_BANDS = np.array([1.0, 2.0, 4.0, 8.0])
N_BANDS = len(EDGE_BANDS) + 1
# Rounds of (consensus, then its edge's bands) when a consensus is drawn with the bands.
EDGE_ROUNDS = 2
# Clustering compares masks at the crowd's edge tolerance, each dilated first by
# TOLERANCE_PER_EDGE_DISTANCE times the distance ``d`` two workers' edges of one object
# typically lie apart: two strokes of no thickness ``d`` apart, dilated by ``t``, overlap at
# IoU (2t - d) / (2t + d), which is 0.5 (the default threshold) at t = 1.5 d, so a stroke
# however thin still matches another worker's as far off as the crowd's hand typically is.
# ``d`` is the median, over pairs of masks of different workers that match by plain IoU, of
# their mean symmetric edge distance, measured on at most EDGE_PAIRS pairs spread over the
# batch and shrunk toward TYPICAL_EDGE_DISTANCE (px, about what the generated crowds'
# painters show, 1.3 to 2.7) by a prior worth PRIOR_STRENGTH pairs.
TOLERANCE_PER_EDGE_DISTANCE = 1.5
EDGE_PAIRS = 1000
TYPICAL_EDGE_DISTANCE = 1.5


class MaskWorker(NamedTuple):
    """What the crowd's answers tell of one worker who paints instance masks."""

    recall: float  # chance they mark an object that is there
    false_marks: float  # masks a picture they paint where nothing is
    sensitivity: float  # share of an object's pixels their mask covers
    specificity: float  # share of the pixels around an object their mask leaves out
    label_accuracy: float  # chance their label is the right one
    images: int  # images they answered in the batch
    # Sensitivity and specificity band by band of the distance to the consensus edge
    # (``EDGE_BANDS``); empty in a model stored before they were learnt.
    edge_sensitivity: tuple[float, ...] = ()
    edge_specificity: tuple[float, ...] = ()


@dataclass(frozen=True)
class MaskModel:
    """The worker model :func:`mask_model` learns; ``crowd`` stands for a worker it has not
    seen, ``objects`` is the real objects a picture and ``n_labels`` the labels in use."""

    workers: dict[Hashable, MaskWorker]
    crowd: MaskWorker
    objects: float
    n_labels: int = 2
    # Pixels each mask is dilated by before masks are matched (``EDGE_PAIRS``); 0 in a model
    # stored before it was learnt, which matches by plain IoU as that model's merge did.
    edge_tolerance: float = 0.0

    def worker(self, worker: Hashable) -> MaskWorker:
        return self.workers.get(worker, self.crowd)


class SemanticWorker(NamedTuple):
    """What the crowd's semantic answers tell of one worker."""

    accuracy: float  # chance a pixel they (or another) marked gets the right label from them
    images: int


@dataclass(frozen=True)
class SemanticModel:
    workers: dict[Hashable, SemanticWorker]
    crowd: SemanticWorker
    n_labels: int = 2

    def worker(self, worker: Hashable) -> SemanticWorker:
        return self.workers.get(worker, self.crowd)


# --- Instance masks ----------------------------------------------------------------------------


class _Masks(_Polygons):
    """All masks of one image, flat, with their answer's weight and rank: what the polygon
    merge's batch holds of an image, read from RLEs instead of rasterised."""

    def __init__(self, crowd: list[Answer], width: int, height: int) -> None:
        order = sorted(range(len(crowd)), key=lambda a: -crowd[a].weight)
        rank_of = {a: r for r, a in enumerate(order)}
        self.answer, self.item, self.labels = [], [], []
        self.points = []
        rles: list[Rle] = []
        for a, answer in enumerate(crowd):
            for i, item in enumerate(answer.items):
                rle = _rle(item, width, height, f"mask {i} of worker {answer.worker!r}")
                if not coco_mask.area(rle):
                    continue  # marks nothing; its worker still votes, as one who did not
                self.answer.append(a)
                self.item.append(i)
                self.labels.append(item["label"])
                rles.append(rle)
        self.n = len(rles)
        self.rank = np.array([rank_of[a] for a in self.answer], dtype=np.intp)
        self.weight = np.array([crowd[a].weight for a in self.answer], dtype=np.float64)
        self.rles = rles
        self.area = coco_mask.area(rles).astype(np.float64) if rles else np.zeros(0)
        self.iou = mask_iou(rles, rles)


def _rle(item: Mapping[str, Any], width: int, height: int, what: str) -> Rle:
    raw = item.get("rle")
    if not isinstance(raw, Mapping) or "counts" not in raw or "size" not in raw:
        raise ValueError(f"{what} has no rle")
    if [int(v) for v in raw["size"]] != [height, width]:
        raise ValueError(f"{what} is {raw['size']}, not the image's [{height}, {width}]")
    counts = raw["counts"]
    return {
        "size": [height, width],
        "counts": counts.encode() if isinstance(counts, str) else counts,
    }


def _build(
    crowds: Sequence[Sequence[Answer | Sequence[Any]]],
    sizes: Sequence[tuple[int, int]],
    iou_threshold: float,
    tolerance: float | None = None,
) -> tuple[_Batch, float]:
    """The batch, its masks clustered by their IoU at the edge ``tolerance`` (measured on the
    batch when None, :func:`edge_tolerance`), and that tolerance."""
    used: list[float] = []

    def similarity(images: list[_Polygons]) -> list[FloatArray]:
        masks = cast(list[_Masks], images)  # what ``shapes=_Masks`` reads
        used.append(edge_tolerance(masks, iou_threshold) if tolerance is None else tolerance)
        return [tolerant_iou(image, used[0]) for image in masks]

    batch = _Batch.build(crowds, sizes, iou_threshold, shapes=_Masks, similarity=similarity)
    return batch, used[0] if used else 0.0


def tolerant_iou(image: _Masks, tolerance: float) -> FloatArray:
    """The IoU of every pair of an image's masks, each dilated by ``tolerance`` pixels (a
    disc) first: two workers' masks of one object compared as far as their hands can tell.
    Where an object is large against the tolerance this is its IoU; where it is a stroke a
    few pixels across, the hand's offsets of a pixel or two are most of each mask, and this
    still finds them one object, while two strokes further apart than the tolerance stay
    apart. Only masks whose dilated boxes meet are compared; the rest are 0."""
    if tolerance <= 0.0 or image.n < 2:
        return image.iou
    height, width = (int(v) for v in image.rles[0]["size"])
    pad = int(np.ceil(tolerance))
    boxes = coco_mask.toBbox(image.rles)
    left = np.maximum(np.floor(boxes[:, 0]).astype(int) - pad, 0)
    top = np.maximum(np.floor(boxes[:, 1]).astype(int) - pad, 0)
    right = np.minimum(np.ceil(boxes[:, 0] + boxes[:, 2]).astype(int) + pad, width)
    bottom = np.minimum(np.ceil(boxes[:, 1] + boxes[:, 3]).astype(int) + pad, height)
    grown = [
        _grown(rle, int(left[i]), int(top[i]), int(right[i]), int(bottom[i]), tolerance)
        for i, rle in enumerate(image.rles)
    ]
    area = np.array([float(g.sum()) for g in grown])
    out = np.eye(image.n)
    meet = (
        (left[:, None] < right[None, :])
        & (left[None, :] < right[:, None])
        & (top[:, None] < bottom[None, :])
        & (top[None, :] < bottom[:, None])
    )
    for i, j in zip(*np.nonzero(np.triu(meet, 1)), strict=True):
        x0, x1 = max(left[i], left[j]), min(right[i], right[j])
        y0, y1 = max(top[i], top[j]), min(bottom[i], bottom[j])
        a = grown[i][y0 - top[i] : y1 - top[i], x0 - left[i] : x1 - left[i]]
        b = grown[j][y0 - top[j] : y1 - top[j], x0 - left[j] : x1 - left[j]]
        shared = float(np.count_nonzero(a & b))
        out[i, j] = out[j, i] = shared / (area[i] + area[j] - shared)
    return out


def _grown(
    rle: Rle, left: int, top: int, right: int, bottom: int, tolerance: float
) -> npt.NDArray[np.bool_]:
    """The part ``[top:bottom, left:right]`` of a mask dilated by ``tolerance`` pixels (a
    disc)."""
    crop = _crop(rle, left, top, right, bottom)
    out: npt.NDArray[np.bool_] = ndimage.distance_transform_edt(crop == 0) <= tolerance
    return out


def edge_tolerance(images: Sequence[_Masks], iou_threshold: float) -> float:
    """The dilation (pixels) masks are clustered at: ``TOLERANCE_PER_EDGE_DISTANCE`` times
    how far apart two workers' edges of one object typically lie. That distance: over pairs
    of masks of different workers on one image that match by plain IoU (at least
    ``iou_threshold``), at most ``EDGE_PAIRS`` of them spread over the batch, the median of
    each pair's mean symmetric edge distance (the mean, over both masks' edge pixels, of the
    distance to the other mask's edge), shrunk toward ``TYPICAL_EDGE_DISTANCE``. Large
    objects, which match by plain IoU whatever the hand, measure the hand for all."""
    pairs = [
        (image, int(i), int(j))
        for image in images
        for i, j in zip(*np.nonzero(np.triu(image.iou >= iou_threshold, 1)), strict=True)
        if image.answer[i] != image.answer[j]
    ]
    step = max(len(pairs) / EDGE_PAIRS, 1.0)
    chosen = [pairs[int(k * step)] for k in range(min(len(pairs), EDGE_PAIRS))]
    distances = [_edge_distance(image, i, j) for image, i, j in chosen]
    n = len(distances)
    typical = TYPICAL_EDGE_DISTANCE if not n else float(np.median(distances))
    distance = (n * typical + PRIOR_STRENGTH * TYPICAL_EDGE_DISTANCE) / (n + PRIOR_STRENGTH)
    return TOLERANCE_PER_EDGE_DISTANCE * distance


def _edge_distance(image: _Masks, i: int, j: int) -> float:
    """The mean symmetric distance between the edges of masks ``i`` and ``j`` (pixels)."""
    height, width = (int(v) for v in image.rles[i]["size"])
    boxes = coco_mask.toBbox([image.rles[i], image.rles[j]])
    left = max(int(np.floor(boxes[:, 0].min())) - 1, 0)
    top = max(int(np.floor(boxes[:, 1].min())) - 1, 0)
    right = min(int(np.ceil((boxes[:, 0] + boxes[:, 2]).max())) + 1, width)
    bottom = min(int(np.ceil((boxes[:, 1] + boxes[:, 3]).max())) + 1, height)
    edges = []
    for k in (i, j):
        mask = _crop(image.rles[k], left, top, right, bottom) > 0
        edges.append(mask & ~ndimage.binary_erosion(mask))
    a, b = edges
    to_a = ndimage.distance_transform_edt(~a)
    to_b = ndimage.distance_transform_edt(~b)
    return float((to_b[a].sum() + to_a[b].sum()) / max(a.sum() + b.sum(), 1))


def merge_masks(
    answers: Sequence[Answer | Sequence[Any]],
    *,
    width: int,
    height: int,
    iou_threshold: float = 0.5,
    quorum: float | None = None,
    model: MaskModel | None = None,
) -> list[MergedObject]:
    """Merge the workers' instance ``answers`` on one image (see the module). Each answer is
    ``(worker, weight, items)``, items ``{"label", "rle": {"size", "counts"}}``. A ``quorum``
    keeps clusters by support instead of by the model's posterior. Highest score first."""
    (objects,) = merge_masks_batch(
        [answers],
        [(width, height)],
        iou_threshold=iou_threshold,
        method="em" if quorum is None else "quorum",
        quorum=0.5 if quorum is None else quorum,
        model=model,
    )
    return objects


def merge_masks_batch(
    crowds: Sequence[Sequence[Answer | Sequence[Any]]],
    sizes: Sequence[tuple[int, int]],
    *,
    iou_threshold: float = 0.5,
    method: Method = "em",
    quorum: float = 0.5,
    model: MaskModel | None = None,
) -> list[list[MergedObject]]:
    """:func:`merge_masks` for many images: ``crowds[k]`` answered on an image of
    ``sizes[k]`` (width, height). The worker model is learnt from the batch unless given."""
    if method not in ("quorum", "em"):
        raise ValueError(f"method must be 'quorum' or 'em', got {method!r}")
    if model is None:
        batch, tolerance = _build(crowds, sizes, iou_threshold)
        model = _learn(batch, tolerance=tolerance)
    else:
        batch, _ = _build(crowds, sizes, iou_threshold, model.edge_tolerance)
    return _apply(batch, model, method, quorum)


def mask_model(
    crowds: Sequence[Sequence[Answer | Sequence[Any]]],
    sizes: Sequence[tuple[int, int]],
    *,
    iou_threshold: float = 0.5,
    prior: Mapping[Hashable, GoldRates] | None = None,
) -> MaskModel:
    """The model of each worker that :func:`merge_masks_batch` learns from this batch;
    ``prior`` centres some workers' recall and false marks on what gold measured."""
    batch, tolerance = _build(crowds, sizes, iou_threshold)
    return _learn(batch, prior, tolerance)


@dataclass(frozen=True)
class _Window:
    x0: int
    y0: int
    width: int
    height: int
    masks: npt.NDArray[np.uint8]  # (n, height, width), one a member


def _window(batch: _Batch, cluster: _Cluster) -> _Window | None:
    image = batch.polygons[cluster.image]
    width, height = batch.sizes[cluster.image]
    members = cluster.members
    boxes = coco_mask.toBbox([image.rles[i] for i in members])
    radius = float(np.sqrt(np.median(image.area[members]) / np.pi))
    margin = MARGIN_PX + MARGIN_SHARE * radius
    left = max(int(boxes[:, 0].min() - margin), 0)
    top = max(int(boxes[:, 1].min() - margin), 0)
    right = min(int(np.ceil((boxes[:, 0] + boxes[:, 2]).max() + margin)), width)
    bottom = min(int(np.ceil((boxes[:, 1] + boxes[:, 3]).max() + margin)), height)
    if right <= left or bottom <= top:
        return None
    masks = np.stack([_crop(image.rles[i], left, top, right, bottom) for i in members])
    return _Window(left, top, right - left, bottom - top, masks)


def _crop(rle: Rle, left: int, top: int, right: int, bottom: int) -> npt.NDArray[np.uint8]:
    """The part ``[top:bottom, left:right]`` of an RLE's mask, expanded from its runs over
    those columns only (a mask of a large image is never decoded whole for one object)."""
    height = int(rle["size"][0])
    counts = rle["counts"]
    runs = rle_runs(counts.decode("ascii") if isinstance(counts, bytes) else counts)
    if runs is None:
        raise ValueError("a mask's counts are not a COCO compressed RLE string")
    lengths = np.asarray(runs, dtype=np.int64)
    ends = np.cumsum(lengths)
    first, last = left * height, right * height  # column-major: columns are contiguous
    inside = np.clip(ends, first, last) - np.clip(ends - lengths, first, last)
    values = (np.arange(len(lengths)) % 2).astype(np.uint8)
    columns = np.repeat(values, inside).reshape(right - left, height)
    return np.ascontiguousarray(columns.T[top:bottom])


def _pixel_votes(sensitivity: FloatArray, specificity: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Each member's log-likelihood ratio for "object" where they marked the pixel, and where
    they did not; a worker no better than chance says nothing either way."""
    on = np.log(sensitivity / (1.0 - specificity))
    off = np.log((1.0 - sensitivity) / specificity)
    return np.maximum(on, 0.0), np.minimum(off, 0.0)


def edge_bands(inside: npt.NDArray[np.bool_]) -> npt.NDArray[np.intp]:
    """Each pixel's band (``EDGE_BANDS``) of its distance to the edge of ``inside``: the
    distance to the nearest pixel on the other side. With no edge, every pixel is beyond."""
    if inside.all() or not inside.any():
        return np.full(inside.shape, N_BANDS - 1, dtype=np.intp)
    distance = np.where(
        inside, ndimage.distance_transform_edt(inside), ndimage.distance_transform_edt(~inside)
    )
    return np.searchsorted(EDGE_BANDS, distance, side="left").astype(np.intp)


def _posterior(
    masks: npt.NDArray[np.uint8],
    sensitivity: FloatArray,
    specificity: FloatArray,
    given: FloatArray,
    edge: tuple[FloatArray, FloatArray] | None = None,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.intp]]:
    """Each pixel's posterior of belonging to the object (see the module, step 4), and each
    pixel's band of distance to the resulting edge. With ``edge`` (each member's sensitivity
    and specificity a band, (members, bands)) the vote is drawn again with each member's
    rates of the band the pixel is in, from the edge the previous vote drew."""
    scale = given / max(float(given.mean()), EPS)
    on, off = _pixel_votes(sensitivity, specificity)
    evidence = float((scale * off).sum()) + np.tensordot(scale * (on - off), masks, axes=1)
    posterior = _with_prior(evidence, masks)
    bands = edge_bands(posterior >= 0.5)
    if edge is None:
        return posterior, bands
    on_band, off_band = _pixel_votes(*edge)
    for _ in range(EDGE_ROUNDS):
        evidence = np.zeros(masks.shape[1:])
        for m in range(len(masks)):
            off_here = off_band[m][bands]
            evidence += scale[m] * (off_here + (on_band[m][bands] - off_here) * masks[m])
        posterior = _with_band_prior(evidence, bands, posterior >= 0.5)
        bands = edge_bands(posterior >= 0.5)
    return posterior, bands


def _with_band_prior(
    evidence: npt.NDArray[np.float64],
    bands: npt.NDArray[np.intp],
    drawn: npt.NDArray[np.bool_],
) -> npt.NDArray[np.float64]:
    """The posterior from the members' evidence with each band's prior the share of its
    pixels inside the edge ``drawn`` that the bands measure from (about half in the bands
    near it, whatever the vote). Not re-estimated from the posterior as the window's share
    is: on the edge each member's word is weak, and there that estimate ran away (a band's
    share drifting to 0.7 took in every pixel two of five members marked)."""
    flat = bands.ravel()
    count = np.maximum(np.bincount(flat, minlength=N_BANDS), 1)
    share = np.clip(np.bincount(flat, drawn.ravel(), N_BANDS) / count, 0.01, 0.99)
    prior = np.log(share / (1.0 - share))[bands]
    out: npt.NDArray[np.float64] = 1.0 / (1.0 + np.exp(-(prior + evidence)))
    return out


def _with_prior(
    evidence: npt.NDArray[np.float64], masks: npt.NDArray[np.uint8]
) -> npt.NDArray[np.float64]:
    """The posterior from the members' evidence, with the window's share of object pixels as
    the prior, that share estimated along."""
    share = float(np.clip(masks.mean(), 0.01, 0.99))
    for _ in range(PRIOR_ROUNDS):
        posterior = 1.0 / (1.0 + np.exp(-(np.log(share / (1.0 - share)) + evidence)))
        share = float(np.clip(posterior.mean(), 0.01, 0.99))
    out: npt.NDArray[np.float64] = posterior
    return out


def _learn(
    batch: _Batch, prior: Mapping[Hashable, GoldRates] | None = None, tolerance: float = 0.0
) -> MaskModel:
    pairs = _Pairs.build(batch)
    workers = pairs.workers
    if not workers:
        crowd = MaskWorker(0.8, 0.1, TYPICAL_SENSITIVITY, TYPICAL_SPECIFICITY,
                           TYPICAL_LABEL_ACCURACY, 0)  # fmt: skip
        return MaskModel({}, crowd, 1.0, 2, tolerance)
    if batch.clusters:
        existence = existence_em(
            pairs.candidate,
            pairs.worker,
            pairs.marked,
            worker_images=pairs.worker_images,
            start=np.array([min(batch.support(c), 1.0) for c in batch.clusters]),
            prior=Prior.of(workers, prior),
        )
        real, recall = existence.posterior, existence.recall
        false_marks, objects = existence.false_marks, existence.objects
    else:
        real = np.zeros(0)
        recall = np.full(len(workers), 0.8)
        false_marks = np.full(len(workers), 0.1)
        objects = RATE_FLOOR
    k = max(len({label for image in batch.polygons for label in image.labels}), 2)
    accuracy = _label_accuracy(batch, real, workers, k)
    sensitivity, specificity, edge_sensitivity, edge_specificity = _pixel_model(
        batch, real, workers
    )
    evidence = pairs.worker_images.astype(np.float64)
    model = {
        w: MaskWorker(
            float(recall[j]),
            float(false_marks[j]),
            float(sensitivity[j]),
            float(specificity[j]),
            accuracy[w],
            int(pairs.worker_images[j]),
            tuple(float(v) for v in edge_sensitivity[j]),
            tuple(float(v) for v in edge_specificity[j]),
        )
        for j, w in enumerate(workers)
    }
    typical = MaskWorker(
        float(recall @ evidence / evidence.sum()),
        float(false_marks @ evidence / evidence.sum()),
        float(sensitivity @ evidence / evidence.sum()),
        float(specificity @ evidence / evidence.sum()),
        float(np.mean(list(accuracy.values()))),
        0,
        tuple(float(v) for v in evidence @ edge_sensitivity / evidence.sum()),
        tuple(float(v) for v in evidence @ edge_specificity / evidence.sum()),
    )
    return MaskModel(model, typical, float(objects), k, tolerance)


def _pixel_model(
    batch: _Batch, real: FloatArray, workers: list[Hashable]
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Each worker's sensitivity and specificity, overall and band by band of the distance to
    the consensus edge ((workers, bands)), alternating consensus and measurement over the
    likely-real clusters of two or more members (at most ``LEARNING_CLUSTERS``). A worker's
    rate in a band is shrunk toward the crowd's in that band, the crowd's toward its overall
    rate."""
    ids = {w: j for j, w in enumerate(workers)}
    n = len(workers)
    sensitivity = np.full(n, TYPICAL_SENSITIVITY)
    specificity = np.full(n, TYPICAL_SPECIFICITY)
    edge_sensitivity = np.full((n, N_BANDS), TYPICAL_SENSITIVITY)
    edge_specificity = np.full((n, N_BANDS), TYPICAL_SPECIFICITY)
    useful = [
        c for c, cluster in enumerate(batch.clusters)
        if real[c] >= 0.5 and len(cluster.members) >= 2
    ]  # fmt: skip
    step = max(len(useful) / LEARNING_CLUSTERS, 1.0)
    windows: list[tuple[float, list[int], FloatArray, _Window]] = []
    for c in [useful[int(i * step)] for i in range(min(len(useful), LEARNING_CLUSTERS))]:
        cluster = batch.clusters[c]
        window = _window(batch, cluster)
        if window is not None:
            member_ids = [ids[w] for w in batch.member_workers(cluster)]
            given = batch.polygons[cluster.image].weight[cluster.members]
            windows.append((float(real[c]), member_ids, given, window))
    if not windows:
        return sensitivity, specificity, edge_sensitivity, edge_specificity
    low, high = PIXEL_RATE_BOUNDS
    for round_ in range(PIXEL_ROUNDS):
        covered, left_out, seen = np.zeros(n), np.zeros(n), np.zeros(n)
        band_covered, band_left_out = np.zeros((n, N_BANDS)), np.zeros((n, N_BANDS))
        band_seen_in, band_seen_out = np.zeros((n, N_BANDS)), np.zeros((n, N_BANDS))
        for q, member_ids, given, window in windows:
            # The first round draws every consensus with the overall rates alone.
            edge = (
                None if round_ == 0
                else (edge_sensitivity[member_ids], edge_specificity[member_ids])
            )  # fmt: skip
            inside, bands = _posterior(
                window.masks, sensitivity[member_ids], specificity[member_ids], given, edge
            )
            outside = 1.0 - inside
            object_pixels, other_pixels = inside.sum(), outside.sum()
            if object_pixels < 1.0 or other_pixels < 1.0:
                continue
            flat_bands = bands.ravel()
            band_inside = np.bincount(flat_bands, inside.ravel(), N_BANDS)
            band_outside = np.bincount(flat_bands, outside.ravel(), N_BANDS)
            has_in, has_out = band_inside >= 1.0, band_outside >= 1.0
            for j, mask in zip(member_ids, window.masks, strict=True):
                marked = mask.ravel().astype(np.float64)
                hit = inside.ravel() * marked
                spared = outside.ravel() * (1.0 - marked)
                covered[j] += q * float(hit.sum()) / object_pixels
                left_out[j] += q * float(spared.sum()) / other_pixels
                seen[j] += q
                band_hit = np.bincount(flat_bands, hit, N_BANDS)
                band_spared = np.bincount(flat_bands, spared, N_BANDS)
                band_covered[j, has_in] += q * band_hit[has_in] / band_inside[has_in]
                band_left_out[j, has_out] += q * band_spared[has_out] / band_outside[has_out]
                band_seen_in[j, has_in] += q
                band_seen_out[j, has_out] += q
        if not seen.any():
            break
        crowd_sensitivity = (covered.sum() + PRIOR_STRENGTH * TYPICAL_SENSITIVITY) / (
            seen.sum() + PRIOR_STRENGTH
        )
        crowd_specificity = (left_out.sum() + PRIOR_STRENGTH * TYPICAL_SPECIFICITY) / (
            seen.sum() + PRIOR_STRENGTH
        )
        sensitivity = np.clip(
            (covered + PRIOR_STRENGTH * crowd_sensitivity) / (seen + PRIOR_STRENGTH), low, high
        )
        specificity = np.clip(
            (left_out + PRIOR_STRENGTH * crowd_specificity) / (seen + PRIOR_STRENGTH), low, high
        )
        crowd_band_sensitivity = (band_covered.sum(0) + PRIOR_STRENGTH * crowd_sensitivity) / (
            band_seen_in.sum(0) + PRIOR_STRENGTH
        )
        crowd_band_specificity = (band_left_out.sum(0) + PRIOR_STRENGTH * crowd_specificity) / (
            band_seen_out.sum(0) + PRIOR_STRENGTH
        )
        edge_sensitivity = np.clip(
            (band_covered + PRIOR_STRENGTH * crowd_band_sensitivity)
            / (band_seen_in + PRIOR_STRENGTH),
            low,
            high,
        )
        edge_specificity = np.clip(
            (band_left_out + PRIOR_STRENGTH * crowd_band_specificity)
            / (band_seen_out + PRIOR_STRENGTH),
            low,
            high,
        )
    return sensitivity, specificity, edge_sensitivity, edge_specificity


def _apply(
    batch: _Batch, model: MaskModel, method: Method, quorum: float
) -> list[list[MergedObject]]:
    posterior = _existence_posterior(batch, model)  # type: ignore[arg-type]
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
    model: MaskModel,
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
    weight = image.weight[members]
    edge = None
    if all(len(r.edge_sensitivity) == len(r.edge_specificity) == N_BANDS for r in rates):
        edge = (
            np.array([r.edge_sensitivity for r in rates], dtype=np.float64),
            np.array([r.edge_specificity for r in rates], dtype=np.float64),
        )
    inside, _ = _posterior(
        window.masks,
        np.array([r.sensitivity for r in rates]),
        np.array([r.specificity for r in rates]),
        weight,
        edge,
    )
    if not (inside >= 0.5).any():
        return None
    full = np.zeros((height, width), dtype=np.uint8, order="F")
    full[window.y0 : window.y0 + window.height, window.x0 : window.x0 + window.width] = (
        inside >= 0.5
    )
    mask = _encode(full)
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
        kind="mask",
        label=label,
        score=score,
        support=min(1.0, float(weight.sum()) / voters),
        agreement=agreement,
        num_votes=len(members),
        workers=tuple(workers),
        items=tuple(image.item[i] for i in members),
        mask=mask,
    )


def pixel_majority_vote(
    answers: Sequence[Answer | Sequence[Any]], *, width: int, height: int
) -> list[MergedObject]:
    """Baseline: per label, pixels covered by more than half of the workers, one object per
    connected region. Weights are ignored."""
    crowd = as_answers(answers)
    masks = _Masks(crowd, width, height)
    if not masks.n:
        return []
    n_voters = len(crowd)
    decoded = _decode(masks.rles)  # (h, w, n)
    out: list[MergedObject] = []
    for label in dict.fromkeys(masks.labels):
        own = [i for i in range(masks.n) if masks.labels[i] == label]
        covered = np.zeros((height, width), dtype=np.intp)
        for a in {masks.answer[i] for i in own}:
            covered += decoded[:, :, [i for i in own if masks.answer[i] == a]].any(axis=2)
        regions, count = ndimage.label(covered * 2 > n_voters)
        for region in range(1, count + 1):
            mask = _encode((regions == region).astype(np.uint8))
            similarity = mask_iou([mask], [masks.rles[i] for i in own])[0]
            members = [i for i, s in zip(own, similarity.tolist(), strict=True) if s > 0]
            if not members:
                continue
            agreement = float(np.mean([similarity[own.index(i)] for i in members]))
            support = len({masks.answer[i] for i in members}) / n_voters
            out.append(
                MergedObject(
                    kind="mask", label=label, score=min(1.0, support * agreement),
                    support=min(1.0, support), agreement=agreement, num_votes=len(members),
                    workers=tuple(crowd[masks.answer[i]].worker for i in members),
                    items=tuple(masks.item[i] for i in members), mask=mask,
                )
            )  # fmt: skip
    out.sort(key=lambda obj: -obj.score)
    return out


# --- Semantic masks ----------------------------------------------------------------------------


@dataclass
class _LabelMaps:
    """One image's answers as label maps over the pixels anyone marked."""

    workers: list[Hashable]
    weight: FloatArray  # given weights, one an answer
    marked: npt.NDArray[np.bool_]  # (h, w): pixels some answer marked
    # The classes some answer gives on this image (0 none, else label index + 1), ascending;
    # votes index them, so the posterior has a row per class present, not per label.
    classes: npt.NDArray[np.intp]
    votes: npt.NDArray[np.uint16]  # (n answers, pixels marked): an index into ``classes``
    items: list[dict[int, list[int]]]  # per answer: label index -> its items


def _label_maps(crowd: list[Answer], width: int, height: int, labels: dict[str, int]) -> _LabelMaps:
    maps = np.zeros((len(crowd), height, width), dtype=np.uint16)
    items: list[dict[int, list[int]]] = []
    for a, answer in enumerate(crowd):
        mine: dict[int, list[int]] = {}
        for i, item in enumerate(answer.items):
            rle = _rle(item, width, height, f"mask {i} of worker {answer.worker!r}")
            k = labels.setdefault(item["label"], len(labels))
            # Of overlapping masks (an unchecked input), the later one holds the pixel.
            maps[a][_decode([rle])[:, :, 0] > 0] = k + 1
            mine.setdefault(k, []).append(i)
        items.append(mine)
    marked: npt.NDArray[np.bool_] = np.asarray((maps > 0).any(axis=0))
    given = maps[:, marked]
    classes = np.union1d([0], np.unique(given)).astype(np.intp)
    return _LabelMaps(
        [answer.worker for answer in crowd],
        np.array([answer.weight for answer in crowd], dtype=np.float64),
        marked,
        classes,
        np.searchsorted(classes, given).astype(np.uint16),
        items,
    )


def _semantic_posterior(
    image: _LabelMaps, accuracy: FloatArray, n_classes: int
) -> npt.NDArray[np.float64]:
    """(classes present, pixels marked) posterior of each class of ``image.classes`` on each
    marked pixel; ``n_classes`` counts every label and none (a vote's strength)."""
    present = len(image.classes)
    if not image.votes.shape[1]:
        return np.zeros((present, 0))
    scale = image.weight / max(float(image.weight.mean()), EPS)
    strength = scale * np.log(accuracy * (n_classes - 1) / (1.0 - accuracy))
    score = np.zeros((present, image.votes.shape[1]))
    pixels = np.arange(image.votes.shape[1])
    for a in range(len(image.workers)):
        score[image.votes[a], pixels] += strength[a]  # one vote an answer a pixel
    share = np.full(present, 1.0 / present)
    for _ in range(PRIOR_ROUNDS):
        logits = score + np.log(share)[:, None]
        logits -= logits.max(axis=0)
        posterior = np.exp(logits)
        posterior /= posterior.sum(axis=0)
        share = np.clip(posterior.mean(axis=1), RATE_FLOOR, None)
        share /= share.sum()
    out: npt.NDArray[np.float64] = posterior
    return out


def semantic_model(
    crowds: Sequence[Sequence[Answer | Sequence[Any]]], sizes: Sequence[tuple[int, int]]
) -> SemanticModel:
    """Each worker's pixel accuracy, learnt from this batch (see the module)."""
    images, labels = _semantic_batch(crowds, sizes)
    return _learn_semantic(images, len(labels) + 1)


def _semantic_batch(
    crowds: Sequence[Sequence[Answer | Sequence[Any]]], sizes: Sequence[tuple[int, int]]
) -> tuple[list[_LabelMaps], dict[str, int]]:
    if len(crowds) != len(sizes):
        raise ValueError("crowds and sizes must be as long as each other")
    labels: dict[str, int] = {}
    images = [
        _label_maps(as_answers(crowd), int(w), int(h), labels)
        for crowd, (w, h) in zip(crowds, sizes, strict=True)
    ]
    return images, labels


def _learn_semantic(images: list[_LabelMaps], n_classes: int) -> SemanticModel:
    n_classes = max(n_classes, 2)
    ids: dict[Hashable, int] = {}
    answered: dict[Hashable, int] = {}
    for image in images:
        for w in image.workers:
            ids.setdefault(w, len(ids))
            answered[w] = answered.get(w, 0) + 1
    n = len(ids)
    accuracy = np.full(n, TYPICAL_PIXEL_ACCURACY)
    low, high = 1.0 / n_classes + RATE_FLOOR, 1.0 - RATE_FLOOR
    for _ in range(SEMANTIC_ROUNDS):
        right, seen = np.zeros(n), np.zeros(n)
        for image in images:
            if not image.votes.shape[1]:
                continue
            # Only the pixels the answers dispute tell one worker from another: where all
            # agree, everyone is right, and the share of such pixels is the image's (its
            # objects' size against their edges), not the worker's.
            disputed = np.flatnonzero((image.votes != image.votes[:1]).any(axis=0))
            if not len(disputed):
                continue
            rows = [ids[w] for w in image.workers]
            posterior = _semantic_posterior(image, accuracy[rows], n_classes)[:, disputed]
            pixels = np.arange(len(disputed))
            for a, j in enumerate(rows):
                # Per image, the share of its disputed pixels this worker labelled right.
                right[j] += float(posterior[image.votes[a][disputed], pixels].mean())
                seen[j] += 1.0
        crowd = (right.sum() + PRIOR_STRENGTH * TYPICAL_PIXEL_ACCURACY) / (
            seen.sum() + PRIOR_STRENGTH
        )
        accuracy = np.clip((right + PRIOR_STRENGTH * crowd) / (seen + PRIOR_STRENGTH), low, high)
    workers = {w: SemanticWorker(float(accuracy[j]), answered[w]) for w, j in ids.items()}
    evidence = np.array([answered[w] for w in ids], dtype=np.float64)
    typical = float(accuracy @ evidence / evidence.sum()) if n else TYPICAL_PIXEL_ACCURACY
    return SemanticModel(workers, SemanticWorker(typical, 0), n_classes - 1)


def merge_semantic_batch(
    crowds: Sequence[Sequence[Answer | Sequence[Any]]],
    sizes: Sequence[tuple[int, int]],
    *,
    model: SemanticModel | None = None,
) -> list[list[MergedObject]]:
    """Semantic consensus of many images (see the module): one object a label an image."""
    images, labels = _semantic_batch(crowds, sizes)
    n_classes = max(len(labels) + 1, 2)
    if model is None:
        model = _learn_semantic(images, n_classes)
    names = {k + 1: name for name, k in labels.items()}
    out: list[list[MergedObject]] = []
    for image, (width, height) in zip(images, sizes, strict=True):
        accuracy = np.array([model.worker(w).accuracy for w in image.workers])
        accuracy = np.clip(accuracy, 1.0 / n_classes + RATE_FLOOR, 1.0 - RATE_FLOOR)
        posterior = _semantic_posterior(image, accuracy, n_classes)
        objects: list[MergedObject] = []
        if posterior.shape[1]:
            # argmax takes the first of equal posteriors: "none" wins a tie.
            winner = posterior.argmax(axis=0)
            for k in sorted(set(winner.tolist()) - {0}):
                label = int(image.classes[k])  # label index + 1
                objects.append(_semantic_object(image, posterior, winner, k, label - 1,
                                                names[label], int(width), int(height)))  # fmt: skip
        objects.sort(key=lambda obj: -obj.score)
        out.append(objects)
    return out


def _semantic_object(
    image: _LabelMaps,
    posterior: npt.NDArray[np.float64],
    winner: npt.NDArray[np.intp],
    k: int,
    label_index: int,
    label: str,
    width: int,
    height: int,
) -> MergedObject:
    """The object of the class at row ``k`` of ``image.classes`` (label ``label_index``)."""
    chosen = winner == k
    full = np.zeros((height, width), dtype=np.uint8, order="F")
    full[image.marked] = chosen
    mask = _encode(full)
    members = [
        (a, i)
        for a in range(len(image.workers))
        if (image.votes[a][chosen] == k).any()
        for i in image.items[a].get(label_index, [])
    ]
    gave = sorted({a for a, _ in members})
    # Each member answer's pixels of the label against the result.
    similarity = [
        float(
            ((image.votes[a] == k) & chosen).sum() / max(((image.votes[a] == k) | chosen).sum(), 1)
        )
        for a in gave
    ]
    weight = image.weight[gave]
    agreement = float(np.dot(similarity, weight) / weight.sum()) if gave else 0.0
    return MergedObject(
        kind="mask",
        label=label,
        score=float(posterior[k][chosen].mean()),
        support=min(1.0, float(weight.sum()) / float(image.weight.sum())),
        agreement=agreement,
        num_votes=len(gave),
        workers=tuple(image.workers[a] for a, _ in members),
        items=tuple(i for _, i in members),
        mask=mask,
    )


def semantic_union(items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A semantic answer as one mask a label (the union of its masks of that label), in the
    order labels first appear: how semantic answers are compared, whether a worker painted a
    label in one stroke or several."""
    by_label: dict[str, list[Rle]] = {}
    for item in items:
        rle = item["rle"]
        counts = rle["counts"]
        by_label.setdefault(item["label"], []).append(
            {
                "size": list(rle["size"]),
                "counts": counts.encode() if isinstance(counts, str) else counts,
            }
        )
    out = []
    for label, rles in by_label.items():
        merged = coco_mask.merge(rles, intersect=False) if len(rles) > 1 else rles[0]
        counts = merged["counts"]
        out.append(
            {
                "label": label,
                "rle": {
                    "size": [int(v) for v in merged["size"]],
                    "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
                },
            }
        )
    return out


# --- Tiles ---------------------------------------------------------------------------------------


def unite_mask_tiles(
    objects_per_tile: Sequence[Sequence[MergedObject]],
    regions: Sequence[Sequence[int]],
    *,
    iou_threshold: float = 0.5,
    semantic: bool = False,
    tolerance: float = 0.0,
) -> list[MergedObject]:
    """One image's masks from the merges of its tiles (``regions[t]`` the tile of
    ``objects_per_tile[t]``, each mask an RLE of the full image).

    Each tile decides the pixels of its core (:func:`tasks.tiling.tile_cores`: the tiles'
    overlaps split down the middle), so no pixel is decided twice. Instance masks: two
    objects of neighbouring tiles are one when they have the same label and their masks,
    seen through the two tiles' shared overlap and each dilated by ``tolerance`` pixels (the
    edge tolerance the masks were clustered at, :func:`tolerant_iou`: a stroke a few pixels
    across that two tiles' crowds placed a pixel or two apart is still one), have an IoU of
    at least ``iou_threshold``; the pieces of one object on the tiles' cores are united.
    Semantic masks: the pieces of a label are united. A united object's score, support and
    agreement are its pieces' means weighted by their area, and its members are all of
    theirs, each with its tile."""
    from tasks.tiling import tile_cores

    if len(objects_per_tile) != len(regions):
        raise ValueError("objects_per_tile and regions must be as long as each other")
    cores = tile_cores([(int(x), int(y), int(w), int(h)) for x, y, w, h in regions])
    pieces: list[tuple[int, MergedObject, Rle, float]] = []  # tile, object, core part, area
    for tile, objects in enumerate(objects_per_tile):
        for obj in objects:
            if obj.mask is None:
                continue
            # A piece may hold nothing of its tile's core, and still join (with its members)
            # the object another tile owns.
            part = clip_rle(obj.mask, cores[tile])
            pieces.append((tile, obj, part, float(coco_mask.area(part))))
    parent = list(range(len(pieces)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, (tile_i, obj_i, _, _) in enumerate(pieces):
        for j in range(i + 1, len(pieces)):
            tile_j, obj_j, _, _ = pieces[j]
            if obj_i.label != obj_j.label or tile_i == tile_j:
                continue
            if semantic or _same_across(obj_i, obj_j, regions[tile_i], regions[tile_j],
                                        iou_threshold, tolerance):  # fmt: skip
                parent[root(j)] = root(i)
    groups: dict[int, list[int]] = {}
    for i in range(len(pieces)):
        groups.setdefault(root(i), []).append(i)
    out = [
        _united([pieces[i] for i in group])
        for group in groups.values()
        if any(pieces[i][3] for i in group)
    ]
    out.sort(key=lambda obj: -obj.score)
    return out


def clip_rle(mask: Rle, region: Sequence[int]) -> Rle:
    """A mask (counts a string or bytes) cut to the rectangle ``region`` ``[x, y, w, h]``,
    as pycocotools gives it (counts bytes)."""
    height, width = (int(v) for v in mask["size"])
    counts = mask["counts"]
    whole = {
        "size": [height, width],
        "counts": counts.encode() if isinstance(counts, str) else counts,
    }
    x, y, w, h = (int(v) for v in region)
    box = coco_mask.frPyObjects(np.array([[x, y, w, h]], dtype=np.float64), height, width)[0]
    out: Rle = coco_mask.merge([whole, box], intersect=True)
    out["size"] = [height, width]
    return out


def _same_across(
    a: MergedObject, b: MergedObject, region_a: Sequence[int], region_b: Sequence[int],
    iou_threshold: float, tolerance: float,
) -> bool:  # fmt: skip
    """Whether two tiles' objects are one: their masks' IoU over the tiles' shared overlap,
    each dilated by ``tolerance`` pixels first (none at 0)."""
    ax, ay, aw, ah = region_a
    bx, by, bw, bh = region_b
    left, top = max(ax, bx), max(ay, by)
    right, bottom = min(ax + aw, bx + bw), min(ay + ah, by + bh)
    if right <= left or bottom <= top or a.mask is None or b.mask is None:
        return False
    shared = (left, top, right - left, bottom - top)
    seen_a, seen_b = clip_rle(a.mask, shared), clip_rle(b.mask, shared)
    if not coco_mask.area(seen_a) or not coco_mask.area(seen_b):
        return False
    if tolerance <= 0.0:
        return float(coco_mask.iou([seen_a], [seen_b], [0])[0, 0]) >= iou_threshold
    grown = [_grown(m, left, top, right, bottom, tolerance) for m in (seen_a, seen_b)]
    both = float(np.count_nonzero(grown[0] & grown[1]))
    return both / float(np.count_nonzero(grown[0] | grown[1])) >= iou_threshold


def _united(pieces: list[tuple[int, MergedObject, Rle, float]]) -> MergedObject:
    areas = np.array([area for _, _, _, area in pieces])
    share = areas / areas.sum()
    parts = [part for _, _, part, area in pieces if area]
    mask = coco_mask.merge(parts, intersect=False) if len(parts) > 1 else parts[0]
    first = max(pieces, key=lambda piece: piece[3])[1]
    return first._replace(
        score=float(share @ [obj.score for _, obj, _, _ in pieces]),
        support=float(share @ [obj.support for _, obj, _, _ in pieces]),
        agreement=float(share @ [obj.agreement for _, obj, _, _ in pieces]),
        num_votes=max(obj.num_votes for _, obj, _, _ in pieces),
        workers=tuple(w for _, obj, _, _ in pieces for w in obj.workers),
        items=tuple(i for _, obj, _, _ in pieces for i in obj.items),
        tiles=tuple(tile for tile, obj, _, _ in pieces for _ in obj.items),
        mask={"size": [int(v) for v in mask["size"]], "counts": mask["counts"].decode("ascii")},
    )
