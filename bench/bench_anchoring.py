"""Does the dashboard see workers anchor on a model's mistakes? Simulated crowds work bbox
projects with pre-labels from a simulated detector (``qa.sim.model``), each worker keeping a
pre-label as it is with probability ``anchoring`` (the model's wrong labels, stray and
misplaced boxes too) and leaving an object the model missed unmarked as often
(``qa.sim.crowd``); the tasks drawn into ``prelabel_holdout`` get no pre-labels, and there the
same workers answer on their own.

Every run goes through the product: the project is seeded by ``crowdsim``'s services
(generated scenes, gold from their truth), the model's predictions imported by the
predictions service, the crowd served by routing (``frontend.sim``, in-process), answers
scored on gold by ``qa``, pre-label outcomes recorded at submission; then the comparison the
dashboard shows (``qa.prelabel_effect.prelabel_effect``, what
``GET /projects/{id}/prelabels/effect/`` answers) is read. Each row is one run: the gold
score difference (with minus without pre-labels), its 95% Welch interval and p-value, the
median time difference, and whether the dashboard flags it (``gold_score_flag``). Anchoring 0
runs several seeds: the share flagged is the false-alarm rate (the 95% level promises 5%);
the share of flagged runs at 0.6 and 0.9 is the detection rate. Seeding is not timed.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from typing import Any

NAME = "anchoring"
DESCRIPTION = (
    "simulated crowds anchoring on a model's pre-labels to degrees 0-0.9: the dashboard's "
    "with/without comparison (gold score difference, 95% CI, p, flag)"
)
ANCHORING = (0.0, 0.3, 0.6, 0.9)
SEED = 20_261_203


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    crowd: list[tuple[str, int]]
    model: str  # crowdsim --model spec
    images: int = 80
    gold: int = 30
    holdout: float = 0.25
    gold_rate: float = 0.3


PROFILES = [
    Profile(
        name="careful, good model",
        description="12 careful workers; detector recall 0.85, calibrated, 0.3 stray boxes",
        crowd=[("careful", 12)],
        model="recall=0.85,calibration=calibrated,false=0.3",
    ),
    Profile(
        name="mixed crowd, over-confident model",
        description="6 careful, 4 sloppy, 2 spammers; recall 0.85, over-confident, small "
        "objects missed",
        crowd=[("careful", 6), ("sloppy", 4), ("spammer", 2)],
        model="recall=0.85,calibration=over-confident,small=0.05,false=0.3",
    ),
    Profile(
        name="weak model",
        description="10 careful; recall 0.6, 1 stray box an image, 8% jitter",
        crowd=[("careful", 10)],
        model="recall=0.6,false=1.0,jitter=0.08",
    ),
    Profile(
        name="small crowd, default holdout",
        description="4 careful, 1 sloppy; good model; 10 gold images, held out at 0.1",
        crowd=[("careful", 4), ("sloppy", 1)],
        model="recall=0.85,false=0.3",
        images=60,
        gold=10,
        holdout=0.1,
    ),
]


def _one(profile: Profile, anchoring: float, seed: int, number: int) -> dict[str, Any]:
    from crowd.models import Role
    from frontend.sim.accounts import account_ensure
    from frontend.sim.engine import crowd_work
    from frontend.sim.manager import model_predictions
    from frontend.sim.seeding import sim_project_create
    from qa.prelabel_effect import prelabel_effect
    from tasks.services import project_update

    manager, _ = account_ensure("bench-anchoring", Role.MANAGER)
    project, truth = sim_project_create(
        kind="bbox", images=profile.images, gold=profile.gold, manager=manager, seed=seed,
        name=f"anchoring {number}",
        overrides={"gold_rate": profile.gold_rate, "min_overlap": 2, "max_overlap": 3,
                   "assignment_seconds": 600},
    )  # fmt: skip
    model_predictions(project=project, truth=truth, spec=profile.model, seed=seed)
    project = project_update(
        project=project, data={"prelabels": True, "prelabel_holdout": profile.holdout}
    )
    started = time.perf_counter()
    stats = crowd_work(
        project=project, truth=truth, crowd=profile.crowd, seed=seed, anchoring=anchoring
    )
    seconds = time.perf_counter() - started
    effect = prelabel_effect(project)
    overall = effect["overall"]
    # The same answers with suspended workers counted, as the comparison did before.
    everyone = prelabel_effect(project, count_suspended=True)["overall"]
    gold = overall["gold_score_difference"] or {}
    times = overall["median_seconds_difference"] or {}
    with_, without = overall["with_prelabels"], overall["without_prelabels"]
    return {
        "profile": profile.name,
        "anchoring": anchoring,
        "seed": seed,
        "answers": stats.answers,
        "gold_with": with_["gold_answers"],
        "gold_without": without["gold_answers"],
        "score_with": with_["gold_score_mean"],
        "score_without": without["gold_score_mean"],
        "difference": gold.get("estimate"),
        "ci95": gold.get("ci95"),
        "p": gold.get("p_value"),
        "flag": overall["gold_score_flag"],
        "flagged": overall["gold_score_flag"] == "lower_with_prelabels",
        "suspended_answers": effect["answers_of_suspended_workers"],
        "difference_all": (everyone["gold_score_difference"] or {}).get("estimate"),
        "flagged_all": everyone["gold_score_flag"] == "lower_with_prelabels",
        "time_diff_s": times.get("estimate"),
        "time_ci95": times.get("ci95"),
        "kept_share": effect["outcomes"]["kept_share"],
        "run_s": round(seconds, 1),
    }


def _summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per profile and degree: the share of runs flagged and the mean difference."""
    out = []
    for profile in PROFILES:
        for a in ANCHORING:
            runs = [r for r in rows if r["profile"] == profile.name and r["anchoring"] == a]
            if not runs:
                continue
            diffs = [r["difference"] for r in runs if r["difference"] is not None]
            diffs_all = [r["difference_all"] for r in runs if r["difference_all"] is not None]
            out.append({
                "profile": profile.name, "anchoring": a, "runs": len(runs),
                "flagged_share": round(sum(r["flagged"] for r in runs) / len(runs), 3),
                "mean_difference": round(sum(diffs) / len(diffs), 4) if diffs else None,
                "flagged_share_counting_suspended": round(
                    sum(r["flagged_all"] for r in runs) / len(runs), 3),
                "mean_difference_counting_suspended": (
                    round(sum(diffs_all) / len(diffs_all), 4) if diffs_all else None),
                "suspended_answers": sum(r["suspended_answers"] for r in runs),
                "mean_time_diff_s": round(
                    sum(r["time_diff_s"] or 0 for r in runs) / len(runs), 2),
            })  # fmt: skip
    return out


