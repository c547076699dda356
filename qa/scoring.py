"""Gold scoring: how well one submission reproduces a task's gold answer. Pure (no Django).

- classification: 1 when the label is the gold label, else 0;
- boxes and polygons: items are matched to the gold items by IoU (see
  :func:`qa.geometry.match_annotations`); the score is the F1 of same-label matches at the
  IoU threshold, so a shape with the wrong label counts as a miss and as an extra;
- masks: items are matched by mask IoU and scored like boxes; ``mean_dice`` reports the mean
  Dice coefficient (``2 |A & B| / (|A| + |B|)``, which is ``2 IoU / (1 + IoU)``) of the
  same-label matches beside their mean IoU;
- keypoints: instances are matched by OKS; the score is the sum of the OKS of same-label
  matches over the larger of the two instance counts, so each instance scores by how close it
  is, and a missing or extra instance scores 0.

An empty gold answer ("nothing to mark here") is reproduced only by an empty answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy.typing as npt

from qa.geometry import AnnotationMatch, match_annotations

Item = Mapping[str, Any]


@dataclass(frozen=True)
class GoldScore:
    """One submission against the gold answer.

    Counts are disjoint: gold items = ``matched + missed + wrong_label`` and answer items =
    ``matched + extra + wrong_label``. ``mean_iou`` is the mean IoU (OKS for keypoints) of the
    same-label matches, None when there are none.
    """

    kind: str
    score: float
    precision: float
    recall: float
    f1: float
    mean_iou: float | None
    matched: int
    missed: int
    extra: int
    wrong_label: int
    mean_dice: float | None = None  # masks only

    def details(self) -> dict[str, Any]:
        """A small JSON-able summary (counts and rates, no coordinates)."""
        summary = asdict(self)
        for key in ("score", "precision", "recall", "f1", "mean_iou", "mean_dice"):
            if summary[key] is not None:
                summary[key] = round(summary[key], 4)
        if self.kind != "mask":
            del summary["mean_dice"]
        if self.kind == "keypoints":
            summary["mean_oks"] = summary.pop("mean_iou")
        return summary


def _f1(precision: float, recall: float) -> float:
    total = precision + recall
    return 2 * precision * recall / total if total else 0.0


def _classification_score(gold: Sequence[Item], answer: Sequence[Item]) -> GoldScore:
    gold_labels = [item["label"] for item in gold]
    answer_labels = [item["label"] for item in answer]
    correct = gold_labels == answer_labels
    value = 1.0 if correct else 0.0
    both = bool(gold_labels and answer_labels)
    return GoldScore(
        kind="classification",
        score=value,
        precision=value,
        recall=value,
        f1=value,
        mean_iou=None,
        matched=int(correct and both),
        missed=int(bool(gold_labels) and not answer_labels),
        extra=int(bool(answer_labels) and not gold_labels),
        wrong_label=int(both and not correct),
    )


def _shape_score(
    kind: str, gold: Sequence[Item], answer: Sequence[Item], found: AnnotationMatch
) -> GoldScore:
    similarities = [m.similarity for m in found.matches]
    matched = len(similarities)
    precision = matched / len(answer) if answer else float(not gold)
    recall = matched / len(gold) if gold else float(not answer)
    f1 = _f1(precision, recall)
    if kind == "keypoints":
        score = sum(similarities) / max(len(gold), len(answer)) if gold or answer else 1.0
    else:
        score = f1
    dice = [2 * s / (1 + s) for s in similarities] if kind == "mask" else []
    return GoldScore(
        kind=kind,
        score=score,
        precision=precision,
        recall=recall,
        f1=f1,
        mean_iou=sum(similarities) / matched if matched else None,
        matched=matched,
        missed=len(found.misses),
        extra=len(found.extras),
        wrong_label=len(found.label_mismatches),
        mean_dice=sum(dice) / len(dice) if dice else None,
    )


def gold_score(
    kind: str,
    gold: Sequence[Item],
    answer: Sequence[Item],
    *,
    iou_threshold: float = 0.5,
    oks_threshold: float = 0.5,
    sigmas: Mapping[str, npt.ArrayLike] | None = None,
    width: int | None = None,
    height: int | None = None,
) -> GoldScore:
    """Score ``answer`` against ``gold``, both validated annotation lists of ``kind``.

    Polygons need the image's ``width`` and ``height``; keypoints need ``sigmas`` (per label,
    one per keypoint, see :func:`qa.geometry.keypoint_sigmas`).
    """
    if kind == "classification":
        return _classification_score(gold, answer)
    threshold = oks_threshold if kind == "keypoints" else iou_threshold
    found = match_annotations(
        gold,
        answer,
        kind=kind,
        threshold=threshold,
        width=width,
        height=height,
        sigmas=sigmas,
    )
    return _shape_score(kind, gold, answer, found)
