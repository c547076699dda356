"""Consensus on keypoint instances: merge several workers' skeletons on one image. Pure.

The merge, for one image, label by label (a label fixes the keypoints and their order):

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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

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

# A member's keypoint whose OKS term with the per-keypoint median is below this is left out of
# the mean (it still votes on visibility).
OUTLIER_SIMILARITY = 0.5


def merge_keypoints(
    answers: Sequence[Answer | Sequence[Any]],
    *,
    sigmas: Mapping[str, npt.ArrayLike],
    oks_threshold: float = 0.5,
    quorum: float = 0.5,
) -> list[MergedObject]:
    """Merge the workers' ``answers`` on one image into consensus instances (see the module).

    Each answer is ``(worker, weight, items)``, items ``{"label", "keypoints": [[x, y, v],
    ...]}``; ``sigmas[label]`` holds one tolerance per keypoint of that label (see
    :func:`qa.geometry.keypoint_sigmas`). Returns the kept objects, highest score first.
    """
    crowd = as_answers(answers)
    voters = sum(answer.weight for answer in crowd)
    rank = {a: r for r, a in enumerate(sorted(range(len(crowd)), key=lambda a: -crowd[a].weight))}
    by_label: dict[str, list[tuple[int, int]]] = {}
    for a, answer in enumerate(crowd):
        for i, item in enumerate(answer.items):
            by_label.setdefault(item["label"], []).append((a, i))
    out: list[MergedObject] = []
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
        for members in cluster_by_rank(similarity, weight, ranks, oks_threshold):
            if weight[members].sum() / voters < quorum - EPS:
                continue
            merged = _merge(instances[members], weight[members], label_sigmas)
            if merged is None:
                continue
            keypoints, agreement = merged
            support = min(1.0, float(weight[members].sum()) / voters)
            out.append(
                MergedObject(
                    kind="keypoints",
                    label=label,
                    score=support * agreement,
                    support=support,
                    agreement=agreement,
                    num_votes=len(members),
                    workers=tuple(crowd[refs[m][0]].worker for m in members),
                    items=tuple(refs[m][1] for m in members),
                    keypoints=keypoints,
                )
            )
    out.sort(key=lambda obj: -obj.score)
    return out


def _symmetric_oks(instances: FloatArray, sigmas: FloatArray) -> FloatArray:
    areas = [keypoint_area(kps) for kps in instances]
    one_way = oks(instances, instances, sigmas, areas)  # rows candidate, columns reference
    return np.asarray((one_way + one_way.T) / 2, dtype=np.float64)


def _merge(
    members: FloatArray, weight: FloatArray, sigmas: FloatArray
) -> tuple[tuple[tuple[float, float, int], ...], float] | None:
    """Merged keypoints of one cluster (M, K, 3) and the members' weighted mean OKS with them.

    None when every keypoint comes out absent.
    """
    marked = members[:, :, 2] > 0  # (M, K)
    total = weight.sum()
    absent = ((~marked) * weight[:, None]).sum(axis=0) > total / 2 + EPS
    visible = ((members[:, :, 2] == 2) * weight[:, None]).sum(axis=0)
    occluded = ((members[:, :, 2] == 1) * weight[:, None]).sum(axis=0)
    seen = ~absent & marked.any(axis=0)
    if not seen.any():
        return None
    point_weight = marked * weight[:, None]  # (M, K)
    x = weighted_median(members[:, :, 0].T, point_weight.T)
    y = weighted_median(members[:, :, 1].T, point_weight.T)
    v = np.where(seen, np.where(visible >= occluded, 2, 1), 0)
    merged = np.column_stack([np.where(seen, x, 0.0), np.where(seen, y, 0.0), v])
    area = keypoint_area(merged)
    # The members' points that agree with the median (their own OKS term with it at least
    # OUTLIER_SIMILARITY) are averaged: as precise as a mean, as robust as the median.
    squared = ((members[:, :, :2] - merged[None, :, :2]) ** 2).sum(axis=-1)
    similarity = np.exp(-squared / (2 * (2 * sigmas) ** 2 * (area + np.spacing(1))))
    inlier = point_weight * (similarity >= OUTLIER_SIMILARITY)
    total_inlier = inlier.sum(axis=0)
    averaged = seen & (total_inlier > 0)
    # As the median plus the mean offset from it, so agreeing members give exact values.
    offset = np.einsum("mk,mkc->kc", inlier, members[:, :, :2] - merged[None, :, :2])
    merged[averaged, :2] += offset[averaged] / total_inlier[averaged, None]
    agreement = float(oks(members, merged[None], sigmas, [area])[:, 0] @ weight / total)
    keypoints = tuple((float(px), float(py), int(pv)) for px, py, pv in merged.tolist())
    return keypoints, agreement
