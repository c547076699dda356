"""Consensus on bounding boxes: merge several workers' boxes on one image into one set. Pure.

The merge, for each image:

1. **Cluster** the boxes of all workers, at most one box of each worker per cluster, labels
   ignored (a box drawn in the right place with the wrong label still votes for the place).
   Workers are taken in decreasing order of weight; the first one's boxes open clusters, and
   each next worker's boxes are matched to the clusters' current centroids (weighted mean of
   their members) one to one, maximising the total IoU (the Hungarian method, never a greedy
   first-come pass), pairs below ``iou_threshold`` excluded; a box left over opens a cluster.
   With ``refine`` every box is then matched again, the same way, against the clusters' final
   merged boxes, which undoes the order's accidents (an early outlier pulling a centroid). It
   is off by default: on the benchmark's crowd it changes 4 clusters in 100,000 and costs as
   much again as the clustering.
2. **Keep** a cluster when its support, the weight of its members over the weight of all the
   image's voters (workers who answered "nothing here" included), reaches ``quorum``.
3. **Label** by weighted vote among the members; a tie goes to the label seen first on the
   image (in the order of the answers and their items).
4. **Place** the box at the weighted mean of the members' boxes (each edge) when every member
   overlaps that mean by at least ``OUTLIER_IOU``, the common case of a crowd that agrees.
   Otherwise start again from the weighted median of each edge, which a stray box cannot
   drag, and take the weighted mean of the members within ``OUTLIER_IOU`` of that median box:
   robust where someone strays, and as precise as a mean where the crowd agrees.
5. **Score**: (weight of the members that gave the winning label / weight of all voters) x
   (weighted mean IoU of the members with the merged box), in [0, 1].

With ``method="em"`` steps 2 to 5 use a model of each worker learnt from the whole batch instead
of the given weights (:mod:`qa.consensus.box_em`): a cluster is kept when the posterior
probability that it is a real object, given who marked it and who answered the image and did
not, reaches 0.5; that posterior is its score; its label is the most probable class given the
members' labels and their workers' confusion matrices (Dawid-Skene); members are placed with
their worker's systematic edge shift removed and with weights from their worker's placement
noise. The weights still order the clustering and decide ``support``. A fixed quorum drops
objects that two reliable workers of five marked, and keeps what a spammer and a careless worker
happened to agree on; the model tells them apart, at the price that an image's objects depend on
the batch it is learnt from. To make them independent of how a project is cut into batches,
learn the model once over the whole project (:func:`box_model`, which also takes gold-based
priors, :class:`BoxPrior`) and hand it to each batch's merge (``model=``): nothing is then
learnt, and each cluster's posterior and placement depend on its own members alone.

:func:`merge_boxes_batch` runs this over many images at once with array operations: the only
Python loop is over worker ranks (a handful); reading the items and building the objects are
C-level passes over flat lists. The matchings of all images are solved together as one sparse
assignment problem, and pairs that are each other's only candidate (the common case of a crowd
that agrees) are taken without solving anything. Each image's objects are those it gets
alone, whatever else is in the batch: sums run member by member in rank order, and label
ties are broken by the image's own order. :func:`merge_boxes` is the same for one
image; its fixed cost (about 0.4 ms) is that of the array machinery, so a caller with many
images (an export, a re-merge after scores change) should hand them over in one batch.

:func:`merge_across_tiles` unites the merged boxes of the tiles of one large image, where an
object crossing a seam was marked in part on each tile.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import chain, repeat
from operator import itemgetter, methodcaller
from typing import Any, Literal, NamedTuple

import numpy as np
import numpy.typing as npt

from qa.consensus import collector_paused
from qa.consensus.box_em import (
    CROWD_FALSE_MARKS,
    CROWD_LABEL_ACCURACY,
    CROWD_RECALL,
    NOISE_FLOOR,
    PRIOR_STRENGTH,
    RATE_FLOOR,
    SCORE_BINS,
    GoldRates,
    Prior,
    existence_em,
    existence_posterior,
    label_em,
    label_posterior,
    placement_noise,
    placement_shift,
    score_bins,
    score_odds,
)
from qa.consensus.objects import EPS, Answer, Item, MergedObject, weighted_median
from qa.geometry import match

FloatArray = npt.NDArray[np.float64]
Method = Literal["quorum", "em"]
IntArray = npt.NDArray[np.intp]
BoolArray = npt.NDArray[np.bool_]
Region = Sequence[float]

# A member whose box overlaps the merged box less than this is a stray: it still votes for the
# object and its label, but not for where its edges are. On the benchmark's simulated crowd
# 0.5 to 0.7 do equally well; the median alone is clearly worse (its precision is that of
# fewer voters).
OUTLIER_IOU = 0.6
# Rounds of placement in the worker model: shifts and noises measured against the merged
# boxes, which are placed again without the shifts and weighted by precision before the next
# round. The first round measures against a merge by the given weights; the second against
# the model's own.
PLACEMENT_ROUNDS = 2
# Clusters whose probability of being real is at most this are left out of the label EM: they
# are never kept, and their weight in the confusion counts is below the counts' precision.
LABEL_NEGLIGIBLE = 1e-3


@dataclass(frozen=True)
class BoxColumns:
    """A batch of box answers as columns instead of an object per box, for callers that hold
    millions of boxes (``crowd-aggregate``): :func:`merge_boxes_batch` and :func:`box_model`
    take it in place of the images' answers and treat it exactly as those answers.

    Answers come image by image, ``answers_per_image[i]`` of them for image ``i``; boxes
    answer by answer, ``boxes_per_answer[a]`` of them for answer ``a``.
    """

    answers_per_image: IntArray
    workers: list[Hashable]  # per answer
    weights: FloatArray  # per answer, in (0, 1]
    boxes_per_answer: IntArray
    boxes: FloatArray  # (n_boxes, 4): x, y, w, h in full-image pixels
    label: IntArray  # per box, an index into ``label_names``
    label_names: list[str]

    def __len__(self) -> int:
        return len(self.answers_per_image)


Images = Sequence[Sequence[Answer | Sequence[Any]]] | BoxColumns


def merge_boxes(
    answers: Sequence[Answer | Sequence[Any]],
    *,
    iou_threshold: float = 0.5,
    quorum: float = 0.5,
    refine: bool = False,
    method: Method = "quorum",
    model: BoxModel | None = None,
) -> list[MergedObject]:
    """Merge the workers' ``answers`` on one image into consensus boxes (see the module).

    Each answer is ``(worker, weight, items)``, items ``{"label", "bbox": [x, y, w, h]}`` in
    full-image pixels. Returns the kept objects, highest score first.
    """
    (objects,) = merge_boxes_batch(
        [answers],
        iou_threshold=iou_threshold,
        quorum=quorum,
        refine=refine,
        method=method,
        model=model,
    )
    return objects


def merge_boxes_batch(
    images: Images,
    *,
    iou_threshold: float = 0.5,
    quorum: float = 0.5,
    refine: bool = False,
    method: Method = "quorum",
    model: BoxModel | None = None,
) -> list[list[MergedObject]]:
    """:func:`merge_boxes` for many images at once: one list of objects per image, in order.

    With ``method="em"`` the worker model is learnt from the whole batch, so an image's
    objects depend on the other images in it (``quorum`` is then not used), unless ``model``
    (from :func:`box_model`, learnt once over a whole project) is given: then nothing is
    learnt, and each image's objects are those it gets alone with that model, however the
    project is cut into batches. Workers the model has not seen take the crowd's means.
    """
    _check(iou_threshold, method)
    if model is not None and method != "em":
        raise ValueError("a worker model is used by method='em' only")
    # Bulk creation of small objects (tuples per box and per object) with the collector on
    # triggers collection after collection over everything created so far; nothing here makes
    # reference cycles, so it waits until the end. (Process-wide: a merge running in another
    # thread meanwhile is only slower or faster, never wrong.)
    with collector_paused():
        crowd = _Crowd.build(images, scored=method == "em")
        if crowd.n_boxes == 0:
            return [[] for _ in range(len(images))]
        members = _clusters(crowd, iou_threshold, refine)
        if method == "em":
            if model is None:
                model = _learn(crowd, members, None)
            applied = _apply(crowd, members, model)
            real = applied.posterior >= 0.5
            members = members[real]
            merged, iou = _merge(crowd, members, applied.box_weight, applied.corners)
            return _objects(
                crowd,
                members,
                merged,
                iou,
                len(images),
                score=applied.posterior[real],
                label=(applied.label[real], applied.names),
            )
        members = members[_support(crowd, members) >= quorum - EPS]
        merged, iou = _merge(crowd, members)
        return _objects(crowd, members, merged, iou, len(images))


def _check(iou_threshold: float, method: str) -> None:
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError("iou_threshold must be in (0, 1]")
    if method not in ("quorum", "em"):
        raise ValueError(f"method must be 'quorum' or 'em', got {method!r}")


def _clusters(crowd: _Crowd, iou_threshold: float, refine: bool) -> IntArray:
    members = _cluster(crowd, iou_threshold)
    if refine:
        members = _refine(crowd, members, _merge(crowd, members)[0], iou_threshold)
    return members


class BoxWorker(NamedTuple):
    """What the crowd's answers tell of one worker who draws boxes (``method="em"``)."""

    recall: float  # chance they mark an object that is there
    false_marks: float  # boxes a picture they draw where nothing is
    noise: (
        float  # root mean square distance of their edges from the merged box, a share of its side
    )
    images: int  # images they answered in the batch
    # Chance their label is right, on objects of the crowd's mix of classes.
    label_accuracy: float = 1.0
    # ``confusion[k][l]``: chance they label an object of class ``BoxModel.labels[k]`` as
    # ``labels[l]``.
    confusion: tuple[tuple[float, ...], ...] = ()
    # Systematic shift of each edge (x0, y0, x1, y1), as a share of the box's side: 0.05 on
    # x1 means their right edge lies 5% of the width right of the object's.
    shift: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    # A voter whose boxes carry scores (a model): the log odds of a real object that one of
    # its boxes adds by its score's bin (``box_em.SCORE_BINS``); () for a person.
    score_odds: tuple[float, ...] = ()


