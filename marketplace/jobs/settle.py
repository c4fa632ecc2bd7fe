"""settle_tasks: finalize on chain, exactly once, every task whose replicas are all revealed (or whose reveal
window closed) and that the verifier accepts or gives up on (jobs.verify: escalation, spot checks,
canaries), paying what billing says.

The plan is billing's (billing.usage.settle_usage): the signed usage reports the providers sent to the
marketplace (Replica.usage + usage_signature), each provider's price sheet (Provider.prices), the task's cap
(max price per replica) and the hashes revealed on chain. billing.settlement.Settler sends it, journaling
every step in `billing_settlement` (task id = idempotency key), so a second run, a restart or a second worker
never pays twice; one settler at a time holds the "settler" lease. The indexer then records TaskSettled.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlmodel import Session, col, select

from billing.journal import SettlementJournal, SettlementState
from billing.prices import PriceSheet
from billing.settlement import Settler
from billing.usage import ReplicaInput, UsageSettlement, settle_usage
from hashgrid.chain.contracts import Contracts, ReplicaState, TaskState, accepted_result
from marketplace.jobs.context import JobContext, require_matcher_key
from marketplace.jobs.leases import acquire_lease, release_lease
from marketplace.jobs.matching import ACTIVE, run_matching_round
from marketplace.jobs.verify import Round, review, spot_secret
from marketplace.models import ChainEvent, Provider, Replica, Task
from verifier.quorum import Verdict

log = logging.getLogger(__name__)

SETTLE_LEASE = "settler"
SETTLE_LEASE_S = 300.0


def journal_for(ctx: JobContext) -> SettlementJournal:
    """The journal on the marketplace's database (its table comes with the migrations)."""
    return SettlementJournal(ctx.engine)


def ready_to_settle(contracts: Contracts, task_id: int, *, now: int) -> bool:
    """Finalize may run: the task is Assigned, every replica committed (or the commit window closed) and
    every committed one revealed (or the reveal window closed)."""
    task = contracts.escrow.get_task(task_id)
    if task.state != TaskState.ASSIGNED or task.round_size == 0:
        return False
    replicas = contracts.escrow.replicas(task_id)
    states = [replica.state for replica in replicas]
    if not states:
        return False
    # only the current round can still commit: an older round's Assigned replica is a replaced no-show
    uncommitted = any(r.state == ReplicaState.ASSIGNED and int.from_bytes(r.payload, "big") == task.round
                      for r in replicas)
    unrevealed = any(s == ReplicaState.COMMITTED for s in states)
    if uncommitted and now < task.commit_deadline:
        return False
    if unrevealed and now < task.reveal_deadline:
        return False
    return any(s == ReplicaState.REVEALED for s in states) or now >= task.reveal_deadline


def maybe_ready(session: Session, task_ids: list[int], *, now: int) -> list[int]:
    """The tasks the indexed events say may be ready: every replica of the current round committed and every
    commitment revealed, or the current round's commit window closed. Only these are read from the chain
    (`ready_to_settle`), so a settle pass costs database reads, not a dozen RPC calls per active task; an
    indexer lag only delays a task to a later pass."""
    if not task_ids:
        return []
    # (round, committed, revealed) per replica: columns, not Replica objects, since this runs every pass over
    # every active task (building the ORM objects cost most of an idle pass)
    replicas: dict[int, list[tuple[int, bool, bool]]] = {}
    columns = select(Replica.task_id, Replica.round, col(Replica.commitment).is_not(None),
                     col(Replica.result_hash).is_not(None)).where(col(Replica.task_id).in_(task_ids))
    for owner, round_, committed, revealed in session.exec(columns):
        replicas.setdefault(owner, []).append((round_, bool(committed), bool(revealed)))
    commit_deadline: dict[int, int] = {}
    rounds = session.exec(select(ChainEvent.task_id, ChainEvent.args).where(
        col(ChainEvent.name) == "RoundOpened", col(ChainEvent.task_id).in_(task_ids))
        .order_by(col(ChainEvent.block_number), col(ChainEvent.log_index)))
    for task_id, args in rounds:
        commit_deadline[int(task_id or 0)] = int(args.get("commitDeadline", 0))  # the latest round's wins
    out = []
    for task_id in task_ids:
        rows = replicas.get(task_id, [])
        if not rows:
            continue
        current = max(round_ for round_, _, _ in rows)
        pending = any(round_ == current and not committed for round_, committed, _ in rows) or any(
            committed and not revealed for _, committed, revealed in rows)
        if not pending or now > commit_deadline.get(task_id, 0):
            out.append(task_id)
    return out


