"""The most F1 a budget of answers can buy, knowing the truth. Pure (numpy).

Given, for each task and each count of answers 1..K, the matches its merged result makes with
the truth (``hits``) and the objects it holds (``found``), choose one count a task so that F1
over all tasks, ``2 hits / (true + found)``, is as high as it can be with at most ``budget``
answers a task on average. F1 is a ratio, so it is maximised by Dinkelbach's method: for a
ratio ``rho``, each task takes the count maximising ``2 hits - rho found - lam k``, with the
price ``lam`` of an answer bisected to the budget (what that price leaves of the budget then
spent one best upgrade at a time), and ``rho`` becomes the F1 of that choice until it stops
rising. The choice is one a rule knowing the truth could make, so the best choice is at
least as good: its F1 is a floor of what the budget can buy, and on thousands of tasks
close to it (a priced choice is the best its own answers allow).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def most_f1(
    hits: FloatArray, found: FloatArray, true: int, budget: float
) -> tuple[float, float, npt.NDArray[np.intp]]:
    """(F1, answers a task, each task's count) of the best priced choice within ``budget``;
    ``hits`` and ``found`` are tasks x counts, counts from 1."""
    counts = np.arange(1, hits.shape[1] + 1)
    rows = np.arange(hits.shape[0])
    rho = 0.0
    best: tuple[float, npt.NDArray[np.intp]] = (-1.0, np.zeros(hits.shape[0], dtype=np.intp))
    for _ in range(20):
        gain = 2 * hits - rho * found
        # Past ``high`` one more answer never pays: every task takes its first count.
        low, high = 0.0, float(np.ptp(gain, axis=1).max() + 1)
        for _ in range(50):
            lam = (low + high) / 2
            if counts[np.argmax(gain - lam * counts, axis=1)].mean() > budget:
                low = lam
            else:
                high = lam
        choice = _spend_the_rest(hits, found, true, budget, np.argmax(gain - high * counts, axis=1))
        h, n = hits[rows, choice].sum(), found[rows, choice].sum()
        f1 = float(2 * h / (true + n)) if true + n else 1.0
        if f1 > best[0]:
            best = (f1, choice)
        if f1 <= rho + 1e-12:
            break
        rho = f1
    f1, choice = best
    return f1, float(counts[choice].mean()), choice


def _spend_the_rest(
    hits: FloatArray, found: FloatArray, true: int, budget: float, choice: npt.NDArray[np.intp]
) -> npt.NDArray[np.intp]:
    """The answers a priced choice left of the budget (a price at which many tasks take more
    answers at once leaves a step unused), spent one upgrade at a time: the task and count
    that raise F1 most per answer, while one does."""
    choice = choice.copy()
    rows = np.arange(hits.shape[0])
    counts = np.arange(hits.shape[1])
    left = int(np.floor(budget * hits.shape[0] + 1e-9)) - int((choice + 1).sum())
    h, n = hits[rows, choice].sum(), found[rows, choice].sum()
    while left > 0:
        f1 = 2 * h / (true + n) if true + n else 1.0
        extra = counts[None, :] - choice[:, None]
        new_h = h - hits[rows, choice][:, None] + hits
        new_n = n - found[rows, choice][:, None] + found
        with np.errstate(divide="ignore", invalid="ignore"):
            rise = (2 * new_h / (true + new_n) - f1) / extra
        rise[(extra <= 0) | (extra > left)] = -np.inf
        j, k = np.unravel_index(int(np.argmax(rise)), rise.shape)
        if not rise[j, k] > 0:
            break
        h, n = new_h[j, k], new_n[j, k]
        left -= int(extra[j, k])
        choice[j] = k
    return choice
