"""Consensus on keypoint instances: merge several workers' skeletons into one set. Pure.

The merge, for each image, label by label (a label fixes the keypoints and their order):

1. **Cluster** instances, at most one of each worker per cluster: workers in decreasing order
   of weight; the first one's instances open clusters, each next worker's instances are
   matched one to one (Hungarian method, pairs below ``oks_threshold`` excluded) to the
   clusters by their weighted mean OKS with the cluster's members; an instance left over opens
   a cluster. OKS between two instances is symmetrised (the mean of each taken as reference).
2. **Keep** a cluster when its support (members' weight over all voters' weight, empty answers
   included) reaches ``quorum``.
3. **Per keypoint**: when the members that left it absent (v = 0) carry more than half of the
   members' weight it is absent; otherwise its visibility is the weighted vote between
   occluded (1) and visible (2) (ties: visible). Its position starts at the weighted median of
   x and of y over the members that marked it, which one stray point cannot drag, and ends at
   the weighted mean of the members' points that agree with it (their OKS term with it at
   least ``OUTLIER_SIMILARITY``), which keeps the precision of a mean where the crowd agrees.
4. **Score**: support x (weighted mean OKS of the members against the merged instance).

**The worker model** (``method="em"``, the default of :func:`merge_keypoints_batch`) replaces
the fixed weights and quorum of steps 2-4 by what the batch's answers tell of each worker
(:func:`keypoint_model`), as boxes do (:mod:`qa.consensus.box_em`):

- **recall** and **false instances a picture**, with each cluster's posterior probability of
  being a real instance, from who marked it and who answered the image and did not
  (:func:`qa.consensus.box_em.existence_em`); a cluster is kept when that posterior reaches
  0.5, and it is the object's score;
- **placement noise** ``tau``: the spread of a worker's points around the consensus per axis,
  in units of the keypoint's OKS tolerance (``2 sigma sqrt(area)``), so that ``tau`` is
  comparable across keypoint types and sizes. A worker's overall level is shrunk toward the
  crowd's (``NOISE_PRIOR_POINTS`` pseudo-points), and each keypoint type's toward that level
  times the crowd's profile over types (``TYPE_PRIOR_POINTS``): a careful worker can still be
  loose on hips, as everyone is. Coordinates are then averaged with weights ``1 / tau**2``,
  the inverse variance, the most precise unbiased mean under that noise;
- **left-right swaps** (when ``mirror`` names each label's mirrored keypoint order): the rate
  at which a worker's instance matches the consensus better mirrored; a member whose
  mirrored instance is the likelier one, given that rate and their noise, enters mirrored.
  Clustering then takes the OKS of two instances the better way round, so a mirrored
  person still joins the others who marked them;
- **visibility**: the share of keypoints a worker marks as the consensus does (absent,
  occluded or visible); votes on presence and visibility count by its log-odds.

Each rate has a weak prior centred on the crowd's, so a worker with few answers sits near the
average. Placement, swaps and visibility are learnt against a first consensus with the given
weights, then once more against the consensus with the learnt weights. Only the clustering
(by the given weights) and the model's parameters decide an image's objects: with ``model``
given, nothing is learnt, so a project merged in chunks with one model equals one batch.
The model costs about three times the quorum merge's time (a Python pass over the clusters
per round); the benchmark's profiles say what it buys.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import numpy as np
import numpy.typing as npt

from qa.consensus.box_em import JOIN, RATE_FLOOR, Existence, GoldRates, Prior, existence_em
from qa.consensus.objects import (
    EPS,
    Answer,
    MergedObject,
    as_answers,
    cluster_by_rank,
    weighted_median,
)
from qa.geometry import keypoint_area, oks

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
Method = Literal["quorum", "em"]

# A member's keypoint whose OKS term with the per-keypoint median is below this is left out of
# the mean (it still votes on visibility).
OUTLIER_SIMILARITY = 0.5
# A point's squared error counts at most this much (tau**2 units): a stray point still tells
# that its worker is imprecise, not how imprecise.
NOISE_CAP = 4.0
NOISE_FLOOR = 0.02
# Pseudo-points of the crowd's level in a worker's noise (a dozen points is about one
# instance), and of the worker's level in each of their keypoint types.
NOISE_PRIOR_POINTS = 30.0
TYPE_PRIOR_POINTS = 20.0
# Prior of the swap rate and of the visibility agreement: the crowd's, worth this many
# instances (swaps) or keypoints (visibility).
SWAP_PRIOR_INSTANCES = 5.0
VISIBILITY_PRIOR_POINTS = 30.0
CROWD_SWAPS = 0.05
VISIBILITY_CEILING = 0.99


class KeypointWorker(NamedTuple):
    """What the crowd's answers tell of one worker who marks keypoints."""

    recall: float  # chance they mark an instance that is there
    false_marks: float  # spurious instances a picture
    noise: float  # tau over all their points (units of the OKS tolerance, per axis)
    keypoint_noise: Mapping[str, tuple[float, ...]]  # tau per label and keypoint
    swaps: float  # chance an instance of theirs is mirrored left to right
    visibility: float  # share of their keypoints whose absent / occluded / visible is right
    images: int  # images they answered in the batch that taught the model


