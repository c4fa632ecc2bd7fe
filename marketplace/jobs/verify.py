"""The verifier's step before settlement: for a task whose replicas all revealed (or whose windows closed),
decide accept, escalate or fail, with the checks adaptive replication adds (spot checks, partners, canaries).

A trust-level task runs its primary first; once it revealed, `standing_of` fills the replication policy's
view from the marketplace's records (the spec's trust level, the primary's reputation, its stake and the
escrow's slash rate, the task's price, the trusted pool, the spot-check draw) and `verifier.replication.plan`
decides, the one copy of the policy (the simulation runs the same function).

Escalation is a request for extra replicas: rows in `replica_replacement` named `escalation:<round>:<i>`,
which the matching round places like any replacement (distinct providers, within maxReplicas), so the task
opens a new commit/reveal round; the settle job waits while a request is open and the deadline still leaves
room for a round. A task accepted or failed goes on to billing and finalize, which slashes the dissenters
and no-shows on chain. Idempotent: the request rows are keyed by the round, a check is written once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

from eth_utils import keccak
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, func, select

from hashgrid.chain.contracts import Contracts
from hashgrid.chain.contracts import Task as ChainTask
from marketplace.indexer.tables import ReplicaReplacement
from marketplace.indexer.verification import ProviderReputation, TaskCheck
from marketplace.models import Provider, SpecRecord, Task, utcnow
from verifier.checks import Check, CheckKind, check_for, spot_draw, verify
from verifier.quorum import Decision, Verdict
from verifier.replication import Plan, ReplicationPolicy, Standing, plan

log = logging.getLogger(__name__)

ESCALATION = "escalation:"
ZERO = "0x" + "00" * 32


@dataclass(frozen=True)
class Round:
    """What one verifier pass needs from the chain and the settings, read once."""

    now: int
    windows: int  # commit + reveal window: the time an extra round needs before the deadline
    secret: bytes  # the spot-check draw's key
    slash_bps: int  # what a slash takes of a stake (the escrow's slashDissentBps)
    policy: ReplicationPolicy = field(default_factory=ReplicationPolicy)


def spot_secret(matcher_key: str) -> bytes:
    """A secret only the verifier holds, derived from its key (the draw must be unguessable by providers)."""
    return keccak(b"hashgrid spot-check secret" + bytes.fromhex(matcher_key.removeprefix("0x")))


def reveals_of(contracts: Contracts, task_id: int) -> dict[str, str | None]:
    """provider (lowercase) -> revealed hash as 0x hex, None for a replica that did not reveal."""
    out: dict[str, str | None] = {}
    for report in contracts.escrow.build_reports(task_id, {}, only_agreeing=False):
        value = "0x" + bytes(report.result_hash).hex()
        out[report.provider.lower()] = None if value == ZERO else value
    return out


def open_requests(session: Session, task_id: int) -> list[ReplicaReplacement]:
    return list(session.exec(select(ReplicaReplacement).where(
        col(ReplicaReplacement.task_id) == task_id, col(ReplicaReplacement.replaced_at).is_(None))))


def review(session: Session, contracts: Contracts, task_id: int, step: Round) -> Decision | None:
    """The verdict for a ready task, or None while extra replicas it asked for are still to be placed."""
    task = contracts.escrow.get_task(task_id)
    deadline_allows = step.now + step.windows < task.deadline
    pending = open_requests(session, task_id)
    if pending:
        if deadline_allows:
            return None
        for request in pending:  # no time for another round: the requests are moot
            request.replaced_at = utcnow()
            session.add(request)
    reveals = reveals_of(contracts, task_id)
    check, planned = _check(session, task, task_id, reveals, step)
    room = task.max_replicas - task.assigned
    decision = verify(reveals, quorum=task.quorum, room=room, deadline_allows=deadline_allows, check=check)
    if (planned is not None and decision.verdict is Verdict.ESCALATE
            and planned.extra_now > decision.extra_replicas):  # the plan runs more replicas than its quorum
        decision = replace(decision, extra_replicas=min(planned.extra_now, room), reason=planned.reason)
    if decision.verdict is Verdict.ESCALATE:
        added = request_replicas(session, task_id, round_=task.round, count=decision.extra_replicas)
        log.info("task %d: %s (%d request(s) new)", task_id, decision.reason, added)
    return decision


def _check(session: Session, task: ChainTask, task_id: int, reveals: dict[str, str | None],
           step: Round) -> tuple[Check | None, Plan | None]:
    """The task's recorded check; for a trust-level task whose primary just revealed, the policy's plan is
    made now (once) and its check recorded. Also the plan, when made in this pass."""
    row = session.get(TaskCheck, task_id)
    if row is None:
        revealed = [p for p, h in reveals.items() if h is not None]
        # in any round: a primary replaced after a no-show is planned like the first (else a sybil pair,
        # one taking the task and vanishing, could hand it to an untrusted partner to run unchecked)
        if task.replicas != 1 or task.max_replicas < 2 or len(revealed) != 1:
            return None, None
        standing = standing_of(session, task_id, revealed[0], step)
        if standing is None:
            return None, None
        planned = plan(standing, policy=step.policy)
        log.info("task %d: %s", task_id, planned.reason)
        check = check_for(planned)
        if check is None:
            return None, planned
        session.add(TaskCheck(task_id=task_id, kind=check.kind.value, quorum=check.quorum))
        session.flush()
        return check, planned
    kind = CheckKind(row.kind)
    return Check(kind, row.expected_hash if kind is CheckKind.CANARY else None, quorum=row.quorum or 2), None


def standing_of(session: Session, task_id: int, primary: str, step: Round) -> Standing | None:
    """The policy's view of a trust-level task and its primary, every field from a record: the trust level
    from the customer's spec, trust bars from the primary's reputation, the slashable stake from its indexed
    stake and the escrow's slash rate, the price from the task, the pool from the reputation table, the draw
    from the verifier's secret. None for a task with a fixed k (no `trust` in its spec)."""
    task = session.get(Task, task_id)
    record = session.get(SpecRecord, (task.spec_hash, task.customer)) if task is not None else None
    level = record.spec.get("trust") if record is not None else None
    if task is None or level is None:
        return None
    reputation = session.get(ProviderReputation, primary)
    provider = session.get(Provider, primary)
    stake = int(provider.stake or 0) if provider is not None else 0
    pool = session.exec(select(func.count()).select_from(ProviderReputation).where(
        col(ProviderReputation.trusted), col(ProviderReputation.address) != primary)).one()
    return Standing(
        trust_level=str(level),
        primary_trusted=bool(reputation and reputation.trusted),
        primary_solo=bool(reputation and reputation.solo),
        slashable_stake=stake * step.slash_bps // 10_000,
        price=int(task.max_price_per_replica),
        trusted_pool=int(pool),
        spot_draw=spot_draw(step.secret, task_id),
    )


def request_replicas(session: Session, task_id: int, *, round_: int, count: int) -> int:
    """Ask the matcher for `count` extra replicas for the task's next round; a repeat adds nothing."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    added = 0
    for i in range(count):
        statement = insert(ReplicaReplacement).values(  # type: ignore[operator]
            task_id=task_id, provider=f"{ESCALATION}{round_}:{i}", detected_at=utcnow()
        ).on_conflict_do_nothing(index_elements=["task_id", "provider"]).returning(
            col(ReplicaReplacement.task_id))
        added += int(session.execute(statement).first() is not None)
    return added
