"""The chain indexer against a real anvil: a whole task life lands in the tables, indexing twice changes
nothing, it resumes from its cursor, a rebuild from the chain equals the live index, and a reorg below the
cursor is rewound and re-applied."""

from __future__ import annotations

import os

from sqlalchemy import Engine
from sqlmodel import Session, select

from hashgrid.chain.client import ChainClient
from hashgrid.chain.contracts import Contracts
from hashgrid.chain.deployment import Deployment
from hashgrid.spec import spec_hash
from marketplace.indexer import Indexer
from marketplace.indexer.tables import ProviderTotals
from marketplace.models import ChainEvent, IndexerCursor, Provider, Replica, ReplicaStatus, Task, TaskStatus
from scripts.devnet import GRID, DevAccounts, ReplicaPlan, play_task
from tests.marketplace import conftest_services as services
from tests.marketplace.conftest_services import (
    make_spec,
    new_engine,
    post_spec,
    register_spec,
    snapshot,
)

# fixtures shared by the jobs tests (pytest finds them as module attributes)
jobs_db_url = services.jobs_db_url
jobs_engine = services.jobs_engine
pg_db_url = services.pg_db_url
any_engine = services.any_engine

AGREED_HASH = b"\x11" * 32
OTHER_HASH = b"\x22" * 32


def _indexer(chain: ChainClient, deployment: Deployment, **kwargs: object) -> Indexer:
    return Indexer(client=chain, deployment=deployment, **kwargs)  # type: ignore[arg-type]


def _index(engine: Engine, indexer: Indexer, **kwargs: object) -> None:
    with Session(engine) as session:
        indexer.run(session, **kwargs)  # type: ignore[arg-type]