# A worker's rates on gold, the prior of their rates in the box EM (the name boxes have
# always used for it).
BoxPrior = GoldRates


@dataclass(frozen=True)
class BoxModel:
    """The worker model learnt over a set of images (:func:`box_model`), to merge any batch of
    images with (``merge_boxes_batch(..., method="em", model=...)``).

    ``ids[k]`` is the worker whose parameters are ``per_worker[k]``; ``crowd`` holds the
    crowd's means, taken for a worker the model has not seen; ``objects`` is the rate of real
    objects a picture; ``labels`` the classes the confusion matrices are over, and
    ``label_prior`` each one's share of the real objects.
    """

    ids: tuple[Hashable, ...]
    per_worker: tuple[BoxWorker, ...]
    crowd: BoxWorker
    objects: float
    labels: tuple[str, ...] = ()
    label_prior: tuple[float, ...] = ()

    def workers(self) -> dict[Hashable, BoxWorker]:
        return dict(zip(self.ids, self.per_worker, strict=True))

    def _column(self, name: str) -> FloatArray:
        """One parameter of every worker, then the crowd's (the unseen workers' row)."""
        values = [getattr(w, name) for w in self.per_worker]
        return np.array([*values, getattr(self.crowd, name)], dtype=np.float64)

    def _score_odds(self) -> FloatArray | None:
        """Every worker's score odds, then the crowd's (zeros); None when no one has any."""
        rows = [*self.per_worker, self.crowd]
        if not any(w.score_odds for w in rows):
            return None
        out = np.zeros((len(rows), SCORE_BINS))
        for k, worker in enumerate(rows):
            if worker.score_odds:
                out[k] = worker.score_odds
        return out

    def _confusion(self, names: Sequence[str]) -> tuple[FloatArray, FloatArray]:
        """Every worker's confusion (then the crowd's) over ``names``, which start with the
        model's labels, and the classes' prior. A class the model has not seen is taken to be
        rare and labelled with the crowd's accuracy; no known class is taken for it."""
        n_known, n = len(self.labels), len(names)
        rows = [*self.per_worker, self.crowd]
        out = np.full((len(rows), n, n), RATE_FLOOR)
        if n_known:
            out[:, :n_known, :n_known] = np.array([w.confusion for w in rows])
        accuracy = self.crowd.label_accuracy
        if n > n_known:
            out[:, n_known:, :] = (1.0 - accuracy) / max(n - 1, 1)
            new = np.arange(n_known, n)
            out[:, new, new] = accuracy
        prior = np.full(n, min(self.label_prior, default=1.0))
        prior[:n_known] = self.label_prior
        return out, prior / prior.sum()


def box_model(
    images: Images,
    *,
    iou_threshold: float = 0.5,
    refine: bool = False,
    prior: Mapping[Hashable, BoxPrior] | None = None,
) -> BoxModel:
    """Learn the worker model over all ``images`` (the EM of ``method="em"``), once, to merge
    them in as many batches as wanted. ``prior`` gives some workers' rates measured on gold:
    their prior is the crowd's mean and the gold together, the gold worth its strength."""
    _check(iou_threshold, "em")
    with collector_paused():
        crowd = _Crowd.build(images)
        if crowd.n_boxes == 0:
            return _learn(crowd, np.zeros((0, max(crowd.n_ranks, 1)), dtype=np.intp), prior)
        return _learn(crowd, _clusters(crowd, iou_threshold, refine), prior)


def box_workers(
    images: Sequence[Sequence[Answer | Sequence[Any]]],
    *,
    iou_threshold: float = 0.5,
    refine: bool = False,
) -> dict[Hashable, BoxWorker]:
    """The model of each worker that ``merge_boxes_batch(images, method="em")`` learns."""
    model = box_model(images, iou_threshold=iou_threshold, refine=refine)
    return model.workers() if model.per_worker and _has_boxes(images) else {}


def _has_boxes(images: Sequence[Sequence[Answer | Sequence[Any]]]) -> bool:
    return any(len(answer[2]) for answers in images for answer in answers)


# Input as flat arrays


