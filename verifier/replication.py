"""Replication policy: how many replicas a task gets, what quorum decides it, and whether it is spot-checked.

A customer either fixes k and the quorum, or picks a trust level and lets the provider's record decide: a
trusted provider may run a task alone, kept honest by spot checks (a re-run elsewhere, decided after its
reveal) and by canaries (known-answer tasks it cannot tell from real work). Pure: randomness comes in as a
uniform draw from the caller, so the same inputs always give the same plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from hashgrid.errors import InvalidInput


class TrustLevel(StrEnum):
    """What a customer asks for instead of a fixed k (see docs/verification.md for what each buys)."""

    STANDARD = "standard"  # trusted provider alone + spot checks; untrusted checked by a trusted partner
    HIGH = "high"  # always two agreeing replicas, at least one of them trusted
    PARANOID = "paranoid"  # three replicas that must all agree, whatever the records say


@dataclass(frozen=True)
class ReplicationPolicy:
    """Protocol-wide knobs (on chain in production, owned by the DAO; mirrored here for the pure logic).

    `spot_check_rate` (s): probability that a task run alone is re-run on another trusted provider.
    `canary_rate` (c): known-answer canary tasks posted per real task (they cost c runs per real task).
    `min_trusted_pool`: below this many trusted providers the network is bootstrapping and every trust-level
    task runs as fixed k=3, q=2 on any providers (there is no trusted partner to lean on yet).
    `extra_replicas`: how many replicas escalation may add above the plan's k.
    """

    spot_check_rate: float = 0.15
    canary_rate: float = 0.02
    min_trusted_pool: int = 10
    extra_replicas: int = 2
    bootstrap_k: int = 3
    bootstrap_quorum: int = 2

    def __post_init__(self) -> None:
        for name in ("spot_check_rate", "canary_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InvalidInput(f"{name} must be in [0, 1], got {value}", field=name, value=value)
        if self.extra_replicas < 0 or self.min_trusted_pool < 0:
            raise InvalidInput("extra_replicas and min_trusted_pool must be >= 0",
                               extra_replicas=self.extra_replicas, min_trusted_pool=self.min_trusted_pool)


@dataclass(frozen=True)
class Plan:
    """What the matcher and verifier do for one task.

    `k` replicas run first (the primary plus k-1 others); `quorum` equal hashes accept; escalation may grow
    the set up to `max_replicas`. `partners_trusted`: the replicas other than the primary (and any escalation
    replicas) must be trusted providers. `spot_check`: after the reveal, re-run on another trusted provider
    and hold finalization until both agree (or escalation settles it).
    """

    k: int
    quorum: int
    max_replicas: int
    spot_check: bool
    partners_trusted: bool
    reason: str


def fixed_plan(k: int, quorum: int, *, policy: ReplicationPolicy) -> Plan:
    """The customer fixed k and q: honour them exactly, replicas from any eligible provider."""
    if k < 1 or not 1 <= quorum <= k:
        raise InvalidInput(f"need 1 <= quorum <= k, got k={k}, quorum={quorum}", k=k, quorum=quorum)
    return Plan(k, quorum, k + policy.extra_replicas, spot_check=False, partners_trusted=False,
                reason=f"fixed k={k}, q={quorum}")


def plan(
    *,
    policy: ReplicationPolicy,
    trust_level: TrustLevel | str | None = None,
    k: int | None = None,
    quorum: int | None = None,
    primary_trusted: bool = False,
    trusted_pool: int = 0,
    spot_draw: float = 1.0,
) -> Plan:
    """Plan a task from either a fixed (k, quorum) or a trust level plus the primary provider's standing.

    `trusted_pool` counts trusted providers other than the primary; `spot_draw` is a uniform draw in [0, 1)
    made by the caller *after* the primary revealed (so the primary cannot know whether a check follows).
    """
    if k is not None or quorum is not None:
        if trust_level is not None:
            raise InvalidInput("give either a trust level or a fixed k/quorum, not both",
                               trust_level=trust_level)
        if k is None:
            raise InvalidInput("a fixed quorum needs a fixed k", quorum=quorum)
        return fixed_plan(k, quorum if quorum is not None else k // 2 + 1, policy=policy)
    if trust_level is None:
        raise InvalidInput("give a trust level or a fixed k")
    try:
        level = TrustLevel(trust_level)
    except ValueError:
        raise InvalidInput(f"unknown trust level {trust_level!r}", trust_level=trust_level,
                           known=[t.value for t in TrustLevel]) from None
    extra = policy.extra_replicas
    if trusted_pool < policy.min_trusted_pool:
        bk, bq = policy.bootstrap_k, policy.bootstrap_quorum
        if level is TrustLevel.PARANOID:
            bq = bk
        return Plan(bk, bq, bk + extra, spot_check=False, partners_trusted=False,
                    reason=f"bootstrap: {trusted_pool} trusted < {policy.min_trusted_pool}")
    if level is TrustLevel.STANDARD:
        if primary_trusted:
            return Plan(1, 1, 1 + extra, spot_check=spot_draw < policy.spot_check_rate, partners_trusted=True,
                        reason="standard: trusted primary runs alone")
        return Plan(2, 2, 2 + extra, spot_check=False, partners_trusted=True,
                    reason="standard: untrusted primary checked by a trusted partner")
    if level is TrustLevel.HIGH:
        return Plan(2, 2, 2 + extra, spot_check=False, partners_trusted=True,
                    reason="high: two agreeing replicas, partner trusted")
    return Plan(3, 3, 3 + extra, spot_check=False, partners_trusted=True,
                reason="paranoid: three trusted-partnered replicas, unanimous")
