"""Reports are durable: the marketplace (uvicorn with its jobs) is stopped for 30 s while two real daemons run
docker tasks that log a line every quarter second and write an output; every log line and every output
reaches the customer afterwards, exactly once, and billing gets every signed usage report.

The daemons keep what they could not deliver in their journal's outbox (provider/outbox.py) and hold their
commits until it is delivered; the test reads their journals to see the reports queued during the outage.
Synchronisation is polling under deadlines; the one fixed wait is the outage itself (the scenario's length).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlmodel import Session

from hashgrid.chain.contracts import Contracts, TaskState
from marketplace.db import make_engine
from marketplace.jobs.settle import plan_for
from scripts.devnet import GRID, DevAccounts, post
from scripts.localnet import Anvil
from tests.e2e.conftest import (
    Network,
    busybox,
    docker_daemon_config,
    marketplace_network,
    signed_client,
    wait_for,
)
from tests.e2e.test_marketplace_e2e import register_spec

OUTAGE_S = 30.0
LINES = 48  # a line every 0.25 s: the runs go on for ~12 s, most of it while the marketplace is down
MAX_PRICE = GRID // 100


def journal_rows(network: Network, index: int, sql: str) -> list[sqlite3.Row]:
    path = network.state / f"provider{index}" / "provider" / "journal.sqlite"
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    db.row_factory = sqlite3.Row
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def test_reports_survive_a_30s_marketplace_outage(anvil: Anvil, deployment: Any, contracts: Contracts,
                                                  dev_accounts: DevAccounts, tmp_path: Path) -> None:
    image = busybox()
    config = docker_daemon_config(tmp_path, image)
    providers = list(dev_accounts.providers[:2])
    with marketplace_network(anvil, deployment, tmp_path, [(p, None) for p in providers],
                             daemon_config=config) as network:
        wait_for(network.registered, timeout=90, what="two providers registered", diagnose=network.diagnose)
        customer = signed_client(network.url, dev_accounts.customer)
        script = (f"i=0; while [ $i -lt {LINES} ]; do echo line $i; i=$((i+1)); sleep 0.25; done; "
                  "echo done > /out/result.txt")
        tasks = []
        for name in ("outage one", "outage two"):
            spec = {"version": 1, "name": name, "runtime": "docker", "image": image,
                    "command": ["sh", "-c", script], "outputs": ["result.txt"],
                    "resources": {"cpus": 0.5, "memory_mb": 64, "disk_mb": 4, "timeout_s": 120},
                    "replicas": 2, "quorum": 2, "max_price_per_replica": str(MAX_PRICE), "deadline_s": 3600}
            spec_hash = bytes.fromhex(register_spec(customer, spec)["spec_hash"].removeprefix("0x"))
            task_id, _ = post(contracts, dev_accounts.customer, spec_hash, replicas=2, quorum=2,
                              max_price=MAX_PRICE)
            tasks.append(task_id)

        def all_running() -> bool:
            for task_id in tasks:
                replicas = customer.get(f"/tasks/{task_id}").json().get("replica_list") or []
                if len(replicas) != 2 or any(r["status"] != "running" for r in replicas):
                    return False
            return True

        wait_for(all_running, timeout=180, what="every replica running", interval=0.2,
                 diagnose=network.diagnose)
        network.stop_server()
        down_at = time.monotonic()

        def executed_and_queued() -> bool:
            """Both daemons finished both runs while the marketplace is down: results journaled, reports
            (logs, outputs, usage, status) queued, nothing committed."""
            for index in range(2):
                phases = {int(r["task_id"]): r["phase"] for r in journal_rows(
                    network, index, "SELECT task_id, phase FROM tasks")}
                if any(phases.get(task_id) != "executed" for task_id in tasks):
                    assert all(phases.get(t) in ("received", "running", "executed") for t in tasks), phases
                    return False
                kinds = {(int(r["task_id"]), r["kind"]) for r in journal_rows(
                    network, index, "SELECT task_id, kind FROM outbox WHERE state = 'pending'")}
                if not all((t, k) in kinds for t in tasks for k in ("blob", "outputs", "usage", "status")):
                    return False
            return True

        wait_for(executed_and_queued, timeout=OUTAGE_S - 2, what="runs done and reports queued during the "
                 "outage", interval=0.5, diagnose=network.diagnose)
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))  # the outage's length, not a sync
        network.start_server()

        def settled() -> bool:
            return all(customer.get(f"/tasks/{t}").json().get("status") == "settled" for t in tasks)

        wait_for(settled, timeout=240, what="both tasks settled after the outage", interval=0.5,
                 diagnose=network.diagnose)

        expected_log = "".join(f"line {i}\n" for i in range(LINES))
        engine = make_engine(network.db_url)
        try:
            for task_id in tasks:
                assert contracts.escrow.get_task(task_id).state == TaskState.SETTLED
                chunks = customer.get(f"/tasks/{task_id}/logs").json()["data"]
                for account in providers:
                    mine = sorted((c["seq"], c["data"]) for c in chunks
                                  if c["provider"] == account.address.lower())
                    assert [seq for seq, _ in mine] == list(range(len(mine))), mine  # none lost, none twice
                    assert "".join(data for _, data in mine) == expected_log
                result = customer.get(f"/tasks/{task_id}/result").json()
                outputs = [item for item in result["outputs"] if item["path"] == "result.txt"]
                assert outputs, result
                for item in outputs:
                    assert customer.get(f"/blobs/{item['sha256']}").content == b"done\n"
                with Session(engine) as session:
                    plan = plan_for(session, contracts, task_id)
                assert plan.reports_used == 2, plan  # both signed usage reports reached billing
        finally:
            engine.dispose()
        for index in range(2):
            left = journal_rows(network, index, "SELECT kind, state, error FROM outbox")
            assert [dict(r) for r in left] == [], left
        customer.close()
