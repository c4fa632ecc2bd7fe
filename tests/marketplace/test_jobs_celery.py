"""The jobs on real services: a Redis server and a Celery worker started as subprocesses, tasks sent with
.delay() and their results awaited; and the retry rule (only retryable HashgridErrors are retried)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from hashgrid.chain.client import ChainClient
from hashgrid.chain.contracts import Contracts, TaskState
from hashgrid.chain.deployment import Deployment
from hashgrid.errors import ChainError, InvalidInput
from marketplace.jobs import celery_app as celery_module
from marketplace.models import Task, TaskStatus
from scripts.devnet import DevAccounts
from tests.marketplace import conftest_services as services
from tests.marketplace.conftest_services import (
    CeleryWorker,
    RedisServer,
    add_providers,
    make_spec,
    new_engine,
    post_spec,
    start_celery_worker,
    stop_celery_worker,
)

# fixtures shared by the jobs tests (pytest finds them as module attributes)
redis_server = services.redis_server

RESULT_TIMEOUT = 90


@pytest.fixture
def worker_db(tmp_path: Path) -> Iterator[tuple[str, Engine]]:
    url = f"sqlite:///{tmp_path / 'celery.db'}"
    engine = new_engine(url)
    yield url, engine
    engine.dispose()


@pytest.fixture
def celery_worker(redis_server: RedisServer, chain: ChainClient, deployment: Deployment,
                  worker_db: tuple[str, Engine], tmp_path: Path) -> Iterator[CeleryWorker]:
    """A real worker process on this test's database and chain state; the test process sends to the same
    Redis through the app's own task objects."""
    deployment_file = deployment.save(tmp_path / "deployment.json")
    worker = start_celery_worker(redis_url=redis_server.url, rpc_url=chain.rpc_url,
                                 deployment_file=deployment_file, db_url=worker_db[0], state_dir=tmp_path,
                                 queue=celery_module.QUEUE)
    app = celery_module.celery_app
    saved = (app.conf.broker_url, app.conf.result_backend)
    app.conf.update(broker_url=redis_server.url, result_backend=redis_server.url)
    app._local.__dict__.pop("backend", None)  # the result back-end is cached per thread
    try:
        yield worker
    finally:
        stop_celery_worker(worker)
        app.conf.update(broker_url=saved[0], result_backend=saved[1])
        app._local.__dict__.pop("backend", None)
        chain.nonces.reset()  # the worker sent from the matcher key


def test_celery_worker_indexes_and_matches(celery_worker: CeleryWorker, worker_db: tuple[str, Engine],
                                           contracts: Contracts, dev_accounts: DevAccounts) -> None:
    engine = worker_db[1]
    add_providers(engine, dev_accounts.providers)
    task_id = post_spec(contracts, engine, dev_accounts.customer, make_spec("via celery"))
    indexed = celery_module.index_chain_task.delay(match_after=False).get(timeout=RESULT_TIMEOUT)
    assert indexed["events"] >= 1, celery_worker.log()
    matched = celery_module.run_matching_round_task.delay().get(timeout=RESULT_TIMEOUT)
    assert matched["assigned"] == 1, (matched, celery_worker.log())
    assert contracts.escrow.get_task(task_id).state == TaskState.ASSIGNED
    assert len(contracts.escrow.replicas_of(task_id)) == 2
    with Session(engine) as session:
        task = session.get(Task, task_id)
        assert task is not None and task.status == TaskStatus.ASSIGNED
    # by default an index run that saw new posts queues a matching round itself
    second = post_spec(contracts, engine, dev_accounts.customer, make_spec("chained"))
    indexed = celery_module.index_chain_task.delay().get(timeout=RESULT_TIMEOUT)
    chained = celery_module.celery_app.AsyncResult(indexed["matching_task_id"]).get(timeout=RESULT_TIMEOUT)
    assert chained["assigned"] == 1, (chained, celery_worker.log())
    assert contracts.escrow.get_task(second).state == TaskState.ASSIGNED


def test_only_retryable_errors_are_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run eagerly (no broker): a ChainError is retried until the job succeeds; an InvalidInput is not."""
    import marketplace.jobs.jobs as jobs

    calls: list[str] = []
    monkeypatch.setattr(celery_module, "context", lambda: None)

    def flaky(*, ctx: Any, max_batches: int | None = None) -> dict[str, Any]:
        calls.append("flaky")
        if len(calls) < 3:
            raise ChainError("RPC unreachable")
        return {"events": 0}

    monkeypatch.setattr(jobs, "index_chain", flaky)
    assert celery_module.index_chain_task.apply().get() == {"events": 0}
    assert len(calls) == 3

    def broken(*, ctx: Any, task_ids: list[int] | None = None) -> dict[str, Any]:
        calls.append("broken")
        raise InvalidInput("bad")

    monkeypatch.setattr(jobs, "run_matching_round", broken)
    result = celery_module.run_matching_round_task.apply()
    with pytest.raises(InvalidInput):
        result.get()
    assert calls.count("broken") == 1
