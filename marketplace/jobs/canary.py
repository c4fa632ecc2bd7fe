"""post_canaries: known-answer tasks that a provider cannot tell from real work.

A canary repeats a task the network already verified (its accepted hash is the known answer), posted on chain
in the shape of an adaptive task (trust `standard`: k=1, q=1, room for two more replicas) under the name of
another real task, so its spec hash is new. The verifier (jobs.verify) then accepts it only when the known
answer leads: a provider that answers wrongly is outvoted by the extra replicas, slashed by finalize and loses
its record (CANARY_FAIL). What a provider sees gives it away as little as we can make it:
- the customer is one of `canary_wallets` protocol wallets derived from the canary key, drawn per canary
  (the DAO funds them like customer wallets; on the dev chain `make up` does);
- the spec is a real one, never the same spec twice, and the matcher never sends it to a provider that ran
  its source task (`excluded_providers`); the canary wallet gets the source customer's claims to the inputs it
  reuses, so its providers fetch them like any task's;
- the price is drawn from the prices real customers set for specs of the same runtime and resources;
- the time: each owed canary is posted at an exponentially distributed delay (a thinned Poisson process),
  not in a burst when it falls due;
- the wallet's history: before posting, it claims the refunds its earlier canaries left, as customers do.
`canary_rate` (the replication policy's c) canaries are owed per settled real task.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from sqlmodel import Session, col, func, select

from hashgrid.chain.contracts import TaskTerms
from hashgrid.spec import TaskSpec, spec_document, spec_hash
from marketplace.indexer.verification import TaskCheck
from marketplace.jobs.context import JobContext
from marketplace.models import BlobClaim, Replica, SpecRecord, Task, TaskStatus

log = logging.getLogger(__name__)

CANARY_REPLICAS = 1
PRICE_SAMPLE = 500  # recent real tasks whose prices a canary's price is drawn from


@lru_cache(maxsize=4)
def canary_accounts(key: str, count: int) -> tuple[LocalAccount, ...]:
    """The protocol's canary wallets, derived from one key: the operator keeps one secret, providers see
    `count` unrelated-looking customers (derived once per process: the job runs every few seconds)."""
    seed = bytes.fromhex(key.removeprefix("0x"))
    return tuple(Account.from_key(keccak(b"hashgrid canary wallet" + seed + i.to_bytes(4, "big")))
                 for i in range(count))


def canaries_due(session: Session, wallets: list[str], rate: float) -> int:
    """How many canaries are owed: rate x settled real tasks, minus those already posted."""
    real = session.exec(select(func.count()).select_from(Task).where(
        col(Task.status) == TaskStatus.SETTLED, col(Task.customer).not_in(wallets))).one()
    posted = session.exec(select(func.count()).select_from(TaskCheck).where(col(TaskCheck.kind) == "canary")
                          ).one()
    return max(int(real * rate) - int(posted), 0)


def to_post_now(due: int, *, interval_s: float, mean_delay_s: float, rng: random.Random) -> int:
    """How many of the `due` canaries to post in this pass: each with probability 1 - exp(-interval/mean),
    so a canary's delay after it fell due is exponential (memoryless) and posts do not cluster."""
    if due <= 0:
        return 0
    if mean_delay_s <= 0:
        return due
    chance = 1.0 - math.exp(-interval_s / mean_delay_s)
    return sum(rng.random() < chance for _ in range(due))


def _sources(session: Session, wallets: list[str], count: int, rng: random.Random
             ) -> list[tuple[Task, TaskSpec]]:
    """Verified real tasks, in random order, whose spec no canary has used yet (nor a task of the same spec),
    with their specs."""
    used_tasks = select(TaskCheck.source_task).where(col(TaskCheck.source_task).is_not(None))
    used_specs = set(session.exec(select(Task.spec_hash).where(col(Task.task_id).in_(used_tasks))))
    rows = list(session.exec(select(Task).where(
        col(Task.status) == TaskStatus.SETTLED, col(Task.customer).not_in(wallets),
        col(Task.result_hash).is_not(None), col(Task.task_id).not_in(used_tasks))))
    rng.shuffle(rows)
    out: list[tuple[Task, TaskSpec]] = []
    for task in rows:
        if task.spec_hash in used_specs:
            continue
        record = session.get(SpecRecord, (task.spec_hash, task.customer))
        if record is not None:
            used_specs.add(task.spec_hash)
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


