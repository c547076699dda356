"""What a consensus merge of shapes returns: one object per thing the crowd agreed is there.

Shared by the box, polygon and keypoint merges (:mod:`qa.consensus.boxes`,
:mod:`qa.consensus.polygons`, :mod:`qa.consensus.keypoints`). Pure, no Django.

Every merged object is traceable: ``members`` names each worker's item that went into it, so a
manager can see who said what and a worker's agreement with the consensus can be scored.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from itertools import repeat
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from qa.geometry import match

Item = Mapping[str, Any]
Rle = dict[str, Any]
FloatArray = npt.NDArray[np.float64]

# Sums of weights are compared with a threshold up to this, so 3 of 6 equal voters reach 0.5.
EPS = 1e-9


class Answer(NamedTuple):
    """One worker's answer to one task: who, how far their word counts, and what they marked.

    ``weight`` in (0, 1] is the worker's reliability. ``items`` are annotation items of one
    kind in full-image pixels; an empty list means "nothing to mark here", and the worker still
    votes (against every object the others marked).
    """

    worker: Hashable
    weight: float
    items: Sequence[Item]


class Member(NamedTuple):
    """An item that went into a merged object: item ``item`` of ``worker``'s answer.

    ``tile`` is the index of the tile whose answer held it when objects were united across
    tiles (:func:`qa.consensus.boxes.merge_across_tiles`), else None.
    """

    worker: Hashable
    item: int
    tile: int | None = None


class MergedObject(NamedTuple):
    """One consensus object of kind ``bbox``, ``polygon``, ``keypoints`` or ``mask``.

    - ``score``: confidence in [0, 1]: the share of the voters' weight that marked this object
      with this label, times the mean agreement (IoU, or OKS) of the members with the result;
    - ``support``: the share of the voters' weight that marked this object, whatever the label;
    - ``agreement``: mean IoU (OKS for keypoints) of the members with the merged shape;
    - ``num_votes``: how many workers marked it;
    - ``workers``, ``items`` (and ``tiles`` once tiles are united): who said what, one entry per
      member, read together as :attr:`members`.

    Exactly one of ``bbox`` (COCO ``[x, y, w, h]``), ``points``, ``keypoints`` or (for a mask)
    ``mask`` is set, as ``kind`` says; a polygon also carries its consensus ``mask``. A mask is
    a COCO RLE with string counts (``{"size": [h, w], "counts": "..."}``), JSON-able as is.

    A named tuple rather than a dataclass: a project's merge makes one per object, and a tuple
    is several times cheaper to build; members are kept as two flat tuples for the same reason.
    """

    kind: str
    label: str
    score: float
    support: float
    agreement: float
    num_votes: int
    workers: tuple[Hashable, ...]
    items: tuple[int, ...]
    tiles: tuple[int, ...] | None = None
    bbox: tuple[float, float, float, float] | None = None
    points: tuple[tuple[float, float], ...] | None = None
    keypoints: tuple[tuple[float, float, int], ...] | None = None
    mask: Rle | None = None

    @property
    def members(self) -> tuple[Member, ...]:
        """The items that went into this object: ``(worker, item, tile)`` each."""
        tiles: Iterable[int | None] = repeat(None) if self.tiles is None else self.tiles
        return tuple(map(Member, self.workers, self.items, tiles))

    def to_item(self) -> dict[str, Any]:
        """The annotation item of the public API, plus ``score`` and ``num_votes``.

        A polygon also gets ``rle``, its consensus mask.
        """
        item: dict[str, Any] = {"label": self.label}
        if self.kind == "bbox" and self.bbox is not None:
            item["bbox"] = list(self.bbox)
        elif self.kind == "polygon" and self.points is not None:
            item["points"] = [list(p) for p in self.points]
            if self.mask is not None:
                item["rle"] = dict(self.mask)
        elif self.kind == "keypoints" and self.keypoints is not None:
            item["keypoints"] = [list(k) for k in self.keypoints]
        elif self.kind == "mask" and self.mask is not None:
            item["rle"] = dict(self.mask)
        else:
            raise ValueError(f"a merged object of kind {self.kind!r} lacks its shape")
        item["score"] = self.score
        item["num_votes"] = self.num_votes
        return item


def cluster_by_rank(
    similarity: FloatArray, weight: FloatArray, ranks: npt.NDArray[np.intp], threshold: float
) -> list[list[int]]:
    """Cluster items worker by worker (``ranks``: the order of each item's worker, highest
    weight first), at most one item of a worker per cluster: each worker's items are matched
    optimally to the clusters so far by their weighted mean similarity with the members;
    unmatched items start clusters of their own."""
    clusters: list[list[int]] = []
    for rank in np.unique(ranks).tolist():
        new = np.flatnonzero(ranks == rank)
        if clusters:
            to_clusters = np.array(
                [
                    similarity[np.ix_(new, np.asarray(members))]
                    @ weight[members]
                    / weight[members].sum()
                    for members in clusters
                ]
            ).T
            found = match(to_clusters, threshold)
            for pair in found.pairs:
                clusters[pair.col].append(int(new[pair.row]))
            left = [int(new[row]) for row in found.unmatched_rows]
        else:
            left = new.tolist()
        clusters.extend([i] for i in left)
    return clusters


def as_answers(answers: Sequence[Answer | Sequence[Any]]) -> list[Answer]:
    """Answers given as ``(worker, weight, items)`` tuples, checked: weights must be in (0, 1]."""
    out: list[Answer] = []
    for answer in answers:
        worker, weight, items = answer
        weight = float(weight)
        if not 0.0 < weight <= 1.0:
            raise ValueError(f"worker {worker!r}: weight must be in (0, 1], got {weight}")
        out.append(Answer(worker, weight, items))
    return out


def weighted_median(values: npt.ArrayLike, weights: npt.ArrayLike) -> FloatArray:
    """Weighted median along the last axis; ``weights`` broadcast to ``values``' shape.

    Slots of weight 0 do not count. When the cumulative weight lands exactly on one half, the
    two middle values are averaged (two equal voters give their mean). Where every weight is
    0 the result is NaN.
    """
    weight = np.asarray(weights, dtype=np.float64)
    counted = weight > 0
    data = np.where(counted, np.asarray(values, dtype=np.float64), np.inf)
    order = np.argsort(data, axis=-1)
    ordered = np.take_along_axis(data, order, axis=-1)
    spread = np.broadcast_to(np.where(counted, weight, 0.0), data.shape)
    cumulative = np.take_along_axis(spread, order, axis=-1).cumsum(axis=-1)
    half = cumulative[..., -1:] / 2
    # The cumulative weight never decreases: counting the slots below a level finds where it
    # is first reached.
    lower = (cumulative < half - EPS).sum(axis=-1, keepdims=True)
    upper = np.minimum((cumulative <= half + EPS).sum(axis=-1, keepdims=True), data.shape[-1] - 1)
    low = np.take_along_axis(ordered, lower, axis=-1)[..., 0]
    high = np.take_along_axis(ordered, upper, axis=-1)[..., 0]
    # Where nothing counts both are +inf, whose sum is +inf without a warning.
    return np.asarray(np.where(half[..., 0] > 0, (low + high) / 2, np.nan), dtype=np.float64)


# Weights are clipped so that no voter is taken as infallible, nor as worse than a coin.
_MIN_VOTE, _MAX_VOTE = 0.5, 0.99


def existence_confidence(
    clusters: Sequence[Sequence[tuple[Hashable, str]]],
    weights: Mapping[Hashable, float],
    *,
    n_labels: int = 2,
) -> float:
    """How sure the crowd is of which objects are there and what they are.

    Each candidate object (a cluster of the voters' shapes: ``(voter, label)`` of each member)
    is a yes/no question every voter answered, by marking it or not. As in classification's
    weighted vote, a voter right with probability ``w`` counts ``log(w / (1 - w))`` for their
    side, so the posterior that the object is real is the logistic of the marks' weights minus
    the others'. A real object's label is then the weighted vote of its members over
    ``n_labels`` classes (``log(w (K - 1) / (1 - w))`` each), and the object is as certain as
    the product of both. The task's confidence is that of its least certain object (1 when no
    one marked anything).

    One weight a voter cannot tell a worker who misses much but never strays from a careless
    one; a box task the model votes on is decided by each voter's recall and stray boxes
    instead (:func:`qa.consensus.boxes.box_certainty`). This rule is kept as the benchmark's
    comparison (``bench/consensus_model.py``)."""
    clipped = {v: min(max(w, _MIN_VOTE), _MAX_VOTE) for v, w in weights.items()}
    logit = {v: math.log(w / (1 - w)) for v, w in clipped.items()}
    k = max(n_labels, 1)
    label_logit = (
        {}
        if k < 2
        else {
            v: math.log(max(w, 1 / k) * (k - 1) / (1 - max(w, 1 / k))) for v, w in clipped.items()
        }
    )
    total = sum(logit.values())
    least = 1.0
    for members in clusters:
        voters = {v: label for v, label in members if v in logit}
        score = 2 * sum(logit[v] for v in voters) - total  # marks for, minus the others
        real = 1.0 / (1.0 + math.exp(-score))
        if real < 0.5 or k < 2:
            least = min(least, max(real, 1.0 - real))
            continue
        tally: dict[str, float] = {}
        for v, label in voters.items():
            tally[label] = tally.get(label, 0.0) + label_logit[v]
        top = max(tally.values())
        # Labels nobody gave score 0 each.
        norm = sum(math.exp(t - top) for t in tally.values()) + (k - len(tally)) * math.exp(-top)
        least = min(least, real / norm)
    return least
