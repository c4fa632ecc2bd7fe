"""Chain events to tables: store each event once (ChainEvent, unique by (tx_hash, log_index)) and apply it.

Only an event that was newly inserted is applied, and every application either sets values taken from the
event or recomputes a figure from the stored ChainEvent rows, so re-running a block range changes nothing and
a rewind (delete events, re-project the affected tasks) gives the same rows as indexing once.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete, func
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, select

from marketplace.indexer.events import DecodedEvent
from marketplace.indexer.tables import ProviderTotals
from marketplace.indexer.verification import refresh_reputation
from marketplace.models import (
    ChainEvent,
    Provider,
    Replica,
    ReplicaStatus,
    SpecRecord,
    Task,
    TaskStatus,
    utcnow,
)

log = logging.getLogger(__name__)

# ITaskEscrow.ReplicaState values of ReplicaFinalized.outcome
OUTCOMES: dict[int, ReplicaStatus] = {
    4: ReplicaStatus.AGREED,
    5: ReplicaStatus.DISSENTED,
    6: ReplicaStatus.NO_SHOW,
    7: ReplicaStatus.RELEASED,
}
TERMINAL_TASK = {TaskStatus.SETTLED, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.EXPIRED}
FINAL_REPLICA = set(OUTCOMES.values())
# statuses only the provider reports through the API (the chain never shows them)
OFFCHAIN_REPLICA = {ReplicaStatus.RUNNING, ReplicaStatus.EXECUTED, ReplicaStatus.REFUSED}
TASK_CLOSERS = {
    "TaskSettled": TaskStatus.SETTLED,
    "TaskFailed": TaskStatus.FAILED,
    "TaskExpired": TaskStatus.EXPIRED,
    "TaskCancelled": TaskStatus.CANCELLED,
}
STAKE_EVENTS = {"Staked", "UnstakeRequested", "Withdrawn", "Slashed"}


def store_event(session: Session, event: DecodedEvent) -> bool:
    """Insert the event unless (tx_hash, log_index) is already stored; True when it was new.

    INSERT ... ON CONFLICT DO NOTHING is atomic on both backends, so two processes (the indexer and a matcher
    applying its own receipt) can race on one event and exactly one applies it.
    """
    values = {
        "block_number": event.block_number,
        "block_hash": event.block_hash,
        "tx_hash": event.tx_hash,
        "log_index": event.log_index,
        "contract": event.contract,
        "name": event.name,
        "task_id": event.task_id,
        "account": event.account,
        "args": event.args,
    }
    statement = _insert_event(session.get_bind().dialect.name)
    return session.execute(statement, values).first() is not None  # (rowcount is not reliable everywhere)


@functools.cache
def _insert_event(dialect: str) -> Any:
    """The event INSERT, built once per dialect: building it per event cost more than executing it."""
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    return insert(ChainEvent).on_conflict_do_nothing(index_elements=["tx_hash", "log_index"]).returning(
        col(ChainEvent.id))


def ingest(session: Session, events: Iterable[DecodedEvent]) -> set[str]:
    """Store and apply events in chain order; returns the providers whose stake or totals may have moved."""
    ordered = sorted(events, key=lambda e: (e.block_number, e.log_index))
    lock_tasks(session, {e.task_id for e in ordered if e.task_id is not None})
    touched: set[str] = set()
    for event in ordered:
        if store_event(session, event):
            session.flush()
            apply_event(session, event)
            touched.update(_accounts_touched(event))
    if touched:
        refresh_totals(session, touched)
    return touched


def lock_tasks(session: Session, task_ids: set[int]) -> None:
    """PostgreSQL: lock the tasks' rows in id order before storing their events. Every writer (indexer,
    matcher, deadlines) does so, and the matcher already holds its tasks' locks, so two writers of the same
    event wait on the task row instead of deadlocking on the event's unique key. No-op on SQLite."""
    if task_ids and session.get_bind().dialect.name == "postgresql":
        session.exec(select(Task.task_id).where(col(Task.task_id).in_(sorted(task_ids)))
                     .order_by(col(Task.task_id)).with_for_update()).all()


