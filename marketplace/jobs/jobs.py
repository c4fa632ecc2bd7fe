"""The background jobs as plain functions with keyword-only arguments: the Celery tasks and the in-process
scheduler both call these, and tests call them directly.

- index_chain: chain events into the tables (one indexer at a time, by lease).
- run_matching_round: queued tasks onto providers, on chain (see jobs.matching).
- expire_heartbeats: replicas of offline providers that never committed get a replacement replica.
- check_deadlines: tasks past deadline + grace are expired on chain (refunding the customer).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import false, func, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, or_, select

from hashgrid.errors import ContractRevert
from marketplace.indexer import apply
from marketplace.indexer.tables import ReplicaReplacement
from marketplace.jobs.context import JobContext, require_matcher_key
from marketplace.jobs.leases import acquire_lease, release_lease
from marketplace.jobs.matching import ACTIVE, run_matching_round
from marketplace.models import Provider, Replica, ReplicaStatus, Task, TaskStatus, utcnow

log = logging.getLogger(__name__)

INDEX_LEASE = "indexer"
INDEX_LEASE_S = 300.0
# replica states that mean "has not committed yet" (on chain: Assigned)
UNCOMMITTED = (ReplicaStatus.ASSIGNED, ReplicaStatus.RUNNING, ReplicaStatus.EXECUTED, ReplicaStatus.REFUSED)
OPEN_TASK = (TaskStatus.POSTED, *ACTIVE)


def index_chain(
    *, ctx: JobContext, max_batches: int | None = None, head: int | None = None
) -> dict[str, Any]:
    """Index up to head − confirmations (`head`: the chain head if the caller just read it). A second
    concurrent run returns at once (the lease is held): two indexers would do the same work, and the cursor
    must only move forward under one of them."""
    if not acquire_lease(ctx.engine, INDEX_LEASE, ctx.worker_id, ttl_s=INDEX_LEASE_S):
        return {"skipped": "another indexer holds the lease"}
    try:
        with Session(ctx.engine, expire_on_commit=False) as session:
            return ctx.indexer.run(session, max_batches=max_batches, head=head).as_dict()
    finally:
        release_lease(ctx.engine, INDEX_LEASE, ctx.worker_id)


def expire_heartbeats(
    *, ctx: JobContext, now: datetime | None = None, rematch: bool = True
) -> dict[str, Any]:
    """Replicas that have not committed, of providers whose heartbeat is older than the TTL (or that refused
    the task), get a replacement request; a matching round over those tasks then assigns extra replicas (up
    to maxReplicas). The on-chain no-show stays: finalize slashes it."""
    now = now or utcnow()
    since = now - timedelta(seconds=ctx.settings.heartbeat_ttl_s)
    with Session(ctx.engine) as session:
        newest = session.exec(select(func.max(Provider.last_heartbeat))).one()
        if newest is None or _aware(newest) < since:  # nobody is heard: the marketplace's outage, not theirs
            ctx.deaf_at = max(ctx.deaf_at, now)
        offline = select(Provider.address).where(
            or_(col(Provider.last_heartbeat).is_(None), col(Provider.last_heartbeat) < since))
        # a provider is dead when it has been silent for the TTL while this process was listening: right
        # after a start or an outage every live provider gets one TTL to beat again
        silent = col(Replica.provider).in_(offline) if ctx.deaf_at < since else false()
        active = session.exec(select(Task.task_id).where(col(Task.status).in_(ACTIVE)).limit(1)).first()
        pending = session.exec(select(ReplicaReplacement.task_id)
                               .where(col(ReplicaReplacement.replaced_at).is_(None)).limit(1)).first()
        if active is None and pending is None:  # at rest: no replica to replace, no request to close
            return {"offline_replicas": 0, "new": 0, "open_tasks": []}
        dead = session.exec(
            select(Replica.task_id, Replica.provider)
            .join(Task, col(Task.task_id) == col(Replica.task_id))
            .where(col(Task.status).in_(ACTIVE), col(Replica.status).in_(UNCOMMITTED),
                   or_(silent, col(Replica.status) == ReplicaStatus.REFUSED))
        ).all()
        insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
        new = 0
        for task_id, provider in dead:
            statement = insert(ReplicaReplacement).values(  # type: ignore[operator]
                task_id=task_id, provider=provider, detected_at=now).on_conflict_do_nothing(
                index_elements=["task_id", "provider"]).returning(col(ReplicaReplacement.task_id))
            new += int(session.execute(statement).first() is not None)
        # requests of tasks that closed meanwhile are moot
        closed = select(Task.task_id).where(col(Task.status).not_in(ACTIVE))
        session.execute(update(ReplicaReplacement)
                        .where(col(ReplicaReplacement.replaced_at).is_(None),
                               col(ReplicaReplacement.task_id).in_(closed))
                        .values(replaced_at=now))
        session.commit()
        open_tasks = sorted(set(session.exec(select(ReplicaReplacement.task_id)
                                             .where(col(ReplicaReplacement.replaced_at).is_(None)))))
    if new:
        log.info("%d replica(s) of offline providers need replacing", new)
    outcome: dict[str, Any] = {"offline_replicas": len(dead), "new": new, "open_tasks": open_tasks}
    if rematch and open_tasks:
        outcome["matching"] = run_matching_round(ctx=ctx, task_ids=open_tasks, now=now)
    return outcome


def _aware(moment: datetime) -> datetime:
    """SQLite hands datetimes back naive (they are stored as UTC)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def check_deadlines(*, ctx: JobContext) -> dict[str, Any]:
    """Expire tasks whose deadline + grace passed by chain time. Idempotent: an already closed task reverts
    EscrowTaskNotInState and is skipped; the indexer records the TaskExpired."""
    chain = ctx.chain_ops
    chain_now = ctx.client.timestamp()
    cutoff = chain_now - chain.expiry_grace()
    expired: list[int] = []
    skipped: list[int] = []
    with Session(ctx.engine) as session:
        due = session.exec(select(Task).where(col(Task.status).in_(OPEN_TASK), col(Task.deadline) <= cutoff)
                           .order_by(col(Task.task_id))).all()
        if not due:
            return {"expired": [], "skipped": []}
        key = require_matcher_key(ctx)
        for task in due:
            providers = list(session.exec(
                select(Replica.provider).where(col(Replica.task_id) == task.task_id)))
            try:
                receipt = chain.expire(task.task_id, providers, sender=key)
            except ContractRevert as exc:
                log.info("expire of task %d skipped: %s", task.task_id, exc.message)
                skipped.append(task.task_id)
                continue
            apply.ingest(session, chain.receipt_events(receipt))
            session.commit()
            expired.append(task.task_id)
    if expired:
        log.info("expired %d task(s) past deadline + grace: %s", len(expired), expired)
    return {"expired": expired, "skipped": skipped}
