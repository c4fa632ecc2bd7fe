"""The settle job as a process (`python -m marketplace.jobs once settle_tasks`), killed right after it
broadcast a finalizeMany and before it saw the receipt (the TEST FAULT `settle-exit-after-broadcast`), then
run again: every task is settled exactly once, one transaction in all, and every provider's credit is the
planned payment. Anvil, the SQLite database and the job process are real; only the moment of death is
injected (no real part dies on cue)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from sqlmodel import Session

from billing.journal import SettlementState
from billing.settlement import EXIT_AFTER_BROADCAST, FAULT_ENV
from hashgrid.chain.contracts import Contracts, TaskState, commitment_for
from hashgrid.config import ANVIL_DEV_KEYS, DEV_CHAIN_ID, REPO_ROOT
from marketplace.jobs import JobContext, index_chain, run_matching_round
from marketplace.jobs.leases import acquire_lease, holder_gone
from marketplace.jobs.settle import journal_for, plan_for
from scripts.devnet import DevAccounts
from tests.marketplace import conftest_services as services
from tests.marketplace.conftest_services import add_providers, make_spec, post_spec

ctx = services.ctx
jobs_db_url = services.jobs_db_url
jobs_engine = services.jobs_engine

TASKS = 4
RESULT = b"\x5a" * 32


def settle_process(ctx: JobContext, tmp_path: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    deployment_file = ctx.deployment.save(tmp_path / "deployment.json")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HASHGRID_")}
    env.update(HASHGRID_DATABASE_URL=str(ctx.engine.url), HASHGRID_RPC_URL=ctx.client.rpc_url,
               HASHGRID_DEPLOYMENT_FILE=str(deployment_file), HASHGRID_CHAIN_ID=str(DEV_CHAIN_ID),
               HASHGRID_PRIVATE_KEY=ANVIL_DEV_KEYS[0], HASHGRID_STATE_DIR=str(tmp_path / "jobs"), **extra)
    return subprocess.run([sys.executable, "-m", "marketplace.jobs", "once", "settle_tasks"], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=300)


def test_settle_process_killed_after_broadcast_settles_every_task_once(
        ctx: JobContext, contracts: Contracts, dev_accounts: DevAccounts, tmp_path: Path) -> None:
    add_providers(ctx.engine, dev_accounts.providers)
    ids = [post_spec(contracts, ctx.engine, dev_accounts.customer,
                     make_spec(f"killed {i}", replicas=2, quorum=2, max_replicas=2)) for i in range(TASKS)]
    index_chain(ctx=ctx)
    run_matching_round(ctx=ctx)
    by_address = {p.address.lower(): p for p in dev_accounts.providers}
    for task_id in ids:
        players = [by_address[p.lower()] for p in contracts.escrow.replicas_of(task_id)]
        salts = [os.urandom(32) for _ in players]
        for p, salt in zip(players, salts, strict=True):
            contracts.escrow.commit(task_id, commitment_for(RESULT, salt, p.address), sender=p)
        for p, salt in zip(players, salts, strict=True):
            contracts.escrow.reveal(task_id, RESULT, salt, sender=p)
    index_chain(ctx=ctx)
    with Session(ctx.engine) as session:
        plans = {task_id: plan_for(session, contracts, task_id) for task_id in ids}
    credits_before = {a: contracts.escrow.claimable(a) for a in by_address}
    settler = dev_accounts.deployer.address
    nonce = ctx.client.w3.eth.get_transaction_count(settler)

    killed = settle_process(ctx, tmp_path, **{FAULT_ENV: EXIT_AFTER_BROADCAST})
    assert killed.returncode == 137, killed.stderr[-3000:]
    assert ctx.client.w3.eth.get_transaction_count(settler) == nonce + 1  # one finalizeMany went out
    journal = journal_for(ctx)
    assert {journal.get(t).state for t in ids} == {SettlementState.SENT}  # type: ignore[union-attr]

    again = settle_process(ctx, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    outcome = json.loads(again.stdout.strip().splitlines()[-1])
    assert sorted(outcome["resumed"]) == sorted(ids) and outcome["settled"] == []
    assert ctx.client.w3.eth.get_transaction_count(settler) == nonce + 1  # nothing sent the second time
    assert {journal.get(t).state for t in ids} == {SettlementState.CONFIRMED}  # type: ignore[union-attr]
    for task_id in ids:
        assert contracts.escrow.get_task(task_id).state == TaskState.SETTLED
        assert len(contracts.escrow.events(names=["TaskSettled"], first_indexed=task_id)) == 1
    owed: dict[str, int] = {}
    for plan in plans.values():
        for provider, amount in plan.payments.items():
            owed[provider] = owed.get(provider, 0) + amount
    assert owed and all(amount > 0 for amount in owed.values())
    for address, before in credits_before.items():
        assert contracts.escrow.claimable(address) - before == owed.get(address, 0)


def test_a_lease_of_an_exited_process_of_this_host_is_taken_over_at_once(ctx: JobContext) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead = f"{socket.gethostname()}:{gone.stdout.strip()}:1"
    assert holder_gone(dead)
    assert not holder_gone(f"{socket.gethostname()}:{os.getpid()}:2")  # this very process: alive
    assert not holder_gone(f"elsewhere:{gone.stdout.strip()}:1")  # another host: only the TTL tells
    assert acquire_lease(ctx.engine, "settler", dead, ttl_s=300)
    assert acquire_lease(ctx.engine, "settler", "a live worker", ttl_s=300)  # the dead one's lease is free
    assert not acquire_lease(ctx.engine, "settler", "someone else", ttl_s=300)  # a live holder's is not
