"""The model as a member of the crowd: dynamic overlap with a model's vote against fixed
overlap 5, on simulated box crowds. Pure, no Django.

Each profile is a crowd of box drawers (``bench.consensus_shapes``' markers: careful,
sloppy, of varied skill, spammers, workers who miss much) and a simulated detector
(``qa.sim.model``) of about 85% object recall, with calibrated or over-confident scores and,
in some profiles, systematic misses (small objects it never finds, classes it finds less).

Every image has one random order of the crowd's workers and each worker's answer, drawn once:

- **fixed overlap 5**: the first five answers, merged by the worker model learnt by EM over
  all images (``merge_boxes_batch(method="em")``: what a consensus run does);
- **with the model, rates**: the model's answer (its boxes scoring at
  least ``MIN_SCORE``, the product's default cut) is one more voter; a task starts at one
  human answer and gets one more while ``box_certainty`` (``qa.merge.tasks_consensus``) is
  below the threshold, up to ``MAX_OVERLAP``. The rates are those the product decides with
  (``qa.worker_model.decision_box_model``, through the same ``box_model_for``): before the
  project's first fit, every voter's gold rates (``WORKER_GOLD`` gold images a worker,
  ``GOLD`` for the model, scored by the product's gold scoring) shrunk toward the box EM's
  starting crowd, and the objects a gold image holds; images then come in waves of ``WAVE``,
  and after each the product's fit (``box_model`` over every answer so far, the model a
  member, gold as the prior: ``qa.worker_model._box_fit``) is run again when the answers
  grew as the periodic refit asks. The labels are then the EM merge over all answers, the
  model's included (the consensus run with the model as a member);
- **with the model, rates and scores** (the product's rule since box consensus reads a
  model's box scores): the same, the model's boxes keeping their scores; the model's gold
  counts its real and spurious boxes per score bin (``GoldRates.scores``, as
  ``qa.model_scores`` stores them), and the fits learn what each bin says with the rates;
  the rows "rates" are the rule before, the scores dropped;
- **with the model, one weight** (the rule before rates): the same, but a task's confidence is
  ``existence_confidence``, each voter counting by one weight (the model's from its gold,
  ``vote_weight``; a worker's a gold-based score's), every candidate box a yes/no vote;
- **without the model**, the same dynamic overlap from two answers, for reference.

Human weights are a gold-based score's (``Marker.weight``: accuracy plus an estimate's error).
Accuracy is F1 at IoU 0.5 with the label required, against the truth. Target of each model
row: F1 at least fixed overlap 5's with at most ``MAX_HUMAN_SHARE`` of its human answers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from bench.budget import most_f1
from bench.consensus_shapes import (
    CAREFUL_MARKER,
    CLASSES,
    IMAGE_SIZES,
    SLOPPY_MARKER,
    Answers,
    BoxImage,
    Item,
    Marker,
    _box_similarity,
    _marker_answer,
    _score_boxes,
    _true_boxes,
    _varied,
    as_parsed_json,
    matched_pairs,
)
from qa.consensus.box_em import GoldRates, gold_score_counts
from qa.consensus.boxes import BoxModel, box_certainty, box_model, box_model_for, merge_boxes_batch
from qa.consensus.objects import existence_confidence
from qa.geometry import box_iou, match_annotations
from qa.reliability import Evidence, vote_weight
from qa.scoring import gold_score
from qa.sim.model import SimModel

SEED = 20_261_203
FIXED = 5
MIN_OVERLAP = 1
MAX_OVERLAP = 10
MIN_SCORE = 0.5  # qa.model_scores.DEFAULT_MIN_SCORE
GOLD = 40
# Gold images each worker answers (gold is mixed in at a higher rate for new workers), scored
# by the product's gold scoring: the prior of their rates, as ``qa.worker_model.gold_priors``.
WORKER_GOLD = 5
# qa.worker_model: gold answers count twice in the box model's prior; a project is refitted
# when its counted answers grew by a quarter and by at least 50.
GOLD_PRIOR_WEIGHT = 2.0
REFIT_GROWTH, REFIT_MIN_ANSWERS = 0.25, 50
# Images decided between two looks at whether a refit is due (the periodic sweep's cadence).
WAVE = 25
MAX_HUMAN_SHARE = 0.35
THRESHOLDS = (0.9, 0.95)
# The rates' rule at more thresholds, to find the fewest answers reaching fixed overlap 5's F1
# (0: every task closes at its one human answer, the least a task may get).
SCAN = (0.0, 0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.9, 0.95, 0.97)
MODEL = "__model__"
# Per-class recall: signs (small) are found least. The simulated models' settings give an
# answer recall of about 0.85 as the product measures it on gold (matched with the right
# label at IoU 0.5, after the score cut), reported in each row.
CLASS_RECALL = {"car": 0.95, "person": 0.9, "bicycle": 0.88, "dog": 0.88, "sign": 0.76}


@dataclass(frozen=True)
class ModelProfile:
    name: str
    description: str
    pool: Callable[[np.random.Generator], list[Marker]]
    model: SimModel


def _good(rng: np.random.Generator) -> list[Marker]:
    return [Marker(recall=0.9, false_marks=0.1, jitter=0.04, confusion=0.03)] * 20


PROFILES = (
    ModelProfile(
        "careful, calibrated model",
        "20 careful workers; model recall 0.85 (per class 0.72-0.93), calibrated scores",
        lambda rng: [CAREFUL_MARKER] * 20,
        SimModel(recall=CLASS_RECALL, calibration="calibrated", labels=CLASSES),
    ),
    ModelProfile(
        "careful+sloppy, over-confident model",
        "10 careful and 10 sloppy workers; model recall 0.85, over-confident scores",
        lambda rng: [CAREFUL_MARKER] * 10 + [SLOPPY_MARKER] * 10,
        SimModel(recall=0.87, calibration="over-confident", labels=CLASSES),
    ),
    ModelProfile(
        "varied, model misses small objects",
        "60 workers of varied skill; model recall 0.92 on what it sees but never finds "
        "objects under 6% of the image's scale (0.85 overall), over-confident",
        lambda rng: _varied(rng, 60),
        SimModel(recall=0.93, calibration="over-confident", small_side=0.045, labels=CLASSES),
    ),
    ModelProfile(
        "good workers and spammers, calibrated model",
        "20 good workers and 3 spammers boxing at random; model recall 0.85, calibrated",
        lambda rng: _good(rng) + [Marker(spammer=True)] * 3,
        SimModel(recall=0.87, calibration="calibrated", labels=CLASSES),
    ),
    ModelProfile(
        "low-recall workers, calibrated model",
        "20 workers who miss 40% of the objects; model recall 0.85, calibrated",
        lambda rng: [Marker(recall=0.6, false_marks=0.1, jitter=0.04, confusion=0.03)] * 20,
        SimModel(recall=0.87, calibration="calibrated", labels=CLASSES),
    ),
)


@dataclass
class World:
    images: list[BoxImage]
    answers: list[Answers]  # per image, MAX_OVERLAP [worker, weight, items] in order
    model: list[list[Item]]  # per image, the model's answer (cut at MIN_SCORE)
    model_weight: float
    model_recall: float  # on the gold images, as the product measures it
    model_gold_score: float
    # Each voter's rates on gold (``qa.worker_model.gold_priors``), the model's too, and the
    # objects a gold image holds (``qa.model_scores.gold_objects``).
    gold: dict[Hashable, GoldRates]
    gold_objects: float
    # The model's answer with each box's score, and the gold with the model's scored boxes
    # counted per score bin, real or not: the world as the rule reading scores sees it.
    scored: list[list[Item]]
    scored_gold: dict[Hashable, GoldRates]

    def with_scores(self) -> World:
        return replace(self, model=self.scored, gold=self.scored_gold)


def _cut(items: Sequence[Item], *, scores: bool = False) -> list[Item]:
    return [
        {k: v for k, v in item.items() if scores or k != "score"}
        for item in items
        if float(item["score"]) >= MIN_SCORE
    ]


def _world(profile: ModelProfile, n_images: int, seed: int) -> World:
    rng = np.random.default_rng(seed)
    pool = profile.pool(rng)
    weights = [m.weight(rng) for m in pool]
    model = SimModel(**{**profile.model.__dict__, "seed": seed})
    # The model's gold: GOLD images of the same kind, scored by the product's gold scoring.
    gold_scores, found, total, located, extra = [], 0, 0, 0, 0
    box_scores: list[float] = []
    box_real: list[bool] = []
    for k in range(GOLD):
        width, height = IMAGE_SIZES[int(rng.integers(len(IMAGE_SIZES)))]
        truth = _true_boxes(rng, width, height)
        answer = _cut(model.predict(("gold", k), truth, width, height), scores=True)
        spurious = set(match_annotations(truth, answer, kind="bbox", threshold=0.5).extras)
        box_scores += [float(item["score"]) for item in answer]
        box_real += [i not in spurious for i in range(len(answer))]
        result = gold_score("bbox", truth, _cut(answer))
        gold_scores.append(result.score)
        found += result.matched
        located += result.matched + result.wrong_label
        extra += result.extra
        total += result.matched + result.missed + result.wrong_label
    model_weight = vote_weight(Evidence(GOLD, float(sum(gold_scores))))
    gold: dict[Hashable, GoldRates] = {
        MODEL: GoldRates(located / total, extra / GOLD, GOLD_PRIOR_WEIGHT * GOLD)
    }
    # The workers' gold, from a stream of its own so that the crowd's answers stay those of
    # the rows without it.
    gold_rng = np.random.default_rng(seed + 1)
    for i, marker in enumerate(pool):
        seen = marked = strays = 0
        for _ in range(WORKER_GOLD):
            width, height = IMAGE_SIZES[int(gold_rng.integers(len(IMAGE_SIZES)))]
            truth = _true_boxes(gold_rng, width, height)
            result = gold_score(
                "bbox", truth, _marker_answer(gold_rng, marker, truth, width, height)
            )
            seen += result.matched + result.missed + result.wrong_label
            marked += result.matched + result.wrong_label
            strays += result.extra
        if seen:
            rates = GoldRates(marked / seen, strays / WORKER_GOLD, GOLD_PRIOR_WEIGHT * WORKER_GOLD)
            gold[_worker_id(pool, i)] = rates
    scored_gold = {
        **gold,
        MODEL: gold[MODEL]._replace(scores=gold_score_counts(box_scores, box_real)),
    }
    images, answers, predicted, scored = [], [], [], []
    for j in range(n_images):
        width, height = IMAGE_SIZES[int(rng.integers(len(IMAGE_SIZES)))]
        truth = _true_boxes(rng, width, height)
        images.append(BoxImage(width, height, truth))
        order = rng.permutation(len(pool))[:MAX_OVERLAP].tolist()
        answers.append(
            [
                [
                    _worker_id(pool, i),
                    weights[i],
                    _marker_answer(rng, pool[i], truth, width, height),
                ]
                for i in order
            ]
        )
        scored.append(_cut(model.predict(j, truth, width, height), scores=True))
        predicted.append(_cut(scored[-1]))
    return World(
        images,
        as_parsed_json(answers),
        predicted,
        model_weight,
        found / total if total else 0.0,
        float(np.mean(gold_scores)),
        gold,
        total / GOLD,
        scored,
        scored_gold,
    )


def _worker_id(pool: Sequence[Marker], i: int) -> str:
    return f"{'s' if pool[i].spammer else 'w'}{i}"


def _confidence(crowd: Answers, merged: list[Item]) -> float:
    total = sum(float(w) for _, w, _ in crowd)
    agreed = sum(float(w) * gold_score("bbox", merged, items).f1 for _, w, items in crowd)
    return agreed / total if total else 0.0


def _final(world: World, given: Sequence[int], model: bool) -> tuple[float, float]:
    """(F1, human answers a task) of the consensus run over the answers given."""
    final = [
        world.answers[j][: given[j]]
        + ([[MODEL, world.model_weight, world.model[j]]] if model else [])
        for j in range(len(world.images))
    ]
    merged = merge_boxes_batch(final, method="em")
    f1, _ = _score_boxes(world.images, [[o.to_item() for o in objs] for objs in merged])
    return f1, float(np.mean(given))


def _fit(world: World, given: Sequence[int], images: Sequence[int]) -> BoxModel:
    """The product's fit (``qa.worker_model._box_fit``) over the answers given so far to
    ``images``: every answer weighs 1, the model is a member after the people, and gold
    rates are the priors."""
    crowds = [
        [[w, 1.0, items] for w, _, items in world.answers[j][: given[j]]]
        + [[MODEL, 1.0, world.model[j]]]
        for j in images
    ]
    return box_model(crowds, iou_threshold=0.5, prior=world.gold)


def _with_rates(world: World, *, threshold: float) -> tuple[float, float]:
    """(F1, human answers a task) of dynamic overlap as the product decides a box task the
    model votes on (``qa.merge.tasks_consensus``): a task starts at one answer and is
    complete when ``box_certainty`` under the decision's model (``qa.worker_model.
    decision_box_model``: the last fit, newcomers on their gold shrunk toward the crowd; before
    the first fit, gold alone and the gold images' objects a picture) reaches the threshold.
    Images come in waves of ``WAVE``; after each, the project is refitted over every answer
    so far when they grew as the periodic refit asks (``REFIT_GROWTH``, ``REFIT_MIN_ANSWERS``)."""
    n = len(world.images)
    given = [MIN_OVERLAP] * n
    fitted: BoxModel | None = None
    last = 0
    for first in range(0, n, WAVE):
        rates = box_model_for(fitted, world.gold, objects=world.gold_objects)
        open_ = list(range(first, min(first + WAVE, n)))
        while open_:
            crowds = [
                [*world.answers[j][: given[j]], [MODEL, world.model_weight, world.model[j]]]
                for j in open_
            ]
            certainty = box_certainty(crowds, model=rates, iou_threshold=0.5)
            still = []
            for j, confidence in zip(open_, certainty, strict=True):
                if given[j] >= MAX_OVERLAP or confidence >= threshold:
                    continue
                given[j] += 1
                still.append(j)
            open_ = still
        done = range(min(first + WAVE, n))
        answers = sum(given[j] for j in done)
        if answers >= last + max(REFIT_MIN_ANSWERS, REFIT_GROWTH * last):
            fitted, last = _fit(world, given, done), answers
    return _final(world, given, model=True)


def _dynamic(world: World, *, threshold: float, model: bool, start: int) -> tuple[float, float]:
    """(F1, human answers a task) of dynamic overlap from ``start`` answers, the task's
    confidence from one weight a voter (the rule before each voter's rates were used)."""
    n = len(world.images)
    given = [start] * n
    open_ = list(range(n))
    while open_:
        crowds = [
            world.answers[j][: given[j]]
            + ([[MODEL, world.model_weight, world.model[j]]] if model else [])
            for j in open_
        ]
        merged = merge_boxes_batch(crowds, quorum=0.5)
        candidates = merge_boxes_batch(crowds, quorum=0.0) if model else merged
        still = []
        for j, crowd, objects, found in zip(open_, crowds, merged, candidates, strict=True):
            if model:
                # qa.merge._existence: the rule of a task the model votes on.
                weights: dict[Hashable, float] = {w: float(weight) for w, weight, _ in crowd}
                items = {w: answer for w, _, answer in crowd}
                clusters = [
                    [(w, items[w][i]["label"]) for w, i in zip(o.workers, o.items, strict=True)]
                    for o in found
                ]
                confidence = existence_confidence(clusters, weights, n_labels=len(CLASSES))
            else:
                confidence = _confidence(crowd, [o.to_item() for o in objects])
            if given[j] >= MAX_OVERLAP or confidence >= threshold:
                continue
            given[j] += 1
            still.append(j)
        open_ = still
    return _final(world, given, model)


def _row(
    profile: ModelProfile,
    method: str,
    f1: float,
    humans: float,
    seconds: float,
    target: str | None,
    world: World,
) -> dict[str, Any]:
    return {
        "kind": "bbox",
        "dataset": f"{profile.name}; humans/task {humans:.2f} ({humans / FIXED:.0%} of fixed)",
        "method": method,
        "accuracy_or_f1": f1,
        "mean_iou": None,
        "seconds": seconds,
        "speedup": None,
        "target": target,
        "human_answers": humans,
        "share_of_fixed": humans / FIXED,
        "model_recall": world.model_recall,
        "model_weight": world.model_weight,
    }


def rows(quick: bool, profiles: Sequence[ModelProfile] = PROFILES) -> list[dict[str, Any]]:
    n_images = 300 if quick else 2000
    out: list[dict[str, Any]] = []
    for number, profile in enumerate(profiles):
        world = _world(profile, n_images, SEED + number)
        started = time.perf_counter()
        fixed = merge_boxes_batch([a[:FIXED] for a in world.answers], method="em")
        fixed_f1, _ = _score_boxes(world.images, [[o.to_item() for o in objs] for objs in fixed])
        out.append(
            _row(profile, "fixed overlap 5", fixed_f1, FIXED, time.perf_counter() - started,
                 None, world)
        )  # fmt: skip
        scanned: dict[float, tuple[float, float]] = {}
        scored: dict[float, tuple[float, float]] = {}
        for threshold in THRESHOLDS:
            started = time.perf_counter()
            f1, humans = scored[threshold] = _with_rates(world.with_scores(), threshold=threshold)
            ok = f1 >= fixed_f1 and humans <= MAX_HUMAN_SHARE * FIXED
            out.append(
                _row(profile, f"model + 1..{MAX_OVERLAP} at {threshold}, rates and scores", f1,
                     humans, time.perf_counter() - started, "ok" if ok else "MISSED", world)
            )  # fmt: skip
            for rule, method in (
                ("rates", "model + 1..{} at {}, rates"),
                ("weights", "model + 1..{} at {}, one weight"),
            ):
                started = time.perf_counter()
                if rule == "rates":
                    f1, humans = scanned[threshold] = _with_rates(world, threshold=threshold)
                else:
                    f1, humans = _dynamic(world, threshold=threshold, model=True, start=MIN_OVERLAP)
                ok = f1 >= fixed_f1 and humans <= MAX_HUMAN_SHARE * FIXED
                out.append(
                    _row(profile, method.format(MAX_OVERLAP, threshold), f1, humans,
                         time.perf_counter() - started, "ok" if ok else "MISSED", world)
                )  # fmt: skip
        out.append(_cheapest(profile, world, fixed_f1, scanned))
        out.append(_cheapest(profile, world.with_scores(), fixed_f1, scored, "rates and scores"))
        out.append(_knowing_the_truth(profile, world.with_scores(), fixed_f1))
        started = time.perf_counter()
        f1, humans = _dynamic(world, threshold=THRESHOLDS[-1], model=False, start=2)
        out.append(
            _row(profile, f"no model, 2..{MAX_OVERLAP} at {THRESHOLDS[-1]}", f1, humans,
                 time.perf_counter() - started, None, world)
        )  # fmt: skip
    return out


def _unseen(world: World) -> float:
    """The share of true objects that neither the model nor the first human answer marks
    (IoU 0.5, any label): what a task closed at one answer cannot have, whatever the rule."""
    missed = total = 0
    for image, answers, model in zip(world.images, world.answers, world.model, strict=True):
        boxes = [item["bbox"] for item in [*answers[0][2], *model]]
        total += len(image.truth)
        if not boxes:
            missed += len(image.truth)
            continue
        for true in image.truth:
            missed += float(box_iou([true["bbox"]], boxes).max()) < 0.5
    return missed / total if total else 0.0


def _cheapest(
    profile: ModelProfile,
    world: World,
    fixed_f1: float,
    scanned: dict[float, tuple[float, float]],
    rule: str = "rates",
) -> dict[str, Any]:
    """The rates' rule at every threshold of ``SCAN``: the fewest human answers whose F1
    reaches fixed overlap 5's (the target's question asked of the whole curve)."""
    started = time.perf_counter()
    for threshold in SCAN:
        if threshold not in scanned:
            scanned[threshold] = _with_rates(world, threshold=threshold)
    curve = ", ".join(f"{t}: {f1:.4f}/{h:.2f}" for t, (f1, h) in sorted(scanned.items()))
    reaching = [(h, t, f1) for t, (f1, h) in scanned.items() if f1 >= fixed_f1]
    unseen = f"after one answer {_unseen(world):.2%} of objects unmarked by all"
    if not reaching:
        f1, humans = scanned[max(scanned)]
        method = f"model + {rule}, fewest answers reaching fixed 5: none up to {max(scanned)}"
    else:
        humans, threshold, f1 = min(reaching)
        method = f"model + {rule}, fewest answers reaching fixed 5: at {threshold}"
    return _row(
        profile, f"{method} ({unseen}; threshold: F1/answers {curve})", f1, humans,
        time.perf_counter() - started,
        "ok" if reaching and humans <= MAX_HUMAN_SHARE * FIXED else "MISSED", world,
    )  # fmt: skip


def _knowing_the_truth(profile: ModelProfile, world: World, fixed_f1: float) -> dict[str, Any]:
    """What this merge can give when each task's human answers are chosen knowing the
    truth: a choice no stopping rule can know to make, so the answers it needs are at least
    what the merge needs. The worker model is fitted once over all ``MAX_OVERLAP`` answers and
    the model's (the most any rule could know of the voters); each image is merged with it at
    1 to ``MAX_OVERLAP`` answers, and its matches and objects counted; ``bench.budget``
    chooses the counts. Reported: the F1 within ``MAX_HUMAN_SHARE`` of fixed overlap 5's
    answers, and the fewest answers whose F1 reaches fixed overlap 5's (the budget
    bisected)."""
    started = time.perf_counter()
    crowds = [[*world.answers[j], [MODEL, 1.0, world.model[j]]] for j in range(len(world.images))]
    fitted = box_model(crowds, iou_threshold=0.5, prior=world.gold)
    counts = np.arange(1, MAX_OVERLAP + 1)
    hits = np.zeros((len(world.images), MAX_OVERLAP))
    found = np.zeros_like(hits)
    for k in counts:
        merged = merge_boxes_batch(
            [[*world.answers[j][:k], [MODEL, world.model_weight, world.model[j]]]
             for j in range(len(world.images))],
            method="em", model=fitted,
        )  # fmt: skip
        for j, (image, objects) in enumerate(zip(world.images, merged, strict=True)):
            items = [o.to_item() for o in objects]
            found[j, k - 1] = len(items)
            if image.truth and items:
                similarity = _box_similarity(j, image.truth, items)
                hits[j, k - 1] = len(matched_pairs(image.truth, items, similarity, 0.5))
    true = sum(len(image.truth) for image in world.images)

    f1, humans, _ = most_f1(hits, found, true, MAX_HUMAN_SHARE * FIXED)
    if most_f1(hits, found, true, MAX_OVERLAP)[0] < fixed_f1:
        reach = f"not reached at {MAX_OVERLAP} answers"
    else:
        low, high = float(MIN_OVERLAP), float(MAX_OVERLAP)
        for _ in range(20):
            middle = (low + high) / 2
            if most_f1(hits, found, true, middle)[0] >= fixed_f1:
                high = middle
            else:
                low = middle
        needed = most_f1(hits, found, true, high)[1]
        reach = f"fixed 5's F1 reached at {needed:.2f} answers ({needed / FIXED:.0%})"
    return _row(
        profile,
        f"model + 1..{MAX_OVERLAP}, answers chosen knowing the truth, at most "
        f"{MAX_HUMAN_SHARE:.0%} of fixed 5's ({reach})",
        f1, humans, time.perf_counter() - started, None, world,
    )  # fmt: skip
