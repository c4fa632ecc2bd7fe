"""Fixtures and helpers for the background-jobs tests: a job context on a fresh database over the session's
anvil, providers with offers and heartbeats, specs registered and posted on chain; and real services: a
Redis server and a Celery worker as subprocesses on loopback ports of their own, stopped afterwards.

Test modules import what they use from here (pytest loads only files named conftest.py by itself).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from sqlalchemy import Engine, text
from sqlmodel import Session, select

from hashgrid.chain.client import ChainClient
from hashgrid.chain.contracts import Contracts
from hashgrid.chain.deployment import Deployment
from hashgrid.config import ANVIL_DEV_KEYS, REPO_ROOT
from hashgrid.spec import TaskSpec, spec_document, spec_hash
from marketplace.db import init_db, make_engine
from marketplace.indexer.tables import ProviderTotals
from marketplace.jobs.context import JobContext, JobSettings
from marketplace.models import ChainEvent, Provider, Replica, SpecRecord, Task, utcnow
from scripts.devnet import GRID, post

IMAGE = "sha256:" + "ab" * 32


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ------------------------------------------------------------------ database and job context
def new_engine(url: str) -> Engine:
    engine = make_engine(url)
    init_db(engine)
    return engine


@pytest.fixture
def jobs_db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jobs.db'}"


@pytest.fixture
def jobs_engine(jobs_db_url: str) -> Iterator[Engine]:
    engine = new_engine(jobs_db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_db_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database on the session's PostgreSQL server (`pg_server` in tests/marketplace/conftest.py),
    dropped afterwards."""
    with fresh_database(request.getfixturevalue("pg_server"), "jobs") as url:
        yield url


@contextmanager
def fresh_database(server: Any, prefix: str) -> Iterator[str]:
    """A new, empty database on the PostgreSQL `server` (its URL), dropped with its connections at the end."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = make_engine(server.url("postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.url(name)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """The jobs' database on SQLite and on PostgreSQL."""
    url = (f"sqlite:///{tmp_path / 'jobs.db'}" if request.param == "sqlite"
           else request.getfixturevalue("pg_db_url"))
    engine = new_engine(url)
    yield engine
    engine.dispose()


def make_ctx(engine: Engine, chain: ChainClient, deployment: Deployment, tmp_path: Path,
             **overrides: Any) -> JobContext:
    settings = JobSettings(state_dir=tmp_path, rpc_url=chain.rpc_url, confirmations=0,
                           heartbeat_ttl_s=60, **overrides)
    return JobContext(settings=settings, engine=engine, client=chain, deployment=deployment,
                      matcher_key=ANVIL_DEV_KEYS[0], deaf_at=utcnow() - timedelta(days=1))  # long listening


@pytest.fixture
def ctx(jobs_engine: Engine, chain: ChainClient, deployment: Deployment, tmp_path: Path) -> JobContext:
    return make_ctx(jobs_engine, chain, deployment, tmp_path)


