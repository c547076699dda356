"""Worker reliability: a smoothed estimate from gold results and agreement with consensus. Pure.

A worker's accuracy is modelled as Beta distributed. Each gold answer adds its score (in
[0, 1]) to the successes and the rest to the failures; agreement with the consensus of real
tasks adds evidence at a lower weight (the consensus itself can be wrong). The prior is
Beta(1, 1), so a worker with one correct gold answer has 2/3, not 100%.

Once the project's worker model has been learnt from all of its answers (``qa.worker_model``:
Dawid-Skene's confusion matrices, or each shape worker's recall and false marks), its
expected accuracy for the worker, counted once per answer it rests on, takes the place of the
agreement evidence: it judges the same answers, but against a consensus that already weighs
who gave them, so a worker the model finds unreliable counts less in votes, in dynamic
overlap and in their score alike. Suspension still judges gold and agreement since the
manager's last reinstatement only (:meth:`Evidence.since` leaves the model out): the model
is refitted over all answers, old ones included, and must not undo a reinstatement.

Suspension needs confidence, not just a low mean: a worker is suspended when, after enough
gold, the probability that their accuracy is below the project's minimum is at least
``SUSPEND_CONFIDENCE``. A good worker with two unlucky answers early on stays; a spammer's
evidence piles up within a few gold tasks.
"""

from __future__ import annotations

from dataclasses import dataclass

from scipy.stats import beta

PRIOR_SUCCESSES = 1.0
PRIOR_FAILURES = 1.0
# One agreement with consensus counts as this fraction of one gold answer.
AGREEMENT_WEIGHT = 0.5
# Gold answers a worker gives before the score can suspend them (their probation).
PROBATION_GOLD = 5
SUSPEND_CONFIDENCE = 0.9


@dataclass(frozen=True)
class Evidence:
    gold_seen: int = 0
    gold_score_sum: float = 0.0
    agreement_seen: int = 0
    agreement_sum: float = 0.0
    model_seen: float = 0.0
    model_sum: float = 0.0

    def posterior(self) -> tuple[float, float]:
        """The Beta parameters (successes, failures) after this evidence."""
        seen, agreed = (
            (self.model_seen, self.model_sum)
            if self.model_seen > 0
            else (self.agreement_seen, self.agreement_sum)
        )
        successes = PRIOR_SUCCESSES + self.gold_score_sum + AGREEMENT_WEIGHT * agreed
        failures = (
            PRIOR_FAILURES
            + (self.gold_seen - self.gold_score_sum)
            + AGREEMENT_WEIGHT * (seen - agreed)
        )
        return successes, max(failures, 1e-9)

    def since(self, earlier: Evidence) -> Evidence:
        """The gold and agreement evidence gathered after ``earlier`` (not the model's)."""
        return Evidence(
            gold_seen=self.gold_seen - earlier.gold_seen,
            gold_score_sum=self.gold_score_sum - earlier.gold_score_sum,
            agreement_seen=self.agreement_seen - earlier.agreement_seen,
            agreement_sum=self.agreement_sum - earlier.agreement_sum,
        )


def reliability(evidence: Evidence) -> float:
    """The posterior mean accuracy, in (0, 1)."""
    successes, failures = evidence.posterior()
    return successes / (successes + failures)


def probability_below(evidence: Evidence, minimum: float) -> float:
    """P(accuracy < minimum) under the posterior."""
    successes, failures = evidence.posterior()
    return float(beta.cdf(minimum, successes, failures))


def should_suspend(evidence: Evidence, minimum: float) -> bool:
    """After probation, suspend when the worker is confidently below the minimum."""
    if minimum <= 0 or evidence.gold_seen < PROBATION_GOLD:
        return False
    return probability_below(evidence, minimum) >= SUSPEND_CONFIDENCE


# Voting presumes a newcomer is a typical worker (right 80% of the time, worth 5 answers of
# evidence) until their own evidence says otherwise; suspension presumes nothing.
VOTE_PRIOR_SUCCESSES = 4.0
VOTE_PRIOR_FAILURES = 1.0


def vote_weight(evidence: Evidence) -> float:
    """How far a worker's answer counts in consensus: their expected accuracy, in (0, 1)."""
    successes, failures = evidence.posterior()
    successes += VOTE_PRIOR_SUCCESSES - PRIOR_SUCCESSES
    failures += VOTE_PRIOR_FAILURES - PRIOR_FAILURES
    return successes / (successes + failures)