class _Crowd:
    """All boxes of all images as flat arrays, and the answers they came from.

    Answers are ranked within their image by decreasing weight (ties: input order).
    """

    def __init__(
        self,
        *,
        workers: list[Hashable],
        answer_image: IntArray,
        answer_weight: FloatArray,
        answer_rank: IntArray,
        box_answer: IntArray,
        box_item: IntArray,
        corners: FloatArray,
        label: IntArray,
        labels: list[str],
        label_order: IntArray,
        n_images: int,
        score: FloatArray | None = None,
    ) -> None:
        self.workers = workers
        self.answer_image = answer_image
        self.answer_weight = answer_weight
        self.answer_rank = answer_rank
        self.box_answer = box_answer
        self.box_item = box_item
        self.corners = corners  # (N, 4): x0, y0, x1, y1
        self.label = label
        self.labels = labels
        # Per box: when its label was first seen on its image (0, 1, ...): the tie-break of
        # the label vote, the same in a batch as for the image alone.
        self.label_order = label_order
        # Per box: its score (a model's boxes), NaN where it has none; None: no box has one.
        self.score = score
        self.image = answer_image[box_answer]
        self.rank = answer_rank[box_answer]
        self.weight = answer_weight[box_answer]
        self.n_boxes = len(box_answer)
        self.n_ranks = int(answer_rank.max()) + 1 if len(answer_rank) else 0
        self.voters_weight = np.bincount(answer_image, answer_weight, minlength=n_images)

    @classmethod
    def build(cls, images: Images, *, scored: bool = True) -> _Crowd:
        """``scored``: read the boxes' scores (the worker model's merges and decisions do;
        the quorum merge does not)."""
        if isinstance(images, BoxColumns):
            return cls.from_columns(images)
        workers: list[Hashable] = []
        weights: list[float] = []
        item_lists: list[Sequence[Item]] = []
        per_image: list[int] = []
        for answers in images:
            per_image.append(len(answers))
            if answers:
                image_workers, image_weights, image_items = zip(*answers, strict=True)
                workers += image_workers
                weights += image_weights
                item_lists += image_items
        # One C-level pass per field over all items: this runs over every box of a project.
        items = list(chain.from_iterable(item_lists))
        coords = list(map(itemgetter("bbox"), items))
        names = list(map(itemgetter("label"), items))
        if coords and set(map(len, coords)) != {4}:
            raise ValueError("a bbox must be [x, y, w, h]")
        # Label ids in order of first sight, looked up in one C-level pass.
        ids = {name: i for i, name in enumerate(dict.fromkeys(names))}
        return cls._assemble(
            workers=workers,
            weight=np.array(weights, dtype=np.float64),
            per_image=np.array(per_image, dtype=np.intp),
            count=np.fromiter(map(len, item_lists), dtype=np.intp, count=len(item_lists)),
            boxes=np.fromiter(
                chain.from_iterable(coords), dtype=np.float64, count=4 * len(coords)
            ).reshape(-1, 4),
            label=np.fromiter(map(ids.__getitem__, names), dtype=np.intp, count=len(names)),
            labels=list(ids),
            score=_scores(items) if scored else None,
        )

    @classmethod
    def from_columns(cls, columns: BoxColumns) -> _Crowd:
        label = np.asarray(columns.label, dtype=np.intp)
        names: list[str] = []
        if len(label):
            # Label ids renumbered in order of first sight, as answers given as objects get
            # them: the same input merges the same, bit for bit, however it is handed over.
            seen, first, inverse = np.unique(label, return_index=True, return_inverse=True)
            order = np.argsort(first, kind="stable")
            rank = np.empty(len(seen), dtype=np.intp)
            rank[order] = np.arange(len(seen))
            label = rank[inverse.ravel()]
            names = [columns.label_names[i] for i in seen[order].tolist()]
        return cls._assemble(
            workers=list(columns.workers),
            weight=np.asarray(columns.weights, dtype=np.float64),
            per_image=np.asarray(columns.answers_per_image, dtype=np.intp),
            count=np.asarray(columns.boxes_per_answer, dtype=np.intp),
            boxes=np.asarray(columns.boxes, dtype=np.float64).reshape(-1, 4),
            label=label,
            labels=names,
        )

    @classmethod
    def _assemble(
        cls,
        *,
        workers: list[Hashable],
        weight: FloatArray,
        per_image: IntArray,
        count: IntArray,
        boxes: FloatArray,
        label: IntArray,
        labels: list[str],
        score: FloatArray | None = None,
    ) -> _Crowd:
        for index in np.flatnonzero(~((weight > 0) & (weight <= 1)))[:1].tolist():
            raise ValueError(
                f"worker {workers[index]!r}: weight must be in (0, 1], got {weight[index]}"
            )
        if len(count) != len(weight) or not int(count.sum()) == len(boxes) == len(label):
            raise ValueError("boxes, labels and answers do not add up")
        if not np.isfinite(boxes).all() or (boxes[:, 2:] < 0).any():
            raise ValueError("boxes must be finite with non-negative width and height")
        corners = boxes.copy()
        corners[:, 2:] += corners[:, :2]
        image = np.repeat(np.arange(len(per_image)), per_image)
        # Rank within the image: heaviest first, input order among equals.
        order = np.lexsort((np.arange(len(image)), -weight, image))
        first = np.searchsorted(image[order], image[order])
        rank = np.empty(len(image), dtype=np.intp)
        rank[order] = np.arange(len(image)) - first
        box_answer = np.repeat(np.arange(len(count)), count)
        return cls(
            workers=workers,
            answer_image=image,
            answer_weight=weight,
            answer_rank=rank,
            box_answer=box_answer,
            box_item=ragged_arange(count),
            corners=corners,
            label=label,
            labels=labels,
            label_order=_first_seen_order(image[box_answer], label, len(labels)),
            n_images=len(per_image),
            score=score,
        )


def _scores(items: list[Item]) -> FloatArray | None:
    """Each item's score, NaN where it has none (a person's box) or it is not a number; None
    when no item has one (a crowd of people: one C-level pass)."""
    given = list(map(methodcaller("get", "score"), items))
    if given.count(None) == len(given):
        return None
    out = np.array([_number(value) for value in given], dtype=np.float64)
    return None if np.isnan(out).all() else out


