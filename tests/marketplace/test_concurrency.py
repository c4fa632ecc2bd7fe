"""Bursts against a real uvicorn: every sync, database-backed request answers, and each signed nonce is spent
exactly once when its replays race it. An async route cannot take the wallet without spending its nonce.

Before the API capped its threadpool below the engine's pool (marketplace/db.py, API_THREADS), 64 concurrent
GET /health requests on SQLite left every threadpool slot waiting for a connection while the connections'
holders waited for a slot to validate their responses: nothing moved until the 30 s pool timeout, then 500s.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from eth_account.signers.local import LocalAccount
from sqlalchemy import Engine, func
from sqlmodel import Session, select

from hashgrid.config import DEV_CHAIN_ID
from hashgrid.signing import sign_request
from marketplace.api.app import create_app
from marketplace.api.chain import StaticFeeOracle, StaticStakeOracle
from marketplace.api.deps import CurrentWallet
from marketplace.api.routing import Router, spends_nonce
from marketplace.db import POOL_CONNECTIONS
from marketplace.models import UsedNonce
from marketplace.settings import MarketplaceSettings
from tests.marketplace.conftest import FEE_BPS
from tests.polling import wait_for

BURST = 4 * POOL_CONNECTIONS  # far more requests in flight than connections or threads
CLIENT_TIMEOUT_S = 20.0  # below the pool's 30 s timeout: a stalled server fails here, not with a late 500


@pytest.fixture
def live_server(settings: MarketplaceSettings, engine: Engine) -> Iterator[str]:
    """The app under uvicorn on a loopback port of its own, in a thread; stopped after the test."""
    app = create_app(settings, engine=engine, stake_oracle=StaticStakeOracle(),
                     fee_oracle=StaticFeeOracle(FEE_BPS))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    wait_for(lambda: server.started or not thread.is_alive(), timeout=30, what="uvicorn started")
    assert server.started, "uvicorn exited during startup"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


async def _burst(base_url: str, paths: list[str], headers: list[dict[str, str]] | None = None) -> list[int]:
    limits = httpx.Limits(max_connections=len(paths), max_keepalive_connections=len(paths))
    async with httpx.AsyncClient(base_url=base_url, timeout=CLIENT_TIMEOUT_S, limits=limits) as client:
        responses = await asyncio.gather(
            *(client.get(path, headers=(headers or [{}] * len(paths))[i]) for i, path in enumerate(paths))
        )
    return [response.status_code for response in responses]


def test_a_burst_of_sync_database_requests_all_answer(live_server: str) -> None:
    paths = ["/health", "/explorer/stats"] * (BURST // 2)
    statuses = asyncio.run(_burst(live_server, paths))
    assert statuses == [200] * len(paths)


def test_a_burst_of_signed_reads_and_their_replays_spends_each_nonce_once(
    live_server: str, customer: LocalAccount, engine: Engine
) -> None:
    signed = [
        sign_request(customer, method="GET", url=f"{live_server}/tasks", chain_id=DEV_CHAIN_ID)
        for _ in range(BURST // 2)
    ]
    headers = [h for h in signed for _ in range(2)]  # every request sent twice at once: one is a replay
    statuses = asyncio.run(_burst(live_server, ["/tasks"] * len(headers), headers))
    assert sorted(statuses) == [200] * len(signed) + [401] * len(signed)
    with Session(engine) as session:
        spent = session.exec(select(func.count()).select_from(UsedNonce)).one()
    assert spent == len(signed)


def test_an_async_route_taking_the_wallet_must_spend_its_nonce() -> None:
    """An async endpoint gets no thread of its own to spend the nonce in (routing.py): unless it says it
    spends it, building the route fails, rather than the route accepting replays."""
    router = Router()

    async def forgets(wallet: CurrentWallet) -> dict[str, str]:
        return {"wallet": wallet}

    with pytest.raises(TypeError, match="spend_nonce_now"):
        router.get("/forgets")(forgets)
    router.get("/spends")(spends_nonce(forgets))  # marked: accepted

    def sync(wallet: CurrentWallet) -> dict[str, str]:  # sync routes spend it in routing.in_one_thread
        return {"wallet": wallet}

    router.get("/sync")(sync)