@dataclass(frozen=True)
class KeypointModel:
    """A worker model for keypoints: per worker, and the crowd's for workers not seen."""

    workers: Mapping[Hashable, KeypointWorker]
    crowd: KeypointWorker
    objects: float  # real instances a picture that someone marked
    iterations: int = 0
    labels: Mapping[str, int] = field(default_factory=dict)  # keypoints of each label


@dataclass
class _Cluster:
    image: int
    label: str
    sigmas: FloatArray
    answers: list[int]  # global answer index of each member
    items: list[int]
    instances: FloatArray  # (M, K, 3)
    weight: FloatArray  # the given weights of the members
    voters: list[int]  # global answer indices of the image's voters
    given_merge: tuple[FloatArray, float] | None = None
    merged_by_given: bool = False

    def first(self) -> tuple[FloatArray, float] | None:
        """The merge by the given weights, as drawn: the reference for orientation (once)."""
        if not self.merged_by_given:
            w = self.weight
            self.given_merge = _merge(self.instances, self.sigmas, w[:, None], w)
            self.merged_by_given = True
        return self.given_merge


@dataclass
class _Batch:
    workers: list[Hashable]  # per global answer
    given: list[float]
    answer_image: list[int]
    clusters: list[_Cluster]
    voters_weight: list[float]  # per image


def merge_keypoints(
    answers: Sequence[Answer | Sequence[Any]],
    *,
    sigmas: Mapping[str, npt.ArrayLike],
    oks_threshold: float = 0.5,
    quorum: float = 0.5,
    method: Method = "quorum",
    model: KeypointModel | None = None,
    mirror: Mapping[str, Sequence[int]] | None = None,
) -> list[MergedObject]:
    """Merge the workers' ``answers`` on one image into consensus instances (see the module).

    Each answer is ``(worker, weight, items)``, items ``{"label", "keypoints": [[x, y, v],
    ...]}``; ``sigmas[label]`` holds one tolerance per keypoint of that label (see
    :func:`qa.geometry.keypoint_sigmas`). Returns the kept objects, highest score first.
    By default a fixed ``quorum``; ``method="em"`` applies a worker ``model`` (learnt over a
    batch, :func:`keypoint_model`), or learns one from this image alone, which the crowd's
    priors then mostly decide.
    """
    (objects,) = merge_keypoints_batch(
        [answers],
        sigmas=sigmas,
        oks_threshold=oks_threshold,
        method=method,
        model=model,
        quorum=quorum,
        mirror=mirror,
    )
    return objects


def merge_keypoints_batch(
    crowds: Sequence[Sequence[Answer | Sequence[Any]]],
    *,
    sigmas: Mapping[str, npt.ArrayLike],
    oks_threshold: float = 0.5,
    method: Method = "em",
    model: KeypointModel | None = None,
    quorum: float = 0.5,
    mirror: Mapping[str, Sequence[int]] | None = None,
) -> list[list[MergedObject]]:
    """:func:`merge_keypoints` for many images: one list of objects per image, in order.

    With ``method="em"`` and no ``model``, the worker model is learnt from the whole batch
    (an image's objects then depend on the other images in it); with a ``model``, it is
    applied as is, so each image's objects depend on that image alone. ``quorum`` is used by
    ``method="quorum"`` only. ``mirror[label]`` is the keypoint order of that label mirrored
    left to right (e.g. COCO's left and right eye exchanged), for the swap tendency.
    """
    if method not in ("quorum", "em"):
        raise ValueError(f"method must be 'quorum' or 'em', got {method!r}")
    if method == "quorum":
        # The fixed rule merges members as drawn: no mirrored instance joins a cluster.
        return _quorum_objects(_batch(crowds, sigmas, oks_threshold, {}), len(crowds), quorum)
    mirrors = _mirrors(mirror)
    batch = _batch(crowds, sigmas, oks_threshold, mirrors)
    if model is None:
        model = _learn(batch, mirrors)
    return _model_objects(batch, len(crowds), model, mirrors)


