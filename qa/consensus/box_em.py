"""A model of each worker, learnt from the answers of a whole batch, for box consensus. Pure.

The candidates are the clusters of :mod:`qa.consensus.boxes` (boxes of different workers on
one image matched by IoU). Every worker who answered an image saw all of it, so for each
candidate and each of the image's voters we know whether the voter marked it. A candidate is a
real object or a spurious one (hidden), and each worker ``j`` has

- a **recall** ``r_j``: the chance they mark a real object;
- a rate of **false marks** ``l_j``: boxes a picture they draw where nothing is;
- a **placement noise** ``s_j``: the root mean square of their edges' distance from the merged
  box, as a share of its side.

Real objects come at ``mu`` a picture, and each voter marks one independently with their
recall. A spurious candidate is one voter's false mark (voter ``j`` makes ``l_j`` a picture),
which another voter's box joins by chance with a small fixed probability ``g`` (two stray
boxes meeting at IoU 0.5 are rare). So a candidate marked by the voters ``S`` of voters ``V``
is real with odds::

    mu * prod_{j in S} r_j * prod_{k in V - S} (1 - r_k)
    ---------------------------------------------------------
    sum_{j in S} l_j * g ** (|S| - 1) * (1 - g) ** (|V| - |S|)

This is what tells one careful worker's box (few false marks) from a spammer's, and what
keeps an object two reliable workers marked where three who often miss things did not.
:func:`existence_em` estimates ``r``, ``l`` and ``mu`` by EM and gives each candidate
the posterior probability that it is real. A worker's rates have a weak prior centred on the
crowd's mean (worth ``PRIOR_STRENGTH`` answers), so a worker with few answers sits near the
crowd's average and one with many speaks for themself. A worker's rates on gold add to that
prior (worth the gold's strength) rather than replace it: five gold pictures without a stray
box do not make a worker who never strays. :func:`placement_noise` then estimates ``s`` from
the candidates' members, each weighted by how likely its candidate is real, shrunk toward the
crowd's mean the same way, after :func:`placement_shift` has taken out each
worker's systematic **shift** of each edge (the mean signed error, as a share of the side,
shrunk toward no shift by the same prior strength): a worker who draws every box 5% too wide
is corrected, not only down-weighted.

Labels follow Dawid and Skene: each worker ``j`` has a **confusion matrix** ``pi_j[k, l]``,
the chance they label an object of class ``k`` as ``l``, and :func:`label_em` learns the
matrices and each candidate's class by a second EM over the candidates' members, each
candidate weighted by its probability of being real. A worker's matrix is shrunk toward the
crowd's (worth ``PRIOR_STRENGTH`` answers in each class), so that a worker who has seen a
class twice is not taken to always confuse it, and a worker who systematically calls bicycles
cars has their "car" read as evidence for a bicycle.

The E steps alone (:func:`existence_posterior`, :func:`label_posterior`) apply a model learnt
elsewhere (over a whole project): each candidate's result then depends on its own members
only.

Everything is a pass of ``np.bincount`` over flat (candidate, voter) pairs: an iteration costs
a few milliseconds for 10,000 images.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from qa.consensus.objects import weighted_median

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
BoolArray = npt.NDArray[np.bool_]

# Pseudo-answers of the crowd's mean rate in each worker's prior: enough to hold a worker seen
# on a handful of images near the average, little beside a few hundred answers.
PRIOR_STRENGTH = 4.0
# The crowd's mean rates in turn have a prior worth ``CROWD_PRIOR_STRENGTH`` answers: a crowd
# marks most of what is there and adds a box now and then. It decides only on a batch too
# small to say (a few images); a real batch outweighs it at once.
CROWD_RECALL, CROWD_FALSE_MARKS, CROWD_PRIOR_STRENGTH = 0.8, 0.1, 10.0
# ``g``, fixed rather than learnt: learnt, it trades against recall (an object that a worker
# who seldom misses did not mark may be a stray box that another joined), and EM settles
# where real objects marked by two of three count as strays. Stray boxes are scattered, so
# two seldom meet at IoU 0.5; the benchmark's profiles do not move with it between 0.005
# and 0.02.
JOIN = 0.01
MAX_ITERATIONS = 100
# Posteriors that move less than this in an iteration have settled (one is kept at 0.5).
TOLERANCE = 1e-4
# Rates stay off 0 and 1, where one answer would otherwise veto or prove a candidate alone.
RATE_FLOOR = 1e-3
# A member's squared edge error counts at most this much (as a share of the side, squared):
# a stray box that still matched tells that its worker is imprecise, not how imprecise.
NOISE_CAP = 0.25
NOISE_FLOOR = 1e-3
# A voter whose marks carry a score (a model's boxes) is read by the score too: scores are cut
# into ``SCORE_BINS`` equal bins (as ``qa.calibration`` cuts them), and a mark in bin ``b``
# counts the odds of a real object by ``f(b | real) / f(b | spurious)``, the two histograms
# of the voter's marks learnt with the rates. Each histogram has a flat prior worth
# ``SCORE_PRIOR`` marks a bin: a voter seen on few scored marks is read by marks alone.
SCORE_BINS = 10
SCORE_PRIOR = 2.0


@dataclass(frozen=True)
class Existence:
    """What :func:`existence_em` learnt: per candidate, per worker, and for the crowd."""

    posterior: FloatArray  # per candidate: probability it is real
    recall: FloatArray  # per worker
    false_marks: FloatArray  # per worker: spurious boxes a picture
    objects: float  # real objects a picture that someone marked
    iterations: int
    mean_recall: float = CROWD_RECALL  # the crowd's means, for a worker not seen
    mean_false_marks: float = CROWD_FALSE_MARKS
    # (n_workers, SCORE_BINS): the log odds a scored mark in each bin adds; zeros for a
    # worker whose marks carry no score.
    score_odds: FloatArray | None = None


def score_bins(scores: FloatArray) -> IntArray:
    """Each score's bin (a score of exactly 1 in the last); -1 where there is none (NaN)."""
    known = np.isfinite(scores)
    out = np.full(len(scores), -1, dtype=np.intp)
    out[known] = np.minimum((np.clip(scores[known], 0.0, 1.0) * SCORE_BINS).astype(np.intp),
                            SCORE_BINS - 1)  # fmt: skip
    return out


