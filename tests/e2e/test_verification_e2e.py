"""Escalation with real daemons (wasm runtime) through the marketplace: two dishonest providers, each with a
wrong answer of its own, and one honest one run a k=3, q=2 task; no hash has two votes, so the verifier asks
for a fourth replica, which an honest daemon started afterwards runs. Its answer agrees with the honest one:
the task settles on the honest hash, the two dishonest providers are slashed and paid nothing, and the
explorer shows their dissent in their reputation. Synchronisation: polling under deadlines only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from sqlmodel import Session, select

from hashgrid.chain.contracts import Contracts, ReplicaState, TaskState
from hashgrid.chain.deployment import Deployment
from marketplace.db import make_engine
from marketplace.indexer.tables import ReplicaReplacement
from marketplace.jobs.verify import ESCALATION
from scripts.devnet import DevAccounts, post
from scripts.localnet import Anvil
from tests.e2e.conftest import marketplace_network, signed_client, wait_for
from tests.e2e.test_marketplace_e2e import DATA, MAX_PRICE, register_spec, upload


def test_disagreeing_daemons_escalate_to_a_fourth_that_settles_it(
        anvil: Anvil, deployment: Deployment, contracts: Contracts, dev_accounts: DevAccounts,
        wordfreq_module: Path, tmp_path: Path) -> None:
    cheat_a, cheat_b, honest, late = dev_accounts.providers[:4]
    daemons = [(cheat_a, "dishonest"), (cheat_b, "dishonest"), (honest, None)]
    with marketplace_network(anvil, deployment, tmp_path, daemons) as network:
        customer = signed_client(network.url, dev_accounts.customer)
        wait_for(network.registered, timeout=90, what="three providers registered", diagnose=network.diagnose)
        module_sha = upload(customer, wordfreq_module.read_bytes())
        data_sha = upload(customer, DATA)
        spec = {"version": 1, "name": "e2e escalation", "runtime": "wasm", "module": module_sha,
                "command": ["wordfreq.wasm", "/in/data.txt"], "outputs": ["result.txt"],
                "inputs": [{"path": "data.txt", "sha256": data_sha, "size": len(DATA)}],
                "resources": {"cpus": 1, "memory_mb": 64, "disk_mb": 4, "timeout_s": 30},
                "replicas": 3, "quorum": 2, "max_replicas": 4, "max_price_per_replica": str(MAX_PRICE),
                "deadline_s": 3600}
        spec_hash = bytes.fromhex(register_spec(customer, spec)["spec_hash"].removeprefix("0x"))
        task_id, _ = post(contracts, dev_accounts.customer, spec_hash, replicas=3, quorum=2,
                          max_price=MAX_PRICE, max_replicas=4)
        stakes = {a.address: contracts.registry.stake_of(a.address) for a in (cheat_a, cheat_b, honest)}

        # the three disagree; the verifier asks for a fourth replica, which nobody online can take yet
        engine = make_engine(network.db_url)

        def escalated() -> bool:
            with Session(engine) as session:
                requests = session.exec(select(ReplicaReplacement).where(
                    ReplicaReplacement.task_id == task_id)).all()
            return any(r.provider.startswith(ESCALATION) for r in requests)

        try:
            wait_for(escalated, timeout=180, what="an escalation", diagnose=network.diagnose)
        finally:
            engine.dispose()
        assert all(r.state == ReplicaState.REVEALED for r in contracts.escrow.replicas(task_id))
        assert contracts.escrow.get_task(task_id).assigned == 3  # nobody else online to take it yet
        network.start_daemon(late)

        def settled() -> dict[str, Any] | None:
            response = customer.get(f"/tasks/{task_id}")
            body = dict(response.json()) if response.status_code == 200 else {}
            return body if body.get("status") == "settled" else None

        task = wait_for(settled, timeout=240, what=f"task {task_id} settled after escalation", interval=0.5,
                        diagnose=network.diagnose)
        chain_task = contracts.escrow.get_task(task_id)
        assert (chain_task.state, chain_task.assigned, chain_task.round) == (TaskState.SETTLED, 4, 2)
        states = {r.provider.lower(): r.state for r in contracts.escrow.replicas(task_id)}
        assert states[honest.address.lower()] == states[late.address.lower()] == ReplicaState.AGREED
        assert states[cheat_a.address.lower()] == states[cheat_b.address.lower()] == ReplicaState.DISSENTED
        assert task["result_hash"].lower() == "0x" + (contracts.escrow.result_of(task_id) or b"").hex()
        for cheat in (cheat_a, cheat_b):
            assert contracts.registry.stake_of(cheat.address) < stakes[cheat.address]
            assert contracts.escrow.claimable(cheat.address) == 0
        assert contracts.registry.stake_of(honest.address) == stakes[honest.address]
        assert contracts.escrow.claimable(late.address) > 0

        def dissent_shown() -> bool:
            body = httpx.get(f"{network.url}/explorer/providers/{cheat_a.address.lower()}", timeout=5).json()
            return bool(body["reputation"]["dissents"] == 1)

        wait_for(dissent_shown, timeout=30, what="the dissent in the explorer's reputation")
