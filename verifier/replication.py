"""Replication policy: how many replicas a task gets, what quorum decides it, and whether it is spot-checked.

The one copy of these rules: the marketplace's settle job (marketplace/jobs/verify.py) calls `plan` with a
`Standing` built from its records, and the simulation (verifier/simulation.py) calls the same `plan`. A
customer either fixes k and the quorum, or picks a trust level and lets the provider's record decide: a
provider trusted to run alone (and staked enough for the price) may do so, kept honest by spot checks (a
re-run elsewhere, decided after its reveal) and by canaries (known-answer tasks it cannot tell from real
work). Pure: randomness comes in as a uniform draw from the caller, so the same inputs always give the same
plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from hashgrid.errors import InvalidInput


class TrustLevel(StrEnum):
    """What a customer asks for instead of a fixed k (see docs/verification.md for what each buys)."""

    STANDARD = "standard"  # a solo-trusted, staked provider alone + spot checks; else a trusted partner
    HIGH = "high"  # always two agreeing replicas, the partner trusted
    PARANOID = "paranoid"  # three replicas that must all agree, partners trusted, whatever the records say


@dataclass(frozen=True)
class ReplicationPolicy:
    """Protocol-wide knobs (on chain in production, owned by the DAO; mirrored here for the pure logic).

    `spot_check_rate` (s): probability that a task run alone is re-run on another trusted provider.
    `canary_rate` (c): known-answer canary tasks posted per real task (they cost c runs per real task).
    `min_trusted_pool`: below this many providers trusted to check, the network is bootstrapping and every
    trust-level task runs as fixed k=3, q=2 on any providers (there is no trusted partner to lean on yet).
    `solo_stake_ratio`: a provider runs a task alone only if its slashable stake is at least this many times
    the task's max price per replica (docs/verification.md §3.1: a cheat must cost more than it gains).
    `extra_replicas`: how many replicas escalation may add above the plan's k.
    """

    spot_check_rate: float = 0.15
    canary_rate: float = 0.02
    min_trusted_pool: int = 10
    solo_stake_ratio: float = 8.0
    extra_replicas: int = 2
    bootstrap_k: int = 3
    bootstrap_quorum: int = 2

    def __post_init__(self) -> None:
        for name in ("spot_check_rate", "canary_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InvalidInput(f"{name} must be in [0, 1], got {value}", field=name, value=value)
        if self.extra_replicas < 0 or self.min_trusted_pool < 0 or self.solo_stake_ratio < 0:
            raise InvalidInput("extra_replicas, min_trusted_pool and solo_stake_ratio must be >= 0",
                               extra_replicas=self.extra_replicas, min_trusted_pool=self.min_trusted_pool,
                               solo_stake_ratio=self.solo_stake_ratio)


@dataclass(frozen=True)
class Standing:
    """Everything `plan` reads about a trust-level task and its primary provider (the live seam: the settle
    job fills every field from its records, `marketplace.jobs.verify.standing_of`).

    `primary_trusted`: the primary may check others (reputation `is_trusted`); `primary_solo`: it may run
    alone (`may_run_alone`); `slashable_stake`: what one slash takes from it; `price`: the task's max price
    per replica; `trusted_pool`: providers other than the primary trusted to check; `spot_draw`: a uniform
    draw in [0, 1) made *after* the primary revealed (so it cannot know whether a check follows).
    """

    trust_level: TrustLevel | str
    primary_trusted: bool = False
    primary_solo: bool = False
    slashable_stake: int = 0
    price: int = 0
    trusted_pool: int = 0
    spot_draw: float = 1.0


@dataclass(frozen=True)
class Plan:
    """What the matcher and verifier do for one task.

    `k` replicas run first (the primary plus k-1 others); `quorum` equal hashes accept; escalation may grow
    the set up to `max_replicas`. `partners_trusted`: the replicas other than the primary (and any escalation
    replicas) must be trusted providers. `spot_check`: after the reveal, re-run on another trusted provider
    and hold finalization until both agree (or escalation settles it). `bootstrap`: planned while the
    trusted pool is too small (partners from anyone).
    """

    k: int
    quorum: int
    max_replicas: int
    spot_check: bool
    partners_trusted: bool
    reason: str
    bootstrap: bool = False

    @property
    def extra_now(self) -> int:
        """Replicas to add once the primary revealed: the plan's partners, plus the spot check."""
        return self.k - 1 + int(self.spot_check)

    @property
    def required_quorum(self) -> int:
        """Equal hashes the verifier waits for: the plan's quorum, two when a spot check runs."""
        return max(self.quorum, 2) if self.spot_check else self.quorum


def fixed_plan(k: int, quorum: int, *, policy: ReplicationPolicy) -> Plan:
    """The customer fixed k and q: honour them exactly, replicas from any eligible provider."""
    if k < 1 or not 1 <= quorum <= k:
        raise InvalidInput(f"need 1 <= quorum <= k, got k={k}, quorum={quorum}", k=k, quorum=quorum)
    return Plan(k, quorum, k + policy.extra_replicas, spot_check=False, partners_trusted=False,
                reason=f"fixed k={k}, q={quorum}")


def trust_level(value: TrustLevel | str) -> TrustLevel:
    """A trust level by name; an unknown one is the caller's error."""
    try:
        return TrustLevel(value)
    except ValueError:
        raise InvalidInput(f"unknown trust level {value!r}", trust_level=value,
                           known=[t.value for t in TrustLevel]) from None


def may_run_alone(standing: Standing, *, policy: ReplicationPolicy) -> bool:
    """The stake-versus-price rule: alone only with a long record and a slash outweighing the pay."""
    return standing.primary_solo and standing.slashable_stake >= policy.solo_stake_ratio * standing.price


def plan(standing: Standing, *, policy: ReplicationPolicy) -> Plan:
    """Plan a trust-level task from its primary provider's standing (a fixed k/q: `fixed_plan`)."""
    level = trust_level(standing.trust_level)
    extra = policy.extra_replicas
    if standing.trusted_pool < policy.min_trusted_pool:
        bk, bq = policy.bootstrap_k, policy.bootstrap_quorum
        if level is TrustLevel.PARANOID:
            bq = bk
        return Plan(bk, bq, bk + extra, spot_check=False, partners_trusted=False, bootstrap=True,
                    reason=f"bootstrap: {standing.trusted_pool} trusted < {policy.min_trusted_pool}")
    if level is TrustLevel.STANDARD:
        if may_run_alone(standing, policy=policy):
            spot = standing.spot_draw < policy.spot_check_rate
            return Plan(1, 1, 1 + extra, spot_check=spot, partners_trusted=True,
                        reason="standard: solo-trusted, staked primary runs alone"
                        + (" (spot-checked)" if spot else ""))
        why = ("stake below the price rule" if standing.primary_solo
               else "primary not trusted to run alone")
        return Plan(2, 2, 2 + extra, spot_check=False, partners_trusted=True,
                    reason=f"standard: {why}: checked by a trusted partner")
    if level is TrustLevel.HIGH:
        return Plan(2, 2, 2 + extra, spot_check=False, partners_trusted=True,
                    reason="high: two agreeing replicas, partner trusted")
    return Plan(3, 3, 3 + extra, spot_check=False, partners_trusted=True,
                reason="paranoid: three trusted-partnered replicas, unanimous")
