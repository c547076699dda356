from __future__ import annotations

import math

import numpy as np
import pytest

from qa.agreement import (
    coder_mean_pairwise,
    cohen_kappa,
    confusion_matrix,
    fleiss_kappa,
    krippendorff_alpha_from_triples,
    krippendorff_alpha_nominal,
    mean_pairwise,
    pairwise_cohen,
)

# Cohen


def test_cohen_kappa_wikipedia_example() -> None:
    # https://en.wikipedia.org/wiki/Cohen%27s_kappa: 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no.
    pairs = [("yes", "yes")] * 20 + [("yes", "no")] * 5 + [("no", "yes")] * 10 + [("no", "no")] * 15
    a, b = zip(*pairs, strict=True)
    assert cohen_kappa(a, b) == pytest.approx(0.4)


def test_cohen_kappa_degenerate_and_extreme_cases() -> None:
    assert cohen_kappa(["cat"] * 4, ["cat"] * 4) == 1.0  # one category, defined as 1
    assert cohen_kappa(["cat", "dog"], ["cat", "dog"]) == 1.0
    assert cohen_kappa(["cat", "dog"], ["dog", "cat"]) == -1.0
    assert cohen_kappa(["cat"] * 4, ["cat", "cat", "dog", "cat"]) == 0.0
    with pytest.raises(ValueError, match="different numbers"):
        cohen_kappa(["cat"], [])
    with pytest.raises(ValueError, match="no items"):
        cohen_kappa([], [])


# Fleiss

# https://en.wikipedia.org/wiki/Fleiss%27_kappa#Worked_example: 10 items, 14 raters, 5 categories.
WIKIPEDIA_FLEISS = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]


def test_fleiss_kappa_wikipedia_example() -> None:
    assert round(fleiss_kappa(WIKIPEDIA_FLEISS), 3) == 0.210


def test_fleiss_kappa_with_varying_raters() -> None:
    # Items with fewer than two raters are dropped.
    with_singletons = [*WIKIPEDIA_FLEISS, [0, 1, 0, 0, 0], [0, 0, 0, 0, 0]]
    assert fleiss_kappa(with_singletons) == pytest.approx(fleiss_kappa(WIKIPEDIA_FLEISS))
    # Per item agreement counts once per item, whatever its number of raters:
    # P = (1 + 1/3) / 2, shares (5/7, 2/7), Pe = 29/49.
    expected = ((1 + 1 / 3) / 2 - 29 / 49) / (1 - 29 / 49)
    assert fleiss_kappa([[4, 0], [1, 2]]) == pytest.approx(expected)


def test_fleiss_kappa_degenerate_cases() -> None:
    assert fleiss_kappa([[3, 0], [2, 0]]) == 1.0
    with pytest.raises(ValueError, match="two or more"):
        fleiss_kappa([[1, 0], [0, 1]])


# Krippendorff

# Krippendorff, "Computing Krippendorff's Alpha-Reliability" (2011), section C: nominal data,
# 4 observers x 12 units, missing values; alpha = 0.743.
N = None
KRIPPENDORFF_2011 = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, N, N, N],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, N, 3],
    [N, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, N],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, N],
]


def test_krippendorff_alpha_published_example() -> None:
    assert krippendorff_alpha_nominal(KRIPPENDORFF_2011) == pytest.approx(0.743, abs=1e-3)
    as_nan = np.array([[math.nan if v is None else v for v in row] for row in KRIPPENDORFF_2011])
    assert krippendorff_alpha_nominal(as_nan) == pytest.approx(0.743, abs=1e-3)


def test_krippendorff_alpha_from_triples_matches_the_matrix_form() -> None:
    triples = [
        (unit, f"observer {coder}", value)
        for coder, row in enumerate(KRIPPENDORFF_2011)
        for unit, value in enumerate(row)
        if value is not None
    ]
    assert krippendorff_alpha_from_triples(triples) == pytest.approx(
        krippendorff_alpha_nominal(KRIPPENDORFF_2011)
    )


