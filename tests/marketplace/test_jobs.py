"""The background jobs against a real anvil: a matching round assigns on chain and explains an impossible
task, heartbeat expiry gets a replacement replica assigned, deadlines expire tasks, the in-process scheduler
runs the jobs by itself, and two matching workers never double-assign (SQLite claims, PostgreSQL SKIP
LOCKED)."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, select

from hashgrid.chain.client import ChainClient
from hashgrid.chain.contracts import Contracts, TaskState
from hashgrid.chain.deployment import Deployment
from hashgrid.spec import TaskSpec, spec_document
from marketplace.indexer.tables import ReplicaReplacement
from marketplace.indexer.verification import record_of
from marketplace.jobs import (
    InProcessScheduler,
    JobContext,
    check_deadlines,
    expire_heartbeats,
    index_chain,
    run_matching_round,
)
from marketplace.jobs.scheduler import (
    ASSIGN,
    BUSY_WINDOW_S,
    IDLE_HEAD_POLL_S,
    HeadWatch,
    Nudge,
    Periodic,
)
from marketplace.models import ChainEvent, Replica, Task, TaskStatus, utcnow
from scripts.devnet import DevAccounts
from tests.marketplace import conftest_services as services
from tests.marketplace.conftest_services import (
    add_providers,
    make_ctx,
    make_spec,
    new_engine,
    post_spec,
    set_heartbeat,
    stale,
)
from tests.polling import wait_for

# fixtures shared by the jobs tests (pytest finds them as module attributes)
ctx = services.ctx
jobs_db_url = services.jobs_db_url
jobs_engine = services.jobs_engine
pg_db_url = services.pg_db_url


def _task(engine: Engine, task_id: int) -> Task:
    with Session(engine) as session:
        task = session.get(Task, task_id)
        assert task is not None
        return task


def _replicas(engine: Engine, task_id: int) -> dict[str, Replica]:
    with Session(engine) as session:
        return {r.provider: r for r in session.exec(select(Replica).where(Replica.task_id == task_id))}


def _assigned_on_chain(contracts: Contracts, task_id: int) -> list[str]:
    return [p.lower() for p in contracts.escrow.replicas_of(task_id)]


def test_matching_round_assigns_on_chain_and_explains_unplaced(ctx: JobContext, contracts: Contracts,
                                                               dev_accounts: DevAccounts) -> None:
    add_providers(ctx.engine, dev_accounts.providers)
    ok = post_spec(contracts, ctx.engine, dev_accounts.customer, make_spec("cpu", replicas=2, quorum=2))
    gpu = post_spec(contracts, ctx.engine, dev_accounts.customer, make_spec("gpu", replicas=1, quorum=1,
                                                                            gpus=1))
    index_chain(ctx=ctx)
    outcome = run_matching_round(ctx=ctx)
    assert outcome["assigned"] == 1 and outcome["unplaced"] == 1
    on_chain = _assigned_on_chain(contracts, ok)
    assert len(on_chain) == 2 and len(set(on_chain)) == 2
    assert contracts.escrow.get_task(ok).state == TaskState.ASSIGNED
    # the round applied its own receipt: providers see their replicas before the indexer runs again
    assert set(_replicas(ctx.engine, ok)) == set(on_chain)
    assert _task(ctx.engine, ok).status == TaskStatus.ASSIGNED
    waiting = _task(ctx.engine, gpu)
    assert waiting.status == TaskStatus.POSTED
    assert waiting.unplaced_reason and "GPU" in waiting.unplaced_reason.upper()
    assert contracts.escrow.get_task(gpu).state == TaskState.POSTED
    # a second round and a re-index change nothing: no double assignment, the reason stays
    again = run_matching_round(ctx=ctx)
    assert again["assigned"] == 0
    index_chain(ctx=ctx)
    assert _assigned_on_chain(contracts, ok) == on_chain
    with Session(ctx.engine) as session:
        assigned = session.exec(select(ChainEvent).where(ChainEvent.task_id == ok,
                                                         ChainEvent.name == "TaskAssigned")).all()
    assert len(assigned) == 2


def test_task_assigned_elsewhere_is_skipped_not_retried(ctx: JobContext, contracts: Contracts,
                                                        dev_accounts: DevAccounts) -> None:
    """The chain is the arbiter: another matcher got there first, so our assign reverts and is dropped."""
    add_providers(ctx.engine, dev_accounts.providers)
    taken = post_spec(contracts, ctx.engine, dev_accounts.customer, make_spec("taken", replicas=1, quorum=1))
    free = post_spec(contracts, ctx.engine, dev_accounts.customer, make_spec("free", replicas=1, quorum=1))
    index_chain(ctx=ctx)
    contracts.escrow.assign(taken, [dev_accounts.providers[3].address], sender=dev_accounts.deployer)
    outcome = run_matching_round(ctx=ctx)
    assert outcome["skipped"] == 1 and outcome["assigned"] == 1
    assert _assigned_on_chain(contracts, taken) == [dev_accounts.providers[3].address.lower()]
    assert len(_assigned_on_chain(contracts, free)) == 1


def test_heartbeat_expiry_assigns_a_replacement(ctx: JobContext, contracts: Contracts,
                                                dev_accounts: DevAccounts) -> None:
    add_providers(ctx.engine, dev_accounts.providers)
    task_id = post_spec(contracts, ctx.engine, dev_accounts.customer,
                        make_spec("replace me", replicas=2, quorum=2, max_replicas=3))
    index_chain(ctx=ctx)
    run_matching_round(ctx=ctx)
    first = _assigned_on_chain(contracts, task_id)
    assert len(first) == 2
    dead, alive = first
    by_address = {p.address.lower(): p for p in dev_accounts.providers}
    # the live one commits; the dead one stops sending heartbeats
    from hashgrid.chain.contracts import commitment_for

    contracts.escrow.commit(task_id, commitment_for(b"\x01" * 32, b"\x02" * 32, by_address[alive].address),
                            sender=by_address[alive])
    index_chain(ctx=ctx)
    set_heartbeat(ctx.engine, by_address[dead], stale(ctx.settings.heartbeat_ttl_s))
    outcome = expire_heartbeats(ctx=ctx)
    assert outcome["new"] == 1  # only the uncommitted replica of the offline provider
    now_assigned = _assigned_on_chain(contracts, task_id)
    assert len(now_assigned) == 3
    newcomer = now_assigned[2]
    assert newcomer not in first
    with Session(ctx.engine) as session:
        request = session.get(ReplicaReplacement, (task_id, dead))
        assert request is not None and request.replaced_by == newcomer and request.replaced_at is not None
    replicas = _replicas(ctx.engine, task_id)
    assert replicas[newcomer].round == 2 and replicas[dead].round == 1
    # running it again does not add replicas: the request is fulfilled
    assert expire_heartbeats(ctx=ctx)["new"] == 0
    assert len(_assigned_on_chain(contracts, task_id)) == 3


def test_heartbeats_missed_during_the_marketplaces_own_outage_replace_nobody(
        ctx: JobContext, contracts: Contracts, dev_accounts: DevAccounts) -> None:
    """Right after the jobs start, or while no provider at all is heard (the API was down), a stale heartbeat
    is the marketplace's deafness, not a death: every provider gets one TTL to beat again."""
    add_providers(ctx.engine, dev_accounts.providers)
    task_id = post_spec(contracts, ctx.engine, dev_accounts.customer,
                        make_spec("outage", replicas=2, quorum=2, max_replicas=3))
    index_chain(ctx=ctx)
    run_matching_round(ctx=ctx)
    first = _assigned_on_chain(contracts, task_id)
    by_address = {p.address.lower(): p for p in dev_accounts.providers}
    set_heartbeat(ctx.engine, by_address[first[0]], stale(ctx.settings.heartbeat_ttl_s))
    ctx.deaf_at = utcnow()  # a process that just started
    assert expire_heartbeats(ctx=ctx)["new"] == 0
    for provider in dev_accounts.providers:  # nobody heard for a while: the API was down
        set_heartbeat(ctx.engine, provider, stale(ctx.settings.heartbeat_ttl_s))
    ctx.deaf_at = utcnow() - timedelta(days=1)
    assert expire_heartbeats(ctx=ctx)["new"] == 0
    assert utcnow() - ctx.deaf_at < timedelta(seconds=5)  # it noticed its own deafness
    later = utcnow() + timedelta(seconds=ctx.settings.heartbeat_ttl_s + 1)  # a TTL on, one still silent
    for provider in dev_accounts.providers:
        if provider.address.lower() != first[0]:
            set_heartbeat(ctx.engine, provider, later)
    assert expire_heartbeats(ctx=ctx, now=later, rematch=False)["new"] == 1
    assert len(_assigned_on_chain(contracts, task_id)) == 2  # rematch off: only the request was recorded


