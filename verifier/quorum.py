"""Compare the revealed result hashes of a task's replicas and decide: accept, escalate or fail.

The same rule as `TaskEscrow.finalize` on chain (a tie for the most-revealed hash is no quorum), so the
verifier can predict what finalize will do and decide how many extra replicas to assign before calling it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from hashgrid.errors import InvalidInput


class Verdict(StrEnum):
    ACCEPTED = "accepted"
    ESCALATE = "escalate"
    FAILED = "failed"


@dataclass(frozen=True)
class Decision:
    """The outcome for one task.

    `agreeing`/`dissenting` are only filled when a hash is accepted (only then is anyone known to be wrong);
    `no_shows` always (they did not reveal, whatever else happened). `extra_replicas` is how many replicas to
    add so that the leading hash could reach the quorum (0 unless escalating).
    """

    verdict: Verdict
    accepted_hash: str | None
    agreeing: tuple[str, ...]
    dissenting: tuple[str, ...]
    no_shows: tuple[str, ...]
    votes: tuple[tuple[str, int], ...]
    extra_replicas: int
    reason: str


def decide(
    reveals: Mapping[str, str | None],
    *,
    quorum: int,
    max_replicas: int,
    deadline_allows: bool = True,
    room: int | None = None,
) -> Decision:
    """Decide a task from `reveals` (provider -> revealed hash, or None for a no-show).

    No-shows do not use up `max_replicas`: they ran nothing, are penalised and replaced, so room for
    escalation is `max_replicas` minus the replicas that revealed, unless `room` says otherwise (the chain
    counts every assigned replica, no-shows included). The extra needed is what the leading hash lacks to
    reach `quorum` (at least one to break a tie).
    """
    if quorum < 1:
        raise InvalidInput(f"quorum must be >= 1, got {quorum}", quorum=quorum)
    no_shows = tuple(sorted(p for p, h in reveals.items() if h is None))
    counts = Counter(h for h in reveals.values() if h is not None)
    votes = tuple(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    top = votes[0][1] if votes else 0
    tied = len(votes) > 1 and votes[1][1] == top
    if top >= quorum and not tied:
        winner = votes[0][0]
        agreeing = tuple(sorted(p for p, h in reveals.items() if h == winner))
        dissenting = tuple(sorted(p for p, h in reveals.items() if h is not None and h != winner))
        return Decision(Verdict.ACCEPTED, winner, agreeing, dissenting, no_shows, votes, 0,
                        f"{top} of {len(reveals)} replicas agree (quorum {quorum})")
    needed = max(quorum - top, 1 if tied else 0)
    if room is None:
        room = max_replicas - sum(counts.values())
    if needed <= room and deadline_allows:
        why = "tie" if tied else f"best hash has {top} of quorum {quorum}"
        return Decision(Verdict.ESCALATE, None, (), (), no_shows, votes, needed, f"{why}: add {needed}")
    why = "deadline passed" if not deadline_allows else f"needs {needed} more, room for {max(room, 0)}"
    return Decision(Verdict.FAILED, None, (), (), no_shows, votes, 0, f"no quorum: {why}")
