"""What every job needs (settings, database engine, chain client, deployment, the matcher's key), built once
per process from the environment, or handed in by tests and the in-process scheduler."""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING

from eth_account import Account
from pydantic import model_validator
from sqlalchemy import Engine

from hashgrid.chain.client import ChainClient
from hashgrid.chain.deployment import Deployment
from hashgrid.config import ANVIL_DEV_KEYS, DEV_CHAIN_ID, DEV_ONLY_KEYS, Settings
from hashgrid.errors import ConfigError
from verifier.replication import ReplicationPolicy

if TYPE_CHECKING:
    from hashgrid.chain.contracts import Contracts
    from marketplace.indexer.indexer import Indexer
    from marketplace.jobs.chain import ChainOps

log = logging.getLogger(__name__)


class JobSettings(Settings):
    """Knobs of the background jobs (env HASHGRID_*); `heartbeat_ttl_s` is the same variable the API reads."""

    heartbeat_ttl_s: int = 10
    confirmations: int | None = None  # default: 0 on the dev chain (automine), 12 elsewhere
    index_batch_blocks: int = 2_000
    reorg_depth: int = 64
    matching_batch: int = 500  # tasks claimed per matching round
    matching_strategy: str = "best_fit"
    claim_lease_s: float = 120.0  # a crashed matcher's claims (SQLite) are free again after this
    index_interval_s: float = 0.5
    matching_interval_s: float = 2.0
    heartbeat_interval_s: float = 2.0  # expire_heartbeats: a dead provider is noticed within TTL + this
    deadline_interval_s: float = 30.0
    settle_interval_s: float = 1.0
    # the replication policy's knobs; unset: verifier.replication.ReplicationPolicy's defaults (one copy)
    spot_check_rate: float | None = None  # a solo provider's alone-run is re-run elsewhere this often
    canary_rate: float | None = None  # known-answer canary tasks posted per settled real task
    min_trusted_pool: int | None = None  # below this many trusted providers, trust levels bootstrap (k=3)
    solo_stake_ratio: float | None = None  # running alone needs slashable stake >= this x the price
    canary_interval_s: float = 5.0
    reconcile_interval_s: float = 600.0  # journal, database and chain compared (differences logged)
    canary_key: str | None = None  # the key the canary wallets derive from (unset: no canaries)
    canary_wallets: int = 8  # canary customers providers see (each funded like a customer wallet)
    canary_mean_delay_s: float = 300.0  # mean of the exponential delay before an owed canary is posted

    @model_validator(mode="after")
    def _dev_canary_key_only_on_dev_chain(self) -> JobSettings:
        if self.canary_key and self.canary_key.lower() in DEV_ONLY_KEYS and self.chain_id != DEV_CHAIN_ID:
            raise ValueError(f"a dev canary key is configured for chain {self.chain_id}; dev keys are for "
                             f"chain {DEV_CHAIN_ID} only")
        if self.canary_wallets < 1:
            raise ValueError("canary_wallets must be >= 1")
        return self

    @property
    def replication_policy(self) -> ReplicationPolicy:
        """The policy the verifier and the canary poster apply: the defaults, with what is set here."""
        names = ("spot_check_rate", "canary_rate", "min_trusted_pool", "solo_stake_ratio")
        return ReplicationPolicy(**{n: getattr(self, n) for n in names if getattr(self, n) is not None})

    @property
    def effective_confirmations(self) -> int:
        if self.confirmations is not None:
            return self.confirmations
        return 0 if self.chain_id == DEV_CHAIN_ID else 12


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{id(object()):x}"[:64]


@dataclass
class JobContext:
    """One process's handles for the jobs; cheap to share between threads (engine and client are)."""

    settings: JobSettings
    engine: Engine
    client: ChainClient
    deployment: Deployment
    matcher_key: str | None = None
    worker_id: str = field(default_factory=_worker_id)
    # when this process started or last heard no provider at all: heartbeats missed around then are the
    # marketplace's own outage (API down, restart), not the providers' death (expire_heartbeats)
    deaf_at: datetime = field(default_factory=_utcnow)

    @classmethod
    def from_settings(
        cls, settings: JobSettings | None = None, *, engine: Engine | None = None
    ) -> JobContext:
        """Build from the environment: engine (migrated to head here; one handed in must already be),
        deployment file, RPC client, matcher key."""
        from marketplace.db import engine_from_settings, init_db

        settings = settings or JobSettings()
        if engine is None:
            engine = engine_from_settings(settings)
            init_db(engine)
        deployment = Deployment.load(settings.deployment_path)
        client = ChainClient(settings.rpc_url, tx_timeout=settings.tx_timeout_seconds)
        if settings.redis_url:  # several processes sign with the matcher key: one nonce lane for all
            client.share_nonces(settings.redis_url)
        return cls(settings=settings, engine=engine, client=client, deployment=deployment,
                   matcher_key=matcher_key(settings, deployment))

    @cached_property
    def confirmations(self) -> int:
        return self.settings.effective_confirmations

    @cached_property
    def contracts(self) -> Contracts:
        """The contract bindings, built once per context (like `chain_ops`: building them costs ~30 ms)."""
        from hashgrid.chain.contracts import Contracts

        return Contracts.load(self.client, self.deployment)

    @cached_property
    def chain_ops(self) -> ChainOps:
        """Built once per context: its web3 contract objects cost ~30 ms, as much as an empty matching round
        (and every post waits for one)."""
        from marketplace.jobs.chain import ChainOps

        return ChainOps(self.client, self.deployment)

    @cached_property
    def indexer(self) -> Indexer:
        """Built once per context, for the same reason (it binds the registry to read stakes)."""
        from marketplace.indexer.indexer import Indexer

        s = self.settings
        return Indexer(client=self.client, deployment=self.deployment, confirmations=self.confirmations,
                       batch_blocks=s.index_batch_blocks, reorg_depth=s.reorg_depth)


def matcher_key(settings: Settings, deployment: Deployment) -> str | None:
    """The key that signs assigns: Settings.private_key, or on the dev chain the deployer's well-known key
    (it holds MATCHER_ROLE there)."""
    if settings.private_key:
        return settings.private_key
    if deployment.chain_id == DEV_CHAIN_ID:
        for key in ANVIL_DEV_KEYS:
            if Account.from_key(key).address.lower() == deployment.deployer.lower():
                return key
    return None


def require_matcher_key(ctx: JobContext) -> str:
    if not ctx.matcher_key:
        raise ConfigError("no matcher key: set HASHGRID_PRIVATE_KEY to an account holding MATCHER_ROLE")
    return ctx.matcher_key
