"""A copier gets nothing to copy (issue 12): two honest daemons and one `--fault copycat` daemon run a k=3,
q=2 task through the marketplace (real anvil, uvicorn, daemons, wasm). The copycat waits until both honest
replicas have committed (their hashes, usage, outputs and logs are at the marketplace by then), reads every
path the API offers, signed and unsigned, and commits what it learned, else a wrong hash. It learns nothing,
so it commits its wrong hash: outvoted, slashed and unpaid. Synchronisation: polling under deadlines only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hashgrid.chain.contracts import Contracts, ReplicaState, TaskState
from hashgrid.chain.deployment import Deployment
from scripts.devnet import DevAccounts, post
from scripts.localnet import Anvil
from tests.e2e.conftest import marketplace_network, signed_client, wait_for
from tests.e2e.test_marketplace_e2e import DATA, MAX_PRICE, register_spec, upload


def test_copycat_learns_nothing_and_is_outvoted(
        anvil: Anvil, deployment: Deployment, contracts: Contracts, dev_accounts: DevAccounts,
        wordfreq_module: Path, tmp_path: Path) -> None:
    honest_a, honest_b, copier = dev_accounts.providers[:3]
    daemons = [(honest_a, None), (honest_b, None), (copier, "copycat")]
    with marketplace_network(anvil, deployment, tmp_path, daemons) as network:
        customer = signed_client(network.url, dev_accounts.customer)
        wait_for(network.registered, timeout=90, what="three providers registered", diagnose=network.diagnose)
        module_sha = upload(customer, wordfreq_module.read_bytes())
        data_sha = upload(customer, DATA)
        spec = {"version": 1, "name": "e2e copycat", "runtime": "wasm", "module": module_sha,
                "command": ["wordfreq.wasm", "/in/data.txt"], "outputs": ["result.txt"],
                "inputs": [{"path": "data.txt", "sha256": data_sha, "size": len(DATA)}],
                "resources": {"cpus": 1, "memory_mb": 64, "disk_mb": 4, "timeout_s": 30},
                "replicas": 3, "quorum": 2, "max_replicas": 3, "max_price_per_replica": str(MAX_PRICE),
                "deadline_s": 3600}
        spec_hash = bytes.fromhex(register_spec(customer, spec)["spec_hash"].removeprefix("0x"))
        stakes = {a.address: contracts.registry.stake_of(a.address) for a in (honest_a, honest_b, copier)}
        task_id, _ = post(contracts, dev_accounts.customer, spec_hash, replicas=3, quorum=2,
                          max_price=MAX_PRICE, max_replicas=3)

        def settled() -> dict[str, Any] | None:
            response = customer.get(f"/tasks/{task_id}")
            body = dict(response.json()) if response.status_code == 200 else {}
            return body if body.get("status") == "settled" else None

        wait_for(settled, timeout=240, what=f"task {task_id} settled", interval=0.5,
                 diagnose=network.diagnose)
        result = customer.get(f"/tasks/{task_id}/result").json()

    chain_task = contracts.escrow.get_task(task_id)
    assert chain_task.state == TaskState.SETTLED and chain_task.assigned == 3
    honest_hash = contracts.escrow.result_of(task_id)
    assert honest_hash is not None
    revealed = {str(e.args["provider"]).lower(): bytes(e.args["resultHash"])
                for e in contracts.escrow.events(names=["ResultRevealed"], first_indexed=task_id)}
    me = copier.address.lower()
    assert revealed[honest_a.address.lower()] == revealed[honest_b.address.lower()] == honest_hash
    assert revealed[me] != honest_hash  # it never committed the hash it did not compute
    states = {r.provider.lower(): r.state for r in contracts.escrow.replicas(task_id)}
    assert states[me] == ReplicaState.DISSENTED
    assert contracts.registry.stake_of(copier.address) < stakes[copier.address]
    assert contracts.escrow.claimable(copier.address) == 0

    # what it tried: every read path, signed and not; what it learned: nothing
    [path] = list(tmp_path.glob(f"provider2/**/copycat/task-{task_id}.json"))
    report = json.loads(path.read_text())
    assert report["source"] == "fallback" and report["committed"] == "0x" + revealed[me].hex()
    assert report["hashes"] == [] and report["manifests"] == [] and report["logs"] == {}
    assert [a for a in report["attempts"] if a["learned"]] == []
    tried = {(a["method"], a["path"].split("?")[0], a["signed"]) for a in report["attempts"]}
    output_sha = result["outputs"][0]["sha256"]  # it guessed right: its own run's output
    for signed in (True, False):
        for route in (f"/explorer/tasks/{task_id}", "/explorer/tasks", "/explorer/stats", f"/tasks/{task_id}",
                      f"/tasks/{task_id}/result", f"/tasks/{task_id}/logs", "/tasks",
                      f"/explorer/providers/{honest_a.address.lower()}"):
            assert ("GET", route, signed) in tried, (route, signed)
        for method in ("HEAD", "GET"):
            assert (method, f"/blobs/{output_sha}", signed) in tried
    blob_answers = {a["status"] for a in report["attempts"] if a["path"].startswith("/blobs/")}
    assert blob_answers <= {401, 404}, blob_answers  # even a right guess is not confirmed
