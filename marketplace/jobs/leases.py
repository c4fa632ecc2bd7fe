"""Leases and claims that work the same on SQLite and PostgreSQL: an atomic conditional UPDATE decides which
worker holds a name (or a task); a lease that is not renewed expires, so a crashed worker blocks nothing for
long, and a lease whose holder was a process of this host that is gone is taken over at once (a restarted
marketplace resumes its settlements without waiting for the TTL)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import Engine, or_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, select

from marketplace.indexer.tables import JobLease, MatchingClaim
from marketplace.models import utcnow


def _insert(session: Session) -> object:
    return pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert


def acquire_lease(engine: Engine, name: str, holder: str, *, ttl_s: float) -> bool:
    """Take (or renew) the lease `name` for `holder`; False while another holder's lease runs."""
    now = utcnow()
    with Session(engine) as session:
        insert = _insert(session)
        session.execute(insert(JobLease).values(name=name).on_conflict_do_nothing(  # type: ignore[operator]
            index_elements=["name"]))
        free = or_(col(JobLease.holder).is_(None), col(JobLease.holder) == holder,
                   col(JobLease.expires_at) < now)
        current = session.exec(select(JobLease.holder).where(col(JobLease.name) == name)).first()
        if current and holder_gone(current):
            free = or_(free, col(JobLease.holder) == current)
        result = session.execute(
            update(JobLease).where(col(JobLease.name) == name, free)
            .values(holder=holder, expires_at=now + timedelta(seconds=ttl_s))
        )
        session.commit()
        return bool(result.rowcount)  # type: ignore[attr-defined]


def holder_gone(holder: str) -> bool:
    """Whether `holder` (`host:pid:...`, context._worker_id) was a process of this host that has exited."""
    host, _, rest = holder.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit() or int(pid_text) == os.getpid():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def release_lease(engine: Engine, name: str, holder: str) -> None:
    with Session(engine) as session:
        session.execute(update(JobLease).where(col(JobLease.name) == name, col(JobLease.holder) == holder)
                        .values(holder=None, expires_at=None))
        session.commit()


def claim_tasks(engine: Engine, task_ids: Iterable[int], holder: str, *, lease_s: float,
                now: datetime | None = None) -> list[int]:
    """Claim each task whose claim is free or stale, one atomic UPDATE per task (committed before the round
    works on them, so a concurrent worker sees the claim); returns the ids this worker now holds."""
    now = now or utcnow()
    stale = now - timedelta(seconds=lease_s)
    held: list[int] = []
    with Session(engine) as session:
        insert = _insert(session)
        for task_id in task_ids:
            session.execute(insert(MatchingClaim).values(task_id=task_id)  # type: ignore[operator]
                            .on_conflict_do_nothing(index_elements=["task_id"]))
            result = session.execute(
                update(MatchingClaim)
                .where(col(MatchingClaim.task_id) == task_id,
                       or_(col(MatchingClaim.claimed_by).is_(None), col(MatchingClaim.claimed_at) < stale))
                .values(claimed_by=holder, claimed_at=now)
            )
            session.commit()
            if result.rowcount:  # type: ignore[attr-defined]
                held.append(task_id)
    return held


def release_tasks(engine: Engine, task_ids: Iterable[int], holder: str) -> None:
    ids = list(task_ids)
    if not ids:
        return
    with Session(engine) as session:
        session.execute(update(MatchingClaim)
                        .where(col(MatchingClaim.task_id).in_(ids), col(MatchingClaim.claimed_by) == holder)
                        .values(claimed_by=None, claimed_at=None))
        session.commit()
