"""Consensus quality and speed against crowd-kit, on published crowd label sets.

Classification: our majority vote and Dawid-Skene (``qa.consensus.classification``, each with
its defaults) beside crowd-kit's methods as peers: ``MajorityVote``, ``Wawa``,
``ZeroBasedSkill``, ``DawidSkene(n_iter=100)``, ``OneCoinDawidSkene``, ``GLAD`` and ``MMSR``
(their defaults otherwise), on every folder of ``shared/data/crowd`` beside the repository
(``CROWD_DATA`` overrides), each holding ``answers.csv`` (task, worker, label) and
``truth.csv`` (task, label). One row per method and set; a peer that fails on a set gets a
row saying why (``target``), with no figures. Accuracy is measured on the tasks with an expert
label. Each crowd-kit method runs in a child process, stopped (and its row says so) past
``PEER_BUDGET`` seconds on a set (``PEER_BUDGET_QUICK`` with ``--quick``). Seconds are the best
of a few runs (one for crowd-kit's methods beyond majority vote and Dawid-Skene, some of which
take minutes): ours include turning the CSV rows into index arrays (``encode``); crowd-kit's
exclude building its DataFrame. ``speedup`` is crowd-kit's
time for the same method divided by ours. The target, on our Dawid-Skene rows: accuracy at
least crowd-kit's Dawid-Skene and at least 10 times faster.

Rows share the columns of the box, polygon and mask rows (``kind`` tells them apart): a column
that does not apply to a kind is None. Each part runs alone too: ``python -m bench
consensus:masks`` (``SECTIONS``), e.g. ``make bench BENCH_ARGS=consensus:masks``.
"""

from __future__ import annotations

import csv
import multiprocessing
import os
import time
import warnings
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from bench import (
    consensus_keypoints,
    consensus_masks,
    consensus_model,
    consensus_overlap,
    consensus_polygons,
    consensus_shapes,
)
from qa.consensus.classification import Result, dawid_skene, encode, majority_vote

NAME = "consensus"
DESCRIPTION = "consensus accuracy and wall time vs crowd-kit 1.4 on published crowd label sets"
MIN_SPEEDUP = 10.0
# Seconds a crowd-kit peer may take on one set (all its runs) before it is stopped and
# reported as skipped: GLAD takes minutes on the larger sets.
PEER_BUDGET, PEER_BUDGET_QUICK = 240.0, 120.0
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "crowd"
SECTIONS = (
    "classification", "overlap", "model", "boxes", "polygons", "masks", "keypoints",
)  # fmt: skip


def _crowd_kit() -> tuple[Any, Any]:
    try:
        import pandas as pd  # type: ignore[import-untyped]
        from crowdkit import aggregation
    except ImportError as exc:
        raise ImportError(
            f"the consensus benchmark compares with crowd-kit, which is missing ({exc}): "
            "run `make bench`, which installs the project's bench extra"
        ) from exc
    return pd, aggregation


# crowd-kit's methods beside ours: (name, constructor keyword arguments, runs to time).
CROWD_KIT_PEERS: tuple[tuple[str, dict[str, Any], int | None], ...] = (
    ("MajorityVote", {}, None),
    ("Wawa", {}, 1),
    ("ZeroBasedSkill", {}, 1),
    ("DawidSkene", {"n_iter": 100}, None),
    ("OneCoinDawidSkene", {}, 1),
    ("GLAD", {}, 1),
    ("MMSR", {}, 1),
)


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


def _row(
    dataset: str, method: str, accuracy: float | None, seconds: float | None
) -> dict[str, Any]:
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