def _accounts_touched(event: DecodedEvent) -> set[str]:
    if event.name in STAKE_EVENTS or event.name in ("ReplicaFinalized", "ProviderRegistered"):
        provider = event.args.get("provider")
        return {provider} if isinstance(provider, str) else set()
    return set()


# ------------------------------------------------------------------ application, one function per event
def apply_event(session: Session, event: DecodedEvent) -> None:
    """Apply one (newly stored) event to the derived tables."""
    handler = _HANDLERS.get(event.name)
    if handler is not None:
        handler(session, event)


def _task(session: Session, event: DecodedEvent) -> Task | None:
    task_id = event.task_id
    task = session.get(Task, task_id) if task_id is not None else None
    if task is None:
        log.warning("%s for unknown task %s at block %d (indexed before its TaskPosted?)",
                    event.name, task_id, event.block_number)
    return task


def _touch(session: Session, row: Any) -> None:
    row.updated_at = utcnow()
    session.add(row)


def _posted(session: Session, event: DecodedEvent) -> None:
    a = event.args
    spec_hash = str(a["specHash"]).removeprefix("0x")
    customer = str(a["customer"])
    task_id = int(a["taskId"])
    task = session.get(Task, task_id) or Task(
        task_id=task_id, spec_hash=spec_hash, customer=customer, replicas=0, quorum=0, max_replicas=0,
        max_price_per_replica="0", escrowed="0", deadline=0,
    )
    task.spec_hash, task.customer = spec_hash, customer
    task.replicas, task.quorum = int(a["replicas"]), int(a["quorum"])
    task.max_replicas = int(a["maxReplicas"])
    task.max_price_per_replica = str(a["maxPricePerReplica"])
    task.escrowed = str(a["escrowed"])
    task.deadline = int(a["deadline"])
    task.posted_block = event.block_number
    task.status = TaskStatus.POSTED
    spec = session.get(SpecRecord, (spec_hash, customer))
    if spec is not None:
        task.priority = int(spec.spec.get("priority", 0) or 0)
    _touch(session, task)


def _round_of(session: Session, event: DecodedEvent) -> int:
    """The round a TaskAssigned belongs to: rounds opened for the task before it, in other transactions, plus
    one (the RoundOpened of its own call may come before or after it in the same transaction)."""
    earlier = session.exec(
        select(func.count()).select_from(ChainEvent).where(
            col(ChainEvent.task_id) == event.task_id,
            col(ChainEvent.name) == "RoundOpened",
            col(ChainEvent.tx_hash) != event.tx_hash,
            (col(ChainEvent.block_number) < event.block_number)
            | ((col(ChainEvent.block_number) == event.block_number)
               & (col(ChainEvent.log_index) < event.log_index)),
        )
    ).one()
    return int(earlier) + 1


def _replica(session: Session, task_id: int, provider: str) -> Replica | None:
    return session.exec(
        select(Replica).where(col(Replica.task_id) == task_id, col(Replica.provider) == provider)
    ).first()


def _assigned(session: Session, event: DecodedEvent) -> None:
    task = _task(session, event)
    if task is None:
        return
    provider = str(event.args["provider"])
    replica = _replica(session, task.task_id, provider) or Replica(task_id=task.task_id, provider=provider)
    replica.round = _round_of(session, event)
    if replica.status not in OFFCHAIN_REPLICA:
        replica.status = ReplicaStatus.ASSIGNED
    _touch(session, replica)
    if task.status == TaskStatus.POSTED:
        task.status = TaskStatus.ASSIGNED
    task.unplaced_reason = None
    _touch(session, task)


def _round_opened(session: Session, event: DecodedEvent) -> None:
    task = _task(session, event)
    if task is None:
        return
    if task.status == TaskStatus.POSTED:
        task.status = TaskStatus.ASSIGNED
        _touch(session, task)


def _committed(session: Session, event: DecodedEvent) -> None:
    replica = _replica(session, int(event.task_id or 0), str(event.args["provider"]))
    if replica is None:
        log.warning("ResultCommitted for an unknown replica %s/%s", event.task_id, event.args["provider"])
        return
    replica.commitment = str(event.args["commitment"])
    if replica.status not in FINAL_REPLICA and replica.status != ReplicaStatus.REVEALED:
        replica.status = ReplicaStatus.COMMITTED
    _touch(session, replica)


