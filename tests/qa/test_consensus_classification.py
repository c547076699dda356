"""Consensus on class labels: votes, Dawid-Skene, the choice between them, real label sets."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from qa.consensus.classification import (
    Answers,
    Result,
    aggregate,
    dawid_skene,
    encode,
    majority_vote,
    sparse_workers,
    weighted_vote,
    worker_confusions,
)

CROWD_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "crowd"
# Accuracy of crowd-kit 1.4.2 DawidSkene(n_iter=100) on the truth items of each set.
CROWD_KIT_DAWID_SKENE = {"d_product": 0.9397, "d_possent": 0.9600, "dog": 0.8426, "rte": 0.9275}

Row = tuple[str, str, str]


def answers_of(rows: list[Row], labels: list[str] | None = None) -> Answers:
    return encode(rows, labels)[0]


def decided(result: Result, rows: list[Row], labels: list[str] | None = None) -> dict[str, str]:
    """Task key -> chosen label key."""
    _, task_keys, _, label_keys = encode(rows, labels)
    return {str(t): str(label_keys[i]) for t, i in zip(task_keys, result.label, strict=True)}


def crowd(
    n_tasks: int, truth: Callable[[int], str], workers: dict[str, Callable[[int, str], str]]
) -> list[Row]:
    """Every worker answers every task: ``workers[name](task, true_label)``."""
    return [
        (f"t{t}", name, answer(t, truth(t)))
        for t in range(n_tasks)
        for name, answer in workers.items()
    ]


def confusion(result: Result, worker: int) -> np.ndarray:
    assert result.worker_confusion is not None
    return result.worker_confusion[worker]


def alternating(t: int) -> str:
    return "no" if t % 2 == 0 else "yes"


def flip(label: str) -> str:
    return "yes" if label == "no" else "no"


def wrong_on(tasks: set[int]) -> Callable[[int, str], str]:
    return lambda t, true: flip(true) if t in tasks else true


# encode and Answers


def test_encode_decodes_back_to_the_rows_in_first_appearance_order() -> None:
    rows = [
        ("img-9", 7, "tree"),
        ("img-2", "ann", "car"),
        ("img-9", "ann", "car"),
        ("img-5", 7, "tree"),
    ]
    answers, task_keys, worker_keys, label_keys = encode(rows)
    assert task_keys == ["img-9", "img-2", "img-5"]
    assert worker_keys == [7, "ann"]
    assert label_keys == ["car", "tree"]  # sorted
    decoded = [
        (task_keys[t], worker_keys[w], label_keys[c])
        for t, w, c in zip(answers.task, answers.worker, answers.label, strict=True)
    ]
    assert decoded == rows
    assert (answers.n_tasks, answers.n_workers, answers.n_labels, answers.n_answers) == (3, 2, 2, 4)


def test_encode_keeps_the_given_label_order_and_labels_nobody_chose() -> None:
    answers, _, _, label_keys = encode([("a", "w", "tree")], labels=["tree", "car", "person"])
    assert label_keys == ["tree", "car", "person"]
    assert answers.n_labels == 3
    assert list(answers.label) == [0]


def test_encode_orders_unsortable_labels_by_first_appearance() -> None:
    _, _, _, label_keys = encode([("a", "w", "x"), ("a", "v", 3), ("b", "w", "x")])
    assert label_keys == ["x", 3]


@pytest.mark.parametrize(
    ("rows", "labels", "message"),
    [
        ([("a", "w", "bird")], ["car", "tree"], "not one of the labels"),
        ([("a", "w", "car")], ["car", "car"], "distinct"),
        ([("a", "w")], None, "task, worker, label"),
        ([], None, "at least one label"),
    ],
)
def test_encode_rejects_bad_input(rows: list, labels: list | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode(rows, labels)


@pytest.mark.parametrize(
    ("task", "worker", "label", "message"),
    [
        ([0, 1], [0], [0, 0], "same length"),
        ([0, 2], [0, 0], [0, 0], "task indices"),
        ([0, 1], [0, 0], [0, -1], "label indices"),
        ([0.0, 1.0], [0, 0], [0, 0], "integers"),
    ],
)
def test_answers_reject_inconsistent_arrays(
    task: list, worker: list, label: list, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Answers(
            np.array(task), np.array(worker), np.array(label), n_tasks=2, n_workers=1, n_labels=2
        )


# The votes


def test_unanimous_answers_are_chosen_with_full_confidence() -> None:
    rows = [(t, w, "cat") for t in ("t1", "t2") for w in ("w1", "w2", "w3")]
    answers = answers_of(rows, ["cat", "dog"])
    vote = majority_vote(answers)
    assert list(vote.label) == [0, 0]
    assert list(vote.confidence) == [1.0, 1.0]
    assert list(vote.votes) == [3, 3]
    ds = dawid_skene(answers)
    assert list(ds.label) == [0, 0]
    assert (ds.confidence > 0.9).all()


def test_split_vote_goes_to_the_majority_with_its_vote_share() -> None:
    rows = [("t", "w1", "cat"), ("t", "w2", "dog"), ("t", "w3", "dog")]
    result = majority_vote(answers_of(rows))
    assert decided(result, rows) == {"t": "dog"}
    assert result.confidence[0] == pytest.approx(2 / 3)
    assert result.posterior[0] == pytest.approx([1 / 3, 2 / 3])


def test_a_tie_goes_to_the_lowest_label_index_or_to_the_heavier_voters() -> None:
    rows = [("t", "w1", "dog"), ("t", "w2", "cat")]
    answers = answers_of(rows, ["cat", "dog"])
    assert list(majority_vote(answers).label) == [0]
    # w1 (worker 0) voted dog and weighs more.
    assert list(majority_vote(answers, tiebreak_weights=[0.9, 0.6]).label) == [1]
    assert list(majority_vote(answers, tiebreak_weights=[0.6, 0.6]).label) == [0]


def test_weighted_vote_follows_log_odds_of_reliability() -> None:
    rows = [("t", "expert", "dog"), ("t", "novice1", "cat"), ("t", "novice2", "cat")]
    answers = answers_of(rows, ["cat", "dog"])
    # log(0.95/0.05) = 2.94 outweighs 2 * log(0.6/0.4) = 0.81.
    result = weighted_vote(answers, [0.95, 0.6, 0.6])
    assert list(result.label) == [1]
    assert result.confidence[0] == pytest.approx(1 / (1 + np.exp(-(np.log(19) - 2 * np.log(1.5)))))
    assert result.posterior.sum(axis=1) == pytest.approx([1.0])
    # A worker at or below chance is ignored rather than counted against their answer.
    assert list(weighted_vote(answers, [0.3, 0.6, 0.6]).label) == [0]
    ignored = weighted_vote(answers_of(rows[:1], ["cat", "dog"]), [0.2])
    assert ignored.posterior[0] == pytest.approx([0.5, 0.5])


def test_weights_must_be_one_finite_value_per_worker() -> None:
    answers = answers_of([("t", "w1", "a"), ("t", "w2", "b")])
    with pytest.raises(ValueError, match="one value per worker"):
        weighted_vote(answers, [0.9])
    with pytest.raises(ValueError, match="finite"):
        weighted_vote(answers, [0.9, np.nan])
    with pytest.raises(ValueError, match="needs weights"):
        dawid_skene(answers, init="weighted")


@pytest.mark.parametrize(
    "method",
    [majority_vote, lambda a: weighted_vote(a, np.full(a.n_workers, 0.8)), dawid_skene],
)
def test_tasks_without_answers_get_no_label(method: Callable[[Answers], Result]) -> None:
    answers = Answers(
        task=np.array([0, 0, 2]), worker=np.array([0, 1, 0]), label=np.array([1, 1, 0]),
        n_tasks=4, n_workers=2, n_labels=3,
    )  # fmt: skip
    result = method(answers)
    assert list(result.label[[1, 3]]) == [-1, -1]
    assert list(result.confidence[[1, 3]]) == [0.0, 0.0]
    assert list(result.votes) == [2, 0, 1, 0]
    assert list(result.label[[0, 2]]) == [1, 0]
    assert result.posterior.shape == (4, 3)
    assert result.posterior.sum(axis=1) == pytest.approx(np.ones(4))


# Dawid-Skene


def test_an_outlier_worker_does_not_sway_the_decision() -> None:
    workers = {f"good{i}": wrong_on({i, i + 10}) for i in range(4)}
    workers["outlier"] = lambda t, true: flip(true) if t % 3 else true
    rows = crowd(30, alternating, workers)
    result = dawid_skene(answers_of(rows))
    assert decided(result, rows) == {f"t{t}": alternating(t) for t in range(30)}
    assert (result.confidence > 0.9).all()
    outlier = encode(rows)[2].index("outlier")
    assert np.diag(confusion(result, outlier)).max() < 0.5


def test_dawid_skene_learns_to_ignore_a_spammer_the_majority_vote_follows() -> None:
    # Three good workers, each wrong on 4 of 40 tasks (never two on the same task), and a
    # spammer who always answers "no": wherever a good worker is wrong on a "yes" task, the
    # vote is a 2-2 tie.
    workers = {f"good{i}": wrong_on({i, i + 10, i + 20, i + 30}) for i in (1, 4, 7)}
    workers["spammer"] = lambda t, true: "no"
    rows = crowd(40, alternating, workers)
    answers = answers_of(rows)
    truth = {f"t{t}": alternating(t) for t in range(40)}

    vote = decided(majority_vote(answers), rows)
    assert sum(vote[t] != truth[t] for t in truth) == 8  # the "yes" tasks with a wrong good worker

    result = dawid_skene(answers)
    assert decided(result, rows) == truth
    spammer = encode(rows)[2].index("spammer")
    given_no = confusion(result, spammer)[:, 0]  # P(answers "no" | true "no"), (... | "yes")
    # "no" is as likely whatever the truth: the spammer's answer carries no evidence.
    assert given_no[0] / given_no[1] == pytest.approx(1.0, abs=0.05)


def test_a_worker_with_few_answers_is_not_taken_as_certain() -> None:
    workers = {f"veteran{i}": wrong_on({i, i + 20}) for i in range(3)}
    rows = crowd(40, alternating, workers)
    rows += [("t4", "newcomer", "no"), ("t5", "newcomer", "yes"), ("solo", "newcomer", "yes")]
    answers, task_keys, worker_keys, _ = encode(rows)

    result = dawid_skene(answers)
    newcomer = np.diag(confusion(result, worker_keys.index("newcomer")))
    veteran = np.diag(confusion(result, worker_keys.index("veteran0")))
    assert (newcomer < 0.97).all()
    assert veteran == pytest.approx([0.9, 1.0], abs=0.02)  # wrong on 2 of 20 "no" tasks
    assert 0.8 < result.confidence[task_keys.index("solo")] < 0.97

    # Without the prior, two right answers would make the newcomer infallible.
    bare = dawid_skene(answers, smoothing=1e-12)
    assert np.diag(confusion(bare, worker_keys.index("newcomer"))) == pytest.approx(1.0)
    assert bare.confidence[task_keys.index("solo")] == pytest.approx(1.0)


def test_dawid_skene_returns_normalised_parameters_and_stops_on_convergence() -> None:
    workers = {f"w{i}": wrong_on({i, 2 * i + 5}) for i in range(5)}
    rows = crowd(20, alternating, workers)
    result = dawid_skene(answers_of(rows), max_iter=500)
    assert result.method == "dawid_skene"
    assert result.worker_confusion is not None
    assert result.priors is not None
    assert result.worker_confusion.shape == (5, 2, 2)
    assert result.worker_confusion.sum(axis=2) == pytest.approx(np.ones((5, 2)))
    assert result.priors.sum() == pytest.approx(1.0)
    assert result.posterior.sum(axis=1) == pytest.approx(np.ones(20))
    assert 1 <= result.iterations < 500
    assert dawid_skene(answers_of(rows), max_iter=2).iterations == 2


def test_dawid_skene_starts_from_the_weighted_vote_when_given_weights() -> None:
    rows = [("t", "a", "cat"), ("t", "b", "dog")]
    answers = answers_of(rows, ["cat", "dog"])
    assert list(dawid_skene(answers, weights=[0.6, 0.9]).label) == [1]
    assert list(dawid_skene(answers, weights=[0.9, 0.6]).label) == [0]


@pytest.mark.parametrize(
    "answers",
    [
        Answers(np.array([], dtype=int), np.array([], dtype=int), np.array([], dtype=int), 0, 0, 2),
        Answers(np.array([], dtype=int), np.array([], dtype=int), np.array([], dtype=int), 3, 0, 2),
        Answers(np.array([0, 1]), np.array([0, 0]), np.array([0, 0]), 2, 1, 1),
        Answers(np.array([0, 1, 1]), np.array([0, 0, 1]), np.array([2, 2, 2]), 2, 2, 3),
    ],
    ids=["nothing", "no answers", "one label", "everyone says the same"],
)
def test_degenerate_inputs_need_no_special_case(answers: Answers) -> None:
    # RuntimeWarning is an error in this suite: no log(0), no 0/0.
    for result in (majority_vote(answers), dawid_skene(answers), aggregate(answers)):
        assert result.label.shape == (answers.n_tasks,)
        assert np.isfinite(result.posterior).all()


# Choosing the method


def test_aggregate_runs_dawid_skene_on_large_overlapping_answer_sets_only() -> None:
    workers = {f"w{i}": wrong_on({i}) for i in range(3)}
    small = answers_of(crowd(20, alternating, workers))
    large = answers_of(crowd(80, alternating, workers))
    single = answers_of([(f"t{t}", f"w{t % 5}", alternating(t)) for t in range(300)])
    assert aggregate(small).method == "majority_vote"
    assert aggregate(small, weights=[0.8, 0.8, 0.8]).method == "weighted_vote"
    assert aggregate(large).method == "dawid_skene"
    assert aggregate(single).method == "majority_vote"  # one answer per task: nothing to learn
    assert aggregate(small, min_answers_for_ds=60).method == "dawid_skene"
    assert aggregate(large, method="majority_vote").method == "majority_vote"
    with pytest.raises(ValueError, match="needs weights"):
        aggregate(small, method="weighted_vote")
    with pytest.raises(ValueError, match="unknown method"):
        aggregate(small, method="median")  # type: ignore[arg-type]


# Real crowd label sets


def read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="") as fh:
        return list(csv.reader(fh))[1:]


@pytest.mark.parametrize("name", sorted(CROWD_KIT_DAWID_SKENE))
def test_dawid_skene_matches_crowd_kit_accuracy_on_real_label_sets(name: str) -> None:
    folder = CROWD_DATA / name
    if not folder.is_dir():
        pytest.skip(f"crowd label sets not found at {CROWD_DATA}")
    rows = [(task, worker, label) for task, worker, label in read_csv(folder / "answers.csv")]
    truth = dict(read_csv(folder / "truth.csv"))
    answers, task_keys, _, label_keys = encode(rows)
    result = dawid_skene(answers)
    chosen = {task: label_keys[i] for task, i in zip(task_keys, result.label, strict=True)}
    accuracy = np.mean([chosen[task] == label for task, label in truth.items()])
    assert accuracy >= CROWD_KIT_DAWID_SKENE[name]


# Worker reports and the worker-centred prior


def test_worker_confusions_report_each_workers_matrix_and_accuracy() -> None:
    workers = {
        "careful": wrong_on({3}),
        "flipper": lambda t, true: flip(true),
        "spammer": lambda t, true: "yes" if t % 3 == 0 else "no",
        **{f"w{i}": wrong_on({i, 2 * i + 7}) for i in range(4)},
    }
    rows = crowd(60, alternating, workers)
    answers, _, worker_keys, label_keys = encode(rows)
    result = dawid_skene(answers)
    report = dict(zip(worker_keys, worker_confusions(answers, result), strict=True))
    again = worker_confusions(answers)  # runs Dawid-Skene itself
    assert [w.accuracy for w in again] == [w.accuracy for w in report.values()]
    careful, flipper, spammer = report["careful"], report["flipper"], report["spammer"]
    assert careful.accuracy > 0.95
    assert flipper.accuracy < 0.05
    assert 0.3 < spammer.accuracy < 0.7
    assert careful.answers == flipper.answers == 60
    no, yes = label_keys.index("no"), label_keys.index("yes")
    assert flipper.confusion[no, yes] > 0.95  # says "yes" to every "no"
    for worker in report.values():
        assert worker.confusion.sum(axis=1) == pytest.approx(np.ones(2))
        assert worker.accuracy == pytest.approx(
            float(np.diag(worker.confusion) @ result.priors)  # type: ignore[operator]
        )
    with pytest.raises(ValueError, match="dawid_skene"):
        worker_confusions(answers, majority_vote(answers))


def test_the_worker_prior_lends_a_sparse_workers_rows_their_own_accuracy() -> None:
    workers = {f"veteran{i}": wrong_on({2 * i, 2 * i + 20}) for i in range(3)}
    rows = crowd(40, alternating, workers)
    # The newcomer answered six "no" tasks, all right, and not one "yes" task.
    rows += [(f"t{t}", "newcomer", "no") for t in range(0, 12, 2)]
    answers, _, worker_keys, label_keys = encode(rows)
    assert not sparse_workers(answers)
    typical = worker_confusions(answers, dawid_skene(answers))
    own = worker_confusions(answers, dawid_skene(answers, prior="worker"))
    newcomer, veteran = worker_keys.index("newcomer"), worker_keys.index("veteran0")
    no, yes = label_keys.index("no"), label_keys.index("yes")
    # Nothing tells how they answer a "yes": the typical worker's 0.85, or their own record.
    assert typical[newcomer].confusion[yes, yes] == pytest.approx(0.85, abs=0.01)
    assert own[newcomer].confusion[yes, yes] > 0.9
    # Forty answers keep a veteran's own shape: wrong on "no" tasks only.
    assert own[veteran].confusion[no, no] < own[veteran].confusion[yes, yes] - 0.05
    with pytest.raises(ValueError, match="prior"):
        dawid_skene(answers, prior="crowd")  # type: ignore[arg-type]


def generated(structure: str, seed: int) -> tuple[Answers, np.ndarray]:
    """A crowd of a given structure with known classes: ``sparse`` (a long tail of workers
    with a handful of answers, some answering at random), ``many_classes`` (ten classes,
    errors on the neighbouring classes), ``adversarial`` (a quarter of the workers shift
    every class to the next one)."""
    rng = np.random.default_rng(seed)
    k, n_tasks, overlap = {"sparse": (3, 2000, 5), "many_classes": (10, 1500, 5)}.get(
        structure, (3, 1500, 5)
    )
    n_workers = 700 if structure == "sparse" else 50
    activity = rng.pareto(1.2, n_workers) + 0.05 if structure == "sparse" else np.ones(n_workers)
    accuracy = np.clip(rng.beta(4, 1.5, n_workers), 0.3, 0.99)
    matrices = np.empty((n_workers, k, k))
    for w in range(n_workers):
        if structure == "many_classes":
            wrong = 0.6 * np.roll(np.eye(k), 1, axis=1) + 0.4 * np.roll(np.eye(k), -1, axis=1)
        else:
            wrong = (1 - np.eye(k)) / (k - 1)
        matrices[w] = accuracy[w] * np.eye(k) + (1 - accuracy[w]) * wrong
        if structure == "sparse" and rng.random() < 0.1:
            matrices[w] = 1 / k
        if structure == "adversarial" and rng.random() < 0.25:
            matrices[w] = 0.9 * np.roll(np.eye(k), 1, axis=1) + 0.1 / k
    truth = rng.choice(k, n_tasks, p=rng.dirichlet(np.full(k, 3.0)))
    task = np.repeat(np.arange(n_tasks), overlap)
    worker = np.concatenate(
        [
            rng.choice(n_workers, overlap, replace=False, p=activity / activity.sum())
            for _ in range(n_tasks)
        ]
    )
    cumulative = matrices[worker, truth[task]].cumsum(axis=1)
    label = np.minimum((rng.random(len(task))[:, None] > cumulative).sum(axis=1), k - 1)
    return Answers(task, worker, label, n_tasks, n_workers, k), truth


@pytest.mark.parametrize("structure", ["sparse", "many_classes", "adversarial"])
def test_dawid_skene_on_generated_crowds_of_several_structures(structure: str) -> None:
    accuracy: dict[str, list[float]] = {"vote": [], "default": [], "typical": [], "worker": []}
    for seed in range(3):
        answers, truth = generated(structure, seed)
        assert sparse_workers(answers) == (structure == "sparse")
        for name, result in (
            ("vote", majority_vote(answers)),
            ("default", dawid_skene(answers)),
            ("typical", dawid_skene(answers, prior="typical")),
            ("worker", dawid_skene(answers, prior="worker")),
        ):
            accuracy[name].append(float(np.mean(result.label == truth)))
    vote, default, typical, worker = (float(np.mean(v)) for v in accuracy.values())
    assert typical > vote + 0.02
    # The worker-centred prior pools what a worker's few answers say into one accuracy.
    assert worker >= typical
    if structure == "sparse":
        assert default == worker > typical + 0.01
    else:
        assert default == typical