def _classification(folder: Path, repeats: int, budget: float) -> list[dict[str, Any]]:
    pd, _ = _crowd_kit()
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

    def theirs(method: str, options: dict[str, Any], runs: int) -> tuple[float, float]:
        # In a child process, so that a peer that runs for ages can be stopped.
        with multiprocessing.get_context("fork").Pool(1) as pool:
            pending = pool.apply_async(_peer_labels, (method, options, frame, runs))
            try:
                seconds, chosen = pending.get(timeout=budget)
            except multiprocessing.TimeoutError:
                raise TimeoutError(f"over the budget of {budget:.0f} s") from None
        return sum(chosen.get(t) == label for t, label in truth.items()) / len(truth), seconds

    name = folder.name
    mv_acc, mv_s = ours(majority_vote)
    ds_acc, ds_s = ours(dawid_skene)
    peers: dict[str, tuple[float, float] | str] = {}
    for method, options, runs in CROWD_KIT_PEERS:
        try:
            peers[method] = theirs(method, options, runs or repeats)
        except Exception as exc:  # a peer that breaks on a set is reported, not fatal
            peers[method] = f"skipped: {type(exc).__name__}: {_first_line(exc)}"
    out = [_row(name, "majority vote", mv_acc, mv_s), _row(name, "Dawid-Skene", ds_acc, ds_s)]
    for ours_row, peer in ((out[0], "MajorityVote"), (out[1], "DawidSkene")):
        measured = peers[peer]
        if not isinstance(measured, str):
            ours_row["speedup"] = measured[1] / ours_row["seconds"]
    crowd_kit_ds = peers["DawidSkene"]
    out[1]["target"] = (
        "no crowd-kit DS to compare"
        if isinstance(crowd_kit_ds, str)
        else "ok"
        if ds_acc >= crowd_kit_ds[0] and crowd_kit_ds[1] / ds_s >= MIN_SPEEDUP
        else "MISSED"
    )
    for method, measured in peers.items():
        if isinstance(measured, str):
            out.append(_row(name, f"crowd-kit {method}", None, None) | {"target": measured})
        else:
            out.append(_row(name, f"crowd-kit {method}", *measured))
    return out


def _peer_labels(
    method: str, options: dict[str, Any], frame: Any, runs: int
) -> tuple[float, dict[Any, Any]]:
    """Best time of crowd-kit's ``method`` on ``frame``, and its label per task."""
    _, aggregation = _crowd_kit()
    make = partial(getattr(aggregation, method), **options)
    with warnings.catch_warnings():
        # Their convergence and pandas deprecation warnings, once per run, are noise here.
        warnings.simplefilter("ignore")
        seconds, labels = _best_time(runs, lambda: make().fit_predict(frame))
    return seconds, labels.to_dict()


def _first_line(exc: Exception) -> str:
    """The gist of an error: its first sentence, without the wrapper scikit-learn adds (Wawa
    and ZeroBasedSkill of crowd-kit 1.4 fail on scikit-learn 1.6 and later this way)."""
    text = str(exc).strip().splitlines()
    first = text[0].split(". ")[0] if text else ""
    return first.removeprefix("The following error was raised: ")[:120]


def run(quick: bool = False, sections: Sequence[str] = SECTIONS) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if "classification" in sections:
        data = Path(os.environ.get("CROWD_DATA", DEFAULT_DATA))
        folders = sorted(
            p.parent for p in data.glob("*/answers.csv") if (p.parent / "truth.csv").exists()
        )
        if not folders:
            raise FileNotFoundError(f"no crowd label sets (answers.csv, truth.csv) under {data}")
        repeats = 2 if quick else 5
        budget = PEER_BUDGET_QUICK if quick else PEER_BUDGET
        for folder in folders:
            rows += _classification(folder, repeats, budget)
    parts = (
        ("overlap", consensus_overlap.rows),
        ("model", consensus_model.rows),
        ("boxes", consensus_shapes.rows),
        ("polygons", consensus_polygons.rows),
        ("masks", consensus_masks.rows),
        ("keypoints", consensus_keypoints.rows),
    )
    for section, part in parts:
        if section in sections:
            rows += part(quick)
    return rows
