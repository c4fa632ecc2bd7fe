"""A matching round: claim queued tasks, read online providers, call the pure engine, write why a task stays
unplaced, and send the assignments on chain with one assignMany.

Never double-assigns across workers: on PostgreSQL the round holds `SELECT ... FOR UPDATE SKIP LOCKED` row
locks on its tasks until it committed what it sent; on SQLite each task is claimed by an atomic conditional
UPDATE (MatchingClaim, with a lease). Either way the round applies its own receipt through the indexer's
idempotent path before letting go, so the next round sees the task assigned; and the chain is the arbiter:
an assign that reverts because the task moved on (EscrowTaskNotInState...) is dropped, not retried.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlmodel import Session, col, select

from hashgrid.errors import ContractRevert
from hashgrid.runtime_class import is_gpu_class, runtime_of
from hashgrid.spec import TaskSpec
from marketplace.indexer import apply
from marketplace.indexer.tables import ReplicaReplacement
from marketplace.indexer.verification import checks_of, trusted_providers
from marketplace.jobs.canary import excluded_providers
from marketplace.jobs.chain import ChainOps
from marketplace.jobs.context import JobContext, require_matcher_key
from marketplace.jobs.leases import claim_tasks, release_tasks
from marketplace.matching import MatchConfig, Prices, ProviderView, Resources, TaskView, match
from marketplace.matching.models import MatchResult
from marketplace.models import Provider, Replica, ReplicaStatus, SpecRecord, Task, TaskStatus, utcnow
from verifier.checks import CheckKind

log = logging.getLogger(__name__)

ACTIVE = (TaskStatus.ASSIGNED, TaskStatus.RUNNING, TaskStatus.REVEALING)
# reverts that mean "this task cannot take this assignment now": drop it from the batch, never retry it
SKIP_ERRORS = {
    "EscrowTaskNotInState", "EscrowTaskNotFound", "EscrowDuplicateProvider", "EscrowProviderNotStaked",
    "EscrowTooManyReplicas", "EscrowWrongReplicaCount",
}
NO_SPEC = "the task's spec is not registered with the marketplace (POST /tasks), so it cannot be matched"


def aware(moment: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes: they are UTC."""
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def provider_view(row: Provider) -> ProviderView:
    """A Provider row as the engine sees it: offer and heartbeat from the API, stake from the indexer."""
    prices = row.prices or {}
    policy = row.policy or {}

    def price(name: str) -> int:
        return int(prices.get(name) or 0)

    limits = ("max_cpus", "max_memory_mb", "max_disk_mb", "max_gpus")
    max_task = None
    if any(k in policy for k in limits):
        max_task = Resources(cpus=float(policy.get("max_cpus", row.total_cpus)),
                             memory_mb=int(policy.get("max_memory_mb", row.total_memory_mb)),
                             disk_mb=int(policy.get("max_disk_mb", row.total_disk_mb)),
                             gpus=int(policy.get("max_gpus", row.gpus)))
    heartbeat = aware(row.last_heartbeat)
    return ProviderView(
        address=row.address,
        operator=row.operator or row.address,
        runtimes=frozenset(row.runtimes or []),
        arch=row.arch,
        total=Resources(row.total_cpus, row.total_memory_mb, row.total_disk_mb, row.gpus),
        free=Resources(row.free_cpus, row.free_memory_mb, row.free_disk_mb, row.free_gpus),
        prices=Prices(base=price("fixed") or price("base"), per_cpu_second=price("per_cpu_second"),
                      per_gb_second=price("per_gb_second"), per_gpu_second=price("per_gpu_second")),
        stake=int(row.stake or 0),
        reputation=row.reputation,
        last_heartbeat=heartbeat.timestamp() if heartbeat else 0.0,
        gpu_model=row.gpu_model,
        gpu_memory_mb=row.gpu_memory_mb,
        cuda_major=row.cuda_major,
        allows_network=bool(policy.get("allow_network", False)),
        max_task=max_task,
        classes=frozenset(row.runtime_classes or []),
    )