def _revealed(session: Session, event: DecodedEvent) -> None:
    replica = _replica(session, int(event.task_id or 0), str(event.args["provider"]))
    if replica is None:
        log.warning("ResultRevealed for an unknown replica %s/%s", event.task_id, event.args["provider"])
        return
    replica.result_hash = str(event.args["resultHash"])
    if replica.status not in FINAL_REPLICA:
        replica.status = ReplicaStatus.REVEALED
    _touch(session, replica)
    task = session.get(Task, replica.task_id)
    if task is not None and task.status in (TaskStatus.ASSIGNED, TaskStatus.RUNNING):
        task.status = TaskStatus.REVEALING
        _touch(session, task)


def _closed(session: Session, event: DecodedEvent) -> None:
    task = _task(session, event)
    if task is None:
        return
    task.status = TASK_CLOSERS[event.name]
    if event.name == "TaskSettled":
        task.result_hash = str(event.args["resultHash"])
    task.unplaced_reason = None
    _touch(session, task)


def _finalized(session: Session, event: DecodedEvent) -> None:
    replica = _replica(session, int(event.task_id or 0), str(event.args["provider"]))
    if replica is None:
        log.warning("ReplicaFinalized for an unknown replica %s/%s", event.task_id, event.args["provider"])
        return
    outcome = OUTCOMES.get(int(event.args["outcome"]))
    if outcome is not None:
        replica.status = outcome
    replica.paid = str(event.args["paid"])
    _touch(session, replica)


def _slashed(session: Session, event: DecodedEvent) -> None:
    """A replica's slashed amount is the sum of the Slashed events naming it (absolute, so replays agree)."""
    provider = str(event.args["provider"])
    replica = _replica(session, int(event.task_id or 0), provider)
    if replica is None:
        return
    replica.slashed = str(_sum_arg(session, "Slashed", "amount", account=provider, task_id=replica.task_id))
    _touch(session, replica)


def _provider_seen(session: Session, event: DecodedEvent) -> None:
    """Registry events about a provider the marketplace never heard of create a minimal row (the offer comes
    later through the API); the stake itself is refreshed from the chain per batch (see Indexer)."""
    address = str(event.args["provider"])
    if session.get(Provider, address) is None:
        operator = event.args.get("operator")
        session.add(Provider(address=address, operator=str(operator) if operator else address))
        session.flush()
    if event.name == "Staked":
        row = session.get(Provider, address)
        if row is not None:
            row.stake = str(event.args["totalStake"])
            session.add(row)


_HANDLERS = {
    "TaskPosted": _posted,
    "TaskAssigned": _assigned,
    "RoundOpened": _round_opened,
    "ResultCommitted": _committed,
    "ResultRevealed": _revealed,
    "TaskSettled": _closed,
    "TaskFailed": _closed,
    "TaskExpired": _closed,
    "TaskCancelled": _closed,
    "ReplicaFinalized": _finalized,
    "Slashed": _slashed,
    "Staked": _provider_seen,
    "UnstakeRequested": _provider_seen,
    "Withdrawn": _provider_seen,
    "ProviderRegistered": _provider_seen,
}


# ------------------------------------------------------------------ figures recomputed from stored events
def _sum_arg(session: Session, name: str, arg: str, *, account: str, task_id: int | None = None) -> int:
    query = select(ChainEvent.args).where(col(ChainEvent.name) == name, col(ChainEvent.account) == account)
    if task_id is not None:
        query = query.where(col(ChainEvent.task_id) == task_id)
    return sum(int(args.get(arg, 0)) for args in session.exec(query))


