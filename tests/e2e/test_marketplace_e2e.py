"""End to end through the marketplace: anvil with the deployment, the marketplace API served by uvicorn in a
subprocess (temp SQLite, in-process jobs: indexer, matching, settlement), and three `hashgrid provider run
--marketplace URL` daemons (wasm runtime, provider keys 2-4, staked).

The customer (key 1) registers the spec with a signed POST /tasks, uploads the module and input as blobs and
posts the task on chain (k=3, q=2); the matcher job assigns it on chain, the daemons take their assignments
from the marketplace's long-poll, fetch spec and inputs from it, run, report logs/outputs/usage, commit and
reveal on chain; the settlement job finalizes with billing's plan. The customer then reads the settled task,
its result and its logs (another wallet gets 403), and every claimable credit on chain equals billing's
invoice. A task needing a GPU stays posted with its reason. Synchronisation: polling under deadlines only.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import httpx
from eth_account import Account
from sqlmodel import Session

from billing.invoice import invoice_from_events, planned_invoice
from hashgrid.chain.contracts import Contracts, TaskState
from hashgrid.config import ANVIL_DEV_KEYS
from marketplace.db import make_engine
from marketplace.jobs.settle import plan_for
from scripts.devnet import GRID, DevAccounts, post
from tests.e2e.conftest import Network, signed_client, wait_for

MAX_PRICE = GRID // 100
DATA = b"the quick brown fox\njumps over the lazy dog\nthe end\n"
STRANGER = Account.from_key(ANVIL_DEV_KEYS[7])


def upload(client: httpx.Client, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    response = client.put(f"/blobs/{digest}", content=data)
    assert response.status_code in (200, 201), response.text
    return digest


def register_spec(client: httpx.Client, document: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/tasks", json=document)
    assert response.status_code in (200, 201), response.text
    return dict(response.json())


def test_task_runs_through_the_marketplace_to_settlement(
        network: Network, contracts: Contracts, dev_accounts: DevAccounts, wordfreq_module: Path) -> None:
    customer = signed_client(network.url, dev_accounts.customer)
    stranger = signed_client(network.url, STRANGER)

    # every daemon registers with the marketplace (signed, stake checked on chain)
    wait_for(network.registered, timeout=90, what="three providers registered", diagnose=network.diagnose)

    # the customer uploads module and input, registers the spec, posts it on chain
    module_sha = upload(customer, wordfreq_module.read_bytes())
    data_sha = upload(customer, DATA)
    spec = {"version": 1, "name": "e2e wordfreq", "runtime": "wasm", "module": module_sha,
            "command": ["wordfreq.wasm", "/in/data.txt"], "outputs": ["result.txt"],
            "inputs": [{"path": "data.txt", "sha256": data_sha, "size": len(DATA)}],
            "resources": {"cpus": 1, "memory_mb": 64, "disk_mb": 4, "timeout_s": 30},
            "replicas": 3, "quorum": 2, "max_price_per_replica": str(MAX_PRICE), "deadline_s": 3600}
    registration = register_spec(customer, spec)
    spec_hash = bytes.fromhex(registration["spec_hash"].removeprefix("0x"))
    task_id, _ = post(contracts, dev_accounts.customer, spec_hash, replicas=3, quorum=2, max_price=MAX_PRICE)

    # matcher assigns on chain, daemons run, commit and reveal, the settlement job finalizes
    def settled() -> dict[str, Any] | None:
        response = customer.get(f"/tasks/{task_id}")
        if response.status_code != 200:
            return None
        body = dict(response.json())
        return body if body["status"] == "settled" else None

    task = wait_for(settled, timeout=240, what=f"task {task_id} settled through the marketplace",
                    interval=0.5, diagnose=network.diagnose)
    assert contracts.escrow.get_task(task_id).state == TaskState.SETTLED
    result_hash = contracts.escrow.result_of(task_id)
    assert result_hash is not None
    assert task["result_hash"].lower() == "0x" + result_hash.hex()
    assigned = {r["provider"] for r in task["replica_list"]}
    assert assigned == {a.address.lower() for a in network.providers}
    assert all(r["status"] == "agreed" for r in task["replica_list"]), task["replica_list"]

    result = customer.get(f"/tasks/{task_id}/result")
    assert result.status_code == 200, result.text
    assert result.json()["result_hash"].lower() == "0x" + result_hash.hex()
    assert set(result.json()["agreeing"]) == assigned
    outputs = {item["path"]: item for item in result.json()["outputs"]}
    assert "result.txt" in outputs, outputs
    blob = customer.get(f"/blobs/{outputs['result.txt']['sha256']}")
    assert blob.status_code == 200 and b"the" in blob.content

    logs = customer.get(f"/tasks/{task_id}/logs")
    assert logs.status_code == 200, logs.text
    assert logs.json()["count"] >= 1
    assert {chunk["provider"] for chunk in logs.json()["data"]} <= assigned
    assert stranger.get(f"/tasks/{task_id}/logs").status_code == 403
    assert stranger.get(f"/tasks/{task_id}").status_code == 403
    assert stranger.get(f"/tasks/{task_id}/result").status_code == 403

    # exactly billing's invoice on chain: each provider's claimable credit and the customer's refund
    engine = make_engine(network.db_url)
    try:
        with Session(engine) as session:
            plan = plan_for(session, contracts, task_id)
    finally:
        engine.dispose()
    assert plan.reports_used == 3, plan  # every replica's signed usage report reached billing
    assert plan.accepted_hash == result_hash
    chain_task = contracts.escrow.get_task(task_id)
    planned = planned_invoice(plan, max_replicas=chain_task.max_replicas, fee_bps=chain_task.fee_bps,
                              customer=dev_accounts.customer.address)
    events = contracts.escrow.events(0, "latest", first_indexed=task_id)
    recorded = invoice_from_events(task_id, events, plan)
    assert recorded is not None and recorded.state == "settled"
    assert (recorded.paid, recorded.fee, recorded.refund) == (planned.paid, planned.fee, planned.refund)
    for account in network.providers:
        assert plan.payments[account.address.lower()] > 0
        assert contracts.escrow.claimable(account.address) == plan.payments[account.address.lower()]
    assert contracts.escrow.claimable(dev_accounts.customer.address) == planned.refund
    # one finalize only: one TaskSettled for the task
    assert len([e for e in events if e.name == "TaskSettled"]) == 1

    # a task no provider can run (a GPU) stays posted and says why
    gpu_spec = {"version": 1, "name": "needs a gpu", "runtime": "docker", "image": "sha256:" + "ab" * 32,
                "command": ["true"], "resources": {"cpus": 1, "memory_mb": 64, "disk_mb": 4, "timeout_s": 30,
                                                   "gpus": 1},
                "replicas": 1, "quorum": 1, "max_price_per_replica": str(MAX_PRICE), "deadline_s": 3600}
    gpu_hash = bytes.fromhex(register_spec(customer, gpu_spec)["spec_hash"].removeprefix("0x"))
    gpu_task, _ = post(contracts, dev_accounts.customer, gpu_hash, replicas=1, quorum=1, max_price=MAX_PRICE)

    def unplaced() -> str | None:
        response = customer.get(f"/tasks/{gpu_task}")
        return response.json().get("unplaced_reason") if response.status_code == 200 else None

    reason = wait_for(unplaced, timeout=60, what="the GPU task's unplaced reason", diagnose=network.diagnose)
    assert "gpu" in reason.lower(), reason
    assert customer.get(f"/tasks/{gpu_task}").json()["status"] == "posted"
    assert contracts.escrow.get_task(gpu_task).state == TaskState.POSTED
    customer.close()
    stranger.close()
