"""The Monte Carlo agrees with the closed forms of docs/verification.md within 4 standard errors; seeded runs
repeat exactly. Standard errors are batch means (reputation makes neighbouring tasks correlate). The adaptive
runs use a scaled-down network (50 providers, 500 clean outcomes to run alone) so that a run covers many
cheater lifetimes in seconds; the closed forms take the same parameters, and the shipped ones are checked
against the targets through those closed forms (bench.verification_sim simulates them at full size)."""

from __future__ import annotations

import math

import pytest

from verifier.analysis import adaptive_naive, adaptive_strategic, fixed_k, k3q2_wrong
from verifier.replication import ReplicationPolicy
from verifier.reputation import ReputationParams
from verifier.simulation import Population, SimConfig, SimResult, simulate

F = 0.10
POLICY = ReplicationPolicy()  # s = 0.15, c = 0.02: the documented parameters
REPUTATION = ReputationParams()  # trusted to check after 30 clean verified outcomes, to run alone after 5,000
SCALED = ReputationParams(solo_streak=500)


def close(sim: float, theory: float, se: float, *, floor: float = 0.0) -> bool:
    """Within 4 standard errors (`floor` guards an SE of ~0 when the rate is ~deterministic)."""
    return abs(sim - theory) <= 4 * max(se, floor)


def test_fixed_k3_q2_colluding_naive() -> None:
    res = simulate(SimConfig(tasks=60_000, warmup=0, seed=11, fixed=(3, 2),
                             population=Population(providers=2_000, naive=F)))
    theory = fixed_k(F, 3, 2)
    assert math.isclose(theory.p_wrong, k3q2_wrong(F))
    assert res.total.runs_per_accepted == 3.0 == pytest.approx(theory.runs_per_accepted)
    assert close(res.total.wrong_rate, theory.p_wrong, res.se("wrong_rate"))
    assert res.total.failed == 0


def test_fixed_k3_q2_independent_wrong_hashes_escalate() -> None:
    res = simulate(SimConfig(tasks=60_000, warmup=0, seed=12, fixed=(3, 2),
                             population=Population(providers=2_000, naive=F, colluding=False)))
    theory = fixed_k(F, 3, 2, max_replicas=5, colluding=False)
    assert res.total.wrong == 0 and theory.p_wrong == 0
    assert close(res.total.runs_per_accepted, theory.runs_per_accepted, res.se("runs_per_accepted"))
    assert close(res.total.fail_rate, theory.p_fail, res.se("fail_rate"), floor=1e-4)


def test_the_shipped_parameters_meet_the_targets_in_theory() -> None:
    s, c = POLICY.spot_check_rate, POLICY.canary_rate
    strategic = adaptive_strategic(F, s, c, 0.1, REPUTATION.trust_streak, REPUTATION.solo_streak)
    assert strategic.wrong_rate <= 1e-4 and strategic.runs_per_accepted <= 1.4
    assert adaptive_naive(F, s, c).runs_per_accepted <= 1.4
    one_bar = adaptive_strategic(F, s, c, 0.1, REPUTATION.trust_streak)  # running alone at the check bar
    assert one_bar.wrong_rate > 40e-4  # the figure the issue reported: what the second bar fixes


def test_adaptive_against_naive_cheaters() -> None:
    res = simulate(SimConfig(tasks=60_000, warmup=20_000, seed=13, policy=POLICY, reputation=SCALED,
                             population=Population(providers=50, naive=F)))
    theory = adaptive_naive(F, POLICY.spot_check_rate, POLICY.canary_rate)
    assert res.honest_trusted == 1.0
    assert res.total.wrong == 0 == theory.wrong_rate
    assert close(res.total.runs_per_accepted, theory.runs_per_accepted, res.se("runs_per_accepted"))
    assert res.total.runs_per_accepted <= 1.4


def strategic_run(seed: int) -> SimResult:
    return simulate(SimConfig(tasks=200_000, warmup=20_000, seed=seed, policy=POLICY, reputation=SCALED,
                              population=Population(providers=50, strategic=F, cheat_rate=0.1)))


def test_adaptive_against_strategic_cheaters() -> None:
    res = strategic_run(14)
    theory = adaptive_strategic(F, POLICY.spot_check_rate, POLICY.canary_rate, 0.1, SCALED.trust_streak,
                                SCALED.solo_streak)
    assert close(res.total.runs_per_accepted, theory.runs_per_accepted, res.se("runs_per_accepted"))
    assert close(res.total.wrong_rate, theory.wrong_rate, res.se("wrong_rate"))
    per_identity = res.wrong_per_identity
    mean = sum(per_identity) / len(per_identity)
    sd = math.sqrt(sum((x - mean) ** 2 for x in per_identity) / (len(per_identity) - 1))
    assert close(mean, theory.wrong_per_identity, sd / math.sqrt(len(per_identity)))
    caught = sum(res.caught.values())
    p_caught = caught / res.cheats
    assert close(p_caught, theory.p_caught_per_cheat, math.sqrt(p_caught * (1 - p_caught) / res.cheats))


def test_seeded_runs_repeat_exactly() -> None:
    cfg = SimConfig(tasks=5_000, warmup=2_000, seed=5, population=Population(providers=100, naive=0.05,
                                                                             strategic=0.05))
    a, b = simulate(cfg), simulate(cfg)
    assert (a.total, a.bootstrap, a.caught, a.cheats) == (b.total, b.bootstrap, b.caught, b.cheats)
    c = simulate(SimConfig(tasks=5_000, warmup=2_000, seed=6, population=cfg.population))
    assert (c.total.runs, c.caught) != (a.total.runs, a.caught)