def score_odds(real: FloatArray, spurious: FloatArray) -> FloatArray:
    """Per bin, the log odds a mark there adds: ``log f(b | real) - log f(b | spurious)``
    from (weighted) counts of real and spurious marks in each bin (rows: voters), each with
    the flat prior. A voter without scored marks gets zeros."""
    real = real + SCORE_PRIOR
    spurious = spurious + SCORE_PRIOR
    out: FloatArray = np.log(real / real.sum(axis=-1, keepdims=True)) - np.log(
        spurious / spurious.sum(axis=-1, keepdims=True)
    )
    return out


def existence_em(
    pair_candidate: IntArray,
    pair_worker: IntArray,
    marked: BoolArray,
    *,
    worker_images: IntArray,
    start: FloatArray,
    strength: float = PRIOR_STRENGTH,
    max_iterations: int = MAX_ITERATIONS,
    tolerance: float = TOLERANCE,
    prior: Prior | None = None,
    mark_bin: IntArray | None = None,
) -> Existence:
    """Posterior that each candidate is real, and each worker's recall and false marks.

    One entry per (candidate, voter of its image): ``pair_candidate``, ``pair_worker`` (ids
    from 0) and whether that voter ``marked`` the candidate. ``worker_images[j]`` is how many
    images worker ``j`` answered (with candidates or not), and ``start`` a first guess of each
    candidate's probability (e.g. its share of the votes). ``prior`` adds to some workers'
    priors rates measured elsewhere (gold), worth their strength beside the crowd's mean.
    ``mark_bin`` gives each marked pair (in the pairs' order) its box's score bin, -1 where
    the box has no score: a voter's scored marks count by their bin too (``SCORE_BINS``).
    """
    votes = _Votes.build(pair_candidate, pair_worker, marked, worker_images, len(start), mark_bin)
    q = np.clip(np.asarray(start, dtype=np.float64), 0.0, 1.0)
    n_workers = len(worker_images)
    prior = prior if prior is not None else Prior.none(n_workers)
    model = _Rates.first(n_workers)
    iterations = 0
    while iterations < max_iterations:
        iterations += 1
        model = _Rates.fit(q, model, votes, strength, prior)
        updated = model.posterior(votes)
        change = float(np.abs(updated - q).max()) if len(q) else 0.0
        q = updated
        if change < tolerance:
            break
    return Existence(
        q,
        model.recall,
        model.false_marks,
        model.objects,
        iterations,
        model.mean_recall,
        model.mean_false_marks,
        model.score_odds,
    )