def keypoint_model(
    crowds: Sequence[Sequence[Answer | Sequence[Any]]],
    *,
    sigmas: Mapping[str, npt.ArrayLike],
    oks_threshold: float = 0.5,
    mirror: Mapping[str, Sequence[int]] | None = None,
    prior: Mapping[Hashable, GoldRates] | None = None,
) -> KeypointModel:
    """The model of each worker that ``merge_keypoints_batch(crowds)`` learns (see the module).
    ``prior`` gives some workers' recall and false marks measured on gold: their prior is
    centred there instead of on the crowd's mean."""
    mirrors = _mirrors(mirror)
    return _learn(_batch(crowds, sigmas, oks_threshold, mirrors), mirrors, prior)


# Clustering


def _batch(
    crowds: Sequence[Sequence[Answer | Sequence[Any]]],
    sigmas: Mapping[str, npt.ArrayLike],
    oks_threshold: float,
    mirrors: Mapping[str, IntArray],
) -> _Batch:
    batch = _Batch([], [], [], [], [])
    for image, answers in enumerate(crowds):
        crowd = as_answers(answers)
        first = len(batch.workers)
        batch.workers += [answer.worker for answer in crowd]
        batch.given += [answer.weight for answer in crowd]
        batch.answer_image += [image] * len(crowd)
        batch.voters_weight.append(sum(answer.weight for answer in crowd))
        voters = list(range(first, first + len(crowd)))
        order = sorted(range(len(crowd)), key=lambda a: -crowd[a].weight)
        rank = {a: r for r, a in enumerate(order)}
        by_label: dict[str, list[tuple[int, int]]] = {}
        for a, answer in enumerate(crowd):
            for i, item in enumerate(answer.items):
                by_label.setdefault(item["label"], []).append((a, i))
        for label, refs in by_label.items():
            if label not in sigmas:
                raise ValueError(f"no keypoint sigmas for label {label!r}")
            label_sigmas = np.asarray(sigmas[label], dtype=np.float64).reshape(-1)
            k = len(label_sigmas)
            flat = [
                np.asarray(crowd[a].items[i]["keypoints"], dtype=np.float64).reshape(-1)
                for a, i in refs
            ]
            if any(f.size != 3 * k or not np.isfinite(f).all() for f in flat):
                raise ValueError(f"{label!r} instances need {k} finite [x, y, v] keypoints")
            instances = np.stack(flat).reshape(len(refs), k, 3)
            weight = np.array([crowd[a].weight for a, _ in refs])
            ranks = np.array([rank[a] for a, _ in refs], dtype=np.intp)
            similarity = _symmetric_oks(instances, label_sigmas)
            if label in mirrors:
                # A worker who swapped a person's sides still marked that person.
                similarity = np.maximum(
                    similarity, _symmetric_oks(instances, label_sigmas, mirrors[label])
                )
            for members in cluster_by_rank(similarity, weight, ranks, oks_threshold):
                batch.clusters.append(
                    _Cluster(
                        image=image,
                        label=label,
                        sigmas=label_sigmas,
                        answers=[first + refs[m][0] for m in members],
                        items=[refs[m][1] for m in members],
                        instances=instances[members],
                        weight=weight[members],
                        voters=voters,
                    )
                )
    return batch


def _symmetric_oks(
    instances: FloatArray, sigmas: FloatArray, perm: IntArray | None = None
) -> FloatArray:
    """OKS between every two instances, each way averaged; with ``perm``, of each mirrored
    instance with every other."""
    areas = [keypoint_area(kps) for kps in instances]
    candidates = instances if perm is None else instances[:, perm]
    one_way = oks(candidates, instances, sigmas, areas)  # rows candidate, columns reference
    return np.asarray((one_way + one_way.T) / 2, dtype=np.float64)


