"""Explorer queries: public, read-only views over what the chain indexer wrote (tasks, providers, chain
events, network stats). Until the indexer has run they return empty lists and zeros."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, func
from sqlmodel import Session, col, select

from hashgrid.errors import NotFound
from marketplace.indexer.verification import ProviderReputation
from marketplace.models import ChainEvent, IndexerCursor, Provider, Replica, Task, TaskStatus, utcnow

REWARD_EVENTS = ("ReplicaFinalized",)  # v2: a replica's payment is its `paid`
SLASH_EVENTS = ("Slashed",)


def list_tasks(
    *, session: Session, status: TaskStatus | None, offset: int, limit: int
) -> tuple[list[Task], int]:
    where: list[ColumnElement[bool]] = []
    if status in (TaskStatus.ASSIGNED, TaskStatus.RUNNING):  # one public state (services/visibility.py)
        where.append(col(Task.status).in_((TaskStatus.ASSIGNED, TaskStatus.RUNNING)))
    elif status is not None:
        where.append(col(Task.status) == status)
    count = session.exec(select(func.count()).select_from(Task).where(*where)).one()
    rows = session.exec(
        select(Task).where(*where).order_by(col(Task.task_id).desc()).offset(offset).limit(limit)
    )
    return list(rows), int(count)


def events(
    *,
    session: Session,
    task_id: int | None = None,
    account: str | None = None,
    names: tuple[str, ...] | None = None,
    limit: int = 1000,
) -> list[ChainEvent]:
    query = select(ChainEvent)
    if task_id is not None:
        query = query.where(col(ChainEvent.task_id) == task_id)
    if account is not None:
        query = query.where(col(ChainEvent.account) == account)
    if names:
        query = query.where(col(ChainEvent.name).in_(names))
    query = query.order_by(col(ChainEvent.block_number), col(ChainEvent.log_index)).limit(limit)
    return list(session.exec(query))


def task_history(*, session: Session, task_id: int) -> tuple[Task | None, list[Replica], list[ChainEvent]]:
    task = session.get(Task, task_id)
    history = events(session=session, task_id=task_id)
    if task is None and not history:
        raise NotFound(f"task {task_id} has not been seen on chain (or not indexed yet)", task_id=task_id)
    replicas = list(
        session.exec(select(Replica).where(col(Replica.task_id) == task_id).order_by(col(Replica.id)))
    )
    return task, replicas, history


def list_providers(*, session: Session, offset: int, limit: int) -> tuple[list[Provider], int]:
    count = session.exec(select(func.count()).select_from(Provider)).one()
    rows = session.exec(select(Provider).order_by(col(Provider.address)).offset(offset).limit(limit))
    return list(rows), int(count)


def _amount(event: ChainEvent) -> int:
    value = event.args.get("paid", event.args.get("amount", 0))
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def reputation_view(record: ProviderReputation | None) -> dict[str, Any]:
    """The verifier's record (from verified outcomes only), or the prior for a provider with none yet."""
    record = record or ProviderReputation(address="")
    return {"score": record.score, "trusted": record.trusted, "solo": record.solo, "streak": record.streak,
            "verified": record.verified, "dissents": record.dissents, "caught": record.caught,
            "no_shows": record.no_shows}


def provider_ledger(*, session: Session, address: str) -> dict[str, Any]:
    rewards = [e for e in events(session=session, account=address, names=REWARD_EVENTS) if _amount(e) > 0]
    slashes = events(session=session, account=address, names=SLASH_EVENTS)
    record = session.get(ProviderReputation, address)
    return {
        "reputation": reputation_view(record),
        "rewards": rewards,
        "slashes": slashes,
        "total_rewards": str(sum(map(_amount, rewards))),
        "total_slashed": str(sum(map(_amount, slashes))),
    }


def network_stats(*, session: Session, heartbeat_ttl_s: int, min_stake: int | None = None) -> dict[str, Any]:
    """Counts and capacity of the providers online: a fresh heartbeat and (when `min_stake` is known) a stake
    the matcher accepts; the stake is a decimal string column, so that part is filtered here, not in SQL."""
    since = utcnow() - timedelta(seconds=heartbeat_ttl_s)
    total = int(session.exec(select(func.count()).select_from(Provider)).one())
    live = [p for p in session.exec(select(Provider).where(col(Provider.last_heartbeat) >= since)).all()
            if min_stake is None or int(p.stake or 0) >= min_stake]
    row = (len(live), sum(p.total_cpus for p in live), sum(p.total_memory_mb for p in live),
           sum(p.gpus for p in live), sum(p.free_cpus for p in live), sum(p.free_memory_mb for p in live),
           sum(p.free_gpus for p in live))
    by_state = {status.value: 0 for status in TaskStatus}
    for status, count in session.exec(select(Task.status, func.count()).group_by(Task.status)):
        # `running` is a provider's report, not a public state (services/visibility.py)
        state = TaskStatus.ASSIGNED if status == TaskStatus.RUNNING else TaskStatus(status)
        by_state[state.value] += int(count)
    cursor = session.exec(select(func.max(IndexerCursor.block_number))).one()
    return {
        "providers_total": total,
        "providers_online": int(row[0]),
        "capacity": {"cpus": float(row[1]), "memory_mb": int(row[2]), "gpus": int(row[3])},
        "free": {"cpus": float(row[4]), "memory_mb": int(row[5]), "gpus": int(row[6])},
        "tasks_by_state": by_state,
        "events_indexed": int(session.exec(select(func.count()).select_from(ChainEvent)).one()),
        "indexed_block": int(cursor) if cursor is not None else None,
    }