def plan_for(session: Session, contracts: Contracts, task_id: int) -> UsageSettlement:
    """Billing's plan for one task from the chain's reveals and the marketplace's reports and prices."""
    task = contracts.escrow.get_task(task_id)
    revealed = {r.provider.lower(): (r.result_hash if any(r.result_hash) else None)
                for r in contracts.escrow.build_reports(task_id, {}, only_agreeing=False)}
    accepted = accepted_result([h for h in revealed.values() if h is not None], task.quorum)
    rows = {r.provider: r for r in session.exec(select(Replica).where(col(Replica.task_id) == task_id))}
    inputs = []
    for provider, result_hash in revealed.items():
        row = rows.get(provider)
        listed = session.get(Provider, provider)
        sheet = PriceSheet.from_mapping(listed.prices if listed is not None else {})
        report = None
        if row is not None and row.usage and row.usage_signature and result_hash is not None:
            # the document exactly as the provider signed it (billing verifies signer, task and hash)
            report = {"report": dict(row.usage), "signature": row.usage_signature}
        inputs.append(ReplicaInput(provider=provider, result_hash=result_hash, sheet=sheet, report=report))
    return settle_usage(task_id=task_id, accepted_hash=accepted, cap=task.max_price_per_replica,
                        replicas=inputs)


def verifier_step(ctx: JobContext, now: int) -> Round:
    """What the verifier reads once per pass (the windows an extra round needs, the spot-check key, the slash
    rate that makes a stake slashable, the replication policy)."""
    escrow = ctx.contracts.escrow
    return Round(now=now, windows=escrow.param("commitWindow") + escrow.param("revealWindow"),
                 secret=spot_secret(require_matcher_key(ctx)), slash_bps=escrow.param("slashDissentBps"),
                 policy=ctx.settings.replication_policy)


def work_waiting(ctx: JobContext) -> bool:
    """Whether a settlement pass has anything to do: an active task, or a journaled settlement still open.
    One cheap read each, so a network at rest pays no lease writes and no chain clock read every second."""
    with Session(ctx.engine) as session:
        active = session.exec(select(Task.task_id).where(col(Task.status).in_(ACTIVE)).limit(1)).first()
        if active is not None:
            return True
    return bool(journal_for(ctx).rows([SettlementState.PENDING, SettlementState.SENT]))


def settle_tasks(*, ctx: JobContext, task_ids: list[int] | None = None) -> dict[str, Any]:
    """Settle every active task that is ready (or just `task_ids`); resume journaled ones left open."""
    if task_ids is None and not work_waiting(ctx):
        return {"settled": [], "open": {}, "resumed": [], "escalated": [], "idle": True}
    if not acquire_lease(ctx.engine, SETTLE_LEASE, ctx.worker_id, ttl_s=SETTLE_LEASE_S):
        return {"skipped": "another settler holds the lease"}
    try:
        contracts = ctx.contracts
        journal = journal_for(ctx)
        settler = Settler(contracts.escrow, journal, sender=require_matcher_key(ctx), max_attempts=3)
        resumed = [o.task_id for o in settler.resume()]
        now = ctx.client.timestamp()
        escalated: list[int] = []
        step: Round | None = None
        with Session(ctx.engine) as session:
            query = select(Task.task_id).where(col(Task.status).in_(ACTIVE))
            if task_ids is not None:
                query = query.where(col(Task.task_id).in_(task_ids))
            candidates = maybe_ready(session, list(session.exec(query.order_by(col(Task.task_id)))), now=now)
            ready = [task_id for task_id in candidates if ready_to_settle(contracts, task_id, now=now)]
            plans = []
            for task_id in ready:
                step = step or verifier_step(ctx, now)
                decision = review(session, contracts, task_id, step)
                if decision is None or decision.verdict is Verdict.ESCALATE:
                    escalated += [task_id] if decision is not None else []
                    continue
                plan = plan_for(session, contracts, task_id)
                if plan.refused:
                    log.info("task %d: usage reports not used for %s", task_id, plan.refused)
                plans.append(plan)
            session.commit()  # the verifier's checks and escalation requests
        outcomes = settler.settle(plans) if plans else []
    finally:
        release_lease(ctx.engine, SETTLE_LEASE, ctx.worker_id)
    settled = [o.task_id for o in outcomes if o.done]
    failed = {o.task_id: o.error_name or o.error for o in outcomes if not o.done}
    if settled or failed:
        log.info("settlement: confirmed %s, open %s", settled, failed)
    outcome: dict[str, Any] = {"settled": settled, "open": failed, "resumed": resumed, "escalated": escalated}
    if escalated:
        outcome["matching"] = run_matching_round(ctx=ctx, task_ids=escalated)
    return outcome