def _quorum_objects(batch: _Batch, n_images: int, quorum: float) -> list[list[MergedObject]]:
    out: list[list[MergedObject]] = [[] for _ in range(n_images)]
    for cluster in batch.clusters:
        voters = batch.voters_weight[cluster.image]
        if cluster.weight.sum() / voters < quorum - EPS:
            continue
        w = cluster.weight
        merged = _merge(cluster.instances, cluster.sigmas, w[:, None], w)
        if merged is None:
            continue
        keypoints, agreement = merged
        support = min(1.0, float(w.sum()) / voters)
        out[cluster.image].append(
            _object(
                batch, cluster, _as_keypoints(keypoints), support * agreement, support, agreement
            )
        )
    for objects in out:
        objects.sort(key=lambda obj: -obj.score)
    return out


def _object(
    batch: _Batch,
    cluster: _Cluster,
    keypoints: tuple[tuple[float, float, int], ...],
    score: float,
    support: float,
    agreement: float,
) -> MergedObject:
    return MergedObject(
        kind="keypoints",
        label=cluster.label,
        score=score,
        support=support,
        agreement=agreement,
        num_votes=len(cluster.answers),
        workers=tuple(batch.workers[a] for a in cluster.answers),
        items=tuple(cluster.items),
        keypoints=keypoints,
    )


# Merging one cluster


def _merge(
    members: FloatArray, sigmas: FloatArray, point_weight: FloatArray, vote_weight: FloatArray
) -> tuple[FloatArray, float] | None:
    """Merged keypoints (K, 3) of one cluster (M, K, 3) and the members' mean OKS with them.

    ``point_weight`` (M, K) (or (M, 1)) weighs each member's coordinates, ``vote_weight`` (M,)
    their votes on presence and visibility and the mean OKS. None when every keypoint comes
    out absent.
    """
    marked = members[:, :, 2] > 0  # (M, K)
    total = vote_weight.sum()
    absent = ((~marked) * vote_weight[:, None]).sum(axis=0) > total / 2 + EPS
    visible = ((members[:, :, 2] == 2) * vote_weight[:, None]).sum(axis=0)
    occluded = ((members[:, :, 2] == 1) * vote_weight[:, None]).sum(axis=0)
    seen = ~absent & marked.any(axis=0)
    if not seen.any():
        return None
    weights = marked * np.broadcast_to(point_weight, marked.shape)  # (M, K)
    x = weighted_median(members[:, :, 0].T, weights.T)
    y = weighted_median(members[:, :, 1].T, weights.T)
    v = np.where(seen, np.where(visible >= occluded, 2, 1), 0)
    merged = np.column_stack([np.where(seen, x, 0.0), np.where(seen, y, 0.0), v])
    area = keypoint_area(merged)
    # The members' points that agree with the median (their own OKS term with it at least
    # OUTLIER_SIMILARITY) are averaged: as precise as a mean, as robust as the median.
    squared = ((members[:, :, :2] - merged[None, :, :2]) ** 2).sum(axis=-1)
    similarity = np.exp(-squared / (2 * (2 * sigmas) ** 2 * (area + np.spacing(1))))
    inlier = weights * (similarity >= OUTLIER_SIMILARITY)
    total_inlier = inlier.sum(axis=0)
    averaged = seen & (total_inlier > 0)
    # As the median plus the mean offset from it, so agreeing members give exact values.
    offset = np.einsum("mk,mkc->kc", inlier, members[:, :, :2] - merged[None, :, :2])
    merged[averaged, :2] += offset[averaged] / total_inlier[averaged, None]
    agreement = float(oks(members, merged[None], sigmas, [area])[:, 0] @ vote_weight / total)
    return merged, agreement


def _as_keypoints(merged: FloatArray) -> tuple[tuple[float, float, int], ...]:
    return tuple((float(px), float(py), int(pv)) for px, py, pv in merged.tolist())


# The worker model


def _mirrors(mirror: Mapping[str, Sequence[int]] | None) -> dict[str, IntArray]:
    out: dict[str, IntArray] = {}
    for label, order in (mirror or {}).items():
        perm = np.asarray(order, dtype=np.intp)
        if sorted(perm.tolist()) != list(range(len(perm))):
            raise ValueError(f"mirror[{label!r}] must be a permutation of the keypoints")
        out[label] = perm
    return out


