"""Pre-labels, the pure part: a model's objects cut to a task's region as the workspace shows
them, and what a worker's answer did with each (kept, moved, relabelled, deleted, added).

No Django import: the lease and the submission (``tasks.prelabels``) call these with items as
answers have them (API payload items, full-image pixels).

Coordinates are rounded to hundredths of a pixel, as the workspace rounds what it submits, and
cut to the region exactly as the workspace cuts a shape (``_clipped`` in annotator.js): a
pre-label the worker keeps comes back equal to the one they were shown, within
``SAME_TOLERANCE``.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Mapping, Sequence
from typing import Any

from tasks.tiling import clip_polygon, polygon_area

OUTCOMES = ("kept", "moved", "relabelled", "deleted", "added")
# Two coordinates this close (pixels) are the same: both sides round to 0.01 px.
SAME_TOLERANCE = 0.02
Region = Sequence[float]  # [x, y, w, h]


def r2(value: float) -> float:
    """Round to 0.01 as JavaScript's ``Math.round(v * 100) / 100`` does (half up)."""
    return math.floor(value * 100 + 0.5) / 100 + 0.0


def holdout_value(key: bytes, project_id: int, task_id: int) -> float:
    """A uniform draw in [0, 1) for the task, fixed by the key: whoever does not hold the key
    cannot tell it from the task's id (nor a gold task from another)."""
    digest = hmac.new(key, f"{project_id}:{task_id}".encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


# --- Cutting to the region --------------------------------------------------------------------


def cut(kind: str, item: Mapping[str, Any], region: Region) -> dict[str, Any] | None:
    """The item as the workspace would submit it unchanged in this region: cut to it and
    rounded; None when nothing of it is left there (a box under 1 px, a polygon under 3
    points or 1 px², keypoints with none inside)."""
    rx, ry, rw, rh = region
    label = item["label"]
    if kind == "classification" or kind == "mask":
        return {key: value for key, value in item.items() if key != "score"}
    if kind == "bbox":
        x, y, w, h = item["bbox"]
        x1, y1 = r2(max(x, rx)), r2(max(y, ry))
        x2, y2 = r2(min(x + w, rx + rw)), r2(min(y + h, ry + rh))
        cw, ch = r2(x2 - x1), r2(y2 - y1)
        if cw < 1 or ch < 1:
            return None
        return {"label": label, "bbox": [x1, y1, cw, ch]}
    if kind == "polygon":
        points: list[list[float]] = []
        for x, y in clip_polygon(item["points"], region):
            p = [r2(x), r2(y)]
            if not points or points[-1] != p:
                points.append(p)
        while len(points) > 1 and points[0] == points[-1]:
            points.pop()
        if len(points) < 3 or polygon_area(points) < 1:
            return None
        return {"label": label, "points": points}
    keypoints = [
        [r2(x), r2(y), int(v)]
        if v > 0 and rx <= x <= rx + rw and ry <= y <= ry + rh
        else [0.0, 0.0, 0]
        for x, y, v in item["keypoints"]
    ]
    if not any(k[2] > 0 for k in keypoints):
        return None
    return {"label": label, "keypoints": keypoints}


def offered(
    kind: str,
    items: Sequence[Mapping[str, Any]],
    region: Region,
    *,
    min_score: float | None,
    model_version: str,
) -> list[dict[str, Any]]:
    """The pre-labels a task shows: the model's items scored at least ``min_score`` (an item
    without a score is kept: the model gave none to judge it by), cut to the region, each
    marked with its score and the model version."""
    out = []
    for item in items:
        score = item.get("score")
        if min_score is not None and score is not None and score < min_score:
            continue
        shape = cut(kind, item, region)
        if shape is not None:
            out.append({**shape, "score": score, "model_version": model_version})
    if kind == "classification":
        return out[:1]
    return out


# --- What the answer did with them ------------------------------------------------------------


def _close(a: Sequence[float], b: Sequence[float]) -> bool:
    return len(a) == len(b) and all(
        abs(float(x) - float(y)) <= SAME_TOLERANCE for x, y in zip(a, b, strict=True)
    )


def same_geometry(kind: str, a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two items of the kind have the same shape (their labels aside)."""
    if kind == "classification":
        return True
    if kind == "bbox":
        return _close(a["bbox"], b["bbox"])
    if kind == "polygon":
        pa, pb = a["points"], b["points"]
        return len(pa) == len(pb) and all(_close(p, q) for p, q in zip(pa, pb, strict=True))
    if kind == "keypoints":
        ka, kb = a["keypoints"], b["keypoints"]
        return len(ka) == len(kb) and all(
            int(p[2]) == int(q[2]) and (int(p[2]) == 0 or _close(p[:2], q[:2]))
            for p, q in zip(ka, kb, strict=True)
        )
    return bool(a["rle"]["counts"] == b["rle"]["counts"] and a["rle"]["size"] == b["rle"]["size"])


def outcome_of(kind: str, prelabel: Mapping[str, Any], item: Mapping[str, Any]) -> str:
    """kept (unchanged), moved (reshaped, same label) or relabelled (another label, whether
    or not also reshaped: the record says ``moved`` beside it)."""
    if prelabel["label"] != item["label"]:
        return "relabelled"
    return "kept" if same_geometry(kind, prelabel, item) else "moved"


class ProvenanceError(ValueError):
    def __init__(self, errors: dict[str, list[str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))


def references(payload: Sequence[Any], offered_count: int) -> tuple[list[int | None], list[Any]]:
    """The ``prelabel`` index and the claimed ``outcome`` of each item of a raw answer, checked:
    an index of the pre-label set the task offered, each at most once; ProvenanceError naming
    every problem."""
    errors: dict[str, list[str]] = {}
    refs: list[int | None] = []
    claims: list[Any] = []
    seen: dict[int, int] = {}
    for i, item in enumerate(payload):
        ref = item.get("prelabel") if isinstance(item, dict) else None
        claims.append(item.get("outcome") if isinstance(item, dict) else None)
        where = f"annotations[{i}].prelabel"
        if ref is None:
            refs.append(None)
            continue
        if isinstance(ref, bool) or not isinstance(ref, int):
            errors.setdefault(where, []).append("The index of a pre-label: a whole number.")
        elif offered_count == 0:
            errors.setdefault(where, []).append("This task offered no pre-labels.")
        elif not 0 <= ref < offered_count:
            errors.setdefault(where, []).append(
                f"No pre-label {ref}: the task offered {offered_count} (0 to {offered_count - 1})."
            )
        elif ref in seen:
            errors.setdefault(where, []).append(
                f"Pre-label {ref} is already annotations[{seen[ref]}]."
            )
        else:
            seen[ref] = i
            refs.append(ref)
            continue
        refs.append(None)
    if errors:
        raise ProvenanceError(errors)
    return refs, claims


def record(
    kind: str,
    prelabels: Sequence[Mapping[str, Any]],
    items: Sequence[Mapping[str, Any]],
    refs: Sequence[int | None],
    claims: Sequence[Any] = (),
) -> dict[str, Any]:
    """What the answer ``items`` (validated) did with the ``prelabels`` it was offered: one
    object per item (its pre-label or none, and the outcome) and one per pre-label no item
    came from (deleted), with the counts. Outcomes are computed, not taken from the client:
    an item that names no pre-label but repeats one the answer left unnamed, shape for shape,
    is that pre-label kept (or relabelled). A claimed ``outcome`` that differs from the
    computed one is a ProvenanceError."""
    refs = list(refs)
    named = {ref for ref in refs if ref is not None}
    for i, ref in enumerate(refs):
        if ref is not None:
            continue
        for k, pre in enumerate(prelabels):
            if k not in named and same_geometry(kind, pre, items[i]):
                refs[i] = k
                named.add(k)
                break
    objects: list[dict[str, Any]] = []
    errors: dict[str, list[str]] = {}
    entry: dict[str, Any]
    for i, (item, ref) in enumerate(zip(items, refs, strict=True)):
        if ref is None:
            outcome, entry = "added", {"annotation": i, "prelabel": None, "outcome": "added"}
        else:
            pre = prelabels[ref]
            outcome = outcome_of(kind, pre, item)
            entry = {"annotation": i, "prelabel": ref, "outcome": outcome}
            if outcome == "relabelled":
                entry["moved"] = not same_geometry(kind, pre, item)
                entry["from_label"] = pre["label"]
            if pre.get("score") is not None:
                entry["score"] = pre["score"]
        claim = claims[i] if i < len(claims) else None
        if claim is not None and claim != outcome:
            shown = claim if isinstance(claim, str) and len(claim) < 40 else "that"
            errors.setdefault(f"annotations[{i}].outcome", []).append(
                f"This object is {outcome}, not {shown}: the server compares it with the "
                "pre-label it names. Leave outcome out, or send the one the shape shows."
            )
        objects.append(entry)
    if errors:
        raise ProvenanceError(errors)
    for k, pre in enumerate(prelabels):
        if k not in named:
            entry = {"annotation": None, "prelabel": k, "outcome": "deleted"}
            if pre.get("score") is not None:
                entry["score"] = pre["score"]
            objects.append(entry)
    counts = dict.fromkeys(OUTCOMES, 0)
    for entry in objects:
        counts[entry["outcome"]] += 1
    return {"objects": objects, "counts": counts}


# --- How sure the model is of an image ---------------------------------------------------------


def _finite_score(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def confidence(kind: str, items: Sequence[Mapping[str, Any]], score: Any = None) -> float | None:
    """How sure a prediction is of its image, 0..1 (the order of ``task_order:
    uncertain_first``, least sure first), or None when it says nothing about it:

    - classification: its top class's score (the items' ``score``, else the prediction's);
    - shapes: the least sure of its objects' decisions, an object scoring ``s`` being as sure
      as ``max(s, 1 - s)`` (a box at 0.5 is a coin flip; at 0.05 the model is sure it is
      nothing): one doubtful object makes the image doubtful. Objects without a score say
      nothing; with none scored, the prediction's own score; a prediction of no object at all
      and no score is sure (1.0): the model saw nothing to doubt.
    """
    scores = [s for s in (_finite_score(item.get("score")) for item in items) if s is not None]
    whole = _finite_score(score)
    if kind == "classification":
        if scores:
            return min(1.0, max(0.0, max(scores)))
        return whole
    if scores:
        return min(max(s, 1.0 - s) for s in (min(1.0, max(0.0, x)) for x in scores))
    if whole is not None:
        return whole
    return 1.0 if not items else None