def test_a_spec_chooses_where_it_runs(ctx: JobContext, contracts: Contracts,
                                      dev_accounts: DevAccounts) -> None:
    """requirements.providers / exclude_providers are honoured by the live matching round, and a task whose
    chosen providers cannot take it says so in its reason."""
    add_providers(ctx.engine, dev_accounts.providers)
    p = [a.address.lower() for a in dev_accounts.providers]

    def chosen(name: str, **requirements: list[str]) -> TaskSpec:
        document = spec_document(make_spec(name, replicas=2, quorum=2))
        document["requirements"] = requirements
        return TaskSpec.model_validate(document)

    allowed = post_spec(contracts, ctx.engine, dev_accounts.customer,
                        chosen("allowed", providers=[p[3], p[1]]))
    excluded = post_spec(contracts, ctx.engine, dev_accounts.customer,
                         chosen("excluded", exclude_providers=[p[0], p[1]]))
    gone = "0x" + "ab" * 20  # allowed but not a provider here
    stuck = post_spec(contracts, ctx.engine, dev_accounts.customer,
                      chosen("stuck", providers=[p[2].upper().replace("0X", "0x"), gone]))
    index_chain(ctx=ctx)
    run_matching_round(ctx=ctx)
    assert sorted(_assigned_on_chain(contracts, allowed)) == sorted([p[1], p[3]])
    assert sorted(_assigned_on_chain(contracts, excluded)) == sorted([p[2], p[3]])
    assert _assigned_on_chain(contracts, stuck) == []
    with Session(ctx.engine) as session:
        reason = session.get(Task, stuck).unplaced_reason  # type: ignore[union-attr]
    assert reason and "the spec allows only 2 provider(s), 1 of them online and eligible now" in reason
    assert p[2] in reason

    # an allow-list vouches for nobody: agreeing on such a task earns no reputation (a customer could
    # allow-list its own sybils), while a dissent there still counts. ReplicaFinalized rows as the indexer
    # stores them, written directly here: settling both tasks for real takes minutes
    with Session(ctx.engine) as session:
        for i, (task_id, provider, outcome) in enumerate(((allowed, p[3], 4), (excluded, p[3], 4),
                                                         (allowed, p[1], 5))):
            session.add(ChainEvent(block_number=10_000 + i, block_hash="0x" + "00" * 32,
                                   tx_hash=f"0x{i:064x}", log_index=0, contract="escrow",
                                   name="ReplicaFinalized", task_id=task_id, account=provider,
                                   args={"provider": provider, "outcome": outcome}))
        session.commit()
        vouched, _ = record_of(session, p[3])
        dissenter, _ = record_of(session, p[1])
    assert vouched.verified == 1  # the task without an allow-list only
    assert dissenter.dissents == 1