def _full_life(contracts: Contracts, engine: Engine, dev_accounts: DevAccounts) -> int:
    """k=3, q=2: two providers agree (paid), one dissents (slashed)."""
    spec = make_spec("life", replicas=3, quorum=2)
    register_spec(engine, spec, dev_accounts.customer)
    p2, p3, p4 = dev_accounts.providers[:3]
    plans = [ReplicaPlan(p2, AGREED_HASH, GRID // 2), ReplicaPlan(p3, AGREED_HASH, GRID // 3),
             ReplicaPlan(p4, OTHER_HASH, 0)]
    run = play_task(contracts, customer=dev_accounts.customer, operator=dev_accounts.deployer,
                    spec_hash=spec_hash(spec), plans=plans, quorum=2, max_price=GRID)
    return run.task_id


def test_full_life_is_indexed_once(contracts: Contracts, chain: ChainClient, deployment: Deployment,
                                   any_engine: Engine, dev_accounts: DevAccounts) -> None:
    jobs_engine = any_engine
    task_id = _full_life(contracts, jobs_engine, dev_accounts)
    indexer = _indexer(chain, deployment)
    _index(jobs_engine, indexer)
    p2, p3, p4 = (p.address.lower() for p in dev_accounts.providers[:3])
    with Session(jobs_engine) as session:
        task = session.get(Task, task_id)
        assert task is not None
        assert task.status == TaskStatus.SETTLED
        assert task.result_hash == "0x" + AGREED_HASH.hex()
        assert task.customer == dev_accounts.customer.address.lower()
        assert (task.replicas, task.quorum, task.max_replicas) == (3, 2, 3)
        assert int(task.escrowed) >= 3 * GRID
        replicas = {r.provider: r for r in session.exec(select(Replica).where(Replica.task_id == task_id))}
        assert set(replicas) == {p2, p3, p4}
        assert all(r.round == 1 for r in replicas.values())
        assert replicas[p2].status == replicas[p3].status == ReplicaStatus.AGREED
        assert replicas[p4].status == ReplicaStatus.DISSENTED
        paid = (replicas[p2].paid, replicas[p3].paid, replicas[p4].paid)
        assert paid == (str(GRID // 2), str(GRID // 3), "0")
        assert replicas[p4].result_hash == "0x" + OTHER_HASH.hex()
        assert replicas[p4].commitment is not None
        assert int(replicas[p4].slashed) > 0 and replicas[p2].slashed == "0"
        totals = session.get(ProviderTotals, p4)
        assert totals is not None and totals.dissented == 1 and totals.slashed == replicas[p4].slashed
        provider = session.get(Provider, p4)
        assert provider is not None
        assert int(provider.stake) == contracts.registry.stake_of(p4)
        names = [e.name for e in session.exec(select(ChainEvent).where(ChainEvent.task_id == task_id))]
        for name in ("TaskPosted", "TaskAssigned", "RoundOpened", "ResultCommitted", "ResultRevealed",
                     "TaskSettled", "ReplicaFinalized", "Slashed"):
            assert name in names, name
    before = snapshot(jobs_engine)
    # the same range again, from scratch: nothing changes
    with Session(jobs_engine) as session:
        cursor = session.get(IndexerCursor, "chain")
        assert cursor is not None
        cursor.block_number, cursor.block_hash = deployment.start_block - 1, ""
        session.add(cursor)
        session.commit()
    _index(jobs_engine, indexer)
    _index(jobs_engine, indexer)
    assert snapshot(jobs_engine) == before


def test_resumes_from_cursor_in_bounded_ranges(contracts: Contracts, chain: ChainClient,
                                               deployment: Deployment, jobs_engine: Engine,
                                               dev_accounts: DevAccounts) -> None:
    indexer = _indexer(chain, deployment, batch_blocks=3)
    first = post_spec(contracts, jobs_engine, dev_accounts.customer, make_spec("first"))
    with Session(jobs_engine) as session:
        report = indexer.run(session)
    assert report.batches >= 2  # ranges are bounded
    stopped_at = report.to_block
    assert stopped_at == chain.block_number()
    second = post_spec(contracts, jobs_engine, dev_accounts.customer, make_spec("second"))
    with Session(jobs_engine) as session:
        report = indexer.run(session)
        assert report.from_block == stopped_at + 1
        assert report.events >= 1
        tasks = {t.task_id: t for t in session.exec(select(Task))}
    assert tasks[first].status == tasks[second].status == TaskStatus.POSTED
    assert tasks[first].spec_hash == spec_hash(make_spec("first")).hex()


def test_confirmations_hold_back_recent_blocks(contracts: Contracts, chain: ChainClient,
                                               deployment: Deployment, jobs_engine: Engine,
                                               dev_accounts: DevAccounts) -> None:
    indexer = _indexer(chain, deployment, confirmations=3)
    task_id = post_spec(contracts, jobs_engine, dev_accounts.customer, make_spec("held"))
    _index(jobs_engine, indexer)
    with Session(jobs_engine) as session:
        assert session.get(Task, task_id) is None  # its block is not confirmed yet
    chain.rpc("anvil_mine", [3])
    _index(jobs_engine, indexer)
    with Session(jobs_engine) as session:
        assert session.get(Task, task_id) is not None


def test_rebuild_from_chain_equals_live_index(contracts: Contracts, chain: ChainClient,
                                              deployment: Deployment, tmp_path: object,
                                              any_engine: Engine, dev_accounts: DevAccounts) -> None:
    jobs_engine = any_engine
    indexer = _indexer(chain, deployment, batch_blocks=5)
    _index(jobs_engine, indexer)  # live: index as things happen
    _full_life(contracts, jobs_engine, dev_accounts)
    _index(jobs_engine, indexer)
    post_spec(contracts, jobs_engine, dev_accounts.customer, make_spec("queued"))
    _index(jobs_engine, indexer)
    contracts.registry.request_unstake(10 * GRID, sender=dev_accounts.providers[3])
    _index(jobs_engine, indexer)
    live = snapshot(jobs_engine)
    assert live["tasks"] and live["replicas"] and live["events"]
    with Session(jobs_engine) as session:
        indexer.rebuild(session)
    assert snapshot(jobs_engine) == live
    # and a fresh database indexed from the chain alone holds the same
    fresh = new_engine(f"sqlite:///{os.path.join(str(tmp_path), 'fresh.db')}")
    try:
        for spec_name in ("life", "queued"):
            register_spec(fresh, make_spec(spec_name, replicas=3 if spec_name == "life" else 2,
                                           quorum=2), dev_accounts.customer)
        with Session(fresh) as session:
            _indexer(chain, deployment).rebuild(session)
        rebuilt = snapshot(fresh)
        assert rebuilt["tasks"] == live["tasks"]
        assert rebuilt["replicas"] == live["replicas"]
        assert rebuilt["events"] == live["events"]
        assert rebuilt["totals"] == live["totals"]
        with Session(fresh) as session:
            stakes = {p.address: p.stake for p in session.exec(select(Provider))}
        assert stakes == dict(live["providers"])
    finally:
        fresh.dispose()


def test_reorg_below_cursor_is_rewound(contracts: Contracts, chain: ChainClient, deployment: Deployment,
                                       jobs_engine: Engine, dev_accounts: DevAccounts) -> None:
    indexer = _indexer(chain, deployment, reorg_depth=10)
    kept = post_spec(contracts, jobs_engine, dev_accounts.customer, make_spec("kept"))
    fork = chain.rpc("evm_snapshot")
    orphan = post_spec(contracts, jobs_engine, dev_accounts.customer, make_spec("orphaned"))
    _index(jobs_engine, indexer)
    with Session(jobs_engine) as session:
        assert session.get(Task, orphan) is not None
    # the chain drops the orphan's blocks and grows another branch of the same height
    chain.rpc("evm_revert", [fork])
    chain.nonces.reset()
    replacement = post_spec(contracts, jobs_engine, dev_accounts.customer, make_spec("other branch"))
    assert replacement == orphan  # same id, different task
    with Session(jobs_engine) as session:
        report = indexer.run(session)
        assert report.rewound_to is not None
        task = session.get(Task, replacement)
        assert task is not None
        assert task.spec_hash == spec_hash(make_spec("other branch")).hex()
        assert session.get(Task, kept) is not None
        hashes = {e.block_hash for e in session.exec(select(ChainEvent))}
    assert all(chain.w3.eth.get_block(e.block_number)["hash"].hex().removeprefix("0x")
               == e.block_hash.removeprefix("0x") for e in _events(jobs_engine))
    assert hashes
    fresh_cursor_ok(jobs_engine, chain)


def _events(engine: Engine) -> list[ChainEvent]:
    with Session(engine) as session:
        return list(session.exec(select(ChainEvent)))


def fresh_cursor_ok(engine: Engine, chain: ChainClient) -> None:
    with Session(engine) as session:
        cursor = session.get(IndexerCursor, "chain")
        assert cursor is not None
        block = chain.w3.eth.get_block(cursor.block_number)
        assert "0x" + bytes(block["hash"]).hex() == cursor.block_hash


def test_orphaned_assignment_is_undone(contracts: Contracts, chain: ChainClient, deployment: Deployment,
                                       jobs_engine: Engine, dev_accounts: DevAccounts) -> None:
    """A task's rows are re-projected from the events that survive the reorg: its replicas go away and it
    is posted (and matchable) again."""
    indexer = _indexer(chain, deployment, reorg_depth=10)
    task_id = post_spec(contracts, jobs_engine, dev_accounts.customer, make_spec("reorged", replicas=1,
                                                                                quorum=1))
    _index(jobs_engine, indexer)
    fork = chain.rpc("evm_snapshot")
    contracts.escrow.assign(task_id, [dev_accounts.providers[0].address], sender=dev_accounts.deployer)
    _index(jobs_engine, indexer)
    with Session(jobs_engine) as session:
        task = session.get(Task, task_id)
        assert task is not None and task.status == TaskStatus.ASSIGNED
    chain.rpc("evm_revert", [fork])
    chain.nonces.reset()
    chain.rpc("anvil_mine", [2])  # another branch, higher than the old one, without the assign
    with Session(jobs_engine) as session:
        report = indexer.run(session)
        assert report.rewound_to is not None
        task = session.get(Task, task_id)
        assert task is not None and task.status == TaskStatus.POSTED
        assert session.exec(select(Replica).where(Replica.task_id == task_id)).all() == []
        names = [e.name for e in session.exec(select(ChainEvent).where(ChainEvent.task_id == task_id))]
    assert names == ["TaskPosted"]