@dataclass
class _Params:
    """The learnt model as arrays over the batch's workers (or over one cluster's members)."""

    tau2: dict[str, FloatArray]  # label -> (workers, K)
    swaps: FloatArray
    visibility: FloatArray
    crowd_tau2: dict[str, FloatArray] = field(default_factory=dict)  # label -> (K,)
    crowd_swaps: float = CROWD_SWAPS
    crowd_visibility: float = 0.8


@dataclass
class _Evidence:
    """One cluster's members against a reference consensus: what the model is learnt from."""

    label: str
    workers: IntArray  # (M,)
    straight: FloatArray  # (M, K) capped z / 2 of each point, 0 where not compared
    mirrored: FloatArray  # the same for the member's mirrored instance
    compared: npt.NDArray[np.bool_]  # (M, K) both the member and the reference marked it
    mirror_compared: npt.NDArray[np.bool_]
    agrees: npt.NDArray[np.bool_]  # (M, K) same absent / occluded / visible as the reference
    mirror_agrees: npt.NDArray[np.bool_]
    judged: npt.NDArray[np.bool_]  # (M, K) either marked it


def _evidence(
    instances: FloatArray, sigmas: FloatArray, ref: FloatArray, perm: IntArray | None
) -> tuple[FloatArray, npt.NDArray[np.bool_], npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Capped squared errors (z / 2, tau**2 units) of the members against ``ref`` (as mirrored
    by ``perm`` when given), where both marked a point, and where visibility agrees."""
    if perm is not None:
        instances = instances[:, perm]
    area = keypoint_area(ref)
    squared = ((instances[:, :, :2] - ref[None, :, :2]) ** 2).sum(axis=-1)
    half_z = squared / (2 * (2 * sigmas) ** 2 * (area + np.spacing(1)))
    compared = (instances[:, :, 2] > 0) & (ref[None, :, 2] > 0)
    agrees = instances[:, :, 2] == ref[None, :, 2]
    judged = (instances[:, :, 2] > 0) | (ref[None, :, 2] > 0)
    return np.where(compared, np.minimum(half_z, NOISE_CAP), 0.0), compared, agrees, judged


def _swap_chance(
    evidence: _Evidence, tau2: FloatArray, swaps: FloatArray, active: bool
) -> FloatArray:
    """Each member's probability that their instance is mirrored (see :func:`_mirror_logit`)."""
    if not active:
        return np.zeros(len(evidence.workers))
    both = evidence.compared & evidence.mirror_compared
    logit = _mirror_logit(evidence.straight, evidence.mirrored, both, tau2, swaps)
    out: FloatArray = 0.5 * (1.0 + np.tanh(0.5 * logit))
    return out


def _mirror_logit(
    straight: FloatArray,
    mirrored: FloatArray,
    both: npt.NDArray[np.bool_],
    tau2: FloatArray,
    swaps: FloatArray,
) -> FloatArray:
    """Log-odds that each member's instance is mirrored, given their noise ``tau2`` (M, K) and
    swap rate: the Gaussian likelihood of each orientation over the points (``both``) that
    both orientations and the reference mark, errors as capped ``z / 2``."""
    rate = np.clip(swaps, RATE_FLOOR, 1 - RATE_FLOOR)
    gain = (np.where(both, straight - mirrored, 0.0) / tau2).sum(axis=1)
    out: FloatArray = np.log(rate) - np.log1p(-rate) + gain
    return out


def _vote_weight(visibility: FloatArray) -> FloatArray:
    """Log-odds of a worker's visibility agreement among three states, kept above 0 so a
    cluster of workers at chance still gets merged."""
    a = np.clip(visibility, 1.0 / 3.0, VISIBILITY_CEILING)
    out: FloatArray = np.maximum(np.log(2 * a) - np.log1p(-a), 0.05)
    return out


def _consensus(
    cluster: _Cluster, params: _Params | None, members: IntArray, perm: IntArray | None
) -> tuple[FloatArray, float, FloatArray] | None:
    """A cluster's consensus: with ``params`` (over the members ``members``), mirrored members
    turned back and each weighted by their precision and visibility; without, by the given
    weights. Also the members' instances as they entered."""
    first = cluster.first()
    if params is None or first is None:
        return None if first is None else (first[0], first[1], cluster.instances)
    tau2 = params.tau2[cluster.label][members]
    instances = cluster.instances
    if perm is not None:
        straight, compared, _, _ = _evidence(instances, cluster.sigmas, first[0], None)
        mirrored, mirror_compared, _, _ = _evidence(instances, cluster.sigmas, first[0], perm)
        both = compared & mirror_compared
        turned = _mirror_logit(straight, mirrored, both, tau2, params.swaps[members]) > 0
        if turned.any():
            instances = instances.copy()
            instances[turned] = instances[turned][:, perm]
    merged = _merge(instances, cluster.sigmas, 1.0 / tau2, _vote_weight(params.visibility[members]))
    return None if merged is None else (merged[0], merged[1], instances)


def _learn(
    batch: _Batch,
    mirrors: Mapping[str, IntArray],
    prior: Mapping[Hashable, GoldRates] | None = None,
) -> KeypointModel:
    ids = {worker: i for i, worker in enumerate(dict.fromkeys(batch.workers))}
    answer_worker = np.array([ids[w] for w in batch.workers], dtype=np.intp)
    n_workers = len(ids)
    worker_images = np.bincount(answer_worker, minlength=n_workers)
    labels = {c.label: len(c.sigmas) for c in batch.clusters}
    if not batch.clusters:
        crowd = _crowd_worker(labels)
        return KeypointModel(
            workers={
                w: crowd._replace(images=int(n)) for w, n in zip(ids, worker_images, strict=True)
            },
            crowd=crowd,
            objects=1.0,
            labels=labels,
        )
    pair_candidate: list[int] = []
    pair_answer: list[int] = []
    marked: list[bool] = []
    for c, cluster in enumerate(batch.clusters):
        own = set(cluster.answers)
        pair_candidate += [c] * len(cluster.voters)
        pair_answer += cluster.voters
        marked += [a in own for a in cluster.voters]
    start = np.array(
        [min(1.0, c.weight.sum() / batch.voters_weight[c.image]) for c in batch.clusters]
    )
    existence = existence_em(
        np.array(pair_candidate, dtype=np.intp),
        answer_worker[np.array(pair_answer, dtype=np.intp)],
        np.array(marked, dtype=np.bool_),
        worker_images=worker_images,
        start=start,
        prior=Prior.of(list(ids), prior),
    )
    q = existence.posterior
    params: _Params | None = None
    # Learnt against the consensus by the given weights, then once more against the one by
    # the learnt weights.
    for _ in range(2):
        evidence = []
        for c, cluster in enumerate(batch.clusters):
            if q[c] < 0.01:
                continue
            members = answer_worker[cluster.answers]
            merged = _consensus(cluster, params, members, mirrors.get(cluster.label))
            if merged is None:
                continue
            evidence.append((q[c], _cluster_evidence(cluster, merged[0], members, mirrors)))
        params = _fit(evidence, labels, n_workers, bool(mirrors))
    assert params is not None
    return _model(params, existence, ids, worker_images, labels, existence.iterations)


def _cluster_evidence(
    cluster: _Cluster, ref: FloatArray, members: IntArray, mirrors: Mapping[str, IntArray]
) -> _Evidence:
    straight, compared, agrees, judged = _evidence(cluster.instances, cluster.sigmas, ref, None)
    perm = mirrors.get(cluster.label)
    if perm is None:
        mirrored, mirror_compared, mirror_agrees = straight, compared, agrees
    else:
        mirrored, mirror_compared, mirror_agrees, _ = _evidence(
            cluster.instances, cluster.sigmas, ref, perm
        )
    return _Evidence(
        cluster.label,
        members,
        straight,
        mirrored,
        compared,
        mirror_compared,
        agrees,
        mirror_agrees,
        judged,
    )


def _fit(
    evidence: list[tuple[float, _Evidence]],
    labels: Mapping[str, int],
    n_workers: int,
    swapping: bool,
    rounds: int = 5,
) -> _Params:
    """Each worker's noise per keypoint type, swap rate and visibility agreement from the
    members' evidence, each member counting by its cluster's probability of being real; the
    swap chances and the noise are refined together for a few rounds."""
    params = _Params(
        tau2={label: np.ones((n_workers, k)) for label, k in labels.items()},
        swaps=np.full(n_workers, CROWD_SWAPS),
        visibility=np.full(n_workers, 0.8),
    )
    for _ in range(rounds if swapping else 1):
        sums = {label: np.zeros((n_workers, k)) for label, k in labels.items()}
        counts = {label: np.zeros((n_workers, k)) for label, k in labels.items()}
        swapped = np.zeros(n_workers)
        instances = np.zeros(n_workers)
        agreed = np.zeros(n_workers)
        judged = np.zeros(n_workers)
        for real, ev in evidence:
            p = _swap_chance(
                ev, params.tau2[ev.label][ev.workers], params.swaps[ev.workers], swapping
            )
            straight, mirrored = real * (1 - p)[:, None], real * p[:, None]
            np.add.at(sums[ev.label], ev.workers, straight * ev.straight + mirrored * ev.mirrored)
            np.add.at(
                counts[ev.label],
                ev.workers,
                straight * ev.compared + mirrored * ev.mirror_compared,
            )
            np.add.at(swapped, ev.workers, real * p)
            np.add.at(instances, ev.workers, real)
            agree = (
                straight * (ev.agrees & ev.judged) + mirrored * (ev.mirror_agrees & ev.judged)
            ).sum(axis=1)
            np.add.at(agreed, ev.workers, agree)
            np.add.at(judged, ev.workers, real * ev.judged.sum(axis=1))
        params = _shrink(sums, counts, swapped, instances, agreed, judged)
    return params


def _shrink(
    sums: dict[str, FloatArray],
    counts: dict[str, FloatArray],
    swapped: FloatArray,
    instances: FloatArray,
    agreed: FloatArray,
    judged: FloatArray,
) -> _Params:
    """Rates from the tallies, each shrunk toward the crowd's (see the module)."""
    # The crowd's profile over keypoint types, and each worker's level relative to it.
    profile = {
        label: (sums[label].sum(axis=0) + NOISE_FLOOR) / (counts[label].sum(axis=0) + 1.0)
        for label in sums
    }
    relative = sum((sums[label] / profile[label]).sum(axis=1) for label in sums) + np.zeros(
        len(swapped)
    )
    points = sum(counts[label].sum(axis=1) for label in counts) + np.zeros(len(swapped))
    level = (relative + NOISE_PRIOR_POINTS) / (points + NOISE_PRIOR_POINTS)
    tau2 = {
        label: np.maximum(
            (sums[label] + TYPE_PRIOR_POINTS * level[:, None] * profile[label])
            / (counts[label] + TYPE_PRIOR_POINTS),
            NOISE_FLOOR**2,
        )
        for label in sums
    }
    crowd_swaps = (swapped.sum() + CROWD_SWAPS) / (instances.sum() + 1.0)
    swaps = (swapped + SWAP_PRIOR_INSTANCES * crowd_swaps) / (instances + SWAP_PRIOR_INSTANCES)
    crowd_visibility = (agreed.sum() + 0.8) / (judged.sum() + 1.0)
    visibility = (agreed + VISIBILITY_PRIOR_POINTS * crowd_visibility) / (
        judged + VISIBILITY_PRIOR_POINTS
    )
    crowd_tau2 = {label: np.maximum(profile[label], NOISE_FLOOR**2) for label in sums}
    return _Params(tau2, swaps, visibility, crowd_tau2, crowd_swaps, crowd_visibility)


def _crowd_worker(labels: Mapping[str, int]) -> KeypointWorker:
    return KeypointWorker(
        recall=0.8,
        false_marks=0.1,
        noise=1.0,
        keypoint_noise={label: (1.0,) * k for label, k in labels.items()},
        swaps=CROWD_SWAPS,
        visibility=0.8,
        images=0,
    )


def _model(
    params: _Params,
    existence: Existence,
    ids: Mapping[Hashable, int],
    worker_images: IntArray,
    labels: Mapping[str, int],
    iterations: int,
) -> KeypointModel:
    def noise(tau2: Mapping[str, FloatArray]) -> tuple[float, dict[str, tuple[float, ...]]]:
        every = np.concatenate(list(tau2.values())) if tau2 else np.ones(1)
        per_type = {label: tuple(np.sqrt(t).tolist()) for label, t in tau2.items()}
        return float(np.sqrt(every.mean())), per_type

    workers: dict[Hashable, KeypointWorker] = {}
    for worker, j in ids.items():
        level, per_type = noise({label: t[j] for label, t in params.tau2.items()})
        workers[worker] = KeypointWorker(
            recall=float(existence.recall[j]),
            false_marks=float(existence.false_marks[j]),
            noise=level,
            keypoint_noise=per_type,
            swaps=float(params.swaps[j]),
            visibility=float(params.visibility[j]),
            images=int(worker_images[j]),
        )
    n = max(float(worker_images.sum()), 1.0)
    level, per_type = noise(params.crowd_tau2)
    crowd = KeypointWorker(
        recall=float(existence.recall @ worker_images / n),
        false_marks=float(existence.false_marks @ worker_images / n),
        noise=level,
        keypoint_noise=per_type,
        swaps=float(params.crowd_swaps),
        visibility=float(params.crowd_visibility),
        images=0,
    )
    return KeypointModel(workers, crowd, existence.objects, iterations, dict(labels))


def _model_objects(
    batch: _Batch, n_images: int, model: KeypointModel, mirrors: Mapping[str, IntArray]
) -> list[list[MergedObject]]:
    """Apply ``model`` to the batch's clusters: nothing here depends on other images."""
    ids = {worker: i for i, worker in enumerate(dict.fromkeys(batch.workers))}
    known = [model.workers.get(worker, model.crowd) for worker in ids]
    answer_worker = np.array([ids[w] for w in batch.workers], dtype=np.intp)
    labels = {c.label: len(c.sigmas) for c in batch.clusters}
    params = _Params(
        tau2={
            label: np.array([_tau2(w, model.crowd, label, k) for w in known]).reshape(-1, k)
            for label, k in labels.items()
        },
        swaps=np.array([w.swaps for w in known]),
        visibility=np.array([w.visibility for w in known]),
    )
    recall = np.clip([w.recall for w in known], RATE_FLOOR, 1 - RATE_FLOOR)
    false_marks = np.maximum([w.false_marks for w in known], RATE_FLOOR)
    out: list[list[MergedObject]] = [[] for _ in range(n_images)]
    for cluster in batch.clusters:
        members = answer_worker[cluster.answers]
        voters = answer_worker[cluster.voters]
        posterior = _posterior(members, voters, recall, false_marks, model.objects)
        if posterior < 0.5:
            continue
        merged = _consensus(cluster, params, members, mirrors.get(cluster.label))
        if merged is None:
            continue
        keypoints, agreement, _ = merged
        support = min(1.0, float(cluster.weight.sum()) / batch.voters_weight[cluster.image])
        out[cluster.image].append(
            _object(batch, cluster, _as_keypoints(keypoints), posterior, support, agreement)
        )
    for objects in out:
        objects.sort(key=lambda obj: -obj.score)
    return out


def _tau2(worker: KeypointWorker, crowd: KeypointWorker, label: str, k: int) -> FloatArray:
    """A worker's squared noise per keypoint of ``label``: theirs, else the crowd's profile
    at their level, else their level throughout."""
    if label in worker.keypoint_noise and len(worker.keypoint_noise[label]) == k:
        tau = np.array(worker.keypoint_noise[label])
    elif label in crowd.keypoint_noise and len(crowd.keypoint_noise[label]) == k:
        tau = np.array(crowd.keypoint_noise[label]) * worker.noise / max(crowd.noise, EPS)
    else:
        tau = np.full(k, worker.noise)
    out: FloatArray = np.maximum(tau, NOISE_FLOOR) ** 2
    return out


def _posterior(
    members: IntArray,
    voters: IntArray,
    recall: FloatArray,
    false_marks: FloatArray,
    objects: float,
) -> float:
    """The probability that a cluster is real, given who marked it and who did not (the odds
    of :mod:`qa.consensus.box_em`)."""
    marked = np.isin(voters, members)
    n_marks, n_voters = len(members), len(voters)
    real = np.log(recall[voters[marked]]).sum() + np.log1p(-recall[voters[~marked]]).sum()
    spurious = (
        np.log(max(float(false_marks[members].sum()), RATE_FLOOR))
        + (n_marks - 1) * np.log(JOIN)
        + (n_voters - n_marks) * np.log1p(-JOIN)
    )
    logit = np.log(max(objects, RATE_FLOOR)) + real - spurious
    return float(0.5 * (1.0 + np.tanh(0.5 * logit)))
