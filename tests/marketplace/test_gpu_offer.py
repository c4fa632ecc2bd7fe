"""GPU offers in the marketplace: registration keeps the offered GPUs' model, memory and CUDA major from the
provider's document, heartbeats cannot free GPUs that were never offered, and a matching round against a
real anvil never books one GPU twice, even when a heartbeat still shows it free."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, select

from hashgrid.chain.contracts import Contracts
from marketplace.jobs import JobContext, index_chain, run_matching_round
from marketplace.jobs.matching import provider_view
from marketplace.models import Provider, Replica, ReplicaStatus, Task, TaskStatus, utcnow
from scripts.devnet import DevAccounts
from tests.marketplace import conftest_services as services
from tests.marketplace.conftest import Signer, wallet
from tests.marketplace.conftest_services import add_providers, make_spec, post_spec

ctx = services.ctx
jobs_db_url = services.jobs_db_url
jobs_engine = services.jobs_engine
pg_db_url = services.pg_db_url

H200 = {"index": 0, "vendor": "nvidia", "uuid": "GPU-0", "model": "NVIDIA H200", "memory_mb": 143771,
        "driver": "580.159.04", "cuda_major": 13, "source": "nvml", "attach": "nvidia"}


def gpu_register_body(gpus: list[dict[str, Any]], offer_gpus: int) -> dict[str, Any]:
    return {
        "capabilities": {
            "version": 2, "cpu": {"arch": "x86_64", "cores": 2, "threads": 2, "model": "x"},
            "mem": {"total_mb": 4096}, "storage": {"path": "/w", "total_mb": 100},
            "os": {"name": "Debian", "version": "12", "kernel": "6"}, "gpus": gpus,
            "gpus_withheld": [{**H200, "index": 9, "uuid": "GPU-9", "reason": "cannot attach"}],
            "gpu_runtimes": ["docker"], "runtimes": ["docker"],
        },
        "prices": {"fixed": "1000", "per_cpu_second": "10", "per_gpu_second": "100"},
        "policy": {"runtimes": ["docker"], "max_gpus": offer_gpus},
        "offer": {"cores": 2, "memory_mb": 2048, "gpus": offer_gpus},
    }


def test_registration_keeps_gpu_details_and_heartbeats_cannot_inflate_them(client: TestClient,
                                                                            engine: Engine) -> None:
    provider = Signer(client, wallet("provider-3"))
    small = {**H200, "index": 1, "uuid": "GPU-1", "memory_mb": 81559}
    response = provider.post("/providers/register", gpu_register_body([H200, small], offer_gpus=5))
    assert response.status_code == 200, response.text
    beat = provider.post(f"/providers/{provider.address}/heartbeat",
                         {"free_cpus": 2, "free_memory_mb": 2048, "free_gpus": 7, "running": 0})
    assert beat.status_code == 200
    with Session(engine) as session:
        row = session.get(Provider, provider.address)
        assert row is not None
        # offered: the two attachable GPUs (the withheld one never counts), whatever the offer claims
        assert (row.gpus, row.free_gpus, row.gpu_model) == (2, 2, "NVIDIA H200")
        assert (row.gpu_memory_mb, row.cuda_major) == (81559, 13)
        view = provider_view(row)
    assert view.gpu_memory_mb == 81559 and view.cuda_major == 13 and view.gpu_model == "NVIDIA H200"
    assert view.total.gpus == 2 and view.free.gpus == 2
    mixed = provider.post("/providers/register",
                          gpu_register_body([H200, {**small, "cuda_major": 12}], offer_gpus=2))
    assert mixed.status_code == 200
    with Session(engine) as session:
        row = session.get(Provider, provider.address)
        assert row is not None and row.cuda_major is None  # GPUs of two CUDA majors: no single class


def _set(engine: Engine, address: str, **values: Any) -> None:
    with Session(engine) as session:
        row = session.get(Provider, address)
        assert row is not None
        for key, value in values.items():
            setattr(row, key, value)
        session.add(row)
        session.commit()


def test_one_gpu_is_never_booked_twice(ctx: JobContext, contracts: Contracts,
                                       dev_accounts: DevAccounts) -> None:
    [owner] = dev_accounts.providers[:1]
    address = owner.address.lower()
    add_providers(ctx.engine, (owner,), gpus=1)
    first = post_spec(contracts, ctx.engine, dev_accounts.customer, make_spec("gpu-a", replicas=1, quorum=1,
                                                                              gpus=1))
    second = post_spec(contracts, ctx.engine, dev_accounts.customer, make_spec("gpu-b", replicas=1, quorum=1,
                                                                               gpus=1))
    index_chain(ctx=ctx)
    assert run_matching_round(ctx=ctx)["assigned"] == 1  # one GPU: one of the two tasks
    with Session(ctx.engine) as session:
        statuses = {t.task_id: t.status for t in session.exec(select(Task).where(
            Task.task_id.in_([first, second])))}  # type: ignore[attr-defined]
    placed = next(task for task, status in statuses.items() if status == TaskStatus.ASSIGNED)
    waiting = first if placed == second else second
    # a heartbeat after the assignment still shows the GPU free: the daemon has not started the run yet
    # (its spec is on the way), so it has not reserved the GPU. The round must not book it again.
    _set(ctx.engine, address, free_gpus=1, last_heartbeat=utcnow() + timedelta(seconds=1))
    assert run_matching_round(ctx=ctx)["assigned"] == 0
    # running: the daemon holds the GPU and says so
    with Session(ctx.engine) as session:
        replica = session.exec(select(Replica).where(Replica.task_id == placed)).one()
        replica.status = ReplicaStatus.RUNNING
        session.add(replica)
        session.commit()
    _set(ctx.engine, address, free_gpus=0, last_heartbeat=utcnow() + timedelta(seconds=2))
    assert run_matching_round(ctx=ctx)["assigned"] == 0
    # finished: the GPU is free again and the waiting task gets it
    with Session(ctx.engine) as session:
        replica = session.exec(select(Replica).where(Replica.task_id == placed)).one()
        replica.status = ReplicaStatus.EXECUTED
        session.add(replica)
        session.commit()
    _set(ctx.engine, address, free_gpus=1, last_heartbeat=utcnow() + timedelta(seconds=3))
    assert run_matching_round(ctx=ctx)["assigned"] == 1
    with Session(ctx.engine) as session:
        assert session.get(Task, waiting).status == TaskStatus.ASSIGNED  # type: ignore[union-attr]