# ------------------------------------------------------------------ marketplace rows and chain actions
def add_providers(engine: Engine, providers: tuple[LocalAccount, ...], *, seen: datetime | None = None,
                  gpus: int = 0) -> None:
    """Offers as the API would store them after register + heartbeat (the API is tested on its own)."""
    seen = seen or utcnow()
    with Session(engine) as session:
        for account in providers:
            address = account.address.lower()
            row = session.get(Provider, address) or Provider(address=address, operator=address)
            row.runtimes, row.arch = ["docker", "wasm"], "x86_64"
            row.total_cpus, row.total_memory_mb, row.total_disk_mb, row.gpus = 4, 8192, 20_000, gpus
            row.free_cpus, row.free_memory_mb, row.free_disk_mb, row.free_gpus = 4, 8192, 20_000, gpus
            row.prices = {"fixed": str(GRID // 100), "per_cpu_second": "1000"}
            row.policy = {"allow_network": False}
            row.last_heartbeat = seen
            session.add(row)
        session.commit()


def set_heartbeat(engine: Engine, account: LocalAccount, seen: datetime) -> None:
    with Session(engine) as session:
        row = session.get(Provider, account.address.lower())
        assert row is not None
        row.last_heartbeat = seen
        session.add(row)
        session.commit()


def make_spec(name: str = "job", *, replicas: int = 2, quorum: int = 2, max_replicas: int | None = None,
              gpus: int = 0, price: int = GRID, trust: str | None = None) -> TaskSpec:
    return TaskSpec.model_validate({
        "version": 1, "name": name, "runtime": "docker", "image": IMAGE, "command": ["true"],
        "resources": {"cpus": 1, "memory_mb": 256, "gpus": gpus, "timeout_s": 60},
        "replicas": replicas, "quorum": quorum, "max_replicas": max_replicas,
        "max_price_per_replica": price, "trust": trust,
    })


def register_spec(engine: Engine, spec: TaskSpec, customer: LocalAccount) -> str:
    digest = spec_hash(spec).hex()
    with Session(engine) as session:
        if session.get(SpecRecord, (digest, customer.address.lower())) is None:
            session.add(SpecRecord(spec_hash=digest, customer=customer.address.lower(),
                                   spec=spec_document(spec)))
            session.commit()
    return digest


def post_spec(contracts: Contracts, engine: Engine, customer: LocalAccount, spec: TaskSpec,
              *, deadline: int | None = None) -> int:
    """Register the spec with the marketplace and post it on chain; the new task id."""
    register_spec(engine, spec, customer)
    task_id, _ = post(contracts, customer, spec_hash(spec), replicas=spec.replicas, quorum=spec.quorum,
                      max_price=spec.max_price_per_replica, max_replicas=spec.effective_max_replicas,
                      deadline=deadline)
    return task_id


def snapshot(engine: Engine) -> dict[str, Any]:
    """Every chain-derived value in the database (timestamps and off-chain reports left out)."""
    with Session(engine) as session:
        tasks = [
            (t.task_id, t.spec_hash, t.customer, t.status, t.replicas, t.quorum, t.max_replicas,
             t.max_price_per_replica, t.escrowed, t.deadline, t.priority, t.result_hash, t.posted_block)
            for t in session.exec(select(Task).order_by(Task.task_id))
        ]
        replicas = sorted(
            (r.task_id, r.provider, r.round, r.status, r.commitment, r.result_hash, r.paid, r.slashed)
            for r in session.exec(select(Replica))
        )
        events = sorted(
            (e.block_number, e.log_index, e.block_hash, e.tx_hash, e.contract, e.name, e.task_id, e.account,
             tuple(sorted(e.args.items())))
            for e in session.exec(select(ChainEvent))
        )
        providers = sorted((p.address, p.stake) for p in session.exec(select(Provider)))
        totals = sorted((t.address, t.paid, t.slashed, t.agreed, t.dissented, t.no_show, t.released)
                        for t in session.exec(select(ProviderTotals)))
    return {"tasks": tasks, "replicas": replicas, "events": events, "providers": providers, "totals": totals}


def stale(ttl_s: int) -> datetime:
    return utcnow() - timedelta(seconds=ttl_s * 2)


# ------------------------------------------------------------------ Redis and Celery, for real
@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def _wait_port(port: int, timeout: float, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listened on port {port} within {timeout}s")


def _stop(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """redis-server on a free loopback port, no persistence, data dir in a temp dir; stopped after."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    workdir = Path(tempfile.mkdtemp(prefix="hashgrid-redis-"))
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--daemonize", "no", "--dir", str(workdir),
         "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        _wait_port(port, 10, process)
        yield RedisServer(port, process)
    finally:
        _stop(process)
        shutil.rmtree(workdir, ignore_errors=True)


@dataclass
class CeleryWorker:
    process: subprocess.Popen[bytes]
    log_path: Path
    queue: str

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def start_celery_worker(*, redis_url: str, rpc_url: str, deployment_file: Path, db_url: str, state_dir: Path,
                        queue: str, ready_timeout: float = 60.0) -> CeleryWorker:
    """`celery -A marketplace.jobs.celery_app worker --pool=solo -Q <queue>` with the environment pointing at
    this Redis, anvil, deployment and database; returns once the worker answers a ping."""
    env = {**os.environ, "HASHGRID_REDIS_URL": redis_url, "HASHGRID_RPC_URL": rpc_url,
           "HASHGRID_DEPLOYMENT_FILE": str(deployment_file), "HASHGRID_DATABASE_URL": db_url,
           "HASHGRID_STATE_DIR": str(state_dir), "HASHGRID_CONFIRMATIONS": "0",
           "HASHGRID_PRIVATE_KEY": "", "PYTHONPATH": str(REPO_ROOT)}
    env.pop("HASHGRID_PRIVATE_KEY")
    log_path = state_dir / f"celery-{queue}.log"
    hostname = f"{queue}@%h"
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "marketplace.jobs.celery_app", "worker", "--pool=solo",
         "-Q", queue, "-n", hostname, "--loglevel=INFO", "--without-gossip", "--without-mingle",
         "--without-heartbeat", "-f", str(log_path)],
        cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    worker = CeleryWorker(process, log_path, queue)
    from celery import Celery

    probe = Celery("probe", broker=redis_url, backend=redis_url)
    deadline = time.monotonic() + ready_timeout
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"celery worker exited ({process.returncode}):\n{worker.log()}")
            replies = probe.control.ping(timeout=0.5)
            if any(name.startswith(f"{queue}@") for reply in replies for name in reply):
                return worker
        raise RuntimeError(f"celery worker did not answer a ping within {ready_timeout}s:\n{worker.log()}")
    except BaseException:
        _stop(process)
        raise
    finally:
        probe.close()


def stop_celery_worker(worker: CeleryWorker) -> None:
    _stop(worker.process, timeout=20)