def _number(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return float("nan")


def _first_seen_order(group: IntArray, value: IntArray, n_values: int) -> IntArray:
    """For each element, the order in which its value first appears within its group: 0 for
    the group's first value, 1 for the next different one, and so on."""
    if len(value) == 0:
        return np.zeros(0, dtype=np.intp)
    keys, first, inverse = np.unique(
        group * n_values + value, return_index=True, return_inverse=True
    )
    key_group = keys // n_values
    order = np.lexsort((first, key_group))
    grouped = key_group[order]
    rank = np.empty(len(keys), dtype=np.intp)
    rank[order] = np.arange(len(keys)) - np.searchsorted(grouped, grouped)
    return np.asarray(rank[inverse.ravel()], dtype=np.intp)


def ragged_arange(counts: IntArray) -> IntArray:
    """``0 .. counts[0] - 1, 0 .. counts[1] - 1, ...`` in one array."""
    total = int(counts.sum())
    starts = np.cumsum(counts) - counts
    return np.arange(total, dtype=np.intp) - np.repeat(starts, counts)


def _pair_iou(a: FloatArray, b: FloatArray) -> FloatArray:
    """IoU of ``a[i]`` with ``b[i]`` for every row, corners ``x0, y0, x1, y1``."""
    return _iou(*a.T, *b.T)


def _iou(*corners: FloatArray) -> FloatArray:
    """IoU of box ``i`` of ``a`` with box ``i`` of ``b``, given as eight coordinate arrays
    ``ax0, ay0, ax1, ay1, bx0, by0, bx1, by1`` (contiguous columns are the fast layout; arrays
    that broadcast together give the IoU of every pair they pair up).

    Boxes that do not overlap, including boxes of zero area, have IoU 0.
    """
    ax0, ay0, ax1, ay1, bx0, by0, bx1, by1 = corners
    inter = np.minimum(ax1, bx1)
    inter -= np.maximum(ax0, bx0)
    np.maximum(inter, 0.0, out=inter)
    height = np.minimum(ay1, by1)
    height -= np.maximum(ay0, by0)
    np.maximum(height, 0.0, out=height)
    inter *= height
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    out = np.zeros(inter.shape)
    np.divide(inter, union, out=out, where=inter > 0)
    return out


# Matching


def _candidate_pairs(
    box_image: IntArray, cluster_image: IntArray, n_images: int
) -> tuple[IntArray, IntArray]:
    """Every (box, cluster) pair of the same image, as two index arrays."""
    order = np.argsort(cluster_image, kind="stable")
    count = np.bincount(cluster_image, minlength=n_images)
    start = np.cumsum(count) - count
    per_box = count[box_image]
    box = np.repeat(np.arange(len(box_image)), per_box)
    cluster = order[np.repeat(start[box_image], per_box) + ragged_arange(per_box)]
    return box, cluster


def _assign(rows: IntArray, cols: IntArray, similarity: FloatArray, threshold: float) -> BoolArray:
    """Which candidate pairs (``rows[k]``, ``cols[k]``) a one-to-one matching keeps.

    Maximises the total similarity over pairs at or above ``threshold``, exactly as
    :func:`qa.geometry.match` does for one matrix, but for any number of independent problems
    at once (row and column ids are global). A pair whose row and column have no other
    candidate is kept as is; the rest go to one sparse assignment solve.
    """
    keep = np.zeros(len(rows), dtype=bool)
    eligible = np.flatnonzero(similarity >= threshold)
    if len(eligible) == 0:
        return keep
    r, c = rows[eligible], cols[eligible]
    alone = (np.bincount(r)[r] == 1) & (np.bincount(c)[c] == 1)
    keep[eligible[alone]] = True
    contested = eligible[~alone]
    if len(contested):
        keep[contested[_solve(rows[contested], cols[contested], similarity[contested])]] = True
    return keep


def _solve(rows: IntArray, cols: IntArray, similarity: FloatArray) -> BoolArray:
    """Maximum-similarity matching on the given edges; which edges it uses.

    Every row and column may stay unmatched: the graph is padded so a full matching always
    exists (row i may take its own dummy column, column j its own dummy row, and a dummy row
    and column pair up wherever the real edge between them exists). Costs are shifted to be
    positive (sparse matrices drop zeros): a real pair plus its dummy pair costs
    ``4 - similarity`` against ``4`` for leaving both unmatched.
    """
    # scipy's sparse stack takes a third of a second to import: only contested matches need it.
    from scipy import sparse
    from scipy.sparse.csgraph import min_weight_full_bipartite_matching

    row_ids, r = np.unique(rows, return_inverse=True)
    col_ids, c = np.unique(cols, return_inverse=True)
    n_r, n_c = len(row_ids), len(col_ids)
    size = n_r + n_c
    graph = sparse.csr_array(
        (
            np.concatenate(
                [3.0 - similarity, np.full(n_r, 2.0), np.full(n_c, 2.0), np.ones(len(r))]
            ),
            (
                np.concatenate([r, np.arange(n_r), n_r + np.arange(n_c), n_r + c]),
                np.concatenate([c, n_c + np.arange(n_r), np.arange(n_c), n_c + r]),
            ),
        ),
        shape=(size, size),
    )
    row_of, col_of = min_weight_full_bipartite_matching(graph)
    chosen = np.full(n_r, -1, dtype=np.intp)
    real = (row_of < n_r) & (col_of < n_c)
    chosen[row_of[real]] = col_of[real]
    return np.asarray(chosen[r] == c, dtype=bool)


# Clustering


def _cluster(crowd: _Crowd, threshold: float) -> IntArray:
    """Incremental clustering by worker rank; returns (clusters, ranks) of box ids, -1 empty."""
    n_images = len(crowd.voters_weight)
    # At most one cluster per box: allocate once, fill the first ``n_clusters`` rows.
    members = np.full((crowd.n_boxes, crowd.n_ranks), -1, dtype=np.intp)
    image = np.zeros(crowd.n_boxes, dtype=np.intp)
    # Weighted sums of the members' corners, one contiguous array per coordinate.
    sums = np.zeros((4, crowd.n_boxes))
    weight = np.zeros(crowd.n_boxes)
    columns = np.ascontiguousarray(crowd.corners.T)
    n_clusters = 0
    for rank in range(crowd.n_ranks):
        boxes = np.flatnonzero(crowd.rank == rank)
        cluster_of = np.full(len(boxes), -1, dtype=np.intp)
        if n_clusters:
            box, cluster = _candidate_pairs(crowd.image[boxes], image[:n_clusters], n_images)
            centroids = sums[:, :n_clusters] / weight[:n_clusters]
            iou = _iou(*(c[boxes][box] for c in columns), *(c[cluster] for c in centroids))
            kept = _assign(box, cluster, iou, threshold)
            cluster_of[box[kept]] = cluster[kept]
        opened = np.flatnonzero(cluster_of < 0)
        cluster_of[opened] = n_clusters + np.arange(len(opened))
        image[cluster_of[opened]] = crowd.image[boxes[opened]]
        n_clusters += len(opened)
        # A cluster takes at most one box per rank, so plain fancy-index updates are exact.
        members[cluster_of, rank] = boxes
        w = crowd.weight[boxes]
        sums[:, cluster_of] += columns[:, boxes] * w
        weight[cluster_of] += w
    return members[:n_clusters]


def _refine(crowd: _Crowd, members: IntArray, merged: FloatArray, threshold: float) -> IntArray:
    """Match every box again, one per worker per cluster, against the merged boxes."""
    n_clusters, n_ranks = members.shape
    cluster_image = crowd.image[members.max(axis=1)]
    box, cluster = _candidate_pairs(crowd.image, cluster_image, len(crowd.voters_weight))
    iou = _pair_iou(crowd.corners[box], merged[cluster])
    # Each cluster takes one box per worker: a column per (cluster, rank).
    kept = _assign(box, cluster * n_ranks + crowd.rank[box], iou, threshold)
    cluster_of = np.full(crowd.n_boxes, -1, dtype=np.intp)
    cluster_of[box[kept]] = cluster[kept]
    alone = np.flatnonzero(cluster_of < 0)
    cluster_of[alone] = n_clusters + np.arange(len(alone))
    out = np.full((n_clusters + len(alone), n_ranks), -1, dtype=np.intp)
    out[cluster_of, crowd.rank] = np.arange(crowd.n_boxes)
    return out[(out >= 0).any(axis=1)]


# Merging


def _merge(
    crowd: _Crowd,
    members: IntArray,
    box_weight: FloatArray | None = None,
    box_corners: FloatArray | None = None,
) -> tuple[FloatArray, FloatArray]:
    """Each cluster's box (corners): the weighted mean of its members when they all agree with
    it; otherwise the weighted mean of the members that agree with the per-edge median.
    Members weigh their worker's weight, or ``box_weight`` (per box) when given, and are
    placed at their corners, or ``box_corners`` (per box) when given.

    Also returns the IoU of every member (C, R) with its cluster's box.
    """
    present = members >= 0
    ids = np.where(present, members, 0)
    corners = (crowd.corners if box_corners is None else box_corners)[ids]  # (C, R, 4)
    weights = crowd.weight if box_weight is None else box_weight
    weight = np.where(present, weights[ids], 0.0)
    first = corners[np.arange(len(members)), present.argmax(axis=1)]
    merged = _weighted_mean(corners, weight, first)
    iou = _member_iou(corners, merged)
    # Most clusters are agreeing crowds: no member strays from the mean, nothing to re-weigh.
    strays = present & (iou < OUTLIER_IOU)
    if strays.any():
        odd = np.flatnonzero(strays.any(axis=1))
        corners, weight = corners[odd], weight[odd]
        median = weighted_median(corners.transpose(0, 2, 1), weight[:, None, :])  # (C', 4)
        agree = weight * (_member_iou(corners, median) >= OUTLIER_IOU)
        has = agree.sum(axis=1) > 0
        median[has] = _weighted_mean(corners[has], agree[has], median[has])
        merged[odd] = median
        iou[odd] = _member_iou(corners, median)
    return merged, iou


def _weighted_mean(corners: FloatArray, weight: FloatArray, origin: FloatArray) -> FloatArray:
    """Weighted mean over axis 1 of ``corners`` (C, R, 4), computed as ``origin`` (C, 4) plus
    the mean offset from it, so members that agree exactly give exactly their value."""
    # Summed member by member in rank order, so a cluster's result never depends on what
    # else is in the batch (and a rank at a time: a (C, 4) pass each, no (C, R, 4) temporary).
    offset = np.zeros_like(origin)
    total = np.zeros(len(origin))
    for rank in range(corners.shape[1]):
        offset += weight[:, rank, None] * (corners[:, rank] - origin)
        total += weight[:, rank]
    out: FloatArray = origin + offset / total[:, None]
    return out


def _member_iou(corners: FloatArray, boxes: FloatArray) -> FloatArray:
    """IoU of each member (C, R, 4) with its cluster's box (C, 4), as (C, R)."""
    # Broadcast (C, R) against (C, 1), coordinate by coordinate: no repeated copy of the boxes.
    return _iou(*np.moveaxis(corners, 2, 0), *boxes.T[:, :, None])


def _support(crowd: _Crowd, members: IntArray) -> FloatArray:
    """Weight of each cluster's members over the weight of all voters on its image."""
    weight = np.where(members >= 0, crowd.weight[np.maximum(members, 0)], 0.0).sum(axis=1)
    out: FloatArray = weight / crowd.voters_weight[crowd.image[members.max(axis=1)]]
    return out


def _answer_workers(crowd: _Crowd, ids: Mapping[Hashable, int], unseen: int) -> IntArray:
    """Each answer's worker as an index into ``ids``; ``unseen`` for a worker not in it."""
    return np.fromiter(
        map(ids.get, crowd.workers, repeat(unseen)), dtype=np.intp, count=len(crowd.workers)
    )


def _voters(
    crowd: _Crowd, members: IntArray, answer_worker: IntArray
) -> tuple[IntArray, IntArray, BoolArray, IntArray | None]:
    """One pair per (cluster, voter of its image): the cluster, the voter's worker index, and
    whether they marked it; and per marked pair, its box's score bin (-1 for a box without
    a score; None when no box has one)."""
    n_clusters = len(members)
    cluster_image = crowd.image[members.max(axis=1)]
    # Every voter of a cluster's image, marked or not: an image's answers are contiguous.
    n_answers = np.bincount(crowd.answer_image, minlength=len(crowd.voters_weight))
    first_answer = np.cumsum(n_answers) - n_answers
    per_cluster = n_answers[cluster_image]
    pair_candidate = np.repeat(np.arange(n_clusters), per_cluster)
    pair_answer = np.repeat(first_answer[cluster_image], per_cluster) + ragged_arange(per_cluster)
    box = members[pair_candidate, crowd.answer_rank[pair_answer]]
    marked = box >= 0
    mark_bin = None if crowd.score is None else score_bins(crowd.score[box[marked]])
    return pair_candidate, answer_worker[pair_answer], marked, mark_bin


def _learn(crowd: _Crowd, members: IntArray, prior: Mapping[Hashable, BoxPrior] | None) -> BoxModel:
    """Learn each worker's recall, false marks and placement noise from every cluster of the
    batch (:mod:`qa.consensus.box_em`)."""
    ids = {worker: i for i, worker in enumerate(dict.fromkeys(crowd.workers))}
    n_workers = len(ids)
    answer_worker = _answer_workers(crowd, ids, n_workers)
    worker_images = np.bincount(answer_worker, minlength=n_workers)
    gold = Prior.of(list(ids), prior)
    pair_candidate, pair_worker, marked, mark_bin = _voters(crowd, members, answer_worker)
    existence = existence_em(
        pair_candidate,
        pair_worker,
        marked,
        worker_images=worker_images,
        start=np.minimum(_support(crowd, members), 1.0),
        prior=gold,
        mark_bin=mark_bin,
    )
    # Placement: each member's edge error against the merged box, as a share of the side:
    # its worker's shift is the mean, their noise the spread around it. The merged box is
    # placed again with the shifts removed and the members weighted by precision, and the
    # errors measured again, a few times (the first merge weighs everyone by given weights).
    n_clusters = len(members)
    present = members >= 0
    rows = np.broadcast_to(np.arange(n_clusters)[:, None], members.shape)[present]
    boxes = members[present]
    box_worker = answer_worker[crowd.box_answer]
    member_worker = box_worker[boxes]
    weight = existence.posterior[rows]
    merged, _ = _merge(crowd, members)
    for round in range(PLACEMENT_ROUNDS):
        side = np.maximum(merged[:, 2:] - merged[:, :2], 1.0)
        error = (crowd.corners[boxes] - merged[rows]) / np.tile(side, 2)[rows]
        shift = placement_shift(error, member_worker, weight, n_workers=n_workers)
        residual = ((error - shift[member_worker]) ** 2).mean(axis=1)
        noise = placement_noise(residual, member_worker, weight, n_workers=n_workers)
        precision = (noise.min() / noise) ** 2
        if round < PLACEMENT_ROUNDS - 1:
            corners = _unshifted(crowd, shift[box_worker])
            merged, _ = _merge(crowd, members, precision[box_worker], corners)
    # The crowd's noise: the pooled variance of every member, for a worker not seen.
    seen = np.bincount(member_worker, weight, minlength=n_workers)
    crowd_noise = float(np.sqrt((seen * noise**2).sum() / seen.sum())) if seen.sum() > 0 else 0.1
    # Only clusters that may be real teach anything of labels: one whose posterior is
    # negligible weighs next to nothing in the confusion counts and can never be kept.
    considered = existence.posterior > LABEL_NEGLIGIBLE
    renumber = np.cumsum(considered) - 1
    among = considered[rows]
    labels = label_em(
        renumber[rows[among]],
        member_worker[among],
        crowd.label[boxes[among]],
        real=existence.posterior[considered],
        n_workers=n_workers,
        n_labels=len(crowd.labels),
    )
    accuracy = np.einsum("k,jkk->j", labels.prior, labels.confusion)
    odds = existence.score_odds
    scored: list[tuple[float, ...]] = [()] * n_workers
    if odds is not None:
        scored = [tuple(row) if any(row) else () for row in odds.tolist()]
    per_worker = tuple(
        BoxWorker(
            recall, false_marks, noise, images, accuracy, _nested(matrix), _edges(edges), bins
        )
        for recall, false_marks, noise, images, accuracy, matrix, edges, bins in zip(
            existence.recall.tolist(),
            existence.false_marks.tolist(),
            noise.tolist(),
            worker_images.tolist(),
            accuracy.tolist(),
            list(labels.confusion),
            shift.tolist(),
            scored,
            strict=True,
        )
    )
    return BoxModel(
        ids=tuple(ids),
        per_worker=per_worker,
        crowd=BoxWorker(
            existence.mean_recall,
            existence.mean_false_marks,
            crowd_noise,
            0,
            float(labels.prior @ np.diag(labels.crowd)) if len(labels.prior) else 1.0,
            _nested(labels.crowd),
        ),
        objects=existence.objects,
        labels=tuple(crowd.labels),
        label_prior=tuple(labels.prior.tolist()),
    )


def _nested(matrix: FloatArray) -> tuple[tuple[float, ...], ...]:
    return tuple(map(tuple, matrix.tolist()))


def _edges(values: list[float]) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = values
    return (x0, y0, x1, y1)


def _model_answer_workers(crowd: _Crowd, model: BoxModel) -> IntArray:
    """Each answer's worker as the model numbers them (its unseen workers: the crowd's row)."""
    ids = {worker: i for i, worker in enumerate(model.ids)}
    return _answer_workers(crowd, ids, len(ids))


def _existence(
    crowd: _Crowd, members: IntArray, answer_worker: IntArray, model: BoxModel
) -> FloatArray:
    """Each cluster's probability of being a real object, by the model's recall and false
    marks of the workers who marked it and of those who did not."""
    pair_candidate, pair_worker, marked, mark_bin = _voters(crowd, members, answer_worker)
    return existence_posterior(
        pair_candidate,
        pair_worker,
        marked,
        n_candidates=len(members),
        recall=model._column("recall"),
        false_marks=model._column("false_marks"),
        objects=model.objects,
        mark_bin=mark_bin,
        score_odds=model._score_odds(),
    )


def _apply(crowd: _Crowd, members: IntArray, model: BoxModel) -> _Applied:
    """With the model's parameters and nothing learnt: each cluster's probability of being
    real and its class, each box's placement weight (its worker's precision, at most 1) and
    its corners without its worker's shift."""
    answer_worker = _model_answer_workers(crowd, model)
    posterior = _existence(crowd, members, answer_worker, model)
    box_worker = answer_worker[crowd.box_answer]
    noise = np.maximum(model._column("noise"), NOISE_FLOOR)
    precision = (noise.min() / noise) ** 2
    shift = np.array([*(w.shift for w in model.per_worker), model.crowd.shift])
    corners = _unshifted(crowd, shift[box_worker])
    # Labels: the model's classes, then any this batch has that the model has not seen.
    known = set(model.labels)
    names = [*model.labels, *(name for name in crowd.labels if name not in known)]
    index = {name: i for i, name in enumerate(names)}
    confusion, prior = model._confusion(names)
    to_name = np.array([index[name] for name in crowd.labels], dtype=np.intp)
    # Only the clusters kept need a class.
    label = np.zeros(len(members), dtype=np.intp)
    kept = np.flatnonzero(posterior >= 0.5)
    present = members[kept] >= 0
    rows = np.broadcast_to(np.arange(len(kept))[:, None], present.shape)[present]
    boxes = members[kept][present]
    if len(names):
        label[kept] = label_posterior(
            rows,
            box_worker[boxes],
            to_name[crowd.label[boxes]],
            n_candidates=len(kept),
            confusion=confusion,
            prior=prior,
        ).argmax(axis=1)
    return _Applied(posterior, precision[box_worker], corners, label, names)


@dataclass(frozen=True)
class _Applied:
    posterior: FloatArray  # per cluster: the probability it is real
    box_weight: FloatArray  # per box: its worker's precision, at most 1
    corners: FloatArray  # per box: its corners, its worker's shift removed
    label: IntArray  # per cluster: its most probable class, an index into ``names``
    names: list[str]


def _unshifted(crowd: _Crowd, shift: FloatArray) -> FloatArray:
    """Each box's corners with its worker's systematic ``shift`` (per box, per edge, a share
    of the side) removed."""
    side = crowd.corners[:, 2:] - crowd.corners[:, :2]
    out: FloatArray = crowd.corners - shift * np.tile(side, 2)
    return out


def _objects(
    crowd: _Crowd,
    members: IntArray,
    merged: FloatArray,
    iou: FloatArray,
    n_images: int,
    score: FloatArray | None = None,
    label: tuple[IntArray, Sequence[str]] | None = None,
) -> list[list[MergedObject]]:
    """The kept clusters as objects, per image. Labelled by the weighted vote of the members,
    or by ``label`` (per cluster, an index into the names) when given."""
    present = members >= 0
    ids = np.where(present, members, 0)
    weight = np.where(present, crowd.weight[ids], 0.0)
    image = crowd.image[members.max(axis=1)]
    voters = crowd.voters_weight[image]
    support = weight.sum(axis=1) / voters
    # Votes by each label's order of first sight on the image, so that argmax, taking the
    # first of equal maxima, gives a tie to the label seen first there.
    n_orders = int(crowd.label_order.max()) + 1
    rows = np.broadcast_to(np.arange(len(members))[:, None], members.shape)
    votes = np.bincount(
        rows[present] * n_orders + crowd.label_order[members[present]],
        weight[present],
        minlength=len(members) * n_orders,
    ).reshape(len(members), n_orders)
    winner = votes.argmax(axis=1)
    label_support = votes[np.arange(len(members)), winner] / voters
    # The winning label itself: that of a member who gave it.
    gave = present & (crowd.label_order[ids] == winner[:, None])
    names: Sequence[str] = crowd.labels
    if label is None:
        chosen = crowd.label[ids[np.arange(len(members)), gave.argmax(axis=1)]]
    else:
        chosen, names = label
    agreement = (iou * weight).sum(axis=1) / weight.sum(axis=1)
    if score is None:
        score = np.clip(label_support * agreement, 0.0, 1.0)
    kept = np.lexsort((np.arange(len(members)), -score, image))
    # From here on every step is a C-level ``map`` over flat tuples (a slice of a tuple is the
    # tuple an object keeps, made in one step), and ``tuple.__new__`` builds the named tuples
    # without a Python-level call.
    own = members[kept]
    boxes = own[own >= 0]
    workers = tuple(map(crowd.workers.__getitem__, crowd.box_answer[boxes].tolist()))
    items = tuple(crowd.box_item[boxes].tolist())
    counts = (own >= 0).sum(axis=1)
    ends = np.cumsum(counts)
    spans = list(map(slice, (ends - counts).tolist(), ends.tolist()))
    corners = merged[kept]
    xywh = tuple(
        np.column_stack([corners[:, :2], corners[:, 2:] - corners[:, :2]]).ravel().tolist()
    )
    quads = map(slice, range(0, len(xywh), 4), range(4, len(xywh) + 4, 4))
    objects: list[MergedObject] = list(
        map(
            tuple.__new__,
            repeat(MergedObject),
            zip(
                repeat("bbox"),
                map(names.__getitem__, chosen[kept].tolist()),
                score[kept].tolist(),
                np.minimum(support[kept], 1.0).tolist(),
                agreement[kept].tolist(),
                counts.tolist(),
                map(workers.__getitem__, spans),
                map(items.__getitem__, spans),
                repeat(None),
                map(xywh.__getitem__, quads),
                repeat(None),
                repeat(None),
                repeat(None),
            ),
        )
    )
    per_image = np.cumsum(np.bincount(image, minlength=n_images)).tolist()
    return list(map(objects.__getitem__, map(slice, [0, *per_image[:-1]], per_image)))


# Tiles


def merge_across_tiles(
    objects_per_tile: Sequence[Sequence[MergedObject]],
    tiles: Sequence[Region],
    *,
    iou_threshold: float = 0.5,
    tolerance: float = 2.0,
) -> list[MergedObject]:
    """Unite the merged boxes of the tiles of one image into one list of objects.

    ``tiles[t]`` is tile ``t``'s region ``[x, y, w, h]`` and ``objects_per_tile[t]`` its merged
    boxes, already in full-image pixels. Tiles overlap (or abut) at seams, and a worker marks
    the part of an object that lies inside the tile, so an object crossing a seam comes out as
    one piece per tile. The rule that tells two pieces of one object:

    - the two tiles overlap, or abut within ``tolerance`` pixels, and the pieces share a label;
    - both tiles show the whole of their overlap, so the pieces of one object agree inside it:
      the pieces clipped to the overlap have IoU >= ``iou_threshold``. When the tiles only abut
      (the overlap is a line), both pieces must reach the seam line within ``tolerance`` and
      their extents along it must have (one-dimensional) IoU >= ``iou_threshold``;
    - pieces are paired one to one per pair of tiles (highest total similarity), so two
      objects side by side inside the overlap are never crossed over; pairs chain across
      several tiles (an object over a tile corner has up to four pieces).

    The united box takes each edge from the pieces where that edge is real: an edge lying on
    its tile's border (within ``tolerance``) where the border is not the image's is a cut, not
    the object's edge. Real edges from several pieces are averaged (weighted by support);
    where every piece is cut, the outermost is kept. The united object's score, support and
    number of votes are the highest of its pieces' (each piece had its own voters), and its
    members are all the pieces' members, each with the index of its tile.
    """
    flat: list[tuple[int, MergedObject]] = [
        (t, obj) for t, objects in enumerate(objects_per_tile) for obj in objects
    ]
    if len(objects_per_tile) != len(tiles):
        raise ValueError("need one region per tile")
    if any(obj.bbox is None for _, obj in flat):
        raise ValueError("merge_across_tiles unites boxes only")
    if not flat:
        return []
    tile_of = np.array([t for t, _ in flat], dtype=np.intp)
    corners = np.array([obj.bbox for _, obj in flat], dtype=np.float64).reshape(-1, 4)
    corners[:, 2:] += corners[:, :2]
    regions = np.array(tiles, dtype=np.float64).reshape(-1, 4)
    regions[:, 2:] += regions[:, :2]
    cut = _cut_edges(corners, regions[tile_of], regions, tolerance)
    labels = [obj.label for _, obj in flat]

    parent = list(range(len(flat)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a in range(len(regions)):
        for b in range(a + 1, len(regions)):
            rows, cols = np.flatnonzero(tile_of == a), np.flatnonzero(tile_of == b)
            if not len(rows) or not len(cols):
                continue
            similarity = _seam_similarity(
                corners[rows], corners[cols], regions[a], regions[b], tolerance
            )
            same = np.array([[labels[i] == labels[j] for j in cols] for i in rows])
            for pair in match(np.where(same, similarity, 0.0), iou_threshold).pairs:
                parent[root(int(rows[pair.row]))] = root(int(cols[pair.col]))

    groups: dict[int, list[int]] = {}
    for i in range(len(flat)):
        groups.setdefault(root(i), []).append(i)
    out: list[MergedObject] = []
    for group in groups.values():
        pieces = [flat[i] for i in group]
        workers = tuple(w for _, obj in pieces for w in obj.workers)
        items = tuple(i for _, obj in pieces for i in obj.items)
        tiles_of = tuple(t for t, obj in pieces for _ in obj.items)
        if len(group) == 1:
            out.append(pieces[0][1]._replace(workers=workers, items=items, tiles=tiles_of))
            continue
        support = np.array([max(obj.support, EPS) for _, obj in pieces])
        box = _unite(corners[group], cut[group], support)
        out.append(
            MergedObject(
                kind="bbox",
                label=pieces[0][1].label,
                score=max(obj.score for _, obj in pieces),
                support=max(obj.support for _, obj in pieces),
                agreement=float(np.average([obj.agreement for _, obj in pieces], weights=support)),
                num_votes=max(obj.num_votes for _, obj in pieces),
                workers=workers,
                items=items,
                tiles=tiles_of,
                bbox=(box[0], box[1], box[2] - box[0], box[3] - box[1]),
            )
        )
    out.sort(key=lambda obj: -obj.score)
    return out


def _cut_edges(
    corners: FloatArray, own_tile: FloatArray, regions: FloatArray, tolerance: float
) -> BoolArray:
    """(N, 4) flags: is edge x0, y0, x1, y1 of each piece its tile's inner border?"""
    extent = np.concatenate([regions[:, :2].min(axis=0), regions[:, 2:].max(axis=0)])
    on_border = np.abs(corners - own_tile) <= tolerance
    inner = np.abs(own_tile - extent[None, :]) > tolerance
    return np.asarray(on_border & inner, dtype=bool)


def _seam_similarity(
    a: FloatArray, b: FloatArray, tile_a: FloatArray, tile_b: FloatArray, tolerance: float
) -> FloatArray:
    """Similarity of pieces ``a`` of one tile with pieces ``b`` of another (see the rule)."""
    lo = np.maximum(tile_a[:2], tile_b[:2])
    hi = np.minimum(tile_a[2:], tile_b[2:])
    span = hi - lo
    out = np.zeros((len(a), len(b)))
    if (span < -tolerance).any() or (span <= tolerance).all():
        return out  # apart, or meeting at a corner only
    if (span > tolerance).all():
        overlap = np.concatenate([lo, hi])
        ca, cb = _clip(a, overlap), _clip(b, overlap)
        rows, cols = np.indices(out.shape)
        return _pair_iou(ca[rows.ravel()], cb[cols.ravel()]).reshape(out.shape)
    # Abutting tiles: the seam is a line across ``axis`` at ``lo[axis]``; compare along it.
    axis = int(np.argmin(span))
    along = 1 - axis
    seam = (lo[axis] + hi[axis]) / 2
    reach_a = (a[:, axis] <= seam + tolerance) & (a[:, axis + 2] >= seam - tolerance)
    reach_b = (b[:, axis] <= seam + tolerance) & (b[:, axis + 2] >= seam - tolerance)
    a0 = np.clip(a[:, along], lo[along], hi[along])[:, None]
    a1 = np.clip(a[:, along + 2], lo[along], hi[along])[:, None]
    b0 = np.clip(b[:, along], lo[along], hi[along])[None, :]
    b1 = np.clip(b[:, along + 2], lo[along], hi[along])[None, :]
    inter = np.minimum(a1, b1) - np.maximum(a0, b0)
    union = np.maximum(a1, b1) - np.minimum(a0, b0)
    valid = (inter > 0) & reach_a[:, None] & reach_b[None, :]
    np.divide(inter, union, out=out, where=valid)
    return out


def _clip(corners: FloatArray, region: FloatArray) -> FloatArray:
    out = np.empty_like(corners)
    out[:, :2] = np.clip(corners[:, :2], region[:2], region[2:])
    out[:, 2:] = np.clip(corners[:, 2:], region[:2], region[2:])
    return out


def _unite(corners: FloatArray, cut: BoolArray, weight: FloatArray) -> list[float]:
    """One box from pieces: each edge from the pieces where it is not a cut (see the rule)."""
    out: list[float] = []
    for k in range(4):
        real = ~cut[:, k]
        if real.any():
            values = corners[real, k]
            out.append(float(values[0] + np.average(values - values[0], weights=weight[real])))
        else:
            out.append(float(corners[:, k].min() if k < 2 else corners[:, k].max()))
    return out


def box_certainty(images: Images, *, model: BoxModel, iou_threshold: float = 0.5) -> list[float]:
    """How sure the worker ``model`` is, per image, that its voters' answers together tell
    which objects are there and what they are: the confidence dynamic overlap compares with
    the project's threshold when a model votes.

    Every candidate (a cluster of the voters' boxes) is real with the posterior of
    :func:`qa.consensus.box_em.existence_posterior`, from each voter's recall and false marks:
    with ``mu`` objects a picture, the odds that a candidate marked by the voters ``S`` of the
    voters ``V`` is real are ``mu prod_S r_j prod_{V-S} (1 - r_k)`` against
    ``sum_S l_j g^(|S|-1) (1 - g)^(|V|-|S|)``, the rate at which one of them draws a stray box
    there and the others join it by chance. So a lone mark of a voter who seldom draws a stray
    box is strong evidence, that of a careless one is not, and not marking an object says
    little of a voter who misses much. A real candidate's class is the Dawid-Skene posterior
    from its members' confusion matrices; it is as certain as ``p`` times its class's
    posterior, a spurious one as ``1 - p``. An object no voter marked is missed: there are
    ``mu prod_V (1 - r_j)`` of them a picture (a Poisson count), and the chance of none,
    ``exp(-mu prod_V (1 - r_j))``, is one more factor. The image is as certain as the least
    of these. Voters the model has not seen take the crowd's rates."""
    _check(iou_threshold, "em")
    with collector_paused():
        crowd = _Crowd.build(images)
        n_images = len(images)
        answer_worker = _model_answer_workers(crowd, model)
        recall = np.clip(model._column("recall"), RATE_FLOOR, 1.0 - RATE_FLOOR)
        # Objects every voter missed: log of the product of misses, summed per image.
        missed = np.bincount(
            crowd.answer_image, np.log1p(-recall[answer_worker]), minlength=n_images
        )
        # (An image nobody answered has missed all of them: the chance it has none.)
        least = np.exp(-max(model.objects, RATE_FLOOR) * np.exp(missed))
        if crowd.n_boxes == 0:
            return least.tolist()
        members = _clusters(crowd, iou_threshold, refine=False)
        posterior = _existence(crowd, members, answer_worker, model)
        certain = np.maximum(posterior, 1.0 - posterior)
        known = set(model.labels)
        names = [*model.labels, *(name for name in crowd.labels if name not in known)]
        if len(names) > 1:
            index = {name: i for i, name in enumerate(names)}
            confusion, prior = model._confusion(names)
            to_name = np.array([index[name] for name in crowd.labels], dtype=np.intp)
            present = members >= 0
            rows = np.broadcast_to(np.arange(len(members))[:, None], present.shape)[present]
            boxes = members[present]
            label = label_posterior(
                rows,
                answer_worker[crowd.box_answer][boxes],
                to_name[crowd.label[boxes]],
                n_candidates=len(members),
                confusion=confusion,
                prior=prior,
            ).max(axis=1)
            certain = np.where(posterior >= 0.5, posterior * label, certain)
        image = crowd.image[members.max(axis=1)]
        np.minimum.at(least, image, certain)
        return least.tolist()


def box_model_for(
    model: BoxModel | None,
    gold: Mapping[Any, GoldRates],
    *,
    objects: float,
    strength: float = PRIOR_STRENGTH,
) -> BoxModel:
    """The model a decision applies to voters some of whom the last fit (``model``, None
    before the first) has not seen: a voter it has not seen but who has ``gold`` rates gets
    them shrunk toward the crowd's (the fit's crowd row, else the EM's starting crowd), the
    gold worth its strength in answers against ``strength`` answers of the crowd, as the EM's
    prior would weigh them; a voter without gold takes the crowd's rates. ``objects`` (a
    picture) is used before a fit only, where the fit's is not known."""
    if model is None:
        crowd = BoxWorker(CROWD_RECALL, CROWD_FALSE_MARKS, 0.1, 0, CROWD_LABEL_ACCURACY)
        model = BoxModel(ids=(), per_worker=(), crowd=crowd, objects=objects)
    seen = set(model.ids)
    extra = [(w, rates) for w, rates in gold.items() if w not in seen]
    if not extra:
        return model
    crowd = model.crowd

    def shrunk(rates: GoldRates) -> BoxWorker:
        total = rates.strength + strength
        odds: tuple[float, ...] = ()
        if rates.scores is not None and any(map(any, rates.scores)):
            real, spurious = (np.asarray(counts, dtype=np.float64) for counts in rates.scores)
            odds = tuple(score_odds(real, spurious).tolist())
        return crowd._replace(
            recall=(rates.strength * rates.recall + strength * crowd.recall) / total,
            false_marks=(rates.strength * rates.false_marks + strength * crowd.false_marks) / total,
            images=0,
            score_odds=odds,
        )

    return replace(
        model,
        ids=(*model.ids, *(w for w, _ in extra)),
        per_worker=(*model.per_worker, *(shrunk(rates) for _, rates in extra)),
    )
