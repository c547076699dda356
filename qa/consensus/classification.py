"""Consensus on class labels: majority vote, weighted vote and Dawid-Skene.

Every function takes all answers of a project (or of a batch of tasks) at once as index
arrays, an ``Answers``, and returns a ``Result`` with one decision per task. ``encode`` turns
``(task, worker, label)`` rows with any hashable keys into an ``Answers`` and back.

Dawid-Skene (Dawid and Skene, 1979) learns a confusion matrix per worker, the probability of
each answer given each true class, together with the class priors, by expectation
maximisation. Here it is regularised with Dirichlet pseudo-counts so that a worker seen on a
handful of tasks starts from "probably right, unsure by how much" instead of from certainty.
:func:`worker_confusions` reads each worker's matrix and accuracy off a result, for reports.

Which prior, and why not another model. A full confusion is ``K (K - 1)`` numbers a worker;
a row rests on that worker's answers to tasks of one class. Where the median worker has
dozens of answers a class (every published set we measure on) the rows can be learnt, and a
weak prior centred on a typical worker (``prior="typical"``) biases them least. Where most
workers answer a handful of tasks, the rows are noise, and the one number that their answers
do pin down is their accuracy: ``prior="worker"`` centres each worker's confusion on their own
accuracy and the crowd's pattern of errors, with a prior worth ``WORKER_PRIOR_PSEUDO_COUNTS``
answers, so a sparse worker is a one-coin worker and a busy one keeps their own matrix. The
default (``"auto"``) takes it when the median worker has fewer than
``SPARSE_ANSWERS_PER_CLASS`` answers a class. On generated crowds (tests) it gains about two
points where most workers have about five answers and loses nothing with ten classes or with
workers who shift every class; given everywhere, it costs a few tasks on two published sets,
whose busy workers' rows it pulls toward one-coin. A one-coin model outright (crowd-kit's
OneCoinDawidSkene, MMSR) cannot learn a worker who maps one class to another, which Dawid-Skene
turns into evidence; GLAD adds a difficulty per task that five to twenty answers barely
identify, at many times the cost. None of them beats our Dawid-Skene on any published set
where it finishes (the consensus benchmark's rows).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, replace
from operator import itemgetter
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy import sparse

IntArray = npt.NDArray[np.intp]
FloatArray = npt.NDArray[np.float64]
Method = Literal["auto", "majority_vote", "weighted_vote", "dawid_skene"]

# A worker score at or above this counts as this (log-odds weight log(99 (K-1))), so one
# near-perfect worker cannot outvote any number of good ones.
MAX_RELIABILITY = 0.99
# Dawid-Skene credits every worker with this many imaginary answers, on tasks whose classes
# follow the class priors, right with probability PRIOR_ACCURACY and otherwise spread evenly
# over the other classes: the Dirichlet prior of the worker's confusion matrix.
CONFUSION_PSEUDO_COUNTS = 1.0
# A typical crowd worker: the median worker is right 70-91% of the time on published sets.
PRIOR_ACCURACY = 0.85
# Pseudo-tasks per class added to the class priors (Laplace smoothing).
PRIOR_PSEUDO_COUNTS = 1.0
# ``aggregate(method="auto")`` runs Dawid-Skene from this many answers on. On random subsets
# of published crowd label sets it is as accurate as the majority vote from about here, and
# more accurate on most sets; below, most workers' confusion matrices rest on a few answers.
MIN_ANSWERS_FOR_DS = 200
# ``prior="worker"``: the crowd's pooled confusion gets this many pseudo-answers of the
# typical worker a class, and each worker's accuracy this many of the crowd's accuracy.
CROWD_PSEUDO_COUNTS = 10.0
ACCURACY_PSEUDO_COUNTS = 4.0
# ``prior="worker"`` is worth this many answers in each worker's confusion by default: a
# worker with a handful of answers is then judged by their one accuracy, one with hundreds
# by their full confusion.
WORKER_PRIOR_PSEUDO_COUNTS = 20.0
# ``prior="auto"`` takes the worker-centred prior when the median worker has fewer answers
# than this a class: a confusion's row then rests on a few answers at most.
SPARSE_ANSWERS_PER_CLASS = 5
Prior = Literal["auto", "typical", "worker"]


@dataclass(frozen=True)
class Answers:
    """Answers as index arrays: answer ``i`` is worker ``worker[i]`` giving class ``label[i]``
    to task ``task[i]``. Tasks, workers and classes are ``0 .. n - 1``; a task may have no
    answer, a worker may answer a task more than once (each answer counts)."""

    task: IntArray
    worker: IntArray
    label: IntArray
    n_tasks: int
    n_workers: int
    n_labels: int

    def __post_init__(self) -> None:
        size = None
        for name, bound in (
            ("task", self.n_tasks),
            ("worker", self.n_workers),
            ("label", self.n_labels),
        ):
            values = np.asarray(getattr(self, name))
            if values.ndim != 1 or (values.size and values.dtype.kind not in "iu"):
                raise ValueError(f"{name} must be a one-dimensional array of integers")
            values = values.astype(np.intp, copy=False)
            if size is not None and values.size != size:
                raise ValueError("task, worker and label must have the same length")
            size = values.size
            if values.size and (values.min() < 0 or values.max() >= bound):
                raise ValueError(f"{name} indices must lie in 0 .. n_{name}s - 1")
            object.__setattr__(self, name, values)
        if self.n_labels < 1:
            raise ValueError("there must be at least one label")

    @property
    def n_answers(self) -> int:
        return int(self.task.size)


@dataclass(frozen=True)
class Result:
    """One decision per task.

    ``label`` is the chosen class index, -1 for a task without answers; ``confidence`` the
    posterior probability of that class (0.0 without answers); ``votes`` the number of answers;
    ``posterior`` the probability of every class (for a task without answers: the class
    priors, uniform for the votes). Dawid-Skene also returns ``worker_confusion[w, true, given]``,
    the probability that worker ``w`` answers ``given`` when the class is ``true``, ``priors``,
    the class frequencies, and the number of EM ``iterations`` run.
    """

    label: IntArray
    confidence: FloatArray
    votes: IntArray
    posterior: FloatArray
    method: str
    worker_confusion: FloatArray | None = None
    priors: FloatArray | None = None
    iterations: int = 0


def encode(
    rows: Iterable[tuple[Hashable, Hashable, Hashable]],
    labels: Sequence[Hashable] | None = None,
) -> tuple[Answers, list[Hashable], list[Hashable], list[Hashable]]:
    """Index ``(task, worker, label)`` rows; return the answers and the task, worker and label
    keys, so that ``task_keys[answers.task[i]]`` is the task of row ``i`` (and so on).

    Tasks and workers are numbered in order of first appearance. Labels follow ``labels`` when
    given (classes nobody chose still count, and an answer outside them is a ``ValueError``),
    else the sorted distinct answers (order of first appearance if they do not sort).
    """
    rows = list(rows)
    if rows and set(map(len, rows)) != {3}:
        raise ValueError("each row must be (task, worker, label)")
    # Columns by itemgetter, not zip(*rows): zip allocates an iterator per row, which wakes
    # the garbage collector again and again on a large answer set.
    tasks, workers, given = (list(map(itemgetter(i), rows)) for i in range(3))
    task_keys = list(dict.fromkeys(tasks))
    worker_keys = list(dict.fromkeys(workers))
    if labels is None:
        seen = list(dict.fromkeys(given))
        try:
            label_keys = sorted(seen)
        except TypeError:
            label_keys = seen
    else:
        label_keys = list(labels)
        if len(set(label_keys)) != len(label_keys):
            raise ValueError("labels must be distinct")
    label_index = {key: i for i, key in enumerate(label_keys)}
    try:
        label = _indices(given, label_index)
    except KeyError as exc:
        raise ValueError(f"answer label {exc.args[0]!r} is not one of the labels") from None
    answers = Answers(
        task=_indices(tasks, {key: i for i, key in enumerate(task_keys)}),
        worker=_indices(workers, {key: i for i, key in enumerate(worker_keys)}),
        label=label,
        n_tasks=len(task_keys),
        n_workers=len(worker_keys),
        n_labels=len(label_keys),
    )
    return answers, task_keys, worker_keys, label_keys


def _indices(keys: list[Hashable], index: dict[Hashable, int]) -> IntArray:
    return np.fromiter(map(index.__getitem__, keys), dtype=np.intp, count=len(keys))


def majority_vote(answers: Answers, *, tiebreak_weights: npt.ArrayLike | None = None) -> Result:
    """The most frequent answer per task; ``confidence`` is its share of the votes.

    A tie goes to the tied class whose voters have the larger summed ``tiebreak_weights`` (one
    per worker, e.g. their scores) when given, and otherwise, or if still tied, to the class
    with the lowest index.
    """
    counts = _tally(answers)
    votes = counts.sum(axis=1)
    answered = votes > 0
    posterior = np.divide(
        counts,
        votes[:, None],
        out=np.full(counts.shape, 1.0 / answers.n_labels),
        where=answered[:, None],
    )
    if tiebreak_weights is None:
        label = np.argmax(counts, axis=1)
    else:
        weights = _worker_vector(answers, tiebreak_weights, "tiebreak_weights")
        weighted = _tally(answers, weights[answers.worker])
        tied = counts == counts.max(axis=1, keepdims=True)
        label = np.argmax(np.where(tied, weighted, -np.inf), axis=1)
    return _result(posterior, label, votes, "majority_vote")


def weighted_vote(answers: Answers, weights: npt.ArrayLike) -> Result:
    """Each worker's vote counts by the log-odds of their reliability; ``confidence`` is the
    posterior of the chosen class.

    ``weights[w]`` is the probability that worker ``w`` answers correctly (a gold score, say).
    If every worker is right with that probability and otherwise picks one of the other
    classes at random, the posterior of class ``c`` is proportional to
    ``exp(sum of log(p (K - 1) / (1 - p)) over the workers who answered c)``, which is what this
    computes, so it is the most accurate rule under that model. Scores are clipped to
    ``[1 / K, MAX_RELIABILITY]``: a worker no better than chance gets weight 0 rather than
    a vote against their answer, and no worker is taken as infallible. Exact ties in the
    weighted score go to the class with more votes, then to the lowest index.
    """
    reliability = _worker_vector(answers, weights, "weights")
    k = answers.n_labels
    if k > 1:
        p = np.clip(reliability, 1.0 / k, MAX_RELIABILITY)
        log_odds = np.log(p * (k - 1)) - np.log1p(-p)
    else:
        log_odds = np.zeros(answers.n_workers)
    score = _tally(answers, log_odds[answers.worker])
    counts = _tally(answers)
    votes = counts.sum(axis=1)
    tied = score == score.max(axis=1, keepdims=True)
    label = np.argmax(np.where(tied, counts, -1.0), axis=1)
    return _result(_softmax(score), label, votes, "weighted_vote")


def dawid_skene(
    answers: Answers,
    *,
    max_iter: int = 100,
    tol: float = 1e-6,
    smoothing: float | None = None,
    init: Literal["majority", "weighted"] | None = None,
    weights: npt.ArrayLike | None = None,
    prior: Prior = "auto",
) -> Result:
    """Dawid-Skene by expectation maximisation, in log space, over all answers at once.

    Starts from the majority vote's shares (``init="majority"``) or from the weighted vote's
    posterior (``init="weighted"``, needs ``weights``; the default when they are given), then
    alternates: the M-step estimates each worker's confusion matrix and the class priors from
    the current posteriors; the E-step recomputes the posteriors. It stops when no posterior
    moves by ``tol`` or more, or after ``max_iter`` rounds.

    Each worker's confusion matrix has a Dirichlet prior worth ``smoothing`` imaginary
    answers, on tasks whose classes follow the current class priors (row ``c`` gets
    ``smoothing * priors[c]`` pseudo-counts), right with probability ``PRIOR_ACCURACY`` and
    otherwise spread evenly over the other classes. A worker seen on a few tasks thus stays
    short of certain, while one with many answers is judged by them alone; weighting by the
    priors keeps a rare class's row, which rests on few tasks even for a busy worker, from
    being dominated by the prior. The class priors get ``PRIOR_PSEUDO_COUNTS`` pseudo-tasks
    per class. So no probability is ever 0 and no logarithm diverges.

    On four published crowd label sets (product matching, tweet sentiment, dog breeds,
    textual entailment) the accuracy does not change by more than a few tasks for
    ``smoothing`` from 0.3 to 1.2 and drops slowly beyond: nearly every worker there has
    dozens of answers, so a stronger prior mostly biases the rows of good workers.

    ``prior="worker"`` centres each worker's prior on their own accuracy instead (learnt from
    all their answers, one number, shrunk toward the crowd's with ``ACCURACY_PSEUDO_COUNTS``)
    and the crowd's pattern of errors, worth ``WORKER_PRIOR_PSEUDO_COUNTS`` answers unless
    ``smoothing`` says otherwise: a worker with a handful of answers then keeps a confusion
    near their own one-coin accuracy (``K (K - 1)`` numbers do not rest on five answers), and
    the full matrix emerges as answers accumulate. ``prior="auto"`` (the default) takes it
    when the median worker has fewer than ``SPARSE_ANSWERS_PER_CLASS`` answers a class
    (:func:`sparse_workers`), and the typical worker's prior otherwise (see the module).
    """
    if max_iter < 1:
        raise ValueError("max_iter must be at least 1")
    if prior == "auto":
        prior = "worker" if sparse_workers(answers) else "typical"
    if prior not in ("typical", "worker"):
        raise ValueError(f"unknown prior {prior!r}")
    if smoothing is None:
        smoothing = CONFUSION_PSEUDO_COUNTS if prior == "typical" else WORKER_PRIOR_PSEUDO_COUNTS
    if smoothing <= 0:
        raise ValueError("smoothing must be positive")
    if init is None:
        init = "majority" if weights is None else "weighted"
    if init == "weighted":
        if weights is None:
            raise ValueError('init="weighted" needs weights')
        posterior = weighted_vote(answers, weights).posterior
    elif init == "majority":
        posterior = majority_vote(answers).posterior
    else:
        raise ValueError(f"unknown init {init!r}")

    k, n_workers, n_tasks = answers.n_labels, answers.n_workers, answers.n_tasks
    # One column per (worker, given label): the M-step sums posteriors over each column's
    # answers, the E-step sums log-probabilities over each task's answers; both are sparse
    # products. Each only needs classes 1 .. K-1: a column's counts add up to its number of
    # answers, and the posteriors only depend on log-likelihoods relative to class 0. For two
    # classes that halves the work.
    column = answers.worker * k + answers.label
    by_task = sparse.csr_matrix(
        (np.ones(answers.n_answers), (answers.task, column)), shape=(n_tasks, n_workers * k)
    )
    by_column = by_task.T
    column_answers = np.bincount(column, minlength=n_workers * k).astype(np.float64)
    votes = np.bincount(answers.task, minlength=n_tasks)
    answered = (votes > 0).astype(np.float64)
    # expected[given, true]: how a typical worker answers, the shape of the Dirichlet prior.
    expected = np.full((k, k), (1.0 - PRIOR_ACCURACY) / (k - 1) if k > 1 else 0.0)
    np.fill_diagonal(expected, PRIOR_ACCURACY if k > 1 else 1.0)

    iterations = 0
    counts = np.empty((n_workers * k, k))
    log_confusion = np.zeros((n_workers, k, k))
    log_priors = np.zeros(k)
    while iterations < max_iter:
        iterations += 1
        class_counts = answered @ posterior + PRIOR_PSEUDO_COUNTS
        priors = class_counts / class_counts.sum()
        log_priors = np.log(priors)
        # M-step. Rounding can leave class 0's count a hair below 0; the prior keeps it positive.
        counts[:, 1:] = by_column @ posterior[:, 1:]
        counts[:, 0] = np.maximum(column_answers - counts[:, 1:].sum(axis=1), 0.0)
        shape = expected if prior == "typical" else _own_accuracy_shape(counts, expected, priors)
        smoothed = counts.reshape(n_workers, k, k) + smoothing * shape * priors
        log_confusion = np.log(smoothed) - np.log(smoothed.sum(axis=1, keepdims=True))
        # E-step, class-major: row c holds every task's log-likelihood of class c.
        log_given = log_confusion.reshape(n_workers * k, k)
        log_joint = np.empty((k, n_tasks))
        log_joint[0] = log_priors[0]
        log_joint[1:] = (by_task @ (log_given[:, 1:] - log_given[:, :1])).T
        log_joint[1:] += log_priors[1:, None]
        updated = _normalise_by_class(log_joint).T
        change = float(np.abs(updated - posterior).max()) if updated.size else 0.0
        posterior = updated
        if change < tol:
            break

    result = _result(posterior, np.argmax(posterior, axis=1), votes, "dawid_skene")
    return replace(
        result,
        worker_confusion=np.ascontiguousarray(np.exp(log_confusion).transpose(0, 2, 1)),
        priors=np.exp(log_priors),
        iterations=iterations,
    )


def sparse_workers(answers: Answers) -> bool:
    """Whether the median worker (of those who answered) has fewer than
    ``SPARSE_ANSWERS_PER_CLASS`` answers a class: too few to learn a full confusion from."""
    per_worker = np.bincount(answers.worker, minlength=answers.n_workers)
    answered = per_worker[per_worker > 0]
    if not answered.size:
        return False
    return bool(np.median(answered) < SPARSE_ANSWERS_PER_CLASS * answers.n_labels)


@dataclass(frozen=True)
class WorkerConfusion:
    """One worker as Dawid-Skene sees them, for reports.

    ``confusion[true, given]`` is the chance they answer ``given`` when the class is ``true``;
    ``accuracy`` the chance they are right on a task whose class follows the class priors
    (the diagonal weighted by the priors); ``answers`` how many answers it rests on.
    """

    confusion: FloatArray
    accuracy: float
    answers: int


def worker_confusions(answers: Answers, result: Result | None = None) -> list[WorkerConfusion]:
    """Each worker's confusion matrix and accuracy, in worker index order (``encode``'s
    ``worker_keys`` name them), from a Dawid-Skene ``result`` on these answers, or from
    :func:`dawid_skene` with its defaults when none is given."""
    if result is None:
        result = dawid_skene(answers)
    if result.worker_confusion is None or result.priors is None:
        raise ValueError(f"a {result.method} result has no worker confusions: use dawid_skene")
    confusion, priors = result.worker_confusion, result.priors
    if confusion.shape != (answers.n_workers, answers.n_labels, answers.n_labels):
        raise ValueError("the result is not of these answers")
    accuracy = np.einsum("wcc,c->w", confusion, priors)
    count = np.bincount(answers.worker, minlength=answers.n_workers)
    return [
        WorkerConfusion(confusion[w], float(accuracy[w]), int(count[w]))
        for w in range(answers.n_workers)
    ]


def _own_accuracy_shape(counts: FloatArray, expected: FloatArray, priors: FloatArray) -> FloatArray:
    """Per worker, the centre of their confusion's prior for ``prior="worker"``, ``[worker,
    given, true]``: right with their own accuracy (from all their answers, shrunk toward the
    crowd's), wrong in the crowd's pattern of errors."""
    k = expected.shape[0]
    if k == 1:
        return expected
    n_workers = counts.shape[0] // k
    per_worker = counts.reshape(n_workers, k, k)
    pooled = per_worker.sum(axis=0) + CROWD_PSEUDO_COUNTS * expected * priors
    crowd_accuracy = np.trace(pooled) / pooled.sum()
    right = np.trace(per_worker, axis1=1, axis2=2)
    accuracy = (right + ACCURACY_PSEUDO_COUNTS * crowd_accuracy) / (
        per_worker.sum(axis=(1, 2)) + ACCURACY_PSEUDO_COUNTS
    )
    errors = pooled.copy()
    np.fill_diagonal(errors, 0.0)
    errors /= errors.sum(axis=0, keepdims=True)
    shape: FloatArray = accuracy[:, None, None] * np.eye(k) + (1 - accuracy)[:, None, None] * errors
    return shape


def aggregate(
    answers: Answers,
    method: Method = "auto",
    weights: npt.ArrayLike | None = None,
    min_answers_for_ds: int = MIN_ANSWERS_FOR_DS,
) -> Result:
    """Consensus by ``method``; ``"auto"`` picks by the size of the answer set.

    ``"auto"`` runs Dawid-Skene (started from the weighted vote when ``weights`` are given) once
    there are at least ``min_answers_for_ds`` answers and, on average, at least two answers
    per answered task: a confusion matrix can only be learnt from workers who overlap. Below
    that it takes the weighted vote when ``weights`` are given and the majority vote otherwise.
    """
    if method == "auto":
        answered_tasks = int(np.count_nonzero(np.bincount(answers.task)))
        if answers.n_answers >= min_answers_for_ds and answers.n_answers >= 2 * answered_tasks:
            method = "dawid_skene"
        else:
            method = "majority_vote" if weights is None else "weighted_vote"
    if method == "dawid_skene":
        return dawid_skene(answers, weights=weights)
    if method == "weighted_vote":
        if weights is None:
            raise ValueError("the weighted vote needs weights")
        return weighted_vote(answers, weights)
    if method == "majority_vote":
        return majority_vote(answers, tiebreak_weights=weights)
    raise ValueError(f"unknown method {method!r}")


def _tally(answers: Answers, weight: FloatArray | None = None) -> FloatArray:
    """Per task and class, the number (or the summed ``weight``) of answers."""
    k = answers.n_labels
    flat = np.bincount(
        answers.task * k + answers.label, weights=weight, minlength=answers.n_tasks * k
    )
    return flat.astype(np.float64, copy=False).reshape(answers.n_tasks, k)


def _worker_vector(answers: Answers, values: npt.ArrayLike, name: str) -> FloatArray:
    vector = np.asarray(values, dtype=np.float64)
    if vector.shape != (answers.n_workers,):
        raise ValueError(f"{name} must hold one value per worker ({answers.n_workers})")
    if not np.isfinite(vector).all():
        raise ValueError(f"{name} must be finite")
    return vector


def _softmax(log_values: FloatArray) -> FloatArray:
    """Normalise each row of ``exp(log_values)``."""
    return _normalise_by_class(np.array(log_values.T, order="C")).T


def _normalise_by_class(log_values: FloatArray) -> FloatArray:
    """Exponentiate and normalise each column of a class-major array, in place: numpy reduces
    a few long rows many times faster than many short ones."""
    log_values -= log_values.max(axis=0)
    np.exp(log_values, out=log_values)
    log_values /= log_values.sum(axis=0)
    return log_values


def _result(posterior: FloatArray, label: IntArray, votes: npt.NDArray[Any], method: str) -> Result:
    answered = votes > 0
    label = np.where(answered, label, -1).astype(np.intp)
    chosen = np.take_along_axis(posterior, np.maximum(label, 0)[:, None], axis=1)[:, 0]
    return Result(
        label=label,
        confidence=np.where(answered, chosen, 0.0),
        votes=votes.astype(np.intp),
        posterior=np.ascontiguousarray(posterior),
        method=method,
    )
