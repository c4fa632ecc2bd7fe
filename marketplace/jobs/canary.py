"""post_canaries: known-answer tasks that a provider cannot tell from real work.

A canary repeats a task the network already verified (its accepted hash is the known answer), posted on chain
from the protocol's canary wallet in the shape of an adaptive task (trust `standard`: k=1, q=1, room for two
more replicas),
under the name of another real task so its spec hash is new. The verifier (jobs.verify) then accepts it only
when the known answer leads: a provider that answers wrongly is outvoted by the extra replicas, slashed by
finalize and loses its record (CANARY_FAIL). `canary_rate` canaries are posted per settled real task; the
canary wallet is funded by the DAO (on the dev chain: a dev key).
"""

from __future__ import annotations

import logging
import random
from typing import Any

from eth_account import Account
from sqlmodel import Session, col, func, select

from hashgrid.chain.contracts import TaskTerms
from hashgrid.spec import TaskSpec, spec_document, spec_hash
from marketplace.indexer.verification import TaskCheck
from marketplace.jobs.context import JobContext
from marketplace.models import BlobClaim, SpecRecord, Task, TaskStatus

log = logging.getLogger(__name__)

CANARY_REPLICAS, CANARY_MAX_REPLICAS = 1, 3


def canaries_due(session: Session, canary: str, rate: float) -> int:
    """How many canaries are owed: rate x settled real tasks, minus those already posted."""
    real = session.exec(select(func.count()).select_from(Task).where(
        col(Task.status) == TaskStatus.SETTLED, col(Task.customer) != canary)).one()
    posted = session.exec(select(func.count()).select_from(TaskCheck).where(col(TaskCheck.kind) == "canary")
                          ).one()
    return max(int(real * rate) - int(posted), 0)


def _sources(session: Session, canary: str, count: int, rng: random.Random) -> list[tuple[Task, TaskSpec]]:
    """Verified real tasks not used as a canary yet, with their specs, in random order."""
    used = select(TaskCheck.source_task).where(col(TaskCheck.source_task).is_not(None))
    rows = session.exec(select(Task).where(
        col(Task.status) == TaskStatus.SETTLED, col(Task.customer) != canary,
        col(Task.result_hash).is_not(None), col(Task.task_id).not_in(used))).all()
    rng.shuffle(rows := list(rows))
    out = []
    for task in rows:
        record = session.get(SpecRecord, (task.spec_hash, task.customer))
        if record is not None:
            out.append((task, TaskSpec.model_validate(record.spec)))
        if len(out) == count:
            break
    return out


def share_claims(session: Session, *, source: str, canary: str, spec: TaskSpec) -> None:
    """Give the canary wallet the source customer's claims to the inputs and module its canary reuses: the
    canary's providers read inputs through its customer's claims (docs/api.md, "Who may see what"), and a
    canary must look like any task to them."""
    named = {blob.sha256 for blob in spec.inputs} | ({spec.module} if spec.module else set())
    held = session.exec(select(BlobClaim.sha256).where(
        col(BlobClaim.holder) == source, col(BlobClaim.sha256).in_(sorted(named)))).all()
    for digest in held:
        if session.get(BlobClaim, (digest, canary)) is None:
            session.add(BlobClaim(sha256=digest, holder=canary))
    session.commit()


def post_canaries(*, ctx: JobContext, rng: random.Random | None = None) -> dict[str, Any]:
    """Post the canaries owed; each gets its TaskCheck (kind canary, the known answer) right after posting."""
    key = ctx.settings.canary_key
    if not key:
        return {"skipped": "no canary key configured (HASHGRID_CANARY_KEY)"}
    account = Account.from_key(key)
    canary = account.address.lower()
    rng = rng or random.Random()
    contracts = ctx.contracts
    posted: list[int] = []
    with Session(ctx.engine) as session:
        due = canaries_due(session, canary, ctx.settings.replication_policy.canary_rate)
        if not due:
            return {"posted": posted}
        names = list(session.exec(select(SpecRecord.spec).limit(200)))
        for source, spec in _sources(session, canary, due, rng):
            disguised = spec.model_copy(update={
                "name": str(rng.choice(names).get("name", spec.name)) if names else spec.name,
                "replicas": CANARY_REPLICAS, "quorum": 1, "max_replicas": CANARY_MAX_REPLICAS,
                "trust": "standard"})
            if spec_hash(disguised) == bytes.fromhex(source.spec_hash):
                disguised = disguised.model_copy(update={"name": f"{spec.name} "})
            digest = spec_hash(disguised)
            if session.get(SpecRecord, (digest.hex(), canary)) is None:
                session.add(SpecRecord(spec_hash=digest.hex(), customer=canary,
                                       spec=spec_document(disguised)))
                session.commit()
            share_claims(session, source=source.customer, canary=canary, spec=spec)
            terms = TaskTerms(spec_hash=digest, replicas=CANARY_REPLICAS, quorum=1,
                              max_replicas=CANARY_MAX_REPLICAS,
                              max_price_per_replica=int(source.max_price_per_replica),
                              deadline=ctx.client.timestamp() + disguised.deadline_s)
            receipt = contracts.escrow.post_task_with_permit(contracts.token, terms, sender=account)
            task_id = contracts.escrow.task_id_of(receipt)
            answer = "0x" + str(source.result_hash).lower().removeprefix("0x")
            session.add(TaskCheck(task_id=task_id, kind="canary", expected_hash=answer,
                                  source_task=source.task_id))
            session.commit()
            posted.append(task_id)
    if posted:
        log.info("posted %d canary task(s): %s", len(posted), posted)
    return {"posted": posted}
