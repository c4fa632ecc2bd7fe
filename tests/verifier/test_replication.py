"""Plans: fixed k/q honoured; trust levels adapt to the primary's standing; bootstrap and spot draws."""

from __future__ import annotations

import pytest

from hashgrid.errors import InvalidInput
from verifier.replication import ReplicationPolicy, TrustLevel, plan

POLICY = ReplicationPolicy(spot_check_rate=0.15, canary_rate=0.02, min_trusted_pool=10, extra_replicas=2)


def test_fixed_k_and_quorum_are_honoured() -> None:
    p = plan(policy=POLICY, k=3, quorum=2)
    assert (p.k, p.quorum, p.max_replicas, p.spot_check, p.partners_trusted) == (3, 2, 5, False, False)


def test_fixed_k_defaults_to_a_majority() -> None:
    assert plan(policy=POLICY, k=5).quorum == 3


@pytest.mark.parametrize(("k", "quorum"), [(0, 1), (3, 4), (2, 0)])
def test_bad_fixed_plans_are_rejected(k: int, quorum: int) -> None:
    with pytest.raises(InvalidInput):
        plan(policy=POLICY, k=k, quorum=quorum)


def test_trust_level_and_fixed_k_are_exclusive_and_one_is_required() -> None:
    with pytest.raises(InvalidInput):
        plan(policy=POLICY, trust_level="standard", k=3)
    with pytest.raises(InvalidInput):
        plan(policy=POLICY)
    with pytest.raises(InvalidInput):
        plan(policy=POLICY, trust_level="reckless", trusted_pool=100)


def test_standard_trusted_primary_runs_alone_and_the_draw_decides_the_spot_check() -> None:
    alone = plan(policy=POLICY, trust_level=TrustLevel.STANDARD, primary_trusted=True, trusted_pool=50,
                 spot_draw=0.5)
    assert (alone.k, alone.quorum, alone.spot_check) == (1, 1, False)
    checked = plan(policy=POLICY, trust_level="standard", primary_trusted=True, trusted_pool=50,
                   spot_draw=0.1)
    assert checked.spot_check and checked.partners_trusted


def test_standard_untrusted_primary_gets_a_trusted_partner() -> None:
    p = plan(policy=POLICY, trust_level="standard", primary_trusted=False, trusted_pool=50, spot_draw=0.0)
    assert (p.k, p.quorum, p.max_replicas, p.spot_check, p.partners_trusted) == (2, 2, 4, False, True)


def test_high_and_paranoid_ignore_the_record() -> None:
    for trusted in (True, False):
        high = plan(policy=POLICY, trust_level="high", primary_trusted=trusted, trusted_pool=50)
        assert (high.k, high.quorum) == (2, 2)
        paranoid = plan(policy=POLICY, trust_level="paranoid", primary_trusted=trusted, trusted_pool=50)
        assert (paranoid.k, paranoid.quorum) == (3, 3)


def test_bootstrap_without_a_trusted_pool_uses_fixed_three_two() -> None:
    p = plan(policy=POLICY, trust_level="standard", primary_trusted=True, trusted_pool=9, spot_draw=0.0)
    assert (p.k, p.quorum, p.partners_trusted, p.spot_check) == (3, 2, False, False)
    assert "bootstrap" in p.reason


def test_policy_rates_are_validated() -> None:
    with pytest.raises(InvalidInput):
        ReplicationPolicy(spot_check_rate=1.5)
    with pytest.raises(InvalidInput):
        ReplicationPolicy(canary_rate=-0.1)
