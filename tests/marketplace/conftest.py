"""Marketplace fixtures: a real PostgreSQL server for the session (initdb into a temp dir owned by the
`postgres` user, started on a free loopback port, stopped and removed afterwards), a fresh database per test
on SQLite or PostgreSQL, the app with fixed stake and fee oracles (the chain-backed ones are exercised by
the integration tests), and helpers that sign requests as a wallet."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_hash.auto import keccak
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func
from sqlmodel import Session, SQLModel, select

from hashgrid.config import DEV_CHAIN_ID
from hashgrid.signing import sign_request
from marketplace.api.app import create_app
from marketplace.api.chain import StaticFeeOracle, StaticStakeOracle
from marketplace.settings import MarketplaceSettings
from tests.marketplace.conftest_services import fresh_database

PG_BIN = Path("/usr/lib/postgresql/15/bin")
MIN_STAKE = 1_000 * 10**18
FEE_BPS = 250


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_postgres(*args: str) -> None:
    user = pwd.getpwnam("postgres")

    def demote() -> None:
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)

    subprocess.run(
        args,
        check=True,
        capture_output=True,
        preexec_fn=demote if os.getuid() == 0 else None,
        cwd="/tmp",
        timeout=120,
    )


@dataclass
class PgServer:
    port: int
    socket_dir: Path

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """PostgreSQL 15 on a free loopback port, trust auth, data and socket in one temp dir."""
    root = Path(tempfile.mkdtemp(prefix="hashgrid-pg-", dir="/tmp"))
    user = pwd.getpwnam("postgres")
    os.chown(root, user.pw_uid, user.pw_gid)
    data = root / "data"
    port = _free_port()
    _as_postgres(
        str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"
    )
    _as_postgres(
        str(PG_BIN / "pg_ctl"),
        "-D",
        str(data),
        "-l",
        str(root / "log"),
        "-w",
        "-o",
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
        "-c synchronous_commit=off -c max_connections=200",
        "start",
    )
    try:
        yield PgServer(port=port, socket_dir=root)
    finally:
        _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: a file in tmp_path, or a new PostgreSQL database dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'marketplace.db'}"
        return
    server: PgServer = request.getfixturevalue("pg_server")
    with fresh_database(server, "t") as url:
        yield url


def wallet(seed: str) -> LocalAccount:
    return Account.from_key(keccak(seed.encode()))


@pytest.fixture
def customer() -> LocalAccount:
    return wallet("customer")


@pytest.fixture
def other_customer() -> LocalAccount:
    return wallet("other-customer")


@pytest.fixture
def provider_key() -> LocalAccount:
    return wallet("provider-1")


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> MarketplaceSettings:
    return MarketplaceSettings(
        state_dir=tmp_path,
        database_url=db_url,
        chain_id=DEV_CHAIN_ID,
        marketplace_url="http://testserver",
        max_blob_bytes=1 << 20,
        poll_interval_s=0.01,
    )


@pytest.fixture
def stakes() -> StaticStakeOracle:
    return StaticStakeOracle(
        stakes={wallet(f"provider-{i}").address.lower(): MIN_STAKE for i in range(1, 4)}, minimum=MIN_STAKE
    )


@pytest.fixture
def engine(settings: MarketplaceSettings) -> Iterator[Engine]:
    from marketplace.db import engine_from_settings

    engine = engine_from_settings(settings)
    yield engine
    engine.dispose()


@pytest.fixture
def client(settings: MarketplaceSettings, engine: Engine, stakes: StaticStakeOracle) -> Iterator[TestClient]:
    app = create_app(settings, engine=engine, stake_oracle=stakes, fee_oracle=StaticFeeOracle(FEE_BPS))
    with TestClient(app, base_url="http://testserver") as test_client:
        yield test_client


class Signer:
    """Sends requests signed (EIP-712) by one wallet through a TestClient."""

    def __init__(self, client: TestClient, account: LocalAccount, chain_id: int = DEV_CHAIN_ID) -> None:
        self.client = client
        self.account = account
        self.address = account.address.lower()
        self.chain_id = chain_id

    def headers(self, method: str, path: str, body: bytes = b"", **kwargs: Any) -> dict[str, str]:
        kwargs.setdefault("chain_id", self.chain_id)
        return sign_request(self.account, method=method, url=f"http://testserver{path}", body=body, **kwargs)

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        content: bytes | None = None,
        extra: dict[str, str] | None = None,
        **sign: Any,
    ) -> httpx.Response:
        body = (
            content
            if content is not None
            else (json.dumps(json_body).encode() if json_body is not None else b"")
        )
        headers = self.headers(method, path, body, **sign)
        if json_body is not None:
            headers["content-type"] = "application/json"
        headers.update(extra or {})
        return self.client.request(method, path, content=body, headers=headers)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, json_body: Any = None, **kw: Any) -> httpx.Response:
        return self.request("POST", path, json_body=json_body if json_body is not None else {}, **kw)

    def put_blob(self, data: bytes, sha256: str | None = None) -> httpx.Response:
        import hashlib

        digest = sha256 or hashlib.sha256(data).hexdigest()
        headers = self.headers("PUT", f"/blobs/{digest}", body_sha256=digest)
        headers["content-type"] = "application/octet-stream"
        return self.client.put(f"/blobs/{digest}", content=data, headers=headers)


def row_counts(engine: Engine) -> dict[str, int]:
    """Rows per table: compared before and after refused requests."""
    counts = {}
    with Session(engine) as session:
        for name, table in SQLModel.metadata.tables.items():
            counts[name] = int(session.exec(select(func.count()).select_from(table)).one())
    return counts
