"""Reputation: verified outcomes only, decayed Beta score, streak-based trust, wipe and slash if convicted."""

from __future__ import annotations

import pytest

from hashgrid.errors import InvalidInput
from verifier.reputation import (
    Outcome,
    ProviderRecord,
    ReputationParams,
    is_trusted,
    may_run_alone,
    score,
    slash_settled,
    update,
)

PARAMS = ReputationParams(prior_good=1, prior_bad=1, decay=1.0, trust_streak=5, min_score=0.8)


def run(outcomes: list[Outcome], params: ReputationParams = PARAMS) -> ProviderRecord:
    rec = ProviderRecord()
    for outcome in outcomes:
        rec = update(rec, outcome, params)
    return rec


def test_fresh_record_scores_the_prior_mean_and_is_not_trusted() -> None:
    assert score(ProviderRecord(), PARAMS) == 0.5
    assert not is_trusted(ProviderRecord(), PARAMS)


def test_clean_streak_earns_trust_with_beta_mean_score() -> None:
    rec = run([Outcome.AGREED, Outcome.CANARY_PASS, Outcome.SPOT_PASS, Outcome.AGREED])
    assert not is_trusted(rec, PARAMS)
    rec = update(rec, Outcome.AGREED, PARAMS)
    assert rec.streak == 5
    assert score(rec, PARAMS) == 6 / 7
    assert is_trusted(rec, PARAMS)


def test_dissent_breaks_the_streak_but_keeps_history_and_owes_no_verifier_slash() -> None:
    rec = run([Outcome.AGREED] * 6 + [Outcome.DISSENTED])
    assert rec.streak == 0 and rec.dissents == 1 and rec.verified == 7
    assert not is_trusted(rec, PARAMS)
    assert not rec.slash_pending  # finalize slashes dissenters on chain
    assert score(rec, PARAMS) == 7 / 9


def test_canary_or_spot_fail_wipes_the_record_and_flags_a_slash() -> None:
    for failure in (Outcome.CANARY_FAIL, Outcome.SPOT_FAIL):
        rec = run([Outcome.AGREED] * 20 + [failure])
        assert rec.slash_pending and rec.caught == 1
        assert (rec.good, rec.bad, rec.streak, rec.verified) == (0, 0, 0, 0)
        assert not is_trusted(rec, PARAMS)
        assert not slash_settled(rec).slash_pending


def test_no_shows_wear_the_score_down_until_trust_is_lost() -> None:
    rec = run([Outcome.AGREED] * 5)
    assert is_trusted(rec, PARAMS)
    rec = run([Outcome.AGREED] * 5 + [Outcome.NO_SHOW, Outcome.TIMEOUT, Outcome.NO_SHOW])
    assert rec.streak == 5
    assert score(rec, PARAMS) == 6 / 8.5
    assert not is_trusted(rec, PARAMS)


def test_decay_lets_old_failures_fade() -> None:
    params = ReputationParams(decay=0.9, trust_streak=1, min_score=0.9)
    rec = run([Outcome.NO_SHOW] * 4, params)
    low = score(rec, params)
    rec = run([Outcome.NO_SHOW] * 4 + [Outcome.AGREED] * 40, params)
    assert score(rec, params) > low
    assert rec.bad < 0.1
    assert is_trusted(rec, params)


def test_outcome_strings_are_accepted() -> None:
    assert update(ProviderRecord(), "agreed", PARAMS).streak == 1


def test_running_alone_needs_the_longer_solo_streak() -> None:
    params = ReputationParams(prior_good=1, prior_bad=1, decay=1.0, trust_streak=5, solo_streak=8,
                              min_score=0.8)
    five = run([Outcome.AGREED] * 5, params)
    assert is_trusted(five, params) and not may_run_alone(five, params)
    eight = run([Outcome.AGREED] * 8, params)
    assert may_run_alone(eight, params)
    assert not may_run_alone(update(eight, Outcome.DISSENTED, params), params)  # back to probation


def test_the_solo_streak_is_at_least_the_trust_streak() -> None:
    with pytest.raises(InvalidInput):
        ReputationParams(trust_streak=30, solo_streak=29)
