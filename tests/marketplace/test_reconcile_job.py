"""Reconciliation live: after the real jobs settle a task on anvil, journal, database and chain agree; a
database that drifted (a payment, a task's state) is reported by `hashgrid marketplace reconcile`, exit 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sqlmodel import Session, select

from hashgrid.chain.contracts import Contracts
from hashgrid.chain.deployment import Deployment
from marketplace.jobs import JobContext, index_chain
from marketplace.jobs.reconcile import reconcile_marketplace
from marketplace.jobs.settle import settle_tasks
from marketplace.models import Replica, Task, TaskStatus
from scripts.devnet import DevAccounts
from tests.marketplace import conftest_services as services
from tests.marketplace.conftest_services import add_providers, make_spec
from tests.marketplace.test_verification_jobs import RIGHT, accounts_of, assigned, post_and_match, reveal

ROOT = Path(__file__).resolve().parents[2]
ctx = services.ctx
jobs_db_url = services.jobs_db_url
jobs_engine = services.jobs_engine


def _cli(ctx: JobContext, deployment: Deployment, db_url: str,
         tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HASHGRID_DATABASE_URL=db_url, HASHGRID_RPC_URL=ctx.client.rpc_url,
               HASHGRID_DEPLOYMENT_FILE=str(deployment.save(tmp_path / "deployment.json")),
               HASHGRID_STATE_DIR=str(tmp_path), HASHGRID_CONFIRMATIONS="0")
    return subprocess.run([sys.executable, "-m", "hashgrid.cli", "marketplace", "reconcile", "--json"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)


def test_settled_task_reconciles_and_drift_is_reported(ctx: JobContext, contracts: Contracts,
                                                       dev_accounts: DevAccounts, deployment: Deployment,
                                                       jobs_db_url: str, tmp_path: Path) -> None:
    add_providers(ctx.engine, dev_accounts.providers)
    task_id = post_and_match(ctx, contracts, dev_accounts, make_spec("reconciled", replicas=3, quorum=2))
    reveal(contracts, task_id, [(p, RIGHT) for p in accounts_of(dev_accounts, assigned(contracts, task_id))])
    index_chain(ctx=ctx)
    assert settle_tasks(ctx=ctx)["settled"] == [task_id]
    index_chain(ctx=ctx)  # the database learns the outcome from the chain's events

    report = reconcile_marketplace(ctx=ctx)
    assert report.ok, report.differences
    assert report.tasks_checked >= 1
    clean = _cli(ctx, deployment, jobs_db_url, tmp_path)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert json.loads(clean.stdout)["ok"] is True

    with Session(ctx.engine) as session:
        replica = session.exec(select(Replica).where(Replica.task_id == task_id)).first()
        assert replica is not None and int(replica.paid) > 0
        replica.paid = str(int(replica.paid) + 1)
        task = session.get(Task, task_id)
        assert task is not None and task.status == TaskStatus.SETTLED
        task.status = TaskStatus.FAILED
        session.add_all([replica, task])
        session.commit()
    drifted = _cli(ctx, deployment, jobs_db_url, tmp_path)
    assert drifted.returncode == 1, drifted.stdout + drifted.stderr
    kinds = {(d["kind"], d["task_id"]) for d in json.loads(drifted.stdout)["differences"]}
    assert kinds == {("db_paid_mismatch", task_id), ("db_state_mismatch", task_id)}
