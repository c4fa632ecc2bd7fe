"""Plans: fixed k/q honoured; trust levels adapt to the primary's standing (two trust bars, the
stake-versus-price rule); bootstrap and spot draws."""

from __future__ import annotations

import pytest

from hashgrid.errors import InvalidInput
from verifier.replication import ReplicationPolicy, Standing, TrustLevel, fixed_plan, plan

POLICY = ReplicationPolicy(spot_check_rate=0.15, canary_rate=0.02, min_trusted_pool=10, extra_replicas=2,
                           solo_stake_ratio=8)
SOLO = Standing("standard", primary_trusted=True, primary_solo=True, slashable_stake=800, price=100,
                trusted_pool=50, spot_draw=0.5)


def with_(**changes: object) -> Standing:
    values = {**SOLO.__dict__, **changes}
    return Standing(**values)  # type: ignore[arg-type]


def test_fixed_k_and_quorum_are_honoured() -> None:
    p = fixed_plan(3, 2, policy=POLICY)
    assert (p.k, p.quorum, p.max_replicas, p.spot_check, p.partners_trusted) == (3, 2, 5, False, False)
    assert p.extra_now == 2 and p.required_quorum == 2


@pytest.mark.parametrize(("k", "quorum"), [(0, 1), (3, 4), (2, 0)])
def test_bad_fixed_plans_are_rejected(k: int, quorum: int) -> None:
    with pytest.raises(InvalidInput):
        fixed_plan(k, quorum, policy=POLICY)


def test_an_unknown_trust_level_is_rejected() -> None:
    with pytest.raises(InvalidInput):
        plan(with_(trust_level="reckless"), policy=POLICY)


def test_a_solo_trusted_staked_primary_runs_alone_and_the_draw_decides_the_spot_check() -> None:
    alone = plan(SOLO, policy=POLICY)
    assert (alone.k, alone.quorum, alone.spot_check, alone.extra_now, alone.required_quorum) == (1, 1, False,
                                                                                                 0, 1)
    checked = plan(with_(spot_draw=0.1), policy=POLICY)
    assert checked.spot_check and checked.partners_trusted
    assert (checked.extra_now, checked.required_quorum) == (1, 2)


def test_trusted_to_check_is_not_trusted_to_run_alone() -> None:
    p = plan(with_(primary_solo=False), policy=POLICY)
    assert (p.k, p.quorum, p.spot_check, p.partners_trusted) == (2, 2, False, True)
    assert "not trusted to run alone" in p.reason


def test_stake_below_the_price_rule_gets_a_partner_even_when_solo() -> None:
    short = plan(with_(slashable_stake=799), policy=POLICY)
    assert (short.k, short.quorum, short.partners_trusted) == (2, 2, True) and "stake" in short.reason
    assert plan(with_(slashable_stake=10**9, price=0), policy=POLICY).k == 1
    assert plan(with_(slashable_stake=0, price=1), policy=POLICY).k == 2


def test_standard_untrusted_primary_gets_a_trusted_partner() -> None:
    p = plan(with_(primary_trusted=False, primary_solo=False, spot_draw=0.0), policy=POLICY)
    assert (p.k, p.quorum, p.max_replicas, p.spot_check, p.partners_trusted) == (2, 2, 4, False, True)


def test_high_and_paranoid_ignore_the_record() -> None:
    for solo in (True, False):
        high = plan(with_(trust_level=TrustLevel.HIGH, primary_solo=solo), policy=POLICY)
        assert (high.k, high.quorum, high.extra_now) == (2, 2, 1)
        paranoid = plan(with_(trust_level="paranoid", primary_solo=solo), policy=POLICY)
        assert (paranoid.k, paranoid.quorum, paranoid.extra_now, paranoid.required_quorum) == (3, 3, 2, 3)


def test_bootstrap_without_a_trusted_pool_uses_fixed_three_two_on_anyone() -> None:
    p = plan(with_(trusted_pool=9, spot_draw=0.0), policy=POLICY)
    assert (p.k, p.quorum, p.partners_trusted, p.spot_check, p.bootstrap) == (3, 2, False, False, True)
    assert "bootstrap" in p.reason
    assert plan(with_(trusted_pool=9, trust_level="paranoid"), policy=POLICY).quorum == 3
    assert not plan(with_(trusted_pool=10), policy=POLICY).bootstrap


def test_policy_rates_are_validated() -> None:
    with pytest.raises(InvalidInput):
        ReplicationPolicy(spot_check_rate=1.5)
    with pytest.raises(InvalidInput):
        ReplicationPolicy(canary_rate=-0.1)
    with pytest.raises(InvalidInput):
        ReplicationPolicy(solo_stake_ratio=-1)
