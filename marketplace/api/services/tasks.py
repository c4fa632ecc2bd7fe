"""Tasks: validate a spec for posting on chain (marketplace.api.ingest records it), and show a customer their
own tasks, logs and verified results (Task and Replica rows come from the chain indexer)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from hashgrid.canonical import canonical_json
from hashgrid.errors import NotFound
from hashgrid.spec import TaskSpec, parse_spec, spec_document
from marketplace.api.chain import escrow_for
from marketplace.api.errors import Forbidden, NotYourTask, ResultNotReady
from marketplace.api.services import visibility
from marketplace.models import (
    LogChunk,
    Replica,
    ReplicaStatus,
    SpecRecord,
    Task,
    TaskRegistration,
)


@dataclass(frozen=True)
class PreparedSpec:
    """A validated spec, its normalised document and the hash that goes on chain (hex, no 0x)."""

    spec: TaskSpec
    document: dict[str, Any]
    spec_hash: str


def prepare_spec(document: Any) -> PreparedSpec:
    """Validate and normalise a spec (SpecInvalid lists every problem); no database access, so it runs
    before anything is written."""
    spec = parse_spec(document)
    normalised = spec_document(spec)
    return PreparedSpec(spec, normalised, hashlib.sha256(canonical_json(normalised)).hexdigest())


def registration(prepared: PreparedSpec, *, customer: str, fee_bps: int, created: bool) -> TaskRegistration:
    """The answer to a registration: the spec hash and the escrow to lock with `TaskEscrow.postTask`."""
    spec = prepared.spec
    max_replicas = spec.effective_max_replicas
    price = spec.max_price_per_replica
    return TaskRegistration(
        spec_hash="0x" + prepared.spec_hash,
        customer=customer,
        replicas=spec.replicas,
        quorum=spec.quorum,
        max_replicas=max_replicas,
        max_price_per_replica=str(price),
        fee_bps=fee_bps,
        escrow=str(escrow_for(max_replicas=max_replicas, max_price_per_replica=price, fee_bps=fee_bps)),
        deadline_s=spec.deadline_s,
        created=created,
    )


def list_tasks(*, session: Session, customer: str, offset: int, limit: int) -> tuple[list[Task], int]:
    where = col(Task.customer) == customer
    count = session.exec(select(func.count()).select_from(Task).where(where)).one()
    rows = session.exec(
        select(Task).where(where).order_by(col(Task.task_id).desc()).offset(offset).limit(limit)
    )
    return list(rows), int(count)


def get_task(*, session: Session, task_id: int) -> Task:
    task = session.get(Task, task_id)
    if task is None:
        raise NotFound(
            f"task {task_id} is not known to the marketplace (not posted, or not indexed yet)",
            task_id=task_id,
        )
    return task


def own_task(*, session: Session, task_id: int, customer: str) -> Task:
    """The task if `customer` posted it; another customer's task is refused with 403."""
    task = get_task(session=session, task_id=task_id)
    if task.customer != customer:
        raise NotYourTask(
            f"task {task_id} belongs to another customer; {customer} may not read it", task_id=task_id
        )
    return task


def replicas_of(*, session: Session, task_id: int) -> list[Replica]:
    return visibility.replicas_of(session=session, task_id=task_id)


def check_log_reader(*, session: Session, task: Task, wallet: str) -> str | None:
    """The task's customer reads every replica's logs (None: no filter); a provider assigned to the task only
    its own (its address is returned as the filter); anyone else is refused."""
    if wallet == task.customer:
        return None
    assigned = session.exec(
        select(Replica.id).where(col(Replica.task_id) == task.task_id, col(Replica.provider) == wallet)
    ).first()
    if assigned is None:
        raise Forbidden(
            f"logs of task {task.task_id} are visible to its customer and, each its own, its providers only",
            task_id=task.task_id,
        )
    return wallet


def logs_after(
    *, session: Session, task_id: int, after_id: int, provider: str | None = None, limit: int = 1000
) -> list[LogChunk]:
    query = select(LogChunk).where(col(LogChunk.task_id) == task_id, col(LogChunk.id) > after_id)
    if provider is not None:
        query = query.where(col(LogChunk.provider) == provider)
    return list(session.exec(query.order_by(col(LogChunk.id)).limit(limit)))


def task_result(*, session: Session, task: Task) -> dict[str, Any]:
    """The accepted result hash and the output manifests of the replicas that revealed it."""
    if not task.result_hash:
        raise ResultNotReady(
            f"task {task.task_id} has no verified result yet (status {task.status.value})",
            task_id=task.task_id,
            status=task.status.value,
        )
    accepted = task.result_hash.lower().removeprefix("0x")
    agreeing = [
        replica
        for replica in replicas_of(session=session, task_id=task.task_id)
        if replica.status == ReplicaStatus.AGREED
        or (replica.result_hash or "").lower().removeprefix("0x") == accepted
    ]
    outputs = next((replica.outputs for replica in agreeing if replica.outputs), [])
    return {
        "task_id": task.task_id,
        "result_hash": task.result_hash,
        "agreeing": [replica.provider for replica in agreeing],
        "outputs": outputs,
    }


def spec_blob(*, session: Session, sha256: str) -> bytes | None:
    """The canonical JSON of a registered spec whose hash is `sha256` (what providers fetch), if any."""
    record = session.exec(select(SpecRecord).where(col(SpecRecord.spec_hash) == sha256)).first()
    return canonical_json(record.spec) if record is not None else None