def task_view(task: Task, spec: TaskSpec, *, replicas: int, assigned: frozenset[str]) -> TaskView:
    """A Task row with its spec as the engine sees it; `replicas` is how many are needed now."""
    need = spec.resources
    req = spec.requirements
    created = aware(task.created_at)
    return TaskView(
        task_id=str(task.task_id),
        customer=task.customer,
        runtime=spec.runtime,
        image_digest=spec.artifact_digest,
        resources=Resources(need.cpus, need.memory_mb, need.disk_mb, need.gpus),
        budget=int(task.max_price_per_replica),
        replicas=replicas,
        timeout_s=need.timeout_s,
        priority=task.priority,
        submitted_at=created.timestamp() if created else 0.0,
        arch=req.arch,
        gpu_model=req.gpu_model,
        min_gpu_memory_mb=req.min_gpu_memory_mb or 0,
        min_memory_mb=req.min_memory_mb or 0,
        network=spec.network,
        input_digests=frozenset(blob.sha256 for blob in spec.inputs),
        assigned=assigned,
        runtime_class=task.runtime_class,
    )


def _customer_choice(spec: TaskSpec, holders: frozenset[str], providers: Sequence[ProviderView]
                     ) -> tuple[frozenset[str], str]:
    """The spec's own choice of providers (requirements.providers / exclude_providers) as providers the
    engine must pass over, like those already holding a replica; and the note its unplaced reason gets."""
    req = spec.requirements
    if req.providers is None and not req.exclude_providers:
        return holders, ""
    barred = set(req.exclude_providers or ())
    if req.providers is not None:
        allowed = set(req.providers)
        barred |= {p.address for p in providers if p.address not in allowed}
        online = sorted(allowed & {p.address for p in providers})
        note = (f"; the spec allows only {len(allowed)} provider(s), {len(online)} of them online and "
                f"eligible now" + (f" ({', '.join(online[:5])})" if online else ""))
    else:
        note = f"; the spec excludes {len(barred)} provider(s)"
    return holders | frozenset(barred), note


def _candidates(session: Session, *, limit: int, task_ids: Sequence[int] | None) -> list[int]:
    """Posted tasks, and running ones with an open replacement request, best priority first."""
    posted = select(Task.task_id).where(col(Task.status) == TaskStatus.POSTED)
    replacing = (select(ReplicaReplacement.task_id).where(col(ReplicaReplacement.replaced_at).is_(None))
                 .distinct())
    if task_ids is not None:
        posted = posted.where(col(Task.task_id).in_(list(task_ids)))
        replacing = replacing.where(col(ReplicaReplacement.task_id).in_(list(task_ids)))
    ids = list(session.exec(posted.order_by(col(Task.priority).desc(), col(Task.task_id)).limit(limit)))
    ids += [i for i in session.exec(replacing) if i not in ids]
    return ids[: max(limit, 0)]


def _lock(session: Session, ids: list[int]) -> list[Task]:
    """PostgreSQL: lock the tasks for this round; rows locked by another worker are skipped."""
    if not ids:
        return []
    query = (select(Task).where(col(Task.task_id).in_(ids),
                                col(Task.status).in_([TaskStatus.POSTED, *ACTIVE]))
             .order_by(col(Task.task_id)).with_for_update(skip_locked=True))
    return list(session.exec(query))


def run_matching_round(
    *, ctx: JobContext, task_ids: Sequence[int] | None = None, now: datetime | None = None
) -> dict[str, Any]:
    """One round over the queue (or over `task_ids`); returns counts for logs and Celery results."""
    now = now or utcnow()
    settings = ctx.settings
    chain = ctx.chain_ops
    postgres = ctx.engine.dialect.name == "postgresql"
    claimed: list[int] = []
    with Session(ctx.engine, expire_on_commit=False) as session:
        ids = _candidates(session, limit=settings.matching_batch, task_ids=task_ids)
        if not ids:
            return {"tasks": 0, "assigned": 0, "unplaced": 0, "skipped": 0}
        if postgres:
            tasks = _lock(session, ids)
        else:
            session.rollback()
            claimed = claim_tasks(ctx.engine, ids, ctx.worker_id, lease_s=settings.claim_lease_s, now=now)
            tasks = list(session.exec(
                select(Task).where(col(Task.task_id).in_(claimed),
                                   col(Task.status).in_([TaskStatus.POSTED, *ACTIVE]))
                .order_by(col(Task.task_id))))
        try:
            outcome = _round(session, ctx, chain, tasks, now)
            session.commit()  # releases the PostgreSQL row locks
        except BaseException:
            session.rollback()  # before releasing the claims: on SQLite this round may hold the write lock
            raise
        finally:
            if claimed:
                release_tasks(ctx.engine, claimed, ctx.worker_id)
    return outcome