def existence_posterior(
    pair_candidate: IntArray,
    pair_worker: IntArray,
    marked: BoolArray,
    *,
    n_candidates: int,
    recall: FloatArray,
    false_marks: FloatArray,
    objects: float,
    mark_bin: IntArray | None = None,
    score_odds: FloatArray | None = None,
) -> FloatArray:
    """The E step alone: each candidate's probability of being real under rates already learnt
    (``recall[j]`` and ``false_marks[j]`` of worker id ``j``, ``objects`` a picture, and
    ``score_odds[j]`` what a scored mark in each bin adds, with the marks' ``mark_bin``). It
    depends on nothing but the candidate's own pairs, so a batch's posteriors are those of its
    images taken one by one."""
    votes = _Votes.build(
        pair_candidate,
        pair_worker,
        marked,
        np.zeros(len(recall), dtype=np.intp),
        n_candidates,
        mark_bin,
    )
    rates = _Rates(
        np.clip(np.asarray(recall, dtype=np.float64), RATE_FLOOR, 1.0 - RATE_FLOOR),
        np.maximum(np.asarray(false_marks, dtype=np.float64), RATE_FLOOR),
        max(float(objects), RATE_FLOOR),
        score_odds=score_odds,
    )
    return rates.posterior(votes)


@dataclass(frozen=True)
class Prior:
    """Per worker: rates measured on gold and what they are worth (answers), added to the
    crowd's mean at the default strength; NaN for a worker without gold."""

    recall: FloatArray
    false_marks: FloatArray
    strength: FloatArray
    # (n_workers, SCORE_BINS): the gold's scored marks that were real and spurious, per bin.
    real_scores: FloatArray | None = None
    spurious_scores: FloatArray | None = None

    @classmethod
    def none(cls, n_workers: int) -> Prior:
        nan = np.full(n_workers, np.nan)
        return cls(nan, nan.copy(), nan.copy())

    @classmethod
    def of(cls, workers: Sequence[Hashable], gold: Mapping[Hashable, GoldRates] | None) -> Prior:
        """The prior of ``workers`` (in the EM's worker order): their ``gold`` rates where
        given, beside the crowd's mean; the crowd's mean alone for the rest."""
        out = cls.none(len(workers))
        index = {worker: j for j, worker in enumerate(workers)}
        real = np.zeros((len(workers), SCORE_BINS))
        spurious = np.zeros((len(workers), SCORE_BINS))
        for worker, rates in (gold or {}).items():
            j = index.get(worker)
            if j is not None:
                out.recall[j], out.false_marks[j], out.strength[j] = rates[:3]
                if rates.scores is not None:
                    real[j], spurious[j] = rates.scores
        if not real.any() and not spurious.any():
            return out
        return replace(out, real_scores=real, spurious_scores=spurious)