def test_deadlines_expire_tasks_on_chain(ctx: JobContext, contracts: Contracts, chain: ChainClient,
                                         dev_accounts: DevAccounts) -> None:
    add_providers(ctx.engine, dev_accounts.providers)
    now = chain.timestamp()
    task_id = post_spec(contracts, ctx.engine, dev_accounts.customer,
                        make_spec("late", replicas=1, quorum=1), deadline=now + 2 * 3600)
    index_chain(ctx=ctx)
    run_matching_round(ctx=ctx)
    assert check_deadlines(ctx=ctx) == {"expired": [], "skipped": []}
    grace = contracts.escrow.param("expiryGrace")
    chain.rpc("evm_increaseTime", [2 * 3600 + grace + 1])
    chain.rpc("evm_mine")
    assert check_deadlines(ctx=ctx)["expired"] == [task_id]
    assert contracts.escrow.get_task(task_id).state == TaskState.EXPIRED
    assert _task(ctx.engine, task_id).status == TaskStatus.EXPIRED
    assert check_deadlines(ctx=ctx)["expired"] == []  # idempotent


def test_in_process_scheduler_runs_the_jobs(ctx: JobContext, contracts: Contracts,
                                            dev_accounts: DevAccounts) -> None:
    add_providers(ctx.engine, dev_accounts.providers)
    jobs = [Periodic("index_chain", 0.1, lambda: index_chain(ctx=ctx)),
            Periodic("run_matching_round", 0.1, lambda: run_matching_round(ctx=ctx))]
    with InProcessScheduler(ctx, jobs, tick_s=0.05) as scheduler:
        task_id = post_spec(contracts, ctx.engine, dev_accounts.customer, make_spec("scheduled"))
        wait_for(lambda: _task_status(ctx.engine, task_id) == TaskStatus.ASSIGNED, timeout=30,
                 what="the scheduler's assignment")
    assert len(_assigned_on_chain(contracts, task_id)) == 2
    assert scheduler.errors == {"index_chain": 0, "run_matching_round": 0}