def drawn_price(session: Session, wallets: list[str], spec: TaskSpec, fallback: int,
                rng: random.Random) -> int:
    """A max price per replica drawn from what real customers recently offered for specs of the same
    runtime and resources (the source's own price when there is no other)."""
    recent = session.exec(select(Task.spec_hash, Task.customer, Task.max_price_per_replica)
                          .where(col(Task.customer).not_in(wallets))
                          .order_by(col(Task.task_id).desc()).limit(PRICE_SAMPLE)).all()
    prices: list[int] = []
    alike: dict[tuple[str, str], bool] = {}
    for digest, customer, price in recent:
        if (digest, customer) not in alike:
            record = session.get(SpecRecord, (digest, customer))
            other = TaskSpec.model_validate(record.spec) if record is not None else None
            alike[(digest, customer)] = (other is not None and other.runtime == spec.runtime
                                         and other.resources == spec.resources)
        if alike[(digest, customer)]:
            prices.append(int(price))
    return rng.choice(prices) if prices else fallback


def excluded_providers(session: Session, task_ids: Iterable[int]) -> dict[int, frozenset[str]]:
    """For the canaries among `task_ids`: the providers that ran their source task (they know its answer,
    and would recognise the spec), whom the matcher must not pick."""
    checks = session.exec(select(TaskCheck.task_id, TaskCheck.source_task).where(
        col(TaskCheck.task_id).in_(list(task_ids)), col(TaskCheck.kind) == "canary",
        col(TaskCheck.source_task).is_not(None))).all()
    out: dict[int, frozenset[str]] = {}
    for task_id, source in checks:
        ran = session.exec(select(Replica.provider).where(col(Replica.task_id) == source)).all()
        out[int(task_id)] = frozenset(ran)
    return out


def post_canaries(*, ctx: JobContext, rng: random.Random | None = None) -> dict[str, Any]:
    """Post the canaries this pass draws from those owed; each gets its TaskCheck (kind canary, the known
    answer, the source) right after posting."""
    settings = ctx.settings
    if not settings.canary_key:
        return {"skipped": "no canary key configured (HASHGRID_CANARY_KEY)"}
    accounts = canary_accounts(settings.canary_key, settings.canary_wallets)
    wallets = [a.address.lower() for a in accounts]
    rng = rng or random.Random()
    contracts = ctx.contracts
    posted: list[int] = []
    with Session(ctx.engine) as session:
        due = canaries_due(session, wallets, settings.replication_policy.canary_rate)
        count = to_post_now(due, interval_s=settings.canary_interval_s,
                            mean_delay_s=settings.canary_mean_delay_s, rng=rng)
        if not count:
            return {"posted": posted, "due": due}
        names = list(session.exec(select(SpecRecord.spec).where(col(SpecRecord.customer).not_in(wallets))
                                  .limit(200)))
        for source, spec in _sources(session, wallets, count, rng):
            account = rng.choice(accounts)
            customer = account.address.lower()
            disguised = spec.model_copy(update={
                "name": str(rng.choice(names).get("name", spec.name)) if names else spec.name,
                "replicas": CANARY_REPLICAS, "quorum": 1, "max_replicas": None,  # as most real ones: unset
                "trust": "standard"})
            if spec_hash(disguised) == bytes.fromhex(source.spec_hash):
                disguised = disguised.model_copy(update={"name": f"{spec.name} "})
            digest = spec_hash(disguised)
            if session.get(SpecRecord, (digest.hex(), customer)) is None:
                session.add(SpecRecord(spec_hash=digest.hex(), customer=customer,
                                       spec=spec_document(disguised)))
                session.commit()
            share_claims(session, source=source.customer, canary=customer, spec=spec)
            price = drawn_price(session, wallets, spec, int(source.max_price_per_replica), rng)
            terms = TaskTerms(spec_hash=digest, replicas=CANARY_REPLICAS, quorum=1,
                              max_replicas=disguised.effective_max_replicas, max_price_per_replica=price,
                              deadline=ctx.client.timestamp() + disguised.deadline_s)
            if contracts.escrow.claimable(account.address):  # refunds claimed as customers claim theirs
                contracts.escrow.claim(sender=account)
            receipt = contracts.escrow.post_task_with_permit(contracts.token, terms, sender=account)
            task_id = contracts.escrow.task_id_of(receipt)
            answer = "0x" + str(source.result_hash).lower().removeprefix("0x")
            session.add(TaskCheck(task_id=task_id, kind="canary", expected_hash=answer,
                                  source_task=source.task_id))
            session.commit()
            posted.append(task_id)
    if posted:
        log.info("posted %d canary task(s): %s", len(posted), posted)
    return {"posted": posted, "due": due}
