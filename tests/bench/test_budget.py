"""The bound the model-in-the-loop bench reports (``bench.budget.most_f1``): against every
choice of counts on small random cases, it is feasible, never above the best one, and the
best one where the budget decides nothing."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from bench.budget import most_f1


def _brute(hits: np.ndarray, found: np.ndarray, true: int, budget: float) -> float:
    best = -1.0
    rows = np.arange(hits.shape[0])
    for choice in itertools.product(range(hits.shape[1]), repeat=hits.shape[0]):
        picked = np.array(choice)
        if (picked + 1).mean() > budget + 1e-9:
            continue
        h, n = hits[rows, picked].sum(), found[rows, picked].sum()
        best = max(best, 2 * h / (true + n))
    return best


@pytest.mark.parametrize("seed", range(12))
def test_the_priced_choice_is_feasible_and_never_beats_the_best(seed: int) -> None:
    rng = np.random.default_rng(seed)
    tasks, counts = 5, 3
    truth = rng.integers(1, 5, size=tasks)
    hits = np.minimum(rng.integers(0, 5, size=(tasks, counts)), truth[:, None]).astype(float)
    found = (hits + rng.integers(0, 3, size=(tasks, counts))).astype(float)
    true = int(truth.sum())
    for budget in (1.0, 1.4, 2.0, 2.6, 3.0):
        f1, mean, choice = most_f1(hits, found, true, budget)
        assert mean <= budget + 1e-9
        assert mean == pytest.approx((choice + 1).mean())
        rows = np.arange(tasks)
        assert f1 == pytest.approx(
            2 * hits[rows, choice].sum() / (true + found[rows, choice].sum())
        )
        best = _brute(hits, found, true, budget)
        assert f1 <= best + 1e-12
        if budget in (1.0, 3.0):  # one choice, or no limit: the best itself
            assert f1 == pytest.approx(best)


def test_answers_go_to_the_tasks_that_need_them() -> None:
    # Task 0 is right at one answer; task 1 needs a second, task 2 a third.
    hits = np.array([[2, 2, 2], [1, 2, 2], [0, 1, 3]], dtype=float)
    found = np.array([[2, 2, 2], [2, 2, 2], [1, 2, 3]], dtype=float)
    f1, mean, choice = most_f1(hits, found, 7, 2.0)
    assert choice.tolist() == [0, 1, 2]
    assert (f1, mean) == (1.0, 2.0)
    f1, mean, choice = most_f1(hits, found, 7, 4 / 3)
    assert choice.tolist() == [0, 1, 0]
    assert mean == pytest.approx(4 / 3)


def test_on_small_random_cases_it_is_mostly_the_best_choice() -> None:
    best_found = 0
    cases = 0
    for seed in range(60):
        rng = np.random.default_rng(1000 + seed)
        truth = rng.integers(1, 5, size=5)
        hits = np.minimum(rng.integers(0, 5, size=(5, 3)), truth[:, None]).astype(float)
        found = (hits + rng.integers(0, 3, size=(5, 3))).astype(float)
        for budget in (1.4, 2.0, 2.6):
            f1, _, _ = most_f1(hits, found, int(truth.sum()), budget)
            best_found += f1 >= _brute(hits, found, int(truth.sum()), budget) - 1e-12
            cases += 1
    assert best_found >= 0.95 * cases