def test_default_schedule_assigns_a_post_and_rings(ctx: JobContext, contracts: Contracts,
                                                   dev_accounts: DevAccounts) -> None:
    """The shipped schedule: the assign lane indexes the new block, matches at once and calls on_assigned
    (the API's bell), with every other job running on its own lane."""
    add_providers(ctx.engine, dev_accounts.providers)
    rung = threading.Event()
    with InProcessScheduler(ctx, on_assigned=rung.set) as scheduler:
        task_id = post_spec(contracts, ctx.engine, dev_accounts.customer, make_spec("lanes"))
        assert rung.wait(60), f"no assignment rang; errors: {scheduler.errors}"
    assert _task_status(ctx.engine, task_id) == TaskStatus.ASSIGNED
    assert {job.name: job.lane for job in scheduler.jobs}["index_chain"] == ASSIGN
    assert scheduler.errors["index_chain"] == 0 and scheduler.errors["run_matching_round"] == 0


def test_a_slow_job_does_not_hold_up_the_assign_lane(ctx: JobContext) -> None:
    release, indexed = threading.Event(), threading.Event()
    jobs = [Periodic("settle_tasks", 0.01, lambda: release.wait(60)),
            Periodic("index_chain", 0.01, indexed.set, lane=ASSIGN)]
    with InProcessScheduler(ctx, jobs, tick_s=0.05):
        try:
            assert indexed.wait(30), "the assign lane waited for the jobs lane"
        finally:
            release.set()


def test_head_watch_indexes_when_the_head_moves(ctx: JobContext) -> None:
    now = [1000.0]
    watch = HeadWatch(ctx, interval_s=3600, clock=lambda: now[0])
    assert watch.due()
    watch.ran()
    now[0] += 0.06
    assert not watch.due()  # same head, interval not over: no index run, no database
    ctx.client.rpc("evm_mine")
    now[0] += 0.06
    assert watch.due()
    watch.ran()
    assert HeadWatch(ctx, interval_s=0).due()  # the interval alone makes a run due


def test_head_watch_polls_once_a_second_at_rest_and_fast_when_a_post_is_announced(ctx: JobContext) -> None:
    now, expect = [1000.0], threading.Event()
    watch = HeadWatch(ctx, interval_s=0.5, expect=expect, clock=lambda: now[0])
    assert watch.due()
    watch.ran()
    now[0] += BUSY_WINDOW_S + 1  # no new block for a while: at rest
    assert not watch.due()  # an unchanged head, indexed without error: nothing to do
    polls = watch.polls
    now[0] += 0.06
    assert not watch.due() and watch.polls == polls  # at rest: no RPC 60 ms later
    now[0] += 0.06
    expect.set()  # the API registered a spec: its postTask is coming
    assert not watch.due() and watch.polls == polls + 1  # polled at once
    now[0] += 0.06
    ctx.client.rpc("evm_mine")
    assert watch.due() and watch.polls == polls + 2  # fast while busy: the new block is seen in 60 ms
    watch.ran(failed=True)  # that index run raised
    now[0] += IDLE_HEAD_POLL_S
    assert watch.due()  # the same head again, after the index interval
    watch.ran()
    now[0] += BUSY_WINDOW_S + IDLE_HEAD_POLL_S
    assert not watch.due()


def test_a_nudge_wakes_the_sleeping_assign_lane(ctx: JobContext) -> None:
    """At rest the lane sleeps as long as its next job allows; the nudge of a registered spec wakes it."""
    ran, runs = threading.Event(), []
    job = Periodic("index_chain", 3600, lambda: (runs.append(1), ran.set()), lane=ASSIGN)
    nudge = Nudge()
    nudge.listeners.append(job.wake)
    with InProcessScheduler(ctx, [job], tick_s=3600):
        assert ran.wait(30)  # the first run, at start
        ran.clear()
        nudge.set()
        assert ran.wait(30), "the nudge did not wake the lane"
    assert len(runs) == 2 and nudge.is_set()  # the head watch, not the scheduler, clears the nudge


def test_idle_passes_back_off_and_new_events_wake_them() -> None:
    job = Periodic("settle_tasks", 1.0, lambda: None, idle_max_s=8.0)
    for expected in (2.0, 4.0, 8.0, 8.0):
        job.worked(False)
        assert job.interval_s == expected
    job.worked(True)
    assert job.interval_s == 1.0
    job.worked(False)
    job.next_at = 1e9
    job.wake()
    assert (job.interval_s, job.next_at) == (1.0, 0.0)
    fixed = Periodic("check_deadlines", 30.0, lambda: None)
    fixed.worked(False)
    assert fixed.interval_s == 30.0  # no idle_max_s: never backs off


