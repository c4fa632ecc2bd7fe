"""Outputs are part of the contract: a replica whose output the marketplace refuses (a 65 MiB file, over its
64 MiB blob cap) commits no result; it is reported refused with the marketplace's words and the task is
reassigned to the spare provider, which refuses the same way. Nothing is committed, so nobody is paid for
outputs the customer cannot get. Real anvil, marketplace (uvicorn with its jobs) and two docker daemons.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from hashgrid.chain.contracts import Contracts, ReplicaState
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

MAX_PRICE = GRID // 100


def journal_row(network: Network, index: int, task_id: int) -> dict[str, Any] | None:
    path = network.state / f"provider{index}" / "provider" / "journal.sqlite"
    if not path.exists():
        return None
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    db.row_factory = sqlite3.Row
    try:
        row = db.execute("SELECT phase, reason FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
    finally:
        db.close()
    return None if row is None else dict(row)


def test_a_replica_whose_outputs_are_refused_commits_nothing_and_is_reassigned(
        anvil: Anvil, deployment: Any, contracts: Contracts, dev_accounts: DevAccounts, tmp_path: Path
) -> None:
    image = busybox()
    config = docker_daemon_config(tmp_path, image)
    providers = list(dev_accounts.providers[:2])
    with marketplace_network(anvil, deployment, tmp_path, [(p, None) for p in providers],
                             daemon_config=config) as network:
        wait_for(network.registered, timeout=90, what="two providers registered", diagnose=network.diagnose)
        customer = signed_client(network.url, dev_accounts.customer)
        spec = {"version": 1, "name": "too big", "runtime": "docker", "image": image,
                "command": ["sh", "-c", "dd if=/dev/zero of=/out/big bs=1048576 count=65"],
                "outputs": ["big"],
                "resources": {"cpus": 0.5, "memory_mb": 512, "disk_mb": 80, "timeout_s": 120},
                "replicas": 1, "quorum": 1, "max_price_per_replica": str(MAX_PRICE), "deadline_s": 3600}
        registration = register_spec(customer, spec)
        task_id, _ = post(contracts, dev_accounts.customer,
                          bytes.fromhex(registration["spec_hash"].removeprefix("0x")), replicas=1, quorum=1,
                          max_price=MAX_PRICE, max_replicas=registration["max_replicas"])

        def both_refused() -> list[dict[str, Any]] | None:
            rows = [row for i in range(2) if (row := journal_row(network, i, task_id)) is not None]
            return rows if len(rows) == 2 and all(r["phase"] == "failed" for r in rows) else None

        rows = wait_for(both_refused, timeout=240, what="both replicas refusing to commit refused outputs",
                        interval=0.5, diagnose=network.diagnose)
        for row in rows:
            assert "refused this replica's outputs" in row["reason"] and "413" in row["reason"], row
        states = [r.state for r in contracts.escrow.replicas(task_id)]
        assert len(states) == 2 and all(s == ReplicaState.ASSIGNED for s in states)  # reassigned, no commit
        committed = contracts.escrow.events(0, "latest", names=["ResultCommitted"], first_indexed=task_id)
        assert committed == []

        def reported() -> bool:
            replicas = customer.get(f"/tasks/{task_id}").json().get("replica_list") or []
            return len(replicas) == 2 and all(r["status"] == "refused" for r in replicas)

        wait_for(reported, timeout=60, what="both replicas shown refused to the customer",
                 diagnose=network.diagnose)
        customer.close()
