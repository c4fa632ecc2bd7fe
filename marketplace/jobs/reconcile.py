"""Reconciliation as the marketplace runs it: the settlement journal, the database's closed tasks and their
replicas' payments, and the chain, compared as of the block the indexer has reached (so indexing lag is never
reported as a difference). `billing/reconcile.py` compares; this fills its inputs from the marketplace's own
records. Run periodically by the jobs (a warning per difference) and by `hashgrid marketplace reconcile`."""

from __future__ import annotations

import logging

from sqlmodel import Session, col, select

from billing.reconcile import ReconciliationReport, reconcile
from marketplace.jobs.context import JobContext
from marketplace.jobs.settle import journal_for
from marketplace.models import Replica, Task, TaskStatus

log = logging.getLogger(__name__)

CLOSED = (TaskStatus.SETTLED, TaskStatus.FAILED, TaskStatus.EXPIRED, TaskStatus.CANCELLED)


def reconcile_marketplace(*, ctx: JobContext, block: int | None = None) -> ReconciliationReport:
    """Every difference between journal, database and chain as of `block` (default: the indexer's cursor)."""
    with Session(ctx.engine) as session:
        at = ctx.indexer.cursor(session).block_number if block is None else block
        states = {int(task_id): str(status) for task_id, status in
                  session.exec(select(Task.task_id, Task.status))}
        closed = [task_id for task_id, status in states.items() if status in {str(s) for s in CLOSED}]
        paid = {(int(r.task_id), r.provider.lower()): int(r.paid or 0) for r in
                session.exec(select(Replica).where(col(Replica.task_id).in_(closed)))} if closed else {}
    report = reconcile(ctx.contracts.escrow, journal_for(ctx), db_paid=paid, db_states=states, block=at)
    for difference in report.differences:
        log.warning("reconcile: %s task=%s account=%s expected=%s actual=%s (%s)", difference.kind,
                    difference.task_id, difference.account, difference.expected, difference.actual,
                    difference.detail)
    return report


def reconcile_job(*, ctx: JobContext) -> dict[str, object]:
    """The periodic job's result: counts and the differences (for logs and Celery results)."""
    report = reconcile_marketplace(ctx=ctx)
    return {"block": report.block, "tasks_checked": report.tasks_checked,
            "differences": [d.to_dict() for d in report.differences]}