def test_settlement_at_rest_does_not_touch_the_lease(ctx: JobContext) -> None:
    """With no active task and nothing journaled, a pass is two reads: no lease write, no chain clock."""
    from marketplace.jobs.leases import acquire_lease, release_lease
    from marketplace.jobs.settle import SETTLE_LEASE, settle_tasks, work_waiting

    assert not work_waiting(ctx)
    assert acquire_lease(ctx.engine, SETTLE_LEASE, "another-settler", ttl_s=60)
    try:
        outcome = settle_tasks(ctx=ctx)  # a pass that wanted the lease would report it skipped
        assert outcome.get("idle") is True and "skipped" not in outcome
    finally:
        release_lease(ctx.engine, SETTLE_LEASE, "another-settler")


def _task_status(engine: Engine, task_id: int) -> TaskStatus | None:
    with Session(engine) as session:
        task = session.get(Task, task_id)
        return task.status if task else None


# ------------------------------------------------------------------ several workers, one queue
def _concurrent_rounds(contexts: list[JobContext], indexer: JobContext | None = None) -> list[dict[str, Any]]:
    """Each context runs three matching rounds at once (and `indexer`, if given, indexes meanwhile)."""
    barrier = threading.Barrier(len(contexts) + (1 if indexer else 0))
    results: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def index_meanwhile(c: JobContext) -> None:
        try:
            barrier.wait()
            for _ in range(10):
                index_chain(ctx=c)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    def worker(c: JobContext) -> None:
        try:
            barrier.wait()
            for _ in range(3):
                results.append(run_matching_round(ctx=c))
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(c,)) for c in contexts]
    if indexer is not None:
        threads.append(threading.Thread(target=index_meanwhile, args=(indexer,)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    return results


def _check_no_double_assignment(contexts: list[JobContext], contracts: Contracts, task_ids: list[int],
                                results: list[dict[str, Any]]) -> None:
    assert sum(r["assigned"] for r in results) == len(task_ids)
    assert sum(r["skipped"] for r in results) == 0  # no worker even tried a task another one had
    for task_id in task_ids:
        providers = _assigned_on_chain(contracts, task_id)
        assert len(providers) == 1, (task_id, providers)


def _post_many(contracts: Contracts, engine: Engine, dev_accounts: DevAccounts, n: int) -> list[int]:
    return [post_spec(contracts, engine, dev_accounts.customer, make_spec(f"many {i}", replicas=1, quorum=1))
            for i in range(n)]


def test_two_workers_never_double_assign_sqlite(ctx: JobContext, contracts: Contracts, chain: ChainClient,
                                                deployment: Deployment, dev_accounts: DevAccounts,
                                                tmp_path: Path) -> None:
    add_providers(ctx.engine, dev_accounts.providers)
    task_ids = _post_many(contracts, ctx.engine, dev_accounts, 6)
    index_chain(ctx=ctx)
    other = make_ctx(ctx.engine, chain, deployment, tmp_path)
    assert other.worker_id != ctx.worker_id
    results = _concurrent_rounds([ctx, other])
    _check_no_double_assignment([ctx, other], contracts, task_ids, results)


def test_postgresql_jobs_and_two_workers_never_double_assign(pg_db_url: str, contracts: Contracts,
                                                             chain: ChainClient, deployment: Deployment,
                                                             dev_accounts: DevAccounts,
                                                             tmp_path: Path) -> None:
    engine = new_engine(pg_db_url)
    try:
        first = make_ctx(engine, chain, deployment, tmp_path)
        second = make_ctx(engine, chain, deployment, tmp_path)
        add_providers(engine, dev_accounts.providers)
        task_ids = _post_many(contracts, engine, dev_accounts, 6)
        gpu = post_spec(contracts, engine, dev_accounts.customer, make_spec("gpu", replicas=1, quorum=1,
                                                                            gpus=1))
        assert index_chain(ctx=first)["events"] > 0
        assert index_chain(ctx=second)["events"] == 0  # idempotent, resumes from the shared cursor
        third = make_ctx(engine, chain, deployment, tmp_path)
        results = _concurrent_rounds([first, second], indexer=third)
        _check_no_double_assignment([first, second], contracts, task_ids, results)
        assert "GPU" in (_task(engine, gpu).unplaced_reason or "").upper()
        index_chain(ctx=first)
        for task_id in task_ids:
            assert _task(engine, task_id).status == TaskStatus.ASSIGNED
    finally:
        engine.dispose()
