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
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from sqlmodel import Session

from billing.invoice import invoice_from_events, planned_invoice
from hashgrid.chain.contracts import Contracts, TaskState
from hashgrid.chain.deployment import Deployment
from hashgrid.config import ANVIL_DEV_KEYS, DEV_CHAIN_ID
from hashgrid.signing import HashgridAuth
from marketplace.db import make_engine
from marketplace.jobs.settle import plan_for
from scripts.devnet import GRID, DevAccounts, post
from scripts.localnet import Anvil

ROOT = Path(__file__).resolve().parents[2]
MAX_PRICE = GRID // 100
DATA = b"the quick brown fox\njumps over the lazy dog\nthe end\n"
STRANGER = Account.from_key(ANVIL_DEV_KEYS[7])


def wait_for(condition: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.2,
             diagnose: Callable[[], str] | None = None) -> Any:
    """Poll `condition` until it returns something truthy; fail with `what` (and a diagnosis) at the
    deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                                 + (f"\n{diagnose()}" if diagnose else ""))
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without any HASHGRID_* setting leaking in, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HASHGRID_")}
    env.update(extra, COLUMNS="200")
    return env


@dataclass
class Proc:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 60) -> int:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=30)


def spawn(name: str, command: list[str], env: dict[str, str], log_path: Path) -> Proc:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as sink:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
    return Proc(name, process, log_path)


@dataclass
class Network:
    url: str
    db_url: str
    server: Proc
    daemons: list[Proc]
    providers: list[LocalAccount]

    def diagnose(self) -> str:
        parts = [f"--- {p.name} (alive={p.alive()})\n{p.log()[-4000:]}" for p in (self.server, *self.daemons)]
        return "\n".join(parts)


@pytest.fixture(scope="session")
def wordfreq_module() -> Path:
    module = ROOT / "examples/wasm/wordfreq.wasm"
    if not module.exists():
        subprocess.run(["bash", str(ROOT / "scripts/build_wasm.sh")], check=True, cwd=ROOT)
    return module


@pytest.fixture
def network(anvil: Anvil, deployment: Deployment, dev_accounts: DevAccounts, tmp_path: Path
            ) -> Iterator[Network]:
    """The marketplace (uvicorn, in-process jobs, temp SQLite) and three daemons reporting to it; every
    process is stopped at the end (before the chain is reverted), and none may be left running."""
    deployment_file = deployment.save(tmp_path / "deployment.json")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    db_url = f"sqlite:///{tmp_path / 'marketplace.sqlite'}"
    started: list[Proc] = []
    try:
        server_env = clean_env(
            HASHGRID_STATE_DIR=str(tmp_path / "market"), HASHGRID_DATABASE_URL=db_url,
            HASHGRID_RPC_URL=anvil.url, HASHGRID_DEPLOYMENT_FILE=str(deployment_file),
            HASHGRID_CHAIN_ID=str(DEV_CHAIN_ID), HASHGRID_MARKETPLACE_URL=url, HASHGRID_RUN_JOBS="true",
            HASHGRID_INDEX_INTERVAL_S="0.2", HASHGRID_MATCHING_INTERVAL_S="0.5",
            HASHGRID_SETTLE_INTERVAL_S="0.5", HASHGRID_POLL_INTERVAL_S="0.1")
        server = spawn("marketplace", [sys.executable, "-m", "uvicorn", "--factory",
                                       "marketplace.api.app:app_from_env", "--host", "127.0.0.1", "--port",
                                       str(port), "--log-level", "info"],
                       server_env, tmp_path / "market" / "server.log")
        started.append(server)

        def healthy() -> bool:
            assert server.alive(), server.log()
            try:
                return httpx.get(f"{url}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, timeout=60, what="the marketplace API", diagnose=server.log)
        providers = list(dev_accounts.providers[:3])
        daemons = []
        for i, account in enumerate(providers):
            state = tmp_path / f"provider{i}"
            env = clean_env(HASHGRID_PROVIDER_KEY="0x" + account.key.hex().removeprefix("0x"),
                            HASHGRID_CHAIN_ID=str(DEV_CHAIN_ID))
            daemon = spawn(f"provider{i}", [
                sys.executable, "-m", "hashgrid.cli", "provider", "run", "--state-dir", str(state), "--rpc",
                anvil.url, "--deployment", str(deployment_file), "--content-dir", str(state / "content"),
                "--poll-interval", "0.2", "--grace", "10", "--marketplace", url], env, state / "daemon.log")
            started.append(daemon)
            daemons.append(daemon)
        yield Network(url, db_url, server, daemons, providers)
    finally:
        for proc in reversed(started):  # daemons first, then the API (and its jobs)
            code = proc.stop()
            assert not proc.alive(), f"{proc.name} still running"
            if proc.name.startswith("provider"):
                assert code == 0, f"{proc.name} exited {code}:\n{proc.log()[-4000:]}"
        assert all(not proc.alive() for proc in started)


def signed_client(url: str, account: LocalAccount) -> httpx.Client:
    return httpx.Client(base_url=url, auth=HashgridAuth(account, chain_id=DEV_CHAIN_ID), timeout=30)


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
    def registered() -> bool:
        for account, daemon in zip(network.providers, network.daemons, strict=True):
            assert daemon.alive(), daemon.log()
            response = httpx.get(f"{network.url}/providers/{account.address.lower()}/info", timeout=5)
            if response.status_code != 200 or not response.json()["provider"]["online"]:
                return False
        return True

    wait_for(registered, timeout=90, what="three providers registered", diagnose=network.diagnose)

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