def _round(session: Session, ctx: JobContext, chain: ChainOps, tasks: list[Task],
           now: datetime) -> dict[str, Any]:
    settings = ctx.settings
    config = MatchConfig(strategy=settings.matching_strategy,  # type: ignore[arg-type]
                         min_stake=chain.min_stake(), heartbeat_ttl=float(settings.heartbeat_ttl_s))
    since = now - timedelta(seconds=settings.heartbeat_ttl_s)
    rows = session.exec(select(Provider).where(col(Provider.last_heartbeat) >= since)).all()
    rows = [row for row in rows if int(row.stake or 0) >= config.min_stake]
    unseen = _unseen_load(session, rows)
    providers = [_less(provider_view(row), unseen.get(row.address)) for row in rows]
    views: list[TaskView] = []
    by_id: dict[int, Task] = {}
    unplaced = behind = 0
    notes: dict[int, str] = {}  # why a task's own provider list narrows its candidates (for its reason)
    excluded = excluded_providers(session, [t.task_id for t in tasks if t.status == TaskStatus.POSTED])
    for task in tasks:
        record = session.get(SpecRecord, (task.spec_hash, task.customer))
        if record is None:
            task.unplaced_reason = NO_SPEC
            session.add(task)
            unplaced += 1
            continue
        spec = TaskSpec.model_validate(record.spec)
        replicas = session.exec(select(Replica).where(col(Replica.task_id) == task.task_id)).all()
        holders = frozenset(r.provider for r in replicas)
        if task.status == TaskStatus.POSTED:  # a canary's primary never ran its source (it would know it)
            holders |= excluded.get(task.task_id, frozenset())
        if task.status == TaskStatus.POSTED:
            needed = task.replicas
            if task.max_replicas > task.replicas and int(chain.task(task.task_id).get("assigned", 0)):
                # with room for more replicas a second first assign would not revert: it would open round 2
                # and shut the first round's replicas out. Someone assigned already (another matcher, or
                # ours before a crash): wait for the indexer. One read per new task with room.
                log.info("task %d: assigned on chain, not yet indexed; skipped this round", task.task_id)
                behind += 1
                continue
        else:
            open_requests = session.exec(select(ReplicaReplacement).where(
                col(ReplicaReplacement.task_id) == task.task_id,
                col(ReplicaReplacement.replaced_at).is_(None))).all()
            room = task.max_replicas - len(replicas)
            if room <= 0:  # escrow paid for no more replicas: these requests can never be met
                for request in open_requests:
                    request.replaced_at = utcnow()
                    session.add(request)
                log.info("task %d: no room for replacement replicas (maxReplicas %d)", task.task_id,
                         task.max_replicas)
                continue
            needed = min(len(open_requests), room)
            # the chain is the arbiter: if it holds more replicas than we know of, someone assigned
            # already (or the indexer is behind); wait for the indexer rather than over-assign
            on_chain = chain.task(task.task_id)
            if int(on_chain.get("assigned", len(replicas))) != len(replicas):
                log.info("task %d: chain has replicas the index lacks; replacement waits", task.task_id)
                continue
            if _round_would_strand(on_chain, replicas, open_requests, ctx.client.timestamp()):
                log.info("task %d: replacement waits until the round's live replicas commit", task.task_id)
                continue
            if task.runtime_class is None:  # placed before classes were recorded, or by another path
                task.runtime_class = _class_of_holders(session, spec, holders)
                session.add(task)
        holders, note = _customer_choice(spec, holders, providers)
        if note:
            notes[task.task_id] = note
        views.append(task_view(task, spec, replicas=needed, assigned=holders))
        by_id[task.task_id] = task
    posted = {t.task_id for t in tasks if t.status == TaskStatus.POSTED}
    result = _match_checked_first(session, providers, views, config, now.timestamp(), posted=posted)
    for why in result.unplaced:
        task = by_id[int(why.task_id)]
        task.unplaced_reason = why.reason + notes.get(task.task_id, "")
        session.add(task)
        unplaced += 1
    plan = {int(a.task_id): list(a.providers) for a in result.assignments}
    sent, skipped = _send(session, ctx, chain, plan)
    for a in result.assignments:  # the class is recorded with the assignment: later replicas join it
        task = by_id[int(a.task_id)]
        if int(a.task_id) in sent and task.runtime_class is None and a.runtime_class is not None:
            task.runtime_class = a.runtime_class
            session.add(task)
    return {"tasks": len(tasks), "assigned": len(sent), "unplaced": unplaced,
            "skipped": len(skipped) + behind, "assignments": {str(k): v for k, v in sent.items()}}


