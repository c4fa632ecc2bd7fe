"""`create_app(settings)`: the marketplace API with its database, content store and chain oracles wired in.

Tests pass their own engine and oracles; `hashgrid marketplace serve` uses the chain-backed ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

import anyio.to_thread
from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.middleware.cors import CORSMiddleware
from sqlalchemy import Engine
from sqlmodel import Session
from starlette.routing import Route

from hashgrid.content import ContentStore
from marketplace.api.bell import Bell
from marketplace.api.chain import ChainFeeOracle, ChainStakeOracle, FeeOracle, StakeOracle
from marketplace.api.errors import install_error_handlers
from marketplace.api.guard import Guard, Limits, StreamSlots, rate_limiter
from marketplace.api.ingest import SpecWriter
from marketplace.api.openapi import install_openapi
from marketplace.api.routes import auth, blobs, explorer, health, providers, tasks, webapp
from marketplace.api.security import purge_expired_nonces
from marketplace.db import API_THREADS, engine_from_settings, init_db
from marketplace.jobs.scheduler import Nudge
from marketplace.models import utcnow
from marketplace.settings import MarketplaceSettings

log = logging.getLogger(__name__)
NONCE_PURGE_INTERVAL_S = 60.0
CORS_METHODS = ["GET", "HEAD", "POST", "PUT"]
CORS_HEADERS = [
    "Authorization",
    "Content-Type",
    "X-Hashgrid-Address",
    "X-Hashgrid-Signature",
    "X-Hashgrid-Nonce",
    "X-Hashgrid-Expiry",
    "X-Hashgrid-Chain-Id",
]

DESCRIPTION = """The Hashgrid marketplace: customers register task specs and read their tasks' status,
logs and verified results; providers register, heartbeat, receive assignments and report; anyone
reads the explorer.

**Auth** (docs/api.md): every mutating request is signed by a wallet, either per request with EIP-712
(`X-Hashgrid-Address`, `X-Hashgrid-Signature`, `X-Hashgrid-Nonce`, `X-Hashgrid-Expiry`, `X-Hashgrid-Chain-Id`)
or with a bearer token from a Sign-In with Ethereum login (`POST /auth/siwe`).

**Errors** are JSON `{code, message, component, retryable, details}`.
"""

TAGS = [
    {"name": "auth", "description": "Sign-In with Ethereum (EIP-4361) sessions"},
    {"name": "blobs", "description": "Content-addressed storage (sha256)"},
    {"name": "tasks", "description": "A customer's own tasks"},
    {"name": "providers", "description": "Provider registration, assignments and reports"},
    {"name": "explorer", "description": "Public read-only views of the indexed chain"},
    {"name": "health", "description": "Liveness"},
]


async def _purge_nonces(engine: Engine) -> None:
    def purge() -> int:
        with Session(engine) as session:
            return purge_expired_nonces(session, now=utcnow())

    while True:
        await asyncio.sleep(NONCE_PURGE_INTERVAL_S)
        try:
            await run_in_threadpool(purge)
        except Exception:  # a busy database must not kill the loop; the next round retries
            log.exception("purging expired nonces failed")


def start_jobs(settings: MarketplaceSettings, engine: Engine, bell: Bell,
               expect_post: threading.Event | None = None) -> Any:
    """The background jobs, settlement included, on threads of this process (`run_jobs`); None when Redis
    is configured (Celery workers run them). Assignments they send ring `bell`; `expect_post` (set when a
    spec is registered) makes the chain watch poll fast again."""
    from marketplace.jobs.context import JobContext, JobSettings
    from marketplace.jobs.scheduler import InProcessScheduler

    job_settings = JobSettings()
    if job_settings.redis_url:
        log.info("redis_url is set: background jobs run on Celery, not in the API process")
        return None
    ctx = JobContext.from_settings(job_settings, engine=engine)
    return InProcessScheduler(ctx, on_assigned=bell.ring, expect_post=expect_post).start()


def create_app(
    settings: MarketplaceSettings | None = None,
    *,
    engine: Engine | None = None,
    stake_oracle: StakeOracle | None = None,
    fee_oracle: FeeOracle | None = None,
    migrate: bool = True,
) -> FastAPI:
    """Build the app; migrates the database to head unless `migrate=False`."""
    settings = settings or MarketplaceSettings()
    engine = engine or engine_from_settings(settings)
    if migrate:
        init_db(engine)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        app.state.spec_writer.reopen()  # closed by a previous lifespan of this app, if any
        # never more sync handlers at once than the engine has connections for them (db.API_THREADS)
        anyio.to_thread.current_default_thread_limiter().total_tokens = API_THREADS
        purger = asyncio.create_task(_purge_nonces(engine))
        scheduler = None
        if settings.run_jobs:
            scheduler = await run_in_threadpool(start_jobs, settings, engine, app.state.assignment_bell,
                                                app.state.expect_post)
        try:
            yield
        finally:
            purger.cancel()
            close = getattr(app.state.rate_limiter, "close", None)
            if close is not None:
                await close()
            await run_in_threadpool(app.state.spec_writer.close)
            if scheduler is not None:
                await run_in_threadpool(scheduler.stop)

    app = FastAPI(
        title="Hashgrid marketplace",
        version="1",
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.store = ContentStore(settings.content_path)
    app.state.stake_oracle = stake_oracle or ChainStakeOracle(settings)
    app.state.fee_oracle = fee_oracle or ChainFeeOracle(settings)
    app.state.expect_post = Nudge()  # set on every registered spec: its postTask is coming
    app.state.spec_writer = SpecWriter(engine, app.state.fee_oracle, on_written=app.state.expect_post.set)
    app.state.assignment_bell = Bell()
    app.state.limits = Limits.from_settings(settings)
    app.state.rate_limiter = rate_limiter(settings)
    app.state.streams = StreamSlots(settings.max_streams_per_wallet)
    # this process's own jobs ring the bell on every assignment they make: re-check the database rarely
    app.state.assignment_recheck_s = (settings.assignment_recheck_s if settings.run_jobs and not
                                      settings.redis_url else settings.poll_interval_s)
    install_error_handlers(app)
    routers = (health.router, auth.router, blobs.router, tasks.router, providers.router, explorer.router,
               webapp.router)
    for router in routers:
        app.include_router(router)
    # the ingest hot path, served ahead of FastAPI's router (same endpoint, documented there): see create_task
    app.router.routes.insert(0, Route("/tasks", tasks.create_task, methods=["POST"], include_in_schema=False))
    # every route with its methods, for the Allow header of a 405 (the app keeps included routers whole)
    app.state.method_routes = [route for router in routers for route in router.routes] + [
        route for route in app.routes if isinstance(route, Route)
    ]
    if settings.cors_origins:  # browsers on these origins may call the API; bearer tokens, never cookies
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=False,
            allow_methods=CORS_METHODS,
            allow_headers=CORS_HEADERS,
            expose_headers=["Retry-After", "ETag", "Content-Length"],
            max_age=600,
        )
    app.add_middleware(Guard, limits=app.state.limits, limiter=app.state.rate_limiter)  # outermost
    install_openapi(app)
    return app


def app_from_env() -> FastAPI:
    """For `uvicorn --factory marketplace.api.app:app_from_env`."""
    return create_app(MarketplaceSettings())
