"""A mixed fleet through the marketplace, with real daemons and real Docker: one daemon runs docker tasks
under gVisor (`docker_runtime = "auto"`, runsc is installed), three under runc. A k=3 task whose spec hits its
pids limit is placed on the three runc daemons only, never with the gVisor one as a quorum partner; each of
them is killed at the limit and commits the normalised hash `{"killed":"pids","version":1}`, so the task
settles with all three agreeing. Then the gVisor daemon's registration is made stale in the database (the one
injected fault, named: it stands for a provider whose recorded classes no longer match its daemon) so that
the matcher puts it in the runc class: its daemon refuses the replica because the recorded class is not its
own, and a runc daemon replaces it. Synchronisation: polling under deadlines only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from eth_account.signers.local import LocalAccount
from sqlmodel import Session

from hashgrid.canonical import hash_document
from hashgrid.chain.contracts import Contracts, ReplicaState, TaskState
from hashgrid.chain.deployment import Deployment
from hashgrid.config import REPO_ROOT
from marketplace.db import make_engine
from marketplace.models import Provider
from provider.config import ProviderConfig, write_config
from provider.policy import Policy
from scripts.devnet import DevAccounts, post
from scripts.localnet import Anvil
from tests.e2e.conftest import Network, marketplace_network, signed_client, wait_for
from tests.e2e.test_marketplace_e2e import MAX_PRICE, register_spec

PIDS_HASH = hash_document({"version": 1, "killed": "pids"})


def busybox() -> str:
    images = json.loads((REPO_ROOT / "build" / "images.json").read_text())
    return str(images["hashgrid/busybox:1"])


def config(tmp_path: Path, name: str, docker_runtime: str) -> Path:
    path = tmp_path / "configs" / f"{name}.toml"
    policy = Policy(docker_runtime=docker_runtime, allowed_images=[busybox()])  # type: ignore[arg-type]
    write_config(ProviderConfig(policy=policy), path)
    return path


def spec_document(name: str) -> dict[str, Any]:
    # 40 background sleeps under a pids limit of 10: a fork fails; runc and gVisor report it differently
    return {"version": 1, "name": name, "runtime": "docker", "image": busybox(),
            "command": ["sh", "-c", "echo start > /out/log; for i in $(seq 40); do sleep 3 & done; wait"],
            "outputs": ["log"], "include_stdout": True,
            "resources": {"cpus": 1, "memory_mb": 128, "pids": 10, "timeout_s": 30},
            "replicas": 3, "quorum": 3, "max_replicas": 4, "max_price_per_replica": str(MAX_PRICE),
            "deadline_s": 3600}


def classes_of(network: Network, account: LocalAccount) -> list[str]:
    response = httpx.get(f"{network.url}/providers/{account.address.lower()}/info", timeout=5)
    return list(response.json()["provider"]["runtime_classes"])


def settle(network: Network, customer: httpx.Client, contracts: Contracts, dev_accounts: DevAccounts,
           name: str) -> int:
    spec_hash = bytes.fromhex(register_spec(customer, spec_document(name))["spec_hash"].removeprefix("0x"))
    task_id, _ = post(contracts, dev_accounts.customer, spec_hash, replicas=3, quorum=3, max_price=MAX_PRICE,
                      max_replicas=4)

    def settled() -> bool:
        return contracts.escrow.get_task(task_id).state == TaskState.SETTLED

    wait_for(settled, timeout=240, what=f"task {task_id} settled", interval=0.5, diagnose=network.diagnose)
    return task_id


def test_a_mixed_fleet_runs_a_limit_hitting_task_inside_one_class(
        anvil: Anvil, deployment: Deployment, contracts: Contracts, dev_accounts: DevAccounts,
        tmp_path: Path) -> None:
    gvisor, *runc = dev_accounts.providers[:4]
    with marketplace_network(anvil, deployment, tmp_path, []) as network:
        network.start_daemon(gvisor, config=config(tmp_path, "gvisor", "auto"))
        for i, account in enumerate(runc):
            network.start_daemon(account, config=config(tmp_path, f"runc{i}", "docker"))
        wait_for(network.registered, timeout=120, what="four providers registered", diagnose=network.diagnose)
        # the classes come from what each daemon will really run docker tasks on
        assert classes_of(network, gvisor) == ["runsc", "wasm"]
        assert all(classes_of(network, account) == ["runc", "wasm"] for account in runc)
        customer = signed_client(network.url, dev_accounts.customer)
        runc_addresses = {a.address.lower() for a in runc}

        first = settle(network, customer, contracts, dev_accounts, "pids in one class")
        replicas = {r.provider.lower(): r for r in contracts.escrow.replicas(first)}
        assert set(replicas) == runc_addresses  # the gVisor daemon was never a partner
        assert all(r.state == ReplicaState.AGREED for r in replicas.values())
        assert contracts.escrow.result_of(first) == PIDS_HASH

        # INJECTED FAULT (named): the gVisor provider's recorded classes go stale, and it looks best
        engine = make_engine(network.db_url)
        try:
            with Session(engine) as session:
                row = session.get(Provider, gvisor.address.lower())
                assert row is not None
                row.runtime_classes, row.reputation, row.prices = ["runc", "wasm"], 1.0, {"fixed": "0"}
                session.add(row)
                session.commit()
        finally:
            engine.dispose()
        second = settle(network, customer, contracts, dev_accounts, "pids with a stale class")
        states = {r.provider.lower(): r.state for r in contracts.escrow.replicas(second)}
        # its daemon refused the runc replica instead of running it under gVisor; a runc daemon replaced it
        assert states.pop(gvisor.address.lower()) in (ReplicaState.NO_SHOW, ReplicaState.RELEASED), states
        assert set(states) == runc_addresses and set(states.values()) == {ReplicaState.AGREED}
        assert contracts.escrow.result_of(second) == PIDS_HASH
        log = network.daemons[0].log()
        assert "the task's replicas run in runtime class 'runc'; this provider would run it in 'runsc'" in log