class GoldRates(NamedTuple):
    """A worker's rates measured on gold images (objects found over objects there, extra
    objects an answer), worth ``strength`` answers in the EM's prior on that worker beside
    the crowd's mean. One kind for every shape: gold scoring counts objects alike."""

    recall: float
    false_marks: float
    strength: float
    # A voter whose objects carry scores (a model): its gold objects that were real and those
    # that were not, counted per score bin (``SCORE_BINS``); None for a person.
    scores: tuple[tuple[float, ...], tuple[float, ...]] | None = None


def gold_score_counts(
    scores: Sequence[float], real: Sequence[bool]
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``GoldRates.scores`` from each scored gold object's score and whether it was real."""
    bins = score_bins(np.asarray(scores, dtype=np.float64))
    hit = np.asarray(real, dtype=bool)
    return (
        tuple(np.bincount(bins[hit], minlength=SCORE_BINS).astype(float).tolist()),
        tuple(np.bincount(bins[~hit], minlength=SCORE_BINS).astype(float).tolist()),
    )


@dataclass(frozen=True)
class _Votes:
    """The (candidate, voter) pairs, and what EM needs of them again and again."""

    candidate: IntArray
    worker: IntArray
    n_marks: FloatArray  # per candidate
    n_voters: FloatArray  # per candidate
    worker_images: FloatArray
    n_answers: float
    mark_candidate: IntArray  # the pairs where the voter marked the candidate
    mark_worker: IntArray
    # The marks with a score: their index among the marks, and the score's bin.
    scored: IntArray
    scored_bin: IntArray

    @classmethod
    def build(
        cls,
        candidate: IntArray,
        worker: IntArray,
        marked: BoolArray,
        worker_images: IntArray,
        n_candidates: int,
        mark_bin: IntArray | None = None,
    ) -> _Votes:
        scored = np.zeros(0, dtype=np.intp) if mark_bin is None else np.flatnonzero(mark_bin >= 0)
        return cls(
            candidate=candidate,
            worker=worker,
            n_marks=np.bincount(candidate[marked], minlength=n_candidates).astype(np.float64),
            n_voters=np.bincount(candidate, minlength=n_candidates).astype(np.float64),
            worker_images=worker_images.astype(np.float64),
            n_answers=max(float(worker_images.sum()), 1.0),
            mark_candidate=candidate[marked],
            mark_worker=worker[marked],
            scored=scored,
            scored_bin=scored if mark_bin is None else mark_bin[scored],
        )


@dataclass(frozen=True)
class _Rates:
    recall: FloatArray
    false_marks: FloatArray
    objects: float
    mean_recall: float = CROWD_RECALL
    mean_false_marks: float = CROWD_FALSE_MARKS
    score_odds: FloatArray | None = None  # (n_workers, SCORE_BINS), None: no scored marks

    @classmethod
    def first(cls, n_workers: int) -> _Rates:
        return cls(
            np.full(n_workers, CROWD_RECALL),
            np.full(n_workers, CROWD_FALSE_MARKS),
            1.0,
        )

    @classmethod
    def fit(
        cls, q: FloatArray, last: _Rates, votes: _Votes, strength: float, prior: Prior
    ) -> _Rates:
        """The M step: each rate from the candidates weighted by how likely they are real."""
        n_workers = len(votes.worker_images)
        crowd = CROWD_PRIOR_STRENGTH
        real = q[votes.candidate]
        hit = np.bincount(votes.mark_worker, q[votes.mark_candidate], minlength=n_workers)
        seen = np.bincount(votes.worker, real, minlength=n_workers)
        mean_recall = (hit.sum() + crowd * CROWD_RECALL) / (seen.sum() + crowd)
        # A worker's gold is evidence on top of the crowd's prior, not in its place: a rate
        # measured on a few gold images (no stray box in five) is a count, not a certainty.
        gold = ~np.isnan(prior.strength)
        gold_weight = np.where(gold, prior.strength, 0.0)
        weight = gold_weight + strength
        centre = (gold_weight * np.nan_to_num(prior.recall) + strength * mean_recall) / weight
        recall = (hit + weight * centre) / (seen + weight)
        # Each spurious candidate is one of its markers' false mark: which one, in proportion
        # to how many false marks each makes.
        spurious = 1.0 - q
        own = last.false_marks[votes.mark_worker]
        share = own / np.bincount(votes.mark_candidate, own, minlength=len(q))[votes.mark_candidate]
        made = np.bincount(
            votes.mark_worker, spurious[votes.mark_candidate] * share, minlength=n_workers
        )
        mean_false = (made.sum() + crowd * CROWD_FALSE_MARKS) / (votes.n_answers + crowd)
        centre = (gold_weight * np.nan_to_num(prior.false_marks) + strength * mean_false) / weight
        false_marks = (made + weight * centre) / (votes.worker_images + weight)
        # Real objects a picture: each candidate counted once per voter of its picture, over
        # all answers, so that pictures without candidates count too.
        objects = float((q * votes.n_voters).sum()) / votes.n_answers
        return cls(
            np.clip(recall, RATE_FLOOR, 1.0 - RATE_FLOOR),
            np.maximum(false_marks, RATE_FLOOR),
            max(objects, RATE_FLOOR),
            float(mean_recall),
            float(mean_false),
            _fit_score_odds(q, votes, prior, n_workers),
        )

    def posterior(self, votes: _Votes) -> FloatArray:
        """The E step: each candidate's probability of being real given who marked it and who
        did not (the odds in the module's docstring)."""
        n = len(votes.n_marks)
        miss = np.log1p(-self.recall)
        # Every voter missed it, but those who marked it: few pairs (marks) on top of all.
        real = np.bincount(votes.candidate, miss[votes.worker], minlength=n) + np.bincount(
            votes.mark_candidate,
            (np.log(self.recall) - miss)[votes.mark_worker],
            minlength=n,
        )
        made = np.bincount(votes.mark_candidate, self.false_marks[votes.mark_worker], minlength=n)
        spurious = (
            np.log(np.maximum(made, RATE_FLOOR))
            + (votes.n_marks - 1.0) * np.log(JOIN)
            + (votes.n_voters - votes.n_marks) * np.log1p(-JOIN)
        )
        logit = np.log(self.objects) + real - spurious
        if self.score_odds is not None and len(votes.scored):
            marks = votes.scored
            logit += np.bincount(
                votes.mark_candidate[marks],
                self.score_odds[votes.mark_worker[marks], votes.scored_bin],
                minlength=n,
            )
        out: FloatArray = 0.5 * (1.0 + np.tanh(0.5 * logit))  # the logistic, without overflow
        return out


def _fit_score_odds(
    q: FloatArray, votes: _Votes, prior: Prior, n_workers: int
) -> FloatArray | None:
    """Each voter's score histograms of real and spurious marks, from the marks weighted by
    how likely their candidate is real, with the gold's counts: the odds each bin adds."""
    if not len(votes.scored) and prior.real_scores is None:
        return None
    real = np.zeros((n_workers, SCORE_BINS))
    spurious = np.zeros((n_workers, SCORE_BINS))
    if len(votes.scored):
        marks = votes.scored
        at = votes.mark_worker[marks] * SCORE_BINS + votes.scored_bin
        p = q[votes.mark_candidate[marks]]
        size = n_workers * SCORE_BINS
        real += np.bincount(at, p, minlength=size).reshape(n_workers, SCORE_BINS)
        spurious += np.bincount(at, 1.0 - p, minlength=size).reshape(n_workers, SCORE_BINS)
    if prior.real_scores is not None and prior.spurious_scores is not None:
        real += prior.real_scores
        spurious += prior.spurious_scores
    return score_odds(real, spurious)  # zeros for a voter without scored marks


def placement_noise(
    error: FloatArray,
    member_worker: IntArray,
    member_weight: FloatArray,
    *,
    n_workers: int,
    strength: float = PRIOR_STRENGTH,
) -> FloatArray:
    """Each worker's placement noise (root mean square edge error, as a share of the side).

    ``error`` is each member's mean squared edge error against its merged box, ``member_weight``
    how much that member counts (the probability its candidate is real).
    """
    error = np.minimum(error, NOISE_CAP)
    total = np.bincount(member_worker, member_weight * error, minlength=n_workers)
    seen = np.bincount(member_worker, member_weight, minlength=n_workers)
    mean = (total.sum() + strength * NOISE_CAP * 0.01) / (seen.sum() + strength)
    variance = (total + strength * mean) / (seen + strength)
    out: FloatArray = np.sqrt(np.maximum(variance, NOISE_FLOOR**2))
    return out


# Labels: Dawid and Skene's confusion model over the candidates' members.

# Pseudo-answers, in each true class, of the crowd's confusion in each worker's prior (as
# ``PRIOR_STRENGTH`` for the rates), and the crowd's own prior: a crowd mostly gives the right
# label, worth ``CROWD_PRIOR_STRENGTH`` answers a class.
CROWD_LABEL_ACCURACY = 0.9
# The label EM converges slowly (the rows of rarely seen classes drift for dozens of
# iterations) but decides early: on the benchmark's crowd of 10,000 images, 10 iterations
# leave about 30 of 100,000 candidates with another class than 30 would, at a third of the
# time.
LABEL_ITERATIONS = 10
LABEL_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Labels:
    """What :func:`label_em` learnt: ``posterior[c, k]`` that candidate ``c`` is of class
    ``k``; ``confusion[j, k, l]`` the chance worker ``j`` labels an object of class ``k`` as
    ``l``; ``crowd`` the crowd's confusion (for a worker not seen); ``prior[k]`` the share of
    real objects of class ``k``."""

    posterior: FloatArray
    confusion: FloatArray
    crowd: FloatArray
    prior: FloatArray
    iterations: int


def label_em(
    member_candidate: IntArray,
    member_worker: IntArray,
    member_label: IntArray,
    *,
    real: FloatArray,
    n_workers: int,
    n_labels: int,
    strength: float = PRIOR_STRENGTH,
    max_iterations: int = LABEL_ITERATIONS,
    tolerance: float = LABEL_TOLERANCE,
) -> Labels:
    """Each candidate's class and each worker's confusion matrix, by EM (Dawid and Skene).

    One entry per member (a worker's box in a candidate): its candidate, its worker (ids from
    0) and the label it gave (ids from 0). ``real[c]`` is the probability that candidate ``c``
    is a real object: only real objects teach what a worker does with a class. A worker's
    confusion has a prior centred on the crowd's, worth ``strength`` answers in each true
    class, so that a worker who has seen a class a few times is not taken to always confuse
    it; the crowd's own is centred on a crowd that mostly gives the right label.
    """
    n_candidates = len(real)
    given = member_worker * n_labels + member_label
    # The start: each candidate's share of its members' labels.
    votes = np.bincount(
        member_candidate * n_labels + member_label, minlength=n_candidates * n_labels
    ).reshape(n_candidates, n_labels)
    posterior: FloatArray = votes / np.maximum(votes.sum(axis=1, keepdims=True), 1.0)
    iterations = 0
    while True:
        iterations += 1
        # counts[j * K + l, k]: how much of the real candidates of class k worker j labelled l.
        counts = _sum_rows(
            given, n_workers * n_labels, (posterior * real[:, None])[member_candidate]
        )
        confusion, crowd, prior = _fit_confusion(
            counts.reshape(n_workers, n_labels, n_labels).transpose(0, 2, 1), strength
        )
        updated = _class_posterior(member_candidate, given, n_candidates, confusion, prior)
        change = float(np.abs(updated - posterior).max()) if n_candidates else 0.0
        posterior = updated
        if change < tolerance or iterations >= max_iterations:
            return Labels(posterior, confusion, crowd, prior, iterations)


def _sum_rows(group: IntArray, n_groups: int, values: FloatArray) -> FloatArray:
    """``values`` (M, K) summed by ``group`` (M ids below ``n_groups``): (n_groups, K)."""
    out = np.empty((n_groups, values.shape[1]))
    for column in range(values.shape[1]):
        out[:, column] = np.bincount(group, values[:, column], minlength=n_groups)
    return out


def _fit_confusion(
    counts: FloatArray, strength: float
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """The M step: the workers' and the crowd's confusion, and the classes' shares, from
    ``counts[j, k, l]``, how much of class ``k`` worker ``j`` labelled ``l``."""
    n_labels = counts.shape[1]
    crowd_prior = np.full((n_labels, n_labels), (1.0 - CROWD_LABEL_ACCURACY) / max(n_labels - 1, 1))
    np.fill_diagonal(crowd_prior, CROWD_LABEL_ACCURACY if n_labels > 1 else 1.0)
    crowd = counts.sum(axis=0) + CROWD_PRIOR_STRENGTH * crowd_prior
    crowd /= crowd.sum(axis=1, keepdims=True)
    confusion = (counts + strength * crowd[None]) / (counts.sum(axis=2, keepdims=True) + strength)
    prior = counts.sum(axis=(0, 2)) + 1.0
    return confusion, crowd, prior / prior.sum()


def label_posterior(
    member_candidate: IntArray,
    member_worker: IntArray,
    member_label: IntArray,
    *,
    n_candidates: int,
    confusion: FloatArray,
    prior: FloatArray,
) -> FloatArray:
    """The E step alone: each candidate's probability of each class given its members' labels
    and their workers' ``confusion`` (n_workers, K, K). It depends on the candidate's own
    members only."""
    n_labels = confusion.shape[1]
    given = member_worker * n_labels + member_label
    return _class_posterior(member_candidate, given, n_candidates, confusion, prior)


def _class_posterior(
    member_candidate: IntArray,
    given: IntArray,
    n_candidates: int,
    confusion: FloatArray,
    prior: FloatArray,
) -> FloatArray:
    """Each candidate's class posterior; ``given[m]`` is member m's worker x K + label."""
    n_labels = len(prior)
    # Row (worker j, given label l) holds log P(l | class k) for each k.
    log_confusion = np.log(np.maximum(confusion, RATE_FLOOR)).transpose(0, 2, 1)
    log = _sum_rows(member_candidate, n_candidates, log_confusion.reshape(-1, n_labels)[given])
    log += np.log(prior)[None, :]
    log -= log.max(axis=1, keepdims=True) if len(log) else 0.0
    out: FloatArray = np.exp(log)
    out /= out.sum(axis=1, keepdims=True)
    return out


# Placement: each worker's systematic shift of each edge, and their noise around it.

# A member's edge error counts at most this much (a share of the side) toward its worker's
# shift: a box that strayed half a side is a slip, not a habit.
SHIFT_CAP = 0.5


def placement_shift(
    error: FloatArray,
    member_worker: IntArray,
    member_weight: FloatArray,
    *,
    n_workers: int,
    strength: float = PRIOR_STRENGTH,
) -> FloatArray:
    """Each worker's mean signed error of each edge (``error`` (M, 4), x0, y0, x1, y1 as a
    share of the side), the members weighted by ``member_weight``, shrunk toward no shift by a
    prior worth ``strength`` boxes: (n_workers, 4)."""
    error = np.clip(error, -SHIFT_CAP, SHIFT_CAP)
    seen = np.bincount(member_worker, member_weight, minlength=n_workers)
    out = np.empty((n_workers, 4))
    for edge in range(4):
        total = np.bincount(member_worker, member_weight * error[:, edge], minlength=n_workers)
        out[:, edge] = total / (seen + strength)
    # The errors are measured against the merged boxes, which carry the crowd's mean habit:
    # a shift is only known relative to other workers. It is anchored on the typical worker
    # (the median by boxes drawn), taken to draw where the object is; a crowd whose every
    # worker drew wide would look unbiased, as it must without gold.
    if seen.sum() > 0:
        out -= weighted_median(out.T, seen[None, :])
    return out