def test_krippendorff_alpha_degenerate_cases() -> None:
    # Unit 2 has one value and is not pairable; what is left agrees on one category.
    assert krippendorff_alpha_from_triples([(1, "a", "x"), (1, "b", "x"), (2, "a", "y")]) == 1.0
    with pytest.raises(ValueError, match="two or more"):
        krippendorff_alpha_from_triples([(1, "a", "x"), (2, "b", "y")])


def _alpha_by_pairs(triples) -> float:
    """Krippendorff's nominal alpha straight from its definition, pair by pair: observed
    disagreement within units against expected disagreement over all pairable values."""
    units: dict = {}
    for unit, _, value in triples:
        units.setdefault(unit, []).append(value)
    pairable = {u: v for u, v in units.items() if len(v) >= 2}
    values = [x for v in pairable.values() for x in v]
    n = len(values)
    observed = (
        sum(
            sum(a != b for i, a in enumerate(v) for j, b in enumerate(v) if i != j) / (len(v) - 1)
            for v in pairable.values()
        )
        / n
    )
    expected = sum(a != b for i, a in enumerate(values) for j, b in enumerate(values) if i != j)
    expected /= n * (n - 1)
    return 1 - observed / expected


def test_krippendorff_alpha_agrees_with_its_definition_on_random_data() -> None:
    rng = np.random.default_rng(11)
    for _ in range(20):
        n_coders, n_units = int(rng.integers(2, 7)), int(rng.integers(5, 40))
        truth = rng.integers(0, 4, n_units)
        noisy = rng.random((n_coders, n_units)) < rng.uniform(0.1, 0.8)
        labels = np.where(noisy, rng.integers(0, 4, (n_coders, n_units)), truth)
        present = rng.random((n_coders, n_units)) < 0.7
        triples = [
            (f"t{unit}", f"w{coder}", f"l{labels[coder, unit]}")
            for coder in range(n_coders)
            for unit in range(n_units)
            if present[coder, unit]
        ]
        expected = _alpha_by_pairs(triples)
        assert krippendorff_alpha_from_triples(triples) == pytest.approx(expected, abs=1e-6)


# Pairwise and helpers


def test_pairwise_cohen() -> None:
    triples = [
        *[(u, "ann", "cat" if u % 2 else "dog") for u in range(10)],
        *[(u, "bob", "cat" if u % 2 else "dog") for u in range(10)],
        *[(u, "cy", "cat") for u in range(8, 12)],  # 2 units shared with each
    ]
    pairwise = pairwise_cohen(triples, min_items=3)
    assert pairwise == {("ann", "bob"): (1.0, 10)}
    assert set(pairwise_cohen(triples, min_items=2)) == {
        ("ann", "bob"),
        ("ann", "cy"),
        ("bob", "cy"),
    }


def test_mean_pairwise_weights_by_shared_items() -> None:
    pairwise = {("a", "b"): (1.0, 30), ("a", "c"): (0.0, 10), ("b", "c"): (0.5, 10)}
    assert mean_pairwise(pairwise) == pytest.approx((30 + 5) / 50)
    assert mean_pairwise({}) is None
    assert coder_mean_pairwise(pairwise) == pytest.approx({"a": 30 / 40, "b": 35 / 40, "c": 5 / 20})


def test_confusion_matrix() -> None:
    pairs = [("car", "car"), ("car", "tree"), ("tree", None), (None, "car"), ("car", "car")]
    assert confusion_matrix(pairs, ["car", "tree"]).tolist() == [
        [2, 1, 0],
        [0, 0, 1],
        [1, 0, 0],
    ]
    with pytest.raises(ValueError, match="unknown label"):
        confusion_matrix([("bus", "car")], ["car"])
    with pytest.raises(ValueError, match="or both"):
        confusion_matrix([(None, None)], ["car"])
