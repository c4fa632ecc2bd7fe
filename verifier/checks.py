"""What the verifier asks of a task beyond the customer's quorum: spot checks, partners, canaries' answers.

A task that a trusted provider ran alone is re-run elsewhere with probability s (a spot check); one that an
untrusted provider ran alone needs a partner who agrees; a canary (a known-answer task the protocol posted)
is accepted only when the known answer leads. All three reduce to "add replicas until the rule holds", which
is escalation, so the chain settles them with the ordinary finalize: whoever dissents from the accepted hash
is slashed there. Pure: the spot-check draw is an HMAC of the task id under the verifier's secret, made
after the reveal, so a provider cannot know in advance whether its run will be checked.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from verifier.quorum import Decision, Verdict, decide
from verifier.replication import Plan
from verifier.reputation import Outcome


class CheckKind(StrEnum):
    SPOT = "spot_check"  # a solo primary's run re-run elsewhere
    PARTNER = "partner"  # the plan's trusted partners (probation, stake below the price rule, high, paranoid)
    BOOTSTRAP = "bootstrap"  # the plan's partners from anyone, while too few providers are trusted
    CANARY = "canary"  # a known-answer task posted by the protocol


@dataclass(frozen=True)
class Check:
    """The verifier's extra requirement on one task: `quorum` equal hashes; `expected_hash` is a canary's
    known answer."""

    kind: CheckKind
    expected_hash: str | None = None
    quorum: int = 2

    def __post_init__(self) -> None:
        if (self.kind is CheckKind.CANARY) != (self.expected_hash is not None):
            raise ValueError("a canary, and only a canary, carries its expected hash")


def spot_draw(secret: bytes, task_id: int) -> float:
    """A uniform draw in [0, 1) that only the verifier can compute, fixed per task (retries agree)."""
    digest = hmac.new(secret, f"spot-check:{task_id}".encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def check_for(plan: Plan) -> Check | None:
    """The check that carries out a trust-level plan once its primary revealed: a spot check, the plan's
    partners (trusted ones, or anyone's during the bootstrap) with its quorum, or none for a run alone."""
    if plan.spot_check:
        return Check(CheckKind.SPOT, quorum=plan.required_quorum)
    if plan.k == 1:
        return None
    return Check(CheckKind.BOOTSTRAP if plan.bootstrap else CheckKind.PARTNER, quorum=plan.quorum)


def verify(reveals: Mapping[str, str | None], *, quorum: int, room: int, deadline_allows: bool,
           check: Check | None = None) -> Decision:
    """Accept, escalate or fail a task whose replicas have all revealed (or whose windows closed).

    Without a check this is the customer's quorum rule (`quorum.decide`). A spot check or the plan's
    partners need the check's quorum of agreeing hashes. A canary needs its known answer to lead strictly
    (and reach the quorum): until it does, the verifier adds replicas, so that the honest majority, not the
    cheater, is what finalize accepts.
    """
    if check is None:
        return decide(reveals, quorum=quorum, max_replicas=0, room=room, deadline_allows=deadline_allows)
    if check.kind is not CheckKind.CANARY:
        return decide(reveals, quorum=max(quorum, check.quorum), max_replicas=0, room=room,
                      deadline_allows=deadline_allows)
    expected = check.expected_hash
    counts = Counter(h for h in reveals.values() if h is not None)
    known = counts.get(expected, 0) if expected is not None else 0
    rival = max((n for h, n in counts.items() if h != expected), default=0)
    if known > rival and known >= quorum:
        return decide(reveals, quorum=quorum, max_replicas=0, room=room, deadline_allows=deadline_allows)
    needed = max(rival - known + 1, quorum - known, 1)
    base = decide(reveals, quorum=quorum, max_replicas=0, room=room, deadline_allows=deadline_allows)
    if needed <= room and deadline_allows:
        return Decision(Verdict.ESCALATE, None, (), (), base.no_shows, base.votes, needed,
                        f"canary: the known answer has {known} vote(s) against {rival}: add {needed}")
    # out of room or time: finalize as the chain will; the reputation still records who got it wrong
    return base


_CHECKED = {
    ("agreed", CheckKind.SPOT): Outcome.SPOT_PASS, ("dissented", CheckKind.SPOT): Outcome.SPOT_FAIL,
    ("agreed", CheckKind.CANARY): Outcome.CANARY_PASS, ("dissented", CheckKind.CANARY): Outcome.CANARY_FAIL,
}
_PLAIN = {"agreed": Outcome.AGREED, "dissented": Outcome.DISSENTED, "no_show": Outcome.NO_SHOW}


def outcome_of(status: str, kind: CheckKind | str | None) -> Outcome | None:
    """A finalized replica's outcome for the reputation record: agreeing or dissenting on a spot-checked
    task or a canary counts as passing or failing that check; a released replica (never ran) says nothing."""
    if kind:
        checked = _CHECKED.get((status, CheckKind(kind)))
        if checked is not None:
            return checked
    return _PLAIN.get(status)
