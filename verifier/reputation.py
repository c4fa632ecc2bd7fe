"""Per-provider reputation from verified outcomes only, and the two trust bars adaptive replication uses.

A run nobody checked says nothing, so only outcomes a quorum, a spot check or a canary established count. The
score is the mean of a Beta posterior whose counts decay (old behaviour fades); trust also needs an unbroken
streak of clean verified outcomes, so one dissent sends a provider back to probation. Two bars: `trusted`
(a short streak) may check others, where its answer always sits next to another one; `solo` (a long streak)
may run a task alone, where nobody sees its answer unless a spot check follows. A cheater caught by a canary
or a spot check loses its whole record and is flagged for slashing.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from hashgrid.errors import InvalidInput


class Outcome(StrEnum):
    AGREED = "agreed"
    DISSENTED = "dissented"
    NO_SHOW = "no_show"
    TIMEOUT = "timeout"
    CANARY_PASS = "canary_pass"
    CANARY_FAIL = "canary_fail"
    SPOT_PASS = "spot_pass"
    SPOT_FAIL = "spot_fail"


CLEAN = frozenset({Outcome.AGREED, Outcome.CANARY_PASS, Outcome.SPOT_PASS})
CAUGHT = frozenset({Outcome.CANARY_FAIL, Outcome.SPOT_FAIL})
UNRELIABLE = frozenset({Outcome.NO_SHOW, Outcome.TIMEOUT})


@dataclass(frozen=True)
class ReputationParams:
    """`prior_good`/`prior_bad`: Beta prior pseudo-counts; `decay`: factor applied to the counts at each
    outcome (0.995 = a half-life of ~140 outcomes); `trust_streak`: clean verified outcomes in a
    row needed to be trusted to check others (partner, spot check, escalation); `solo_streak`: clean verified
    outcomes in a row needed to run a task alone (docs/verification.md §3 derives it from the strategic
    cheater's figures); `min_score`: the score a trusted provider must also keep (no-shows and timeouts
    lower it);
    `unreliable_weight`: how much a no-show or timeout counts against the score (it is not a wrong result).
    """

    prior_good: float = 1.0
    prior_bad: float = 1.0
    decay: float = 0.995
    trust_streak: int = 30
    solo_streak: int = 5_000
    min_score: float = 0.9
    unreliable_weight: float = 0.5

    def __post_init__(self) -> None:
        if (self.prior_good <= 0 or self.prior_bad <= 0 or not 0 < self.decay <= 1 or self.trust_streak < 1
                or self.solo_streak < self.trust_streak):
            raise InvalidInput("priors must be > 0, decay in (0, 1], 1 <= trust_streak <= solo_streak",
                               prior_good=self.prior_good, prior_bad=self.prior_bad, decay=self.decay,
                               trust_streak=self.trust_streak, solo_streak=self.solo_streak)


@dataclass(frozen=True)
class ProviderRecord:
    """What the verifier knows of one provider. `good`/`bad` are decayed counts; `streak` counts clean
    verified outcomes since the last dissent; `slash_pending`: a canary or spot check convicted it and
    the verifier still owes the chain a slash request."""

    good: float = 0.0
    bad: float = 0.0
    streak: int = 0
    verified: int = 0
    dissents: int = 0
    caught: int = 0
    slash_pending: bool = False


def score(record: ProviderRecord, params: ReputationParams = ReputationParams()) -> float:
    """Posterior mean of the probability that the provider's next verified outcome is clean, in (0, 1)."""
    good = params.prior_good + record.good
    return good / (good + params.prior_bad + record.bad)


def is_trusted(record: ProviderRecord, params: ReputationParams = ReputationParams()) -> bool:
    """Enough clean history in a row (no dissent since) and a score that no-shows have not worn down."""
    return record.streak >= params.trust_streak and score(record, params) >= params.min_score


def may_run_alone(record: ProviderRecord, params: ReputationParams = ReputationParams()) -> bool:
    """Trusted, and the clean streak is long enough to run a task with nobody else's answer beside it."""
    return is_trusted(record, params) and record.streak >= params.solo_streak


def update(record: ProviderRecord, outcome: Outcome | str,
           params: ReputationParams = ReputationParams()) -> ProviderRecord:
    """The record after one verified outcome.

    Clean outcomes extend the streak; a dissent (outvoted in a quorum) breaks it but keeps the history, since
    an honest provider can be outvoted by colluders (`finalize` slashes dissenters on chain, so nothing is
    owed here); a failed canary or spot check wipes the record (a known answer or a trusted re-run
    convicted it) and owes a slash that the verifier itself must request.
    """
    if not isinstance(outcome, Outcome):
        outcome = Outcome(outcome)
    if outcome in CAUGHT:
        return ProviderRecord(caught=record.caught + 1, slash_pending=True)
    d = params.decay
    good, bad = record.good * d, record.bad * d
    if outcome in CLEAN:
        return ProviderRecord(good + 1.0, bad, record.streak + 1, record.verified + 1, record.dissents,
                              record.caught, record.slash_pending)
    if outcome is Outcome.DISSENTED:
        return ProviderRecord(good, bad + 1.0, 0, record.verified + 1, record.dissents + 1, record.caught,
                              record.slash_pending)
    return ProviderRecord(good, bad + params.unreliable_weight, record.streak, record.verified,
                          record.dissents, record.caught, record.slash_pending)


def slash_settled(record: ProviderRecord) -> ProviderRecord:
    """The record once the owed slash has landed on chain."""
    return ProviderRecord(record.good, record.bad, record.streak, record.verified, record.dissents,
                          record.caught, False)