def _match_checked_first(session: Session, providers: list[ProviderView], views: list[TaskView],
                         config: MatchConfig, now: float, *, posted: set[int]) -> MatchResult:
    """Extra replicas of checked tasks (spot checks, partners, canaries; not the bootstrap's) go to trusted
    providers only, so a check cannot be run by an untrusted accomplice; they are matched first, their
    resources taken from the providers, then the rest. With no trusted provider yet (a young network) any
    eligible provider checks."""
    extra = [v for v in views if int(v.task_id) not in posted]  # a first replica is anyone's, even a canary's
    checks = checks_of(session, (int(v.task_id) for v in extra))
    checked = [v for v in extra if int(v.task_id) in checks
               and checks[int(v.task_id)].kind != CheckKind.BOOTSTRAP]  # the bootstrap's partners: anyone
    trusted = trusted_providers(session)
    if not checked or not trusted:
        return match(providers, views, config, now)
    first = match([p for p in providers if p.address in trusted], checked, config, now)
    need = {v.task_id: v.resources for v in checked}
    used: dict[str, Resources] = {}
    for a in first.assignments:
        for address in a.providers:
            have, add = used.get(address, Resources()), need[a.task_id]
            used[address] = Resources(have.cpus + add.cpus, have.memory_mb + add.memory_mb,
                                      have.disk_mb + add.disk_mb, have.gpus + add.gpus)
    rest = match([_less(p, used.get(p.address)) for p in providers],
                 [v for v in views if v not in checked], config, now)
    return MatchResult(first.assignments + rest.assignments, first.unplaced + rest.unplaced,
                       first.preemptions + rest.preemptions)


def _class_of_holders(session: Session, spec: TaskSpec, holders: frozenset[str]) -> str | None:
    """The one runtime class every provider already running a replica of the task shares (for the spec's
    runtime, for GPU work when it needs GPUs), or None when they share none or more than one."""
    gpu = spec.resources.gpus > 0
    common: set[str] | None = None
    for address in sorted(holders):
        row = session.get(Provider, address)
        classes = {c for c in (row.runtime_classes if row else []) or []
                   if runtime_of(c) == spec.runtime and is_gpu_class(c) == gpu}
        common = classes if common is None else common & classes
    return next(iter(common)) if common is not None and len(common) == 1 else None


def _round_would_strand(on_chain: dict[str, Any], replicas: Sequence[Replica],
                        requests: Sequence[ReplicaReplacement], chain_now: int) -> bool:
    """Whether a new round now would shut out live replicas: the escrow takes commits from the current round
    only, so a replacement waits until every replica of the round that is not being replaced has committed
    (or the round's commit window closed)."""
    current = int(on_chain.get("round", 0))
    replaced = {r.provider for r in requests}
    live = [r for r in replicas if r.round == current and r.provider not in replaced
            and r.status in (ReplicaStatus.ASSIGNED, ReplicaStatus.RUNNING, ReplicaStatus.EXECUTED)]
    return bool(live) and chain_now <= int(on_chain.get("commitDeadline", 0))


