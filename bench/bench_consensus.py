"""Consensus quality and speed against crowd-kit, on published crowd label sets.

Classification: our majority vote and Dawid-Skene (``qa.consensus.classification``) against
crowd-kit's ``MajorityVote`` and ``DawidSkene(n_iter=100)``, on every folder of
``shared/data/crowd`` beside the repository (``CROWD_DATA`` overrides), each holding
``answers.csv`` (task, worker, label) and ``truth.csv`` (task, label). Accuracy is measured on
the tasks with an expert label. Seconds are the best of a few runs: ours include turning the
CSV rows into index arrays (``encode``); crowd-kit's exclude building its DataFrame.
``speedup`` is crowd-kit's time for the same method divided by ours. The target, on our
Dawid-Skene rows: accuracy at least crowd-kit's Dawid-Skene and at least 10 times faster.

Rows share the columns of the box and polygon rows (``kind`` tells them apart): a column that
does not apply to a kind is None.
"""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import consensus_keypoints, consensus_overlap, consensus_polygons, consensus_shapes
from qa.consensus.classification import Result, dawid_skene, encode, majority_vote

NAME = "consensus"
DESCRIPTION = "consensus accuracy and wall time vs crowd-kit 1.4 on published crowd label sets"
MIN_SPEEDUP = 10.0
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "crowd"


def _crowd_kit() -> tuple[Any, Any, Any]:
    try:
        import pandas as pd  # type: ignore[import-untyped]
        from crowdkit.aggregation import DawidSkene, MajorityVote
    except ImportError as exc:
        raise ImportError(
            f"the consensus benchmark compares with crowd-kit, which is missing ({exc}): "
            "run `make bench`, which installs the project's bench extra"
        ) from exc
    return pd, MajorityVote, DawidSkene


def _read(path: Path) -> list[list[str]]:
    with path.open(newline="") as fh:
        return list(csv.reader(fh))[1:]


def _best_time(repeats: int, work: Callable[[], Any]) -> tuple[float, Any]:
    """The shortest of at least ``repeats`` runs; fast work runs for up to a second in all,
    so that a millisecond's noise from the rest of the machine does not decide its figure."""
    best, out, runs, spent = float("inf"), None, 0, 0.0
    while runs < repeats or (spent < 1.0 and runs < 100):
        started = time.perf_counter()
        out = work()
        elapsed = time.perf_counter() - started
        best, runs, spent = min(best, elapsed), runs + 1, spent + elapsed
    return best, out


def _row(dataset: str, method: str, accuracy: float, seconds: float) -> dict[str, Any]:
    return {
        "kind": "classification",
        "dataset": dataset,
        "method": method,
        "accuracy_or_f1": accuracy,
        "mean_iou": None,
        "seconds": seconds,
        "speedup": None,
        "target": None,
    }


def _classification(folder: Path, repeats: int) -> list[dict[str, Any]]:
    pd, crowd_kit_mv, crowd_kit_ds = _crowd_kit()
    rows = [(task, worker, label) for task, worker, label in _read(folder / "answers.csv")]
    truth = dict(_read(folder / "truth.csv"))

    def ours(method: Callable[..., Result]) -> tuple[float, float]:
        def work() -> tuple[Result, list[Any], list[Any]]:
            answers, task_keys, _, label_keys = encode(rows)
            return method(answers), task_keys, label_keys

        seconds, (result, task_keys, label_keys) = _best_time(repeats, work)
        chosen = dict(zip(task_keys, (label_keys[i] for i in result.label), strict=True))
        return sum(chosen[t] == label for t, label in truth.items()) / len(truth), seconds

    frame = pd.DataFrame(rows, columns=["task", "worker", "label"])

    def theirs(make: Callable[[], Any]) -> tuple[float, float]:
        seconds, labels = _best_time(repeats, lambda: make().fit_predict(frame))
        chosen = labels.to_dict()
        return sum(chosen.get(t) == label for t, label in truth.items()) / len(truth), seconds

    name = folder.name
    mv_acc, mv_s = ours(majority_vote)
    ds_acc, ds_s = ours(dawid_skene)
    ck_mv_acc, ck_mv_s = theirs(crowd_kit_mv)
    ck_ds_acc, ck_ds_s = theirs(lambda: crowd_kit_ds(n_iter=100))
    ours_mv = _row(name, "majority vote", mv_acc, mv_s) | {"speedup": ck_mv_s / mv_s}
    ours_ds = _row(name, "Dawid-Skene", ds_acc, ds_s) | {"speedup": ck_ds_s / ds_s}
    ours_ds["target"] = "ok" if ds_acc >= ck_ds_acc and ck_ds_s / ds_s >= MIN_SPEEDUP else "MISSED"
    return [
        ours_mv,
        ours_ds,
        _row(name, "crowd-kit MajorityVote", ck_mv_acc, ck_mv_s),
        _row(name, "crowd-kit DawidSkene", ck_ds_acc, ck_ds_s),
    ]


def run(quick: bool = False) -> list[dict[str, Any]]:
    data = Path(os.environ.get("CROWD_DATA", DEFAULT_DATA))
    folders = sorted(
        p.parent for p in data.glob("*/answers.csv") if (p.parent / "truth.csv").exists()
    )
    if not folders:
        raise FileNotFoundError(f"no crowd label sets (answers.csv, truth.csv) under {data}")
    repeats = 2 if quick else 5
    rows: list[dict[str, Any]] = []
    for folder in folders:
        rows += _classification(folder, repeats)
    rows += consensus_overlap.rows(quick)
    rows += consensus_shapes.rows(quick)
    rows += consensus_polygons.rows(quick)
    rows += consensus_keypoints.rows(quick)
    return rows