def run(quick: bool = False) -> list[dict[str, Any]]:
    from bench import django_env

    var_dir = django_env.setup(TASK_DECISIONS="inline", LEASE_SWEEP_SECONDS="0")
    try:
        profiles = PROFILES[:2] if quick else PROFILES
        null_seeds = 2 if quick else 6  # anchoring 0: the false-alarm rate
        seeds = 1 if quick else 2
        rows: list[dict[str, Any]] = []
        number = 0
        for profile in profiles:
            for a in ANCHORING:
                for k in range(null_seeds if a == 0 else seeds):
                    number += 1
                    rows.append(_one(profile, a, SEED + 101 * k + number, number))
                    print(_line(rows[-1]), flush=True)
        print("\nper profile and degree:")
        from bench.__main__ import table

        print(table(_summary(rows)))
        return rows
    finally:
        shutil.rmtree(var_dir, ignore_errors=True)


def _line(row: dict[str, Any]) -> str:
    return (
        f"{row['profile']:<36} a={row['anchoring']:<4} seed {row['seed']}: diff "
        f"{row['difference']} {row['ci95']} p {row['p']} flag {row['flag']} "
        f"(gold {row['gold_with']}/{row['gold_without']}, {row['run_s']} s); counting "
        f"{row['suspended_answers']} answers of suspended workers: diff {row['difference_all']}"
        f" flagged {row['flagged_all']}"
    )