def _unseen_load(session: Session, rows: Sequence[Provider]) -> dict[str, Resources]:
    """Resources of replicas assigned to each provider after its last heartbeat: its reported free capacity
    does not show them yet, so a round subtracts them rather than overfill the provider. GPUs of every
    replica still waiting to start count whenever it was assigned: a daemon reserves a GPU only when the run
    starts (its spec may still be on the way), so a heartbeat in between shows that GPU free, and a GPU is
    never shared, unlike cores."""
    heartbeats = {row.address: aware(row.last_heartbeat) for row in rows}
    if not heartbeats:
        return {}
    pending = session.exec(
        select(Replica.provider, Replica.assigned_at, Task.spec_hash, Task.customer)
        .join(Task, col(Task.task_id) == col(Replica.task_id))
        .where(col(Replica.provider).in_(list(heartbeats)), col(Replica.status) == ReplicaStatus.ASSIGNED,
               col(Task.status).in_(ACTIVE))
    ).all()
    specs: dict[tuple[str, str], Resources | None] = {}
    load: dict[str, Resources] = {}
    for provider, assigned_at, digest, customer in pending:
        seen = heartbeats.get(provider)
        seen_by_heartbeat = seen is not None and (aware(assigned_at) or seen) <= seen
        if (digest, customer) not in specs:
            record = session.get(SpecRecord, (digest, customer))
            need = TaskSpec.model_validate(record.spec).resources if record else None
            specs[(digest, customer)] = (Resources(need.cpus, need.memory_mb, need.disk_mb, need.gpus)
                                         if need else None)
        extra = specs[(digest, customer)]
        if extra is not None and seen_by_heartbeat:
            extra = Resources(gpus=extra.gpus) if extra.gpus else None
        if extra is not None:
            have = load.get(provider, Resources())
            load[provider] = Resources(have.cpus + extra.cpus, have.memory_mb + extra.memory_mb,
                                       have.disk_mb + extra.disk_mb, have.gpus + extra.gpus)
    return load


def _less(view: ProviderView, used: Resources | None) -> ProviderView:
    if used is None:
        return view
    free = view.free
    left = Resources(max(free.cpus - used.cpus, 0.0), max(free.memory_mb - used.memory_mb, 0),
                     max(free.disk_mb - used.disk_mb, 0), max(free.gpus - used.gpus, 0))
    return replace(view, free=left)


def _send(session: Session, ctx: JobContext, chain: ChainOps,
          plan: dict[int, list[str]]) -> tuple[dict[int, list[str]], list[int]]:
    """assignMany for the whole plan; a task the chain refuses is dropped and the rest sent again."""
    skipped: list[int] = []
    key = require_matcher_key(ctx) if plan else ""
    while plan:
        ids = sorted(plan)
        try:
            receipt = chain.assign_many(ids, [plan[i] for i in ids], sender=key)
        except ContractRevert as exc:
            bad = exc.error_args.get("taskId")
            if exc.error_name not in SKIP_ERRORS or bad is None or int(bad) not in plan:
                raise
            log.info("assign of task %s skipped: %s", bad, exc.message)
            skipped.append(int(bad))
            del plan[int(bad)]
            continue
        apply.ingest(session, chain.receipt_events(receipt))
        tx_hash = "0x" + bytes(receipt["transactionHash"]).hex()
        for task_id in ids:
            _mark_replaced(session, task_id, plan[task_id], tx_hash)
        log.info("assigned %d task(s) in %s", len(ids), tx_hash)
        return plan, skipped
    return {}, skipped


def _mark_replaced(session: Session, task_id: int, providers: list[str], tx_hash: str) -> None:
    requests = session.exec(select(ReplicaReplacement).where(
        col(ReplicaReplacement.task_id) == task_id, col(ReplicaReplacement.replaced_at).is_(None))
        .order_by(col(ReplicaReplacement.detected_at))).all()
    for request, provider in zip(requests, providers, strict=False):
        request.replaced_at, request.replaced_by, request.tx_hash = utcnow(), provider, tx_hash
        session.add(request)
