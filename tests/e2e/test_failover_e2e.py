"""Failover: a provider daemon SIGKILLed mid-task is noticed by its missing heartbeats, its uncommitted
replica is replaced (the default max_replicas leaves room for one), the task settles on another provider,
and the no-show is slashed at finalize. Restarted on its state dir, the daemon removes the container and
scratch dir its killed predecessor left.

Real processes throughout: anvil, the marketplace (uvicorn with its jobs) and three daemons running docker
tasks. Synchronisation is polling under deadlines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import docker
from sqlmodel import Session, select

from hashgrid.chain.contracts import Contracts, ReplicaState, TaskState
from marketplace.db import make_engine
from marketplace.indexer.tables import ReplicaReplacement
from provider.runtimes._scratch import SCRATCH_PREFIX, scratch_root
from provider.runtimes.docker import RUN_LABEL
from scripts.devnet import GRID, DevAccounts, post
from scripts.localnet import Anvil
from tests.e2e.conftest import busybox, docker_daemon_config, marketplace_network, signed_client, wait_for
from tests.e2e.test_marketplace_e2e import register_spec

MAX_PRICE = GRID // 100


def leftovers(address: str) -> list[str]:
    """Containers and scratch dirs of this provider's runs (its run-id prefix)."""
    prefix = f"hg-{address.lower().removeprefix('0x')[:10]}-"
    client = docker.from_env()
    try:
        labelled = client.api.containers(all=True, filters={"label": RUN_LABEL})
        runs = [str(c["Labels"][RUN_LABEL]) for c in labelled]
        found = [run_id for run_id in runs if run_id.startswith(prefix)]
    finally:
        client.close()
    return found + [str(d) for d in scratch_root().glob(f"{SCRATCH_PREFIX}{prefix}*")]


def test_a_killed_daemon_is_replaced_and_its_task_settles_elsewhere(
        anvil: Anvil, deployment: Any, contracts: Contracts, dev_accounts: DevAccounts, tmp_path: Path
) -> None:
    image = busybox()
    config = docker_daemon_config(tmp_path, image)
    providers = list(dev_accounts.providers[:3])
    with marketplace_network(anvil, deployment, tmp_path, [(p, None) for p in providers],
                             daemon_config=config) as network:
        wait_for(network.registered, timeout=90, what="three providers registered", diagnose=network.diagnose)
        customer = signed_client(network.url, dev_accounts.customer)
        script = ("i=0; while [ $i -lt 40 ]; do echo line $i; i=$((i+1)); sleep 0.25; done; "
                  "echo ok > /out/r.txt")
        spec = {"version": 1, "name": "failover", "runtime": "docker", "image": image,
                "command": ["sh", "-c", script], "outputs": ["r.txt"],
                "resources": {"cpus": 0.5, "memory_mb": 64, "disk_mb": 4, "timeout_s": 120},
                "replicas": 2, "quorum": 2, "max_price_per_replica": str(MAX_PRICE), "deadline_s": 3600}
        registration = register_spec(customer, spec)
        assert registration["max_replicas"] == 3  # the default leaves room for one replacement
        task_id, _ = post(contracts, dev_accounts.customer,
                          bytes.fromhex(registration["spec_hash"].removeprefix("0x")), replicas=2, quorum=2,
                          max_price=MAX_PRICE, max_replicas=registration["max_replicas"])

        def running() -> list[str] | None:
            replicas = customer.get(f"/tasks/{task_id}").json().get("replica_list") or []
            found = [r["provider"] for r in replicas if r["status"] == "running"]
            return found if len(found) == 2 else None

        assigned = wait_for(running, timeout=180, what="both replicas running", interval=0.2,
                            diagnose=network.diagnose)
        index = next(i for i, a in enumerate(providers) if a.address.lower() == assigned[0])
        victim = providers[index]
        spare = next(a for a in providers if a.address.lower() not in assigned)
        stake = contracts.registry.stake_of(victim.address)
        network.daemons[index].process.kill()  # SIGKILL mid-task: no grace, no cleanup, no goodbye
        network.daemons[index].process.wait(timeout=30)
        assert leftovers(victim.address), "the killed daemon's run should still be there"

        def settled() -> dict[str, Any] | None:
            body = dict(customer.get(f"/tasks/{task_id}").json())
            return body if body.get("status") == "settled" else None

        wait_for(settled, timeout=240, what="the task settled without the killed provider", interval=0.5,
                 diagnose=network.diagnose)
        assert contracts.escrow.get_task(task_id).state == TaskState.SETTLED
        states = {r.provider.lower(): r.state for r in contracts.escrow.replicas(task_id)}
        assert states[victim.address.lower()] == ReplicaState.NO_SHOW
        assert states[spare.address.lower()] == ReplicaState.AGREED
        assert states[assigned[1]] == ReplicaState.AGREED
        assert contracts.registry.stake_of(victim.address) < stake  # the no-show is slashed at finalize
        assert contracts.escrow.claimable(victim.address) == 0
        engine = make_engine(network.db_url)
        try:
            with Session(engine) as session:
                request = session.exec(select(ReplicaReplacement).where(
                    ReplicaReplacement.task_id == task_id,
                    ReplicaReplacement.provider == victim.address.lower())).one()
            assert request.replaced_by == spare.address.lower()
        finally:
            engine.dispose()

        # restarted on its state dir, the daemon removes what its killed predecessor left, and commits nothing
        network.start_daemon(victim, index=index)
        wait_for(lambda: not leftovers(victim.address), timeout=60, what="the leftovers swept at restart",
                 diagnose=network.diagnose)
        customer.close()