def refresh_totals(session: Session, providers: Iterable[str]) -> None:
    """Recompute ProviderTotals of `providers` from the stored events (exact after replays and rewinds)."""
    for address in providers:
        row = session.get(ProviderTotals, address) or ProviderTotals(address=address)
        row.paid = str(_sum_arg(session, "ReplicaFinalized", "paid", account=address))
        row.slashed = str(_sum_arg(session, "Slashed", "amount", account=address))
        counts = {status: 0 for status in OUTCOMES.values()}
        outcomes = session.exec(
            select(ChainEvent.args).where(col(ChainEvent.name) == "ReplicaFinalized",
                                          col(ChainEvent.account) == address)
        )
        for args in outcomes:
            status = OUTCOMES.get(int(args.get("outcome", 0)))
            if status is not None:
                counts[status] += 1
        row.agreed, row.dissented = counts[ReplicaStatus.AGREED], counts[ReplicaStatus.DISSENTED]
        row.no_show, row.released = counts[ReplicaStatus.NO_SHOW], counts[ReplicaStatus.RELEASED]
        session.add(row)
    refresh_reputation(session, providers)


# ------------------------------------------------------------------ re-projection (rewind and rebuild)
_REPLICA_OFFCHAIN = ("detail", "usage", "usage_signature", "outputs", "acked_at", "assigned_at")


def drop_tasks(session: Session, task_ids: Iterable[int] | None) -> dict[str, Any]:
    """Delete Task and Replica rows (all, or of `task_ids`), returning what only the marketplace knows about
    them (provider reports, placement reasons) so `restore_offchain` can put it back after re-indexing."""
    ids = None if task_ids is None else list(task_ids)
    task_query = select(Task) if ids is None else select(Task).where(col(Task.task_id).in_(ids))
    replica_query = select(Replica) if ids is None else select(Replica).where(col(Replica.task_id).in_(ids))
    stash: dict[str, Any] = {"tasks": {}, "replicas": {}}
    for task in session.exec(task_query):
        stash["tasks"][task.task_id] = {"status": task.status, "unplaced_reason": task.unplaced_reason,
                                        "created_at": task.created_at}
    for replica in session.exec(replica_query):
        saved = {name: getattr(replica, name) for name in _REPLICA_OFFCHAIN}
        saved["status"] = replica.status
        stash["replicas"][(replica.task_id, replica.provider)] = saved
    if ids is None:
        session.execute(delete(Replica))
        session.execute(delete(Task))
    else:
        session.execute(delete(Replica).where(col(Replica.task_id).in_(ids)))
        session.execute(delete(Task).where(col(Task.task_id).in_(ids)))
    session.flush()
    return stash


def restore_offchain(session: Session, stash: dict[str, Any]) -> None:
    """Put back the off-chain parts of re-created rows (statuses only where the chain shows nothing newer)."""
    for task_id, saved in stash["tasks"].items():
        task = session.get(Task, task_id)
        if task is None:
            continue
        task.created_at = saved["created_at"]
        if task.status == TaskStatus.POSTED:
            task.unplaced_reason = saved["unplaced_reason"]
        if task.status == TaskStatus.ASSIGNED and saved["status"] == TaskStatus.RUNNING:
            task.status = TaskStatus.RUNNING
        session.add(task)
    for (task_id, provider), saved in stash["replicas"].items():
        replica = _replica(session, task_id, provider)
        if replica is None:
            continue
        for name in _REPLICA_OFFCHAIN:
            setattr(replica, name, saved[name])
        if replica.status == ReplicaStatus.ASSIGNED and saved["status"] in OFFCHAIN_REPLICA:
            replica.status = saved["status"]
        session.add(replica)


def reapply_stored(session: Session, task_ids: Iterable[int]) -> None:
    """Apply again, in chain order, every stored event of `task_ids` (after `drop_tasks` removed them)."""
    ids = list(task_ids)
    if not ids:
        return
    rows = session.exec(
        select(ChainEvent).where(col(ChainEvent.task_id).in_(ids))
        .order_by(col(ChainEvent.block_number), col(ChainEvent.log_index))
    ).all()
    for row in rows:
        apply_event(session, DecodedEvent(contract=row.contract, name=row.name, args=dict(row.args),
                                          block_number=row.block_number, block_hash=row.block_hash,
                                          tx_hash=row.tx_hash, log_index=row.log_index))
        session.flush()
