"""Runtime classes live, against a real anvil: providers register the backend their daemon will use (through
the API's register service), the matching round places a k=3 task only inside one class of a mixed fleet (one
runsc, three runc), records the class with the assignment, hands it to the providers with their assignments,
a replacement joins the recorded class even where another class would score higher, and so does the trusted
partner that spot-checks a primary."""

from __future__ import annotations

from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount
from sqlmodel import Session

from hashgrid.chain.contracts import Contracts, commitment_for
from marketplace.api.chain import StaticStakeOracle
from marketplace.api.schemas import Offer, ProviderRegisterIn
from marketplace.api.services import providers as service
from marketplace.jobs import JobContext, expire_heartbeats, index_chain, run_matching_round
from marketplace.jobs.matching import provider_view
from marketplace.jobs.settle import settle_tasks
from marketplace.models import Provider, Task
from scripts.devnet import GRID, DevAccounts
from tests.marketplace import conftest_services as services
from tests.marketplace.conftest_services import make_ctx, make_spec, post_spec, set_heartbeat, stale

ctx = services.ctx
jobs_db_url = services.jobs_db_url
jobs_engine = services.jobs_engine


def register(ctx: JobContext, contracts: Contracts, account: LocalAccount, docker: str, *,
             reputation: float | None = None) -> Provider:
    """What POST /providers/register stores for a daemon whose docker tasks run on `docker` (its backend)."""
    address = account.address.lower()
    body = ProviderRegisterIn(
        capabilities={"cpu": {"arch": "x86_64"}, "runtimes": ["docker", "runsc", "wasm"], "gpus": []},
        prices={"fixed": str(GRID // 100), "per_cpu_second": "1000"}, policy={"allow_network": False},
        offer=Offer(cores=4, memory_mb=8192, disk_mb=20_000), backends={"docker": docker, "wasm": "wasm"})
    stakes = StaticStakeOracle({address: contracts.registry.stake_of(account.address)})
    with Session(ctx.engine) as session:
        row = service.register(session=session, stakes=stakes, provider=address, body=body)
        if reputation is not None:
            row.reputation = reputation
            session.add(row)
            session.commit()
        session.refresh(row)
        session.expunge(row)
    return row


def test_a_mixed_fleet_places_a_k3_task_inside_one_class(ctx: JobContext, contracts: Contracts,
                                                         dev_accounts: DevAccounts) -> None:
    gvisor, runc_a, runc_b, runc_c = dev_accounts.providers[:4]
    rows = [register(ctx, contracts, gvisor, "runsc"), register(ctx, contracts, runc_a, "docker"),
            register(ctx, contracts, runc_b, "docker")]
    # the live seam: the engine's view carries what registration stored
    assert [sorted(provider_view(row).classes) for row in rows] == [["runsc", "wasm"], ["runc", "wasm"],
                                                                     ["runc", "wasm"]]
    task_id = post_spec(contracts, ctx.engine, dev_accounts.customer, make_spec("k3", replicas=3, quorum=2))
    index_chain(ctx=ctx)
    assert run_matching_round(ctx=ctx)["assigned"] == 0
    with Session(ctx.engine) as session:
        task = session.get(Task, task_id)
        assert task is not None and task.runtime_class is None
        assert task.unplaced_reason == (
            "no runtime class has 3 distinct operators for its replicas (runc: 2, runsc: 1); replicas of one "
            "task run in one class so that honest results agree")
    assert contracts.escrow.replicas_of(task_id) == []

    register(ctx, contracts, runc_c, "docker")
    assert run_matching_round(ctx=ctx)["assigned"] == 1
    runc = {a.address.lower() for a in (runc_a, runc_b, runc_c)}
    assert {p.lower() for p in contracts.escrow.replicas_of(task_id)} == runc
    with Session(ctx.engine) as session:
        task = session.get(Task, task_id)
        assert task is not None and task.runtime_class == "runc"
        for address in runc:  # each provider is told the class it must run its replica in
            assert [(t.task_id, t.runtime_class) for _, t in
                    service.pending_assignments(session=session, provider=address)] == [(task_id, "runc")]
        assert service.pending_assignments(session=session, provider=gvisor.address.lower()) == []


@pytest.mark.parametrize("recorded", [True, False])
def test_a_replacement_joins_the_class_the_task_has(ctx: JobContext, contracts: Contracts,
                                                    dev_accounts: DevAccounts, recorded: bool) -> None:
    """The runsc provider scores highest (reputation 1.0) but is alone in its class, so the k=2 task goes to
    runc; when a runc replica dies, its replacement is the third runc provider, never the runsc one. Also for
    a task whose class was not recorded (placed before classes were, or seen by the indexer first): the class
    its running replicas' providers share is recorded then."""
    gvisor, *runc = dev_accounts.providers[:4]
    register(ctx, contracts, gvisor, "runsc", reputation=1.0)
    for account in runc:
        register(ctx, contracts, account, "docker", reputation=0.5)
    task_id = post_spec(contracts, ctx.engine, dev_accounts.customer,
                        make_spec("replace in class", replicas=2, quorum=2, max_replicas=3))
    index_chain(ctx=ctx)
    run_matching_round(ctx=ctx)
    first = [p.lower() for p in contracts.escrow.replicas_of(task_id)]
    by_address = {a.address.lower(): a for a in runc}
    assert set(first) <= set(by_address) and len(first) == 2
    dead, alive = first
    contracts.escrow.commit(task_id, commitment_for(b"\x01" * 32, b"\x02" * 32, by_address[alive].address),
                            sender=by_address[alive])
    index_chain(ctx=ctx)
    if not recorded:
        with Session(ctx.engine) as session:
            task = session.get(Task, task_id)
            assert task is not None and task.runtime_class == "runc"
            task.runtime_class = None
            session.add(task)
            session.commit()
    set_heartbeat(ctx.engine, by_address[dead], stale(ctx.settings.heartbeat_ttl_s))
    assert expire_heartbeats(ctx=ctx)["new"] == 1
    now_assigned = [p.lower() for p in contracts.escrow.replicas_of(task_id)]
    (third,) = set(by_address) - set(first)
    assert now_assigned == [*first, third]
    with Session(ctx.engine) as session:
        task = session.get(Task, task_id)
        assert task is not None and task.runtime_class == "runc"


def test_a_spot_check_partner_joins_the_primary_class(ctx: JobContext, contracts: Contracts,
                                                      dev_accounts: DevAccounts, tmp_path: Path) -> None:
    """A trust-level task runs its primary alone on gVisor; the trusted partner that checks it is the trusted
    gVisor provider, not the trusted runc one that scores higher."""
    from tests.marketplace.test_verification_jobs import plant_trusted, reveal

    grown = make_ctx(ctx.engine, ctx.client, ctx.deployment, tmp_path, min_trusted_pool=2)
    gvisor_a, gvisor_b, runc_a, runc_b = dev_accounts.providers[:4]
    register(grown, contracts, gvisor_a, "runsc", reputation=1.0)
    register(grown, contracts, gvisor_b, "runsc", reputation=0.5)
    register(grown, contracts, runc_a, "docker", reputation=0.9)
    register(grown, contracts, runc_b, "docker", reputation=0.1)
    task_id = post_spec(contracts, ctx.engine, dev_accounts.customer,
                        make_spec("checked in class", replicas=1, quorum=1, trust="standard"))
    index_chain(ctx=grown)
    run_matching_round(ctx=grown)
    assert [p.lower() for p in contracts.escrow.replicas_of(task_id)] == [gvisor_a.address.lower()]
    reveal(contracts, task_id, [(gvisor_a, b"\x11" * 32)])
    index_chain(ctx=grown)
    plant_trusted(grown, [gvisor_a, gvisor_b, runc_a])  # gvisor_a may check others, not run alone
    outcome = settle_tasks(ctx=grown)
    assert outcome["escalated"] == [task_id] and outcome["matching"]["assigned"] == 1
    assert [p.lower() for p in contracts.escrow.replicas_of(task_id)] == [gvisor_a.address.lower(),
                                                                         gvisor_b.address.lower()]
    with Session(ctx.engine) as session:
        task = session.get(Task, task_id)
        assert task is not None and task.runtime_class == "runsc"
