"""Who may see what, and when (docs/api.md, "Who may see what"): a replica's result hash, usage, outputs and
their sizes stay with its own provider until the task's commit phase has closed on chain, so nobody has
anything to copy into a commitment. The decision reads indexed chain events only: a lagging indexer hides
longer, never shorter, and nothing a provider reports can open it."""

from __future__ import annotations

from sqlmodel import Session, col, select

from marketplace.models import (
    ChainEvent,
    Replica,
    ReplicaPublic,
    ReplicaStatus,
    Task,
    TaskPublic,
    TaskStatus,
)

FINAL_TASK = frozenset({TaskStatus.SETTLED, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.EXPIRED})
# statuses only the chain indexer sets; the others (running, executed, refused) are the provider's own reports
CHAIN_REPLICA = frozenset({
    ReplicaStatus.ASSIGNED, ReplicaStatus.COMMITTED, ReplicaStatus.REVEALED, ReplicaStatus.AGREED,
    ReplicaStatus.DISSENTED, ReplicaStatus.NO_SHOW, ReplicaStatus.RELEASED,
})
# a replica in one of these has revealed or been finalized: its round's commit window is shut on chain
PAST_COMMIT = frozenset({
    ReplicaStatus.REVEALED, ReplicaStatus.AGREED, ReplicaStatus.DISSENTED, ReplicaStatus.NO_SHOW,
    ReplicaStatus.RELEASED,
})
FINAL_REPLICA = frozenset({
    ReplicaStatus.AGREED, ReplicaStatus.DISSENTED, ReplicaStatus.NO_SHOW, ReplicaStatus.RELEASED,
})


def commit_closed(*, task: Task, replicas: list[Replica]) -> bool:
    """Whether no replica of `task` can commit any more, judged from indexed chain events: the task is over,
    or in its current round every replica's commitment is indexed, or one of them has revealed (the escrow
    opens reveals only once the round's commits are all in or its commit deadline has passed).

    Not the clock: the marketplace's clock is not the chain's, and a deadline that passed without reveals
    leaves nothing worth showing early."""
    if task.status in FINAL_TASK:
        return True
    if not replicas:
        return False
    current = max(replica.round for replica in replicas)
    in_round = [replica for replica in replicas if replica.round == current]
    if any(replica.status in PAST_COMMIT for replica in in_round):
        return True
    return all(replica.commitment is not None for replica in in_round)


def replicas_of(*, session: Session, task_id: int) -> list[Replica]:
    return list(
        session.exec(select(Replica).where(col(Replica.task_id) == task_id).order_by(col(Replica.id)))
    )


def task_commit_closed(*, session: Session, task: Task) -> bool:
    return commit_closed(task=task, replicas=replicas_of(session=session, task_id=task.task_id))


def revealed_hashes(*, session: Session, task_id: int) -> dict[str, str]:
    """provider -> the result hash it revealed on chain (ResultRevealed events): what the public may see."""
    rows = session.exec(
        select(ChainEvent).where(col(ChainEvent.task_id) == task_id, col(ChainEvent.name) == "ResultRevealed")
    )
    return {str(e.args["provider"]).lower(): str(e.args["resultHash"]) for e in rows}


def public_replica(replica: Replica, *, revealed: dict[str, str]) -> ReplicaPublic:
    """A replica as the chain shows it: on-chain status only (the provider's own reports of running, executed
    or refused, and their timing, are not the public's), and the hash only once revealed on chain."""
    on_chain = replica.status in CHAIN_REPLICA and replica.status != ReplicaStatus.ASSIGNED
    return ReplicaPublic(
        provider=replica.provider,
        round=replica.round,
        status=replica.status if on_chain else ReplicaStatus.ASSIGNED,
        detail=None,
        result_hash=revealed.get(replica.provider.lower()),
        assigned_at=replica.assigned_at,
        updated_at=replica.updated_at if on_chain else replica.assigned_at,
    )


def customer_replica(replica: Replica, *, closed: bool, revealed: dict[str, str]) -> ReplicaPublic:
    """A replica as its task's customer sees it: everything once the commit phase has closed (hash, signed
    usage, output manifest); before, the reported states (it follows the logs anyway) but no hash other than
    one revealed on chain in an earlier round, no usage and no outputs."""
    out = ReplicaPublic.model_validate(replica, from_attributes=True)
    if not closed:
        out.result_hash = revealed.get(replica.provider.lower())
        out.usage, out.outputs = None, None
    return out


def public_task(task: Task) -> TaskPublic:
    """A task as the public sees it: `running` (a provider's report) shows as the on-chain `assigned`."""
    out = TaskPublic.model_validate(task, from_attributes=True)
    if out.status == TaskStatus.RUNNING:
        out.status = TaskStatus.ASSIGNED
    return out
